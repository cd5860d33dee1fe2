//! ICE-TCP against a real worker on loopback: peers that reach the worker only over its one
//! TCP port (as a browser behind a firewall that drops UDP does, on transports created with
//! `enableUdp: false`) connect and get media; a
//! subscriber that stops reading costs the others nothing; connections that never pass an
//! ICE check are closed; a closed transport's connection ends and the port takes new ones.
#![cfg(all(feature = "media", feature = "client"))]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest};
use fanout_worker::client::{ClientError, WorkerClient};
use fanout_worker::media::ice::binding_request;
use fanout_worker::media::ice_tcp::{frame, TcpLimits};
use fanout_worker::media::peer::TestPeer;
use fanout_worker::media::rtp_packet::RtpView;
use fanout_worker::room::{ConsumerCreated, Direction, IceProtocol, PeerId, ProducerId, TcpType, TransportCreated, TransportProtocols};
use fanout_worker::rtp::MediaKind;
use fanout_worker::server::{start, RunningWorker, WorkerConfig, WorkerLimits};
use fanout_worker::testing::{chrome_device_capabilities, chrome_vp8_parameters};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOM: &str = "firewalled";
const VP8_SSRC: u32 = 2471283948;
const KEYFRAME: &[u8] = &[0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0xAA, 0xBB];
const WAIT: Duration = Duration::from_secs(5);

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&VP8_SSRC.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn worker(ports: (u16, u16), tcp: TcpLimits) -> (RunningWorker, WorkerClient) {
    let limits = WorkerLimits { tcp, ..WorkerLimits::default() };
    let worker = start(WorkerConfig { limits, ..WorkerConfig::loopback(ports) }).await.expect("worker starts");
    (worker, WorkerClient::new(None, Duration::from_secs(5)))
}

fn tcp_address(transport: &TransportCreated) -> SocketAddr {
    let candidate = transport.ice_candidates.iter().find(|c| c.protocol == IceProtocol::Tcp).expect("a TCP candidate");
    assert_eq!(candidate.tcp_type, Some(TcpType::Passive));
    SocketAddr::new(candidate.address, candidate.port)
}

/// A connected peer for a new transport of `peer`, over `protocol` only.
async fn transport(
    worker: &RunningWorker,
    client: &WorkerClient,
    peer: &str,
    direction: Direction,
    protocol: IceProtocol,
) -> (TransportCreated, TestPeer) {
    let endpoint = worker.endpoint();
    let only = match protocol {
        IceProtocol::Udp => TransportProtocols { enable_tcp: Some(false), ..Default::default() },
        IceProtocol::Tcp => TransportProtocols { enable_udp: Some(false), ..Default::default() },
    };
    let created = client.create_transport_over(&endpoint, ROOM, &PeerId::from(peer), direction, &only).await.expect("transport");
    assert_eq!(created.ice_candidates.iter().map(|c| c.protocol).collect::<Vec<_>>(), vec![protocol]);
    let mut test_peer = TestPeer::for_transport_over(&created, protocol).await.expect("peer");
    client.connect_transport(&endpoint, ROOM, &created.id, &test_peer.dtls_parameters()).await.expect("connect");
    test_peer.connect(WAIT).await.expect("ICE and DTLS complete");
    (created, test_peer)
}

async fn camera(worker: &RunningWorker, client: &WorkerClient, send: &TransportCreated) -> ProducerId {
    let request = ProduceRequest {
        peer_id: PeerId::from("alice"),
        transport_id: send.id.clone(),
        kind: MediaKind::Video,
        rtp_parameters: chrome_vp8_parameters(),
        app_data: Default::default(),
        paused: false,
    };
    client.produce(&worker.endpoint(), ROOM, &request).await.expect("produces").id
}

async fn consume(worker: &RunningWorker, client: &WorkerClient, peer: &str, recv: &TransportCreated, camera: &ProducerId) -> ConsumerCreated {
    let request = ConsumeRequest {
        peer_id: PeerId::from(peer),
        transport_id: recv.id.clone(),
        producer_id: camera.clone(),
        rtp_capabilities: chrome_device_capabilities(),
        paused: false,
    };
    client.consume(&worker.endpoint(), ROOM, &request).await.expect("consumes")
}

async fn join(worker: &RunningWorker, client: &WorkerClient, peers: &[&str]) {
    for name in peers {
        client.join(&worker.endpoint(), ROOM, &JoinRequest::new(*name)).await.expect("joins");
    }
}

