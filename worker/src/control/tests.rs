//! The control plane against a [`FakeEngine`]: what the engine is told, in which order, and
//! what subscribers hear.

use std::sync::Arc;

use tokio::sync::broadcast::error::TryRecvError;

use super::testing::{
    EngineCall, FakeEngine, chrome_device_capabilities, chrome_dtls_parameters,
    chrome_vp8_parameters,
};
use super::*;
use crate::room::{AppData, ConsumerCloseReason, SequentialIds};
use crate::rtp::MediaKind;

fn room() -> RoomId {
    RoomId::from("physics-101")
}

fn peer(name: &str) -> PeerId {
    PeerId::from(name)
}

struct Setup {
    engine: Arc<FakeEngine>,
    control: Arc<ControlPlane>,
}

fn setup(ports: std::ops::RangeInclusive<u16>) -> Setup {
    let engine = Arc::new(FakeEngine::new(ports));
    let control = Arc::new(ControlPlane::new(engine.clone(), SequentialIds::new()));
    Setup { engine, control }
}

impl Setup {
    fn join(&self, name: &str) {
        self.control
            .join(&room(), &peer(name), PeerInfo::default())
            .expect("joins");
    }

    fn transport(&self, name: &str, direction: Direction) -> TransportId {
        self.control
            .create_transport(&room(), &peer(name), direction)
            .expect("transport")
            .id
    }

    fn produce(&self, name: &str, transport: &TransportId) -> ProducerId {
        self.control
            .produce(
                &room(),
                &peer(name),
                ProduceOptions {
                    transport_id: transport.clone(),
                    kind: MediaKind::Video,
                    rtp_parameters: chrome_vp8_parameters(),
                    app_data: AppData::new(),
                    paused: false,
                },
            )
            .expect("produces")
            .id
    }

    fn consume(&self, name: &str, transport: &TransportId, producer: &ProducerId) -> ConsumerId {
        self.control
            .consume(
                &room(),
                &peer(name),
                ConsumeOptions {
                    transport_id: transport.clone(),
                    producer_id: producer.clone(),
                    rtp_capabilities: chrome_device_capabilities(),
                    paused: false,
                },
            )
            .expect("consumes")
            .id
    }

    /// Alice sends a camera, Bob receives it.
    fn alice_sends_bob_receives(&self) -> (TransportId, TransportId, ProducerId, ConsumerId) {
        self.join("alice");
        self.join("bob");
        let send = self.transport("alice", Direction::Send);
        let recv = self.transport("bob", Direction::Recv);
        let producer = self.produce("alice", &send);
        let consumer = self.consume("bob", &recv, &producer);
        (send, recv, producer, consumer)
    }
}

fn drain(receiver: &mut RoomSubscription) -> Vec<RoomEvent> {
    let mut events = Vec::new();
    loop {
        match receiver.try_recv() {
            Ok(event) => events.push(event),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return events,
            Err(TryRecvError::Lagged(n)) => panic!("lagged by {n}"),
        }
    }
}

#[test]
fn a_new_transport_is_opened_in_the_engine_under_its_own_id() {
    let s = setup(40000..=40009);
    s.join("alice");
    let created = s
        .control
        .create_transport(&room(), &peer("alice"), Direction::Send)
        .expect("transport");
    assert_eq!(
        s.engine.calls(),
        vec![EngineCall::OpenTransport {
            room: room(),
            transport: created.id.clone(),
            port: 40000
        }]
    );
    assert_eq!(created.ice_candidates[0].port, 40000);
    assert_eq!(
        created.ice_parameters.username_fragment,
        format!("ufrag-{}", created.id)
    );
}

#[test]
fn exhausted_ports_refuse_the_transport_and_create_nothing() {
    let s = setup(40000..=40000);
    s.join("alice");
    s.transport("alice", Direction::Send);
    let error = s
        .control
        .create_transport(&room(), &peer("alice"), Direction::Recv)
        .expect_err("no port left");
    assert_eq!(error.code(), "PORTS_EXHAUSTED");
    assert_eq!(error.http_status(), 503);
    assert_eq!(s.control.stats().transports, 1);
}

#[test]
fn connect_tells_the_engine_to_be_dtls_server_for_a_client() {
    let s = setup(40000..=40009);
    s.join("alice");
    let send = s.transport("alice", Direction::Send);
    let role = s
        .control
        .connect_transport(&room(), &send, &chrome_dtls_parameters())
        .expect("connects");
    assert_eq!(role, DtlsRole::Server);
    assert!(s.engine.calls().contains(&EngineCall::ConnectTransport {
        room: room(),
        transport: send,
        local_role: DtlsRole::Server
    }));
}

#[test]
fn restart_ice_returns_the_engines_new_credentials() {
    let s = setup(40000..=40009);
    s.join("alice");
    let send = s.transport("alice", Direction::Send);
    let ice = s.control.restart_ice(&room(), &send).expect("restarts");
    assert_eq!(ice.username_fragment, format!("ufrag-{send}-r1"));
    assert!(ice.ice_lite);
}

