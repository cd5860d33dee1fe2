//! Setting a transport up, against a real worker over loopback UDP: any standards-following
//! client connects, and when setup fails or a transport dies the worker closes it and says
//! why (`transportClosed` with a code), so signalling can tell the participant.
#![cfg(all(feature = "media", feature = "client"))]

use std::time::Duration;

use fanout_worker::api::JoinRequest;
use fanout_worker::client::{ClientError, WorkerClient};
use fanout_worker::media::dtls::FingerprintAlgorithm;
use fanout_worker::media::ice::{BindingAnswer, BindingRequest, read_binding_answer};
use fanout_worker::media::peer::TestPeer;
use fanout_worker::room::{Direction, PeerId, RoomEvent, TransportCloseCode, TransportCreated, TransportId};
use fanout_worker::server::{RunningWorker, WorkerConfig, WorkerLimits, start};
use futures::{Stream, StreamExt};

const ROOM: &str = "setup";
const WAIT: Duration = Duration::from_secs(5);

async fn worker(ports: (u16, u16), limits: WorkerLimits) -> (RunningWorker, WorkerClient) {
    let worker = start(WorkerConfig { limits, ..WorkerConfig::loopback(ports) }).await.expect("worker starts");
    (worker, WorkerClient::new(None, Duration::from_secs(5)))
}

/// Alice joins and gets a transport; the room's events are followed from before it exists.
type Events = std::pin::Pin<Box<dyn Stream<Item = Result<RoomEvent, ClientError>> + Send>>;

async fn alice_with_transport(worker: &RunningWorker, client: &WorkerClient, direction: Direction) -> (TransportCreated, Events) {
    let endpoint = worker.endpoint();
    client.join(&endpoint, ROOM, &JoinRequest::new("alice")).await.expect("joins");
    // Bob stays, so the room and its stream outlive Alice.
    client.join(&endpoint, ROOM, &JoinRequest::new("bob")).await.expect("joins");
    let events = client.events(&endpoint, ROOM).await.expect("subscribes");
    let transport = client.create_transport(&endpoint, ROOM, &PeerId::from("alice"), direction).await.expect("transport");
    (transport, Box::pin(events))
}

/// The code and reason of the transport's `transportClosed`, waiting for it.
async fn closed_code(events: &mut Events, transport: &TransportId, within: Duration) -> (TransportCloseCode, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no transportClosed for {transport} within {within:?}"))
            .expect("stream open")
            .expect("readable event");
        if let RoomEvent::TransportClosed { transport_id, code, reason, .. } = event
            && &transport_id == transport
        {
            return (code, reason);
        }
    }
}

