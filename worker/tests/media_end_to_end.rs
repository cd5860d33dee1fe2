//! Real media through a real worker: the worker started in-process (UDP engine, control
//! plane, REST API), driven over HTTP by the typed client as signalling drives it, with two
//! Rust peers doing ICE, DTLS and SRTP over loopback UDP like browsers under mediasoup-client.
#![cfg(all(feature = "media", feature = "client"))]

use std::time::Duration;

use fanout_worker::testing::pli_media_ssrc;
use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest};
use fanout_worker::client::WorkerClient;
use fanout_worker::media::peer::TestPeer;
use fanout_worker::media::rtp_packet::RtpView;
use fanout_worker::room::{ConsumerCreated, Direction, PeerId, ProducerId, RoomEvent};
use fanout_worker::rtp::MediaKind;
use fanout_worker::server::{start, RunningWorker, WorkerConfig};
use fanout_worker::testing::{chrome_device_capabilities, chrome_opus_parameters, chrome_vp8_parameters};
use futures::StreamExt;

const ROOM: &str = "physics";
const VP8_SSRC: u32 = 2471283948;
const OPUS_SSRC: u32 = 1129421238;
const KEYFRAME: &[u8] = &[0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0xAA, 0xBB];
const DELTA: &[u8] = &[0x10, 0x51, 0x01, 0x00, 0xCC];
const WAIT: Duration = Duration::from_secs(3);

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

struct Call {
    worker: RunningWorker,
    client: WorkerClient,
    alice: TestPeer,
    bob: TestPeer,
    camera: ProducerId,
    microphone: ProducerId,
    video: ConsumerCreated,
    audio: ConsumerCreated,
}

impl Call {
    fn endpoint(&self) -> String {
        self.worker.endpoint()
    }
}

/// Alice publishes camera and microphone; Bob consumes both. Everything connected.
async fn call(ports: (u16, u16)) -> Call {
    let worker = start(WorkerConfig::loopback(ports)).await.expect("worker starts");
    let client = WorkerClient::new(None, Duration::from_secs(5));
    let endpoint = worker.endpoint();
    for name in ["alice", "bob"] {
        client.join(&endpoint, ROOM, &JoinRequest::new(name)).await.expect("joins");
    }
    let (alice_id, bob_id) = (PeerId::from("alice"), PeerId::from("bob"));

    let send = client.create_transport(&endpoint, ROOM, &alice_id, Direction::Send).await.expect("send transport");
    let mut alice = TestPeer::for_transport(&send).await.expect("alice's peer");
    client.connect_transport(&endpoint, ROOM, &send.id, &alice.dtls_parameters()).await.expect("connect");
    alice.connect(WAIT).await.expect("alice's ICE and DTLS complete");

    let produce = |kind, rtp_parameters| ProduceRequest {
        peer_id: alice_id.clone(),
        transport_id: send.id.clone(),
        kind,
        rtp_parameters,
        app_data: Default::default(),
        paused: false,
    };
    let camera = client.produce(&endpoint, ROOM, &produce(MediaKind::Video, chrome_vp8_parameters())).await.expect("camera").id;
    let microphone = client.produce(&endpoint, ROOM, &produce(MediaKind::Audio, chrome_opus_parameters())).await.expect("mic").id;

    let recv = client.create_transport(&endpoint, ROOM, &bob_id, Direction::Recv).await.expect("recv transport");
    let mut bob = TestPeer::for_transport(&recv).await.expect("bob's peer");
    client.connect_transport(&endpoint, ROOM, &recv.id, &bob.dtls_parameters()).await.expect("connect");
    bob.connect(WAIT).await.expect("bob's ICE and DTLS complete");
    let consume = |producer_id: &ProducerId| ConsumeRequest {
        peer_id: bob_id.clone(),
        transport_id: recv.id.clone(),
        producer_id: producer_id.clone(),
        rtp_capabilities: chrome_device_capabilities(),
        paused: false,
    };
    let video = client.consume(&endpoint, ROOM, &consume(&camera)).await.expect("consume video");
    let audio = client.consume(&endpoint, ROOM, &consume(&microphone)).await.expect("consume audio");
    Call { worker, client, alice, bob, camera, microphone, video, audio }
}

fn ssrc_of(consumer: &ConsumerCreated) -> u32 {
    consumer.rtp_parameters.encodings[0].ssrc.expect("consumer SSRC").0
}

fn pt_of(consumer: &ConsumerCreated) -> u8 {
    consumer.rtp_parameters.codecs[0].payload_type.0
}

/// Receives RTP until one with `ssrc` arrives.
async fn next_rtp_of(peer: &mut TestPeer, ssrc: u32) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let packet = peer.recv_rtp(left).await.expect("receives").unwrap_or_else(|| panic!("no RTP for SSRC {ssrc}"));
        if RtpView::ssrc(&packet) == ssrc {
            return packet;
        }
    }
}