#[test]
fn consuming_pushes_a_table_that_routes_the_producer_to_the_new_consumer() {
    let s = setup(40000..=40009);
    let (send, _, _, consumer) = s.alice_sends_bob_receives();
    let table = s.engine.last_routes(&room()).expect("routes pushed");
    let ssrc = chrome_vp8_parameters().encodings[0].ssrc.expect("ssrc");
    let stream = table
        .stream(&send, ssrc)
        .expect("the camera stream is routed");
    assert_eq!(
        stream
            .targets
            .iter()
            .map(|target| target.consumer_id.clone())
            .collect::<Vec<_>>(),
        vec![consumer]
    );
}

#[test]
fn closing_a_transport_updates_routes_before_releasing_it() {
    let s = setup(40000..=40009);
    let (_, recv, _, _) = s.alice_sends_bob_receives();
    s.control.close_transport(&room(), &recv).expect("closes");
    let calls = s.engine.calls();
    let tail = &calls[calls.len() - 2..];
    assert!(
        matches!(&tail[0], EngineCall::UpdateRoutes { table, .. }
            if table.streams().all(|(_, stream)| stream.targets.is_empty())),
        "{tail:?}"
    );
    assert_eq!(
        tail[1],
        EngineCall::CloseTransport {
            room: room(),
            transport: recv
        }
    );
}

#[test]
fn leaving_releases_every_transport_of_the_peer() {
    let s = setup(40000..=40009);
    let (send, _, _, _) = s.alice_sends_bob_receives();
    let second = s.transport("alice", Direction::Recv);
    s.control.leave(&room(), &peer("alice")).expect("leaves");
    let open = s.engine.open_transports();
    assert!(!open.contains_key(&send) && !open.contains_key(&second));
    assert_eq!(open.len(), 1, "bob's transport stays: {open:?}");
}

#[test]
fn subscribers_hear_a_producer_close_after_its_consumers() {
    let s = setup(40000..=40009);
    let (_, _, producer, consumer) = s.alice_sends_bob_receives();
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    s.control
        .close_producer(&room(), &producer)
        .expect("closes");
    assert_eq!(
        drain(&mut events),
        vec![
            RoomEvent::ConsumerClosed {
                consumer_id: consumer,
                peer_id: peer("bob"),
                producer_id: producer.clone(),
                reason: ConsumerCloseReason::ProducerClosed,
            },
            RoomEvent::ProducerClosed {
                producer_id: producer,
                peer_id: peer("alice"),
            },
        ]
    );
}

#[test]
fn a_request_with_more_events_than_the_buffer_reaches_subscribers_whole() {
    let s = setup(40000..=40200);
    let (_, _, producer, _) = s.alice_sends_bob_receives();
    let viewers: Vec<String> = (0..EVENT_BUFFER).map(|i| format!("viewer-{i}")).collect();
    for viewer in &viewers {
        s.join(viewer);
        let recv = s.transport(viewer, Direction::Recv);
        s.consume(viewer, &recv, &producer);
    }
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    s.control
        .close_producer(&room(), &producer)
        .expect("closes");
    let heard = drain(&mut events);
    // Bob's consumer, one per viewer, then the producer.
    assert_eq!(heard.len(), EVENT_BUFFER + 2);
    assert_eq!(
        heard.last(),
        Some(&RoomEvent::ProducerClosed {
            producer_id: producer,
            peer_id: peer("alice"),
        })
    );
}

#[test]
fn closing_a_room_ends_its_event_stream_after_room_closed() {
    let s = setup(40000..=40009);
    s.join("alice");
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    s.control.close_room(&room()).expect("closes");
    let heard = drain(&mut events);
    assert_eq!(
        heard.last(),
        Some(&RoomEvent::RoomClosed { room_id: room() })
    );
    assert_eq!(events.try_recv(), Err(TryRecvError::Closed));
    assert!(
        s.engine
            .calls()
            .contains(&EngineCall::CloseRoom { room: room() })
    );
}

#[test]
fn subscribing_to_a_room_that_is_not_open_fails() {
    let s = setup(40000..=40009);
    let error = s.control.subscribe(&room()).expect_err("no room");
    assert_eq!(error.code(), "ROOM_NOT_FOUND");
}

#[test]
fn joining_opens_the_room_with_default_codecs() {
    let s = setup(40000..=40009);
    let joined = s
        .control
        .join(&room(), &peer("alice"), PeerInfo::default())
        .expect("joins");
    assert!(
        joined
            .rtp_capabilities
            .codecs
            .iter()
            .any(|codec| codec.mime_type == "video/VP8")
    );
    assert_eq!(s.control.stats().rooms, 1);
}

#[test]
fn a_refused_join_leaves_no_room_it_would_have_opened() {
    let s = setup(40000..=40009);
    let error = s
        .control
        .join(&room(), &peer(""), PeerInfo::default())
        .expect_err("empty peer id");
    assert_eq!(error.code(), "INVALID_ID");
    assert_eq!(s.control.stats().rooms, 0);
}

