//! The REST API over real HTTP: the router bound on 127.0.0.1 with a fake media engine, driven
//! by the typed [`WorkerClient`] the way signalling drives a worker.
#![cfg(all(feature = "media", feature = "client"))]

use std::sync::Arc;
use std::time::Duration;

use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest, WorkerStats};
use fanout_worker::client::{ClientError, WorkerClient};
use fanout_worker::control::testing::{
    FakeEngine, chrome_device_capabilities, chrome_dtls_parameters, chrome_opus_parameters,
    chrome_vp8_parameters,
};
use fanout_worker::control::{ControlPlane, RandomIds};
use fanout_worker::http::{ApiState, serve};
use fanout_worker::room::{
    AppData, ConsumerCloseReason, Direction, PeerId, ProducerId, RoomEvent, TransportId,
};
use fanout_worker::rtp::MediaKind;
use futures::{Stream, StreamExt};

const TOKEN: &str = "worker-token";
const ROOM: &str = "maths-101";

/// A worker serving on a free loopback port until dropped.
struct Worker {
    endpoint: String,
    control: Arc<ControlPlane>,
    engine: Arc<FakeEngine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Worker {
    async fn start() -> Worker {
        let engine = Arc::new(FakeEngine::new(41000..=41009));
        let control = Arc::new(ControlPlane::new(engine.clone(), RandomIds::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = ApiState::new(control.clone(), Some(TOKEN.to_owned()));
        tokio::spawn(async move {
            serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
        });
        Worker {
            endpoint,
            control,
            engine,
            stop: Some(stop),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.control.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn client() -> WorkerClient {
    WorkerClient::new(Some(TOKEN.to_owned()), Duration::from_secs(5))
}

fn peer(name: &str) -> PeerId {
    PeerId::from(name)
}

/// The next event, failing the test rather than hanging.
async fn next_event(
    events: &mut (impl Stream<Item = Result<RoomEvent, ClientError>> + Unpin),
) -> RoomEvent {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("a readable event")
}

fn produce_request(peer_name: &str, transport: &TransportId, kind: MediaKind) -> ProduceRequest {
    let mut app_data = AppData::new();
    app_data.insert("source".to_owned(), "camera".into());
    ProduceRequest {
        peer_id: peer(peer_name),
        transport_id: transport.clone(),
        kind,
        rtp_parameters: match kind {
            MediaKind::Video => chrome_vp8_parameters(),
            MediaKind::Audio => chrome_opus_parameters(),
        },
        app_data,
        paused: false,
    }
}

#[tokio::test]
async fn a_call_from_join_to_leave_works_over_http_and_streams_its_events() {
    let worker = Worker::start().await;
    let client = client();
    let endpoint = worker.endpoint.as_str();

    client.healthz(endpoint).await.expect("healthy");
    let joined = client
        .join(endpoint, ROOM, &JoinRequest::new("alice"))
        .await
        .expect("alice joins");
    assert!(joined.peers.is_empty());
    let mut events = Box::pin(client.events(endpoint, ROOM).await.expect("subscribes"));
    let joined = client
        .join(endpoint, ROOM, &JoinRequest::new("bob"))
        .await
        .expect("bob joins");
    assert_eq!(joined.peers[0].peer_id, peer("alice"));
    assert!(
        matches!(next_event(&mut events).await, RoomEvent::PeerJoined(bob) if bob.peer_id == peer("bob"))
    );

    // Alice publishes her camera.
    let send = client
        .create_transport(endpoint, ROOM, &peer("alice"), Direction::Send)
        .await
        .expect("send transport");
    assert!(send.ice_parameters.ice_lite);
    client
        .connect_transport(endpoint, ROOM, &send.id, &chrome_dtls_parameters())
        .await
        .expect("connects");
    let camera = client
        .produce(
            endpoint,
            ROOM,
            &produce_request("alice", &send.id, MediaKind::Video),
        )
        .await
        .expect("produces")
        .id;
    assert!(matches!(
        next_event(&mut events).await,
        RoomEvent::NewProducer { producer_id, kind: MediaKind::Video, .. } if producer_id == camera
    ));

    // Bob receives it, paused first, as mediasoup-client apps do.
    let recv = client
        .create_transport(endpoint, ROOM, &peer("bob"), Direction::Recv)
        .await
        .expect("recv transport");
    client
        .connect_transport(endpoint, ROOM, &recv.id, &chrome_dtls_parameters())
        .await
        .expect("connects");
    let consumer = client
        .consume(
            endpoint,
            ROOM,
            &ConsumeRequest {
                peer_id: peer("bob"),
                transport_id: recv.id.clone(),
                producer_id: camera.clone(),
                rtp_capabilities: chrome_device_capabilities(),
                paused: true,
            },
        )
        .await
        .expect("consumes");
    assert_eq!(consumer.producer_id, camera);
    let encoding = &consumer.rtp_parameters.encodings[0];
    assert_eq!(
        encoding.rtx.map(|rtx| rtx.ssrc.0),
        encoding.ssrc.map(|ssrc| ssrc.0 + 1),
        "RTX SSRC is the consumer's SSRC + 1"
    );
    client
        .resume_consumer(endpoint, ROOM, &consumer.id)
        .await
        .expect("resumes the consumer");

    client
        .pause_producer(endpoint, ROOM, &camera)
        .await
        .expect("pauses");
    assert!(matches!(
        next_event(&mut events).await,
        RoomEvent::ProducerPaused { .. }
    ));
    client
        .resume_producer(endpoint, ROOM, &camera)
        .await
        .expect("resumes");
    assert!(matches!(
        next_event(&mut events).await,
        RoomEvent::ProducerResumed { .. }
    ));

    // Alice stops her camera: Bob's consumer closes first.
    client
        .close_producer(endpoint, ROOM, &camera)
        .await
        .expect("closes the producer");
    assert_eq!(
        next_event(&mut events).await,
        RoomEvent::ConsumerClosed {
            consumer_id: consumer.id.clone(),
            peer_id: peer("bob"),
            producer_id: camera.clone(),
            reason: ConsumerCloseReason::ProducerClosed,
        }
    );
    assert!(
        matches!(next_event(&mut events).await, RoomEvent::ProducerClosed { producer_id, .. } if producer_id == camera)
    );

    client
        .leave(endpoint, ROOM, &peer("alice"))
        .await
        .expect("alice leaves");
    client
        .leave(endpoint, ROOM, &peer("bob"))
        .await
        .expect("bob leaves");
    let stats = client.stats(endpoint).await.expect("stats");
    assert_eq!(
        (
            stats.peers,
            stats.transports,
            stats.producers,
            stats.consumers
        ),
        (0, 0, 0, 0)
    );
    client
        .close_room(endpoint, ROOM)
        .await
        .expect("closes the room");
    assert_eq!(
        client.stats(endpoint).await.expect("stats"),
        WorkerStats::default()
    );
    assert!(worker.engine.open_transports().is_empty());

    // The stream ends with the room.
    let mut rest = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends")
    {
        rest.push(event.expect("readable"));
    }
    assert!(
        matches!(rest.last(), Some(RoomEvent::RoomClosed { .. })),
        "{rest:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_unauthorized() {
    let worker = Worker::start().await;
    let intruder = WorkerClient::new(Some("guess".to_owned()), Duration::from_secs(5));
    let error = intruder.stats(&worker.endpoint).await.expect_err("refused");
    assert_eq!(
        (error.status(), error.code()),
        (Some(401), Some("UNAUTHORIZED"))
    );
}

#[tokio::test]
async fn an_unknown_producer_is_a_not_found_error_with_its_code() {
    let worker = Worker::start().await;
    let client = client();
    client
        .join(&worker.endpoint, ROOM, &JoinRequest::new("alice"))
        .await
        .expect("joins");
    let error = client
        .pause_producer(&worker.endpoint, ROOM, &ProducerId::from("nope"))
        .await
        .expect_err("unknown");
    assert!(error.is_not_found());
    assert_eq!(error.code(), Some("PRODUCER_NOT_FOUND"));
}

#[tokio::test]
async fn a_dot_segment_room_is_invalid_id_from_the_client_and_from_the_server() {
    let worker = Worker::start().await;
    // The typed client refuses it before a request (a URL parser would resolve it away).
    let error = client()
        .join(&worker.endpoint, "..", &JoinRequest::new("alice"))
        .await
        .expect_err("refused");
    assert_eq!(
        (error.status(), error.code()),
        (Some(400), Some("INVALID_ID"))
    );
    // A raw client that sends it as is gets the same from the worker, not "no such route".
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = worker.endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let body = r#"{"peerId":"alice"}"#;
    let request = format!(
        "POST /v1/rooms/../peers HTTP/1.1\r\nhost: w\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("answered")
        .expect("reads");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("INVALID_ID"), "{answer}");
    assert_eq!(worker.control.stats().rooms, 0);
}

#[tokio::test]
async fn a_second_connect_is_a_conflict() {
    let worker = Worker::start().await;
    let client = client();
    let endpoint = worker.endpoint.as_str();
    client
        .join(endpoint, ROOM, &JoinRequest::new("alice"))
        .await
        .expect("joins");
    let send = client
        .create_transport(endpoint, ROOM, &peer("alice"), Direction::Send)
        .await
        .expect("transport");
    client
        .connect_transport(endpoint, ROOM, &send.id, &chrome_dtls_parameters())
        .await
        .expect("first connect");
    let error = client
        .connect_transport(endpoint, ROOM, &send.id, &chrome_dtls_parameters())
        .await
        .expect_err("second connect");
    assert!(error.is_conflict());
    assert_eq!(error.code(), Some("TRANSPORT_ALREADY_CONNECTED"));
}

#[tokio::test]
async fn exhausted_ports_tell_the_caller_to_try_elsewhere() {
    let worker = Worker::start().await;
    let client = client();
    let endpoint = worker.endpoint.as_str();
    // Ten ports, two peers within their transport quotas.
    for name in ["alice", "bob"] {
        client
            .join(endpoint, ROOM, &JoinRequest::new(name))
            .await
            .expect("joins");
        for _ in 0..5 {
            client
                .create_transport(endpoint, ROOM, &peer(name), Direction::Recv)
                .await
                .expect("a port is free");
        }
    }
    let error = client
        .create_transport(endpoint, ROOM, &peer("alice"), Direction::Recv)
        .await
        .expect_err("no port left");
    assert!(error.is_unavailable());
    assert_eq!(error.code(), Some("PORTS_EXHAUSTED"));
}

#[tokio::test]
async fn restart_ice_and_room_info_round_trip_through_the_client() {
    let worker = Worker::start().await;
    let client = client();
    let endpoint = worker.endpoint.as_str();
    let capabilities = client
        .ensure_room(endpoint, ROOM, &[])
        .await
        .expect("opens");
    assert!(!capabilities.codecs.is_empty());
    client
        .join(endpoint, ROOM, &JoinRequest::new("alice"))
        .await
        .expect("joins");
    let send = client
        .create_transport(endpoint, ROOM, &peer("alice"), Direction::Send)
        .await
        .expect("transport");
    let ice = client
        .restart_ice(endpoint, ROOM, &send.id)
        .await
        .expect("restarts");
    assert_ne!(ice.username_fragment, send.ice_parameters.username_fragment);
    let microphone = client
        .produce(
            endpoint,
            ROOM,
            &produce_request("alice", &send.id, MediaKind::Audio),
        )
        .await
        .expect("produces");
    let info = client.room_info(endpoint, ROOM).await.expect("room info");
    assert_eq!(info.producers[0].producer_id, microphone.id);
    assert_eq!(info.transports[0].transport_id, send.id);
    client
        .close_transport(endpoint, ROOM, &send.id)
        .await
        .expect("closes");
    let info = client.room_info(endpoint, ROOM).await.expect("room info");
    assert!(info.transports.is_empty() && info.producers.is_empty());
}

#[tokio::test]
async fn closing_a_room_the_worker_does_not_know_is_not_an_error() {
    let worker = Worker::start().await;
    client()
        .close_room(&worker.endpoint, "never-opened")
        .await
        .expect("nothing to close is fine");
}

#[tokio::test]
async fn an_unreachable_worker_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let error = client().stats(&endpoint).await.expect_err("nobody listens");
    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn shutdown_ends_event_streams_and_fails_the_health_check() {
    let worker = Worker::start().await;
    let client = client();
    client
        .join(&worker.endpoint, ROOM, &JoinRequest::new("alice"))
        .await
        .expect("joins");
    let mut events = Box::pin(
        client
            .events(&worker.endpoint, ROOM)
            .await
            .expect("subscribes"),
    );
    worker.control.shutdown();
    assert!(matches!(
        next_event(&mut events).await,
        RoomEvent::PeerLeft { .. }
    ));
    assert!(matches!(
        next_event(&mut events).await,
        RoomEvent::RoomClosed { .. }
    ));
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the stream ends");
    assert!(end.is_none());
    let error = client
        .healthz(&worker.endpoint)
        .await
        .expect_err("draining");
    assert_eq!(error.status(), Some(503));
}