/// Receives RTCP until `find` accepts one.
async fn next_rtcp<T>(peer: &mut TestPeer, mut find: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peer.recv(left).await.expect("receives") {
            Some((true, packet)) => {
                if let Some(found) = find(&packet) {
                    return found;
                }
            }
            Some((false, _)) => {}
            None => panic!("the expected RTCP did not arrive"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_and_audio_flow_from_one_peer_to_another_with_the_consumers_ssrc_and_payload_type() {
    let mut c = call((47100, 47119)).await;
    c.alice.send_rtp(&rtp(96, 1000, 90_000, VP8_SSRC, KEYFRAME)).await.unwrap();
    let video = next_rtp_of(&mut c.bob, ssrc_of(&c.video)).await;
    assert_eq!(RtpView::payload_type(&video), pt_of(&c.video));
    assert_eq!(RtpView::parse(&video).unwrap().payload(&video), KEYFRAME);

    c.alice.send_rtp(&rtp(111, 50, 48_000, OPUS_SSRC, b"opus frame")).await.unwrap();
    let audio = next_rtp_of(&mut c.bob, ssrc_of(&c.audio)).await;
    assert_eq!(RtpView::payload_type(&audio), pt_of(&c.audio));
    assert_eq!(RtpView::parse(&audio).unwrap().payload(&audio), b"opus frame");

    let stats = c.client.stats(&c.endpoint()).await.unwrap();
    assert_eq!((stats.rooms, stats.peers, stats.producers, stats.consumers), (1, 2, 2, 2));
    let metrics = reqwest::get(format!("{}/metrics", c.endpoint())).await.unwrap().text().await.unwrap();
    let forwarded: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fanout_worker_packets_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forwarded counter in {metrics}"));
    assert!(forwarded >= 2, "forwarded {forwarded}");
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pli_from_the_receiver_reaches_the_sender() {
    let mut c = call((47120, 47139)).await;
    c.alice.send_rtp(&rtp(96, 1, 1, VP8_SSRC, KEYFRAME)).await.unwrap();
    next_rtp_of(&mut c.bob, ssrc_of(&c.video)).await;
    // Wait out the keyframe request the new consumer itself triggered (one per second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut pli = vec![0x81, 206, 0, 2, 0, 0, 0, 0x0B];
    pli.extend_from_slice(&ssrc_of(&c.video).to_be_bytes());
    c.bob.send_rtcp(&pli).await.unwrap();
    let asked = next_rtcp(&mut c.alice, pli_media_ssrc).await;
    assert_eq!(asked, VP8_SSRC, "the PLI names Alice's own SSRC");
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_the_receiver_lost_is_recovered_by_nack_over_rtx() {
    let mut c = call((47140, 47159)).await;
    c.alice.send_rtp(&rtp(96, 10, 1, VP8_SSRC, KEYFRAME)).await.unwrap();
    let first = next_rtp_of(&mut c.bob, ssrc_of(&c.video)).await;
    c.alice.send_rtp(&rtp(96, 11, 1, VP8_SSRC, DELTA)).await.unwrap();
    let second = next_rtp_of(&mut c.bob, ssrc_of(&c.video)).await;
    assert_eq!(RtpView::sequence(&second), RtpView::sequence(&first).wrapping_add(1));

    // Bob "lost" the second packet: NACK it (PID = its sequence number, BLP = 0).
    let lost = RtpView::sequence(&second);
    let mut nack = vec![0x81, 205, 0, 3, 0, 0, 0, 0x0B];
    nack.extend_from_slice(&ssrc_of(&c.video).to_be_bytes());
    nack.extend_from_slice(&lost.to_be_bytes());
    nack.extend_from_slice(&[0, 0]);
    c.bob.send_rtcp(&nack).await.unwrap();
    let rtx_ssrc = c.video.rtp_parameters.encodings[0].rtx.expect("RTX negotiated").ssrc.0;
    let rtx = next_rtp_of(&mut c.bob, rtx_ssrc).await;
    let payload = RtpView::parse(&rtx).unwrap().payload(&rtx).to_vec();
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), lost, "RTX carries the lost sequence number");
    assert_eq!(&payload[2..], DELTA, "and the lost payload");
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_producer_closes_its_consumer_with_an_event_and_stops_the_media() {
    let mut c = call((47160, 47179)).await;
    let endpoint = c.endpoint();
    let mut events = Box::pin(c.client.events(&endpoint, ROOM).await.expect("subscribes"));
    c.client.close_producer(&endpoint, ROOM, &c.camera).await.expect("closes");
    let event = tokio::time::timeout(WAIT, events.next()).await.expect("an event").expect("open").expect("readable");
    assert!(
        matches!(&event, RoomEvent::ConsumerClosed { consumer_id, .. } if *consumer_id == c.video.id),
        "{event:?}"
    );
    c.alice.send_rtp(&rtp(96, 5, 1, VP8_SSRC, KEYFRAME)).await.unwrap();
    c.alice.send_rtp(&rtp(111, 5, 1, OPUS_SSRC, b"still audio")).await.unwrap();
    let audio = next_rtp_of(&mut c.bob, ssrc_of(&c.audio)).await;
    assert_eq!(RtpView::parse(&audio).unwrap().payload(&audio), b"still audio", "the other producer is undisturbed");
    assert!(c.bob.recv_rtp(Duration::from_millis(300)).await.unwrap().is_none(), "no more video");
    let _ = c.microphone;
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_releases_everything_on_the_worker() {
    let c = call((47180, 47199)).await;
    let endpoint = c.endpoint();
    for name in ["alice", "bob"] {
        c.client.leave(&endpoint, ROOM, &PeerId::from(name)).await.expect("leaves");
    }
    let stats = c.client.stats(&endpoint).await.unwrap();
    assert_eq!((stats.peers, stats.transports, stats.producers, stats.consumers), (0, 0, 0, 0));
    for _ in 0..100 {
        if c.worker.engine.ports_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.worker.engine.ports_in_use(), 0, "every UDP port returned");
    c.worker.shutdown().await;
}