#[test]
fn an_engine_notice_closes_the_transport_and_publishes_the_cascade() {
    let s = setup(40000..=40009);
    let (send, _, producer, consumer) = s.alice_sends_bob_receives();
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    s.control.handle_notice(EngineNotice::TransportClosed {
        room: room(),
        transport: send.clone(),
        code: TransportCloseCode::IceConsentLost,
        reason: "ICE consent lost".to_owned(),
    });
    let heard = drain(&mut events);
    // The cascade, then Alice leaves: that was her only transport.
    assert_eq!(heard.len(), 4, "{heard:?}");
    assert!(matches!(&heard[3], RoomEvent::PeerLeft { peer_id } if peer_id.as_str() == "alice"));
    assert!(
        matches!(&heard[0], RoomEvent::ConsumerClosed { consumer_id, .. } if *consumer_id == consumer)
    );
    assert!(
        matches!(&heard[1], RoomEvent::ProducerClosed { producer_id, .. } if *producer_id == producer)
    );
    assert_eq!(
        heard[2],
        RoomEvent::TransportClosed {
            transport_id: send.clone(),
            peer_id: peer("alice"),
            code: TransportCloseCode::IceConsentLost,
            reason: "ICE consent lost".to_owned(),
        },
        "the engine's code and reason reach the event"
    );
    // The engine closed it on the wire; it is told to release it (socket, port) too.
    assert!(s.engine.calls().iter().any(
        |call| matches!(call, EngineCall::CloseTransport { transport, .. } if *transport == send)
    ));
    assert_eq!(s.control.stats().producers, 0);
}

#[test]
fn a_notice_for_a_transport_already_closed_changes_nothing() {
    let s = setup(40000..=40009);
    s.join("alice");
    let send = s.transport("alice", Direction::Send);
    s.control.close_transport(&room(), &send).expect("closes");
    let calls = s.engine.calls().len();
    s.control.handle_notice(EngineNotice::TransportClosed {
        room: room(),
        transport: send,
        code: TransportCloseCode::DtlsClosed,
        reason: "DTLS close alert".to_owned(),
    });
    assert_eq!(s.engine.calls().len(), calls);
}

#[tokio::test]
async fn the_notice_task_applies_notices_from_the_engines_channel() {
    let s = setup(40000..=40009);
    s.join("alice");
    let send = s.transport("alice", Direction::Send);
    let (sender, receiver) = mpsc::unbounded_channel();
    let task = s.control.spawn_notice_handler(receiver);
    sender
        .send(EngineNotice::TransportClosed {
            room: room(),
            transport: send,
            code: TransportCloseCode::IceConsentLost,
            reason: "ICE consent lost".to_owned(),
        })
        .expect("task listens");
    drop(sender);
    task.await
        .expect("task ends when the engine drops its sender");
    assert_eq!(s.control.stats().transports, 0);
}

#[test]
fn shutdown_closes_every_room_and_refuses_new_ones() {
    let s = setup(40000..=40009);
    let (_, _, _, _) = s.alice_sends_bob_receives();
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    s.control.shutdown();
    let heard = drain(&mut events);
    assert_eq!(
        heard.last(),
        Some(&RoomEvent::RoomClosed { room_id: room() })
    );
    let codes: Vec<TransportCloseCode> = heard
        .iter()
        .filter_map(|event| match event {
            RoomEvent::TransportClosed { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [TransportCloseCode::WorkerShutdown; 2], "{heard:?}");
    assert_eq!(s.control.stats(), WorkerStats::default());
    assert!(s.engine.open_transports().is_empty());
    assert_eq!(
        s.control.ensure_room(&RoomId::from("late"), &[]),
        Err(ControlError::ShuttingDown)
    );
    assert_eq!(
        s.control
            .join(&RoomId::from("late"), &peer("carol"), PeerInfo::default())
            .map(drop),
        Err(ControlError::ShuttingDown)
    );
    assert!(s.control.is_shutting_down());
}

#[test]
fn a_peer_whose_last_transport_the_engine_closed_leaves_the_room() {
    let s = setup(40000..=40009);
    let (send, recv, _, _) = s.alice_sends_bob_receives();
    let mut events = s.control.subscribe(&room()).expect("subscribes");
    // Bob's browser is gone: the engine closes his only transport (consent lost).
    s.control.handle_notice(EngineNotice::TransportClosed { room: room(), transport: recv, code: TransportCloseCode::IceConsentLost, reason: "ICE consent lost".into() });
    let heard = drain(&mut events);
    assert!(heard.iter().any(|e| matches!(e, RoomEvent::PeerLeft { peer_id, .. } if peer_id.as_str() == "bob")), "{heard:?}");
    assert_eq!(s.control.stats().peers, 1, "alice stays");
    // Alice keeps her send transport: one engine-closed transport alone does not evict a peer
    // that still has others.
    let _ = send;
}