#[tokio::test]
async fn a_client_signalling_only_a_sha512_fingerprint_connects() {
    let (worker, client) = worker((47600, 47609), WorkerLimits::default()).await;
    let (transport, _events) = alice_with_transport(&worker, &client, Direction::Send).await;
    let mut alice = TestPeer::for_transport(&transport).await.expect("peer");
    // As aiortc does under pymediasoup.
    let aiortc_like = alice.dtls_parameters_with(FingerprintAlgorithm::Sha512);
    client.connect_transport(&worker.endpoint(), ROOM, &transport.id, &aiortc_like).await.expect("connect accepted");
    alice.connect(WAIT).await.expect("ICE and DTLS complete with a sha-512 fingerprint");
    for algorithm in [FingerprintAlgorithm::Sha1, FingerprintAlgorithm::Sha224, FingerprintAlgorithm::Sha384] {
        let other = client.create_transport(&worker.endpoint(), ROOM, &PeerId::from("alice"), Direction::Recv).await.expect("transport");
        let mut peer = TestPeer::for_transport(&other).await.expect("peer");
        client.connect_transport(&worker.endpoint(), ROOM, &other.id, &peer.dtls_parameters_with(algorithm)).await.expect("connect");
        peer.connect(WAIT).await.unwrap_or_else(|e| panic!("{algorithm:?}: {e}"));
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_certificate_matching_no_fingerprint_closes_the_transport_with_a_code() {
    let (worker, client) = worker((47610, 47619), WorkerLimits::default()).await;
    let (transport, mut events) = alice_with_transport(&worker, &client, Direction::Send).await;
    let mut alice = TestPeer::for_transport(&transport).await.expect("peer");
    let mut wrong = alice.dtls_parameters();
    wrong.fingerprints[0].value = ["5A"; 32].join(":");
    client.connect_transport(&worker.endpoint(), ROOM, &transport.id, &wrong).await.expect("connect accepted");
    assert!(alice.connect(Duration::from_secs(2)).await.is_err(), "DTLS must not complete");
    let (code, reason) = closed_code(&mut events, &transport.id, WAIT).await;
    assert_eq!(code, TransportCloseCode::DtlsFingerprintMismatch);
    assert!(reason.contains("fingerprint"), "{reason}");
    // The worker's state agrees: the transport is gone, and so is Alice (her only one).
    let room = client.room_info(&worker.endpoint(), ROOM).await.expect("room");
    assert!(room.transports.is_empty(), "{:?}", room.transports);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_transport_that_never_gets_a_check_times_out_and_returns_its_port() {
    let mut limits = WorkerLimits::default();
    limits.transport_timeouts.ice.setup = Duration::from_millis(400);
    let (worker, client) = worker((47620, 47629), limits).await;
    let (transport, mut events) = alice_with_transport(&worker, &client, Direction::Recv).await;
    assert_eq!(worker.engine.ports_in_use(), 1);
    let (code, _) = closed_code(&mut events, &transport.id, WAIT).await;
    assert_eq!(code, TransportCloseCode::IceTimeout);
    let deadline = tokio::time::Instant::now() + WAIT;
    while worker.engine.ports_in_use() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the port never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_connected_transport_survives_the_ice_timeout_then_loses_consent_when_checks_stop() {
    let mut limits = WorkerLimits::default();
    limits.transport_timeouts.ice.setup = Duration::from_millis(300);
    limits.transport_timeouts.ice.consent = Duration::from_millis(1500);
    let (worker, client) = worker((47630, 47639), limits).await;
    let (transport, mut events) = alice_with_transport(&worker, &client, Direction::Send).await;
    let mut alice = TestPeer::for_transport(&transport).await.expect("peer");
    client.connect_transport(&worker.endpoint(), ROOM, &transport.id, &alice.dtls_parameters()).await.expect("connect");
    alice.connect(WAIT).await.expect("connects");
    // Past the ICE timeout: still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let room = client.room_info(&worker.endpoint(), ROOM).await.expect("room");
    assert_eq!(room.transports.len(), 1, "a connected transport does not time out");
    // The peer sends no more checks: consent runs out.
    let (code, _) = closed_code(&mut events, &transport.id, WAIT).await;
    assert_eq!(code, TransportCloseCode::IceConsentLost);
    worker.shutdown().await;
}

/// Sends one check to the transport and reads the answer.
async fn answer_to(transport: &TransportCreated, request: &BindingRequest) -> BindingAnswer {
    let provider = rtc::crypto::default_provider().expect("crypto");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let candidate = &transport.ice_candidates[0];
    socket.send_to(&request.build(provider.crypto()), (candidate.address, candidate.port)).await.expect("sends");
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await.expect("answered").expect("receives");
    read_binding_answer(&buf[..n], &transport.ice_parameters.password, provider.crypto())
}

#[tokio::test]
async fn checks_are_answered_as_rfc_8445_says_a_lite_agent_answers() {
    let (worker, client) = worker((47640, 47649), WorkerLimits::default()).await;
    let (transport, _events) = alice_with_transport(&worker, &client, Direction::Send).await;
    let ice = &transport.ice_parameters;
    let browser = BindingRequest::browser(&ice.username_fragment, "chrome", &ice.password, true);
    assert_eq!(answer_to(&transport, &browser).await, BindingAnswer::Success, "what Chrome sends");
    let bare = BindingRequest { priority: None, controlling: None, use_candidate: false, ..browser.clone() };
    assert_eq!(answer_to(&transport, &bare).await, BindingAnswer::Success, "no PRIORITY, no role");
    let controlled = BindingRequest { controlling: None, controlled: Some(42), ..browser.clone() };
    assert_eq!(answer_to(&transport, &controlled).await, BindingAnswer::Error { code: 487, reason: "Role Conflict".into() });
    let unknown = BindingRequest { extra: vec![(0x0077, vec![1, 2, 3, 4])], ..browser.clone() };
    assert!(matches!(answer_to(&transport, &unknown).await, BindingAnswer::Error { code: 420, .. }));
    let wrong = BindingRequest { password: Some("a-wrong-password-0123456789".into()), ..browser };
    assert!(matches!(answer_to(&transport, &wrong).await, BindingAnswer::Error { code: 401, .. }));
    worker.shutdown().await;
}