fn ssrc_of(consumer: &ConsumerCreated) -> u32 {
    consumer.rtp_parameters.encodings[0].ssrc.expect("consumer SSRC").0
}

/// The sequence numbers of the consumer's RTP that `peer` receives until nothing comes for
/// `quiet`.
async fn receive_all(peer: &mut TestPeer, ssrc: u32, quiet: Duration) -> Vec<u16> {
    let mut seen = Vec::new();
    while let Some(packet) = peer.recv_rtp(quiet).await.expect("receives") {
        if RtpView::ssrc(&packet) == ssrc {
            seen.push(RtpView::sequence(&packet));
        }
    }
    seen
}

fn drops(worker: &RunningWorker, reason: &str) -> u64 {
    worker.engine.counters.drops_by_reason.lock().unwrap().get(reason).copied().unwrap_or(0)
}

/// Refusals are counted just after the connection is closed: wait for the count.
async fn wait_for_drops(worker: &RunningWorker, reason: &str, at_least: u64) {
    for _ in 0..100 {
        if drops(worker, reason) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{reason}: {} (expected at least {at_least})", drops(worker, reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_flows_between_peers_that_reach_the_worker_over_tcp_only() {
    let (worker, client) = worker((47700, 47709), TcpLimits::default()).await;
    join(&worker, &client, &["alice", "bob"]).await;
    let (send, mut alice) = transport(&worker, &client, "alice", Direction::Send, IceProtocol::Tcp).await;
    let (recv, mut bob) = transport(&worker, &client, "bob", Direction::Recv, IceProtocol::Tcp).await;
    assert_eq!(tcp_address(&send), tcp_address(&recv), "one TCP port for every transport");
    let camera = camera(&worker, &client, &send).await;
    let video = consume(&worker, &client, "bob", &recv, &camera).await;
    let sent_at = Instant::now();
    for seq in 0..200u16 {
        alice.send_rtp(&rtp(seq, if seq == 0 { KEYFRAME } else { &[0x10, 0x51, 0x01, 0x00, 0xCC] })).await.unwrap();
    }
    let seen = receive_all(&mut bob, ssrc_of(&video), Duration::from_millis(500)).await;
    println!("ICE-TCP: {} of 200 packets forwarded TCP to TCP in {:?} (the last 500 ms of quiet included)", seen.len(), sent_at.elapsed());
    assert_eq!(seen.len(), 200, "TCP loses nothing on loopback");
    assert!(seen.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "in order, consecutive");
    assert_eq!(worker.engine.counters.tcp.connections_open.load(Ordering::Relaxed), 2);
    assert_eq!(worker.engine.ports_in_use(), 0, "TCP-only transports hold no UDP port");
    worker.shutdown().await;
}

#[tokio::test]
async fn create_transport_takes_mediasouplike_protocol_options_and_refuses_impossible_ones() {
    let (worker, client) = worker((47740, 47749), TcpLimits::default()).await;
    join(&worker, &client, &["alice"]).await;
    let endpoint = worker.endpoint();
    let alice = PeerId::from("alice");
    let create = |protocols: TransportProtocols| {
        let (client, endpoint, alice) = (client.clone(), endpoint.clone(), alice.clone());
        async move { client.create_transport_over(&endpoint, ROOM, &alice, Direction::Send, &protocols).await }
    };
    let protocols = |created: &TransportCreated| created.ice_candidates.iter().map(|c| c.protocol).collect::<Vec<_>>();
    let both = create(TransportProtocols::default()).await.unwrap();
    assert_eq!(protocols(&both), vec![IceProtocol::Udp, IceProtocol::Tcp], "the worker's defaults: both, UDP preferred");
    assert!(both.ice_candidates[0].priority > both.ice_candidates[1].priority);
    let tcp_first = create(TransportProtocols { prefer_tcp: Some(true), ..Default::default() }).await.unwrap();
    assert_eq!(protocols(&tcp_first), vec![IceProtocol::Tcp, IceProtocol::Udp]);
    assert!(tcp_first.ice_candidates[0].priority > tcp_first.ice_candidates[1].priority, "preferTcp: TCP's priority higher");
    for (protocols, code) in [
        (TransportProtocols { enable_udp: Some(false), enable_tcp: Some(false), ..Default::default() }, "NO_TRANSPORT_PROTOCOL"),
        (TransportProtocols { prefer_udp: Some(true), prefer_tcp: Some(true), ..Default::default() }, "CONFLICTING_PROTOCOL_PREFERENCE"),
    ] {
        match create(protocols).await {
            Err(ClientError::Api { status: 400, code: got, message }) => {
                assert_eq!(got, code);
                println!("{code}: {message}");
            }
            other => panic!("{protocols:?}: {other:?}"),
        }
    }
    // A worker without ICE-TCP offers UDP by default and refuses a transport that asks for TCP.
    let udp_only = start(WorkerConfig { rtc_tcp_port: None, ..WorkerConfig::loopback((47750, 47759)) }).await.unwrap();
    client.join(&udp_only.endpoint(), ROOM, &JoinRequest::new("alice")).await.unwrap();
    let plain = client.create_transport(&udp_only.endpoint(), ROOM, &alice, Direction::Send).await.unwrap();
    assert_eq!(protocols(&plain), vec![IceProtocol::Udp]);
    let asked = TransportProtocols { enable_tcp: Some(true), ..Default::default() };
    match client.create_transport_over(&udp_only.endpoint(), ROOM, &alice, Direction::Send, &asked).await {
        Err(ClientError::Api { status: 400, code, .. }) => assert_eq!(code, "TCP_UNAVAILABLE"),
        other => panic!("{other:?}"),
    }
    // The raw body as signalling or any HTTP client sends it.
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/v1/rooms/{ROOM}/transports"))
        .json(&serde_json::json!({"peerId": "alice", "direction": "recv", "enableUdp": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["iceCandidates"][0]["protocol"], "tcp");
    assert_eq!(body["iceCandidates"][0]["tcpType"], "passive");
    udp_only.shutdown().await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_over_tcp_does_not_hold_up_the_others() {
    let limits = TcpLimits { send_queue_limit: 32 * 1024, ..TcpLimits::default() };
    let (worker, client) = worker((47710, 47719), limits).await;
    join(&worker, &client, &["alice", "bob", "carol"]).await;
    let (send, mut alice) = transport(&worker, &client, "alice", Direction::Send, IceProtocol::Tcp).await;
    let camera = camera(&worker, &client, &send).await;
    // Bob never reads again: his socket's buffers fill, then the worker's queue for him.
    let (bob_recv, bob) = transport(&worker, &client, "bob", Direction::Recv, IceProtocol::Tcp).await;
    consume(&worker, &client, "bob", &bob_recv, &camera).await;
    let (carol_recv, mut carol) = transport(&worker, &client, "carol", Direction::Recv, IceProtocol::Tcp).await;
    let video = consume(&worker, &client, "carol", &carol_recv, &camera).await;
    let ssrc = ssrc_of(&video);
    let carol_reads = tokio::spawn(async move {
        let seen = receive_all(&mut carol, ssrc, Duration::from_secs(2)).await;
        (seen, carol)
    });
    // Far more than loopback TCP buffers hold for Bob (several MB with autotuning): a
    // keyframe, then delta frames' packets.
    let mut payload = vec![0x10, 0x51, 0x01, 0x00];
    payload.resize(1100, 0x5a);
    let packets = 16_000u16;
    let started = Instant::now();
    for seq in 0..packets {
        alice.send_rtp(&rtp(seq, if seq == 0 { KEYFRAME } else { &payload })).await.unwrap();
    }
    let (seen, _carol) = carol_reads.await.unwrap();
    let dropped_for_bob = drops(&worker, "tcp_send_queue_full");
    println!(
        "stalled reader: Carol got {} of {packets} packets ({:.1} MB) in {:?}; {dropped_for_bob} copies for Bob dropped",
        seen.len(),
        f64::from(packets) * 1100.0 / 1e6,
        started.elapsed()
    );
    assert_eq!(seen.len(), usize::from(packets), "Carol misses nothing while Bob is stalled");
    assert!(dropped_for_bob > 0, "Bob's queue filled and dropped instead of growing");
    drop(bob);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_tcp_transport_ends_its_connection_and_the_port_takes_a_new_one() {
    let (worker, client) = worker((47720, 47729), TcpLimits::default()).await;
    join(&worker, &client, &["alice", "bob"]).await;
    let (send, mut alice) = transport(&worker, &client, "alice", Direction::Send, IceProtocol::Tcp).await;
    let camera = camera(&worker, &client, &send).await;
    let (recv, mut bob) = transport(&worker, &client, "bob", Direction::Recv, IceProtocol::Tcp).await;
    consume(&worker, &client, "bob", &recv, &camera).await;
    client.close_transport(&worker.endpoint(), ROOM, &recv.id).await.expect("closes");
    // The worker ends the connection: Bob reads to the end of the stream.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if bob.recv(Duration::from_secs(1)).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the closed transport's connection ended");
    let open = || worker.engine.counters.tcp.connections_open.load(Ordering::Relaxed);
    for _ in 0..100 {
        if open() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(open(), 1, "Alice's stays");
    // A new transport on the same port, and media on it.
    let (recv, mut bob) = transport(&worker, &client, "bob", Direction::Recv, IceProtocol::Tcp).await;
    let video = consume(&worker, &client, "bob", &recv, &camera).await;
    alice.send_rtp(&rtp(1, KEYFRAME)).await.unwrap();
    let seen = receive_all(&mut bob, ssrc_of(&video), Duration::from_millis(500)).await;
    assert_eq!(seen.len(), 1, "the keyframe reached the new transport");
    worker.shutdown().await;
}

/// How long until the worker closes `stream` (reads end), at most `within`.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|_| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_check_are_closed_and_the_caps_hold() {
    let limits = TcpLimits { first_request_timeout: Duration::from_millis(400), max_pending: 6, ..TcpLimits::default() };
    let (worker, client) = worker((47730, 47739), limits).await;
    join(&worker, &client, &["alice"]).await;
    let created = client.create_transport(&worker.endpoint(), ROOM, &PeerId::from("alice"), Direction::Send).await.unwrap();
    let address = tcp_address(&created);
    let crypto = rtc::crypto::default_provider().unwrap();
    let ufrag = created.ice_parameters.username_fragment.clone();

    // Silent: closed at the first-check timeout.
    let mut silent = TcpStream::connect(address).await.unwrap();
    // Not STUN: closed at once.
    let mut garbage = TcpStream::connect(address).await.unwrap();
    garbage.write_all(&frame(&[22, 0xfe, 0xfd, 0, 0, 0, 0])).await.unwrap();
    // An oversize frame: refused from its header.
    let mut oversize = TcpStream::connect(address).await.unwrap();
    oversize.write_all(&60_000u16.to_be_bytes()).await.unwrap();
    // A check for a transport that does not exist.
    let mut stranger = TcpStream::connect(address).await.unwrap();
    stranger.write_all(&frame(&binding_request("nosuchufrag", "b", "some-password-0123456789", true, crypto.crypto()))).await.unwrap();
    // The right ufrag with the wrong password: it reaches the transport, whose ICE refuses it,
    // and is closed at the timeout.
    let mut forger = TcpStream::connect(address).await.unwrap();
    forger.write_all(&frame(&binding_request(&ufrag, "b", "not-the-password-0123456", true, crypto.crypto()))).await.unwrap();

    let quick = Duration::from_millis(300);
    let started = Instant::now();
    assert!(closed_after(&mut garbage, quick).await.is_some(), "not STUN");
    assert!(closed_after(&mut oversize, quick).await.is_some(), "oversize");
    assert!(closed_after(&mut stranger, quick).await.is_some(), "unknown ufrag");
    closed_after(&mut silent, WAIT).await.expect("the silent one is closed");
    let silent_for = started.elapsed();
    closed_after(&mut forger, WAIT).await.expect("the forger is closed");
    let forger_for = started.elapsed();
    println!("first-check timeout 400 ms: silent closed after {silent_for:?}, forged check after {forger_for:?}");
    for (reason, at_least) in [
        ("tcp_no_stun_request", 2),
        ("tcp_frame_too_large", 1),
        ("tcp_unknown_ufrag", 1),
        ("tcp_no_valid_check", 1),
        ("stun_bad_integrity", 1),
    ] {
        wait_for_drops(&worker, reason, at_least).await;
    }

    // At most six connections wait for their first frame: a seventh is closed at once.
    let mut waiting = Vec::new();
    for _ in 0..6 {
        waiting.push(TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut seventh = TcpStream::connect(address).await.unwrap();
    assert!(closed_after(&mut seventh, Duration::from_millis(200)).await.is_some(), "past max_pending");
    wait_for_drops(&worker, "tcp_too_many_pending", 1).await;
    // The legitimate peer still gets in once the waiting ones are gone.
    drop(waiting);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut alice = TestPeer::for_transport_over(&created, IceProtocol::Tcp).await.unwrap();
    client.connect_transport(&worker.endpoint(), ROOM, &created.id, &alice.dtls_parameters()).await.unwrap();
    alice.connect(WAIT).await.expect("connects over TCP");
    assert_eq!(worker.engine.counters.tcp.connections_open.load(Ordering::Relaxed), 1, "every refused one released");
    worker.shutdown().await;
}
