//! A subscriber behind a real bottleneck settles on a lower simulcast layer.
//!
//! The test builds the link itself (as root): a network namespace joined to this one by a veth
//! pair, addresses on a private /30, and a `tc tbf` limit on the worker's end of the pair, so
//! what the worker sends that subscriber queues and drops in the kernel as on a slow downlink.
//! The worker (in-process, real UDP) listens on the host end. A synthetic Chrome publishes VP8
//! with three simulcast encodings (RIDs r0-r2, about 0.15, 0.45 and 1.2 Mbps); two Rust
//! subscribers consume it and send transport-wide feedback as Chrome does (the same webrtc-rs
//! recorder the worker uses towards publishers): one inside the namespace, one on the host with
//! a clean path. The link is limited after both reached the top layer; the limited subscriber
//! must move below it within seconds and then receive without sustained loss, the other keep the
//! top layer. The figures (layer, bitrate and loss per second) are printed, not asserted.
#![cfg(all(feature = "media", feature = "client"))]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest};
use fanout_worker::bwe::TransportCcFeedback;
use fanout_worker::client::WorkerClient;
use fanout_worker::media::peer::TestPeer;
use fanout_worker::media::rtp_packet::RtpView;
use fanout_worker::room::{ConsumerCreated, ConsumerId, Direction, PeerId, ProducerId};
use fanout_worker::rtp::header_extension_uri as uri;
use fanout_worker::rtp::MediaKind;
use fanout_worker::server::{start, WorkerConfig};
use fanout_worker::testing::{chrome_device_capabilities, chrome_vp8_simulcast_parameters};

const ROOM: &str = "bottleneck";
const WAIT: Duration = Duration::from_secs(5);
/// The limit put on the constrained subscriber's downlink: the middle encoding fits, not even
/// the top encoding's lowest temporal layer.
const LIMIT_KBIT: u32 = 500;
/// Unconstrained, then limited, for this long each.
const FREE: Duration = Duration::from_secs(14);
const LIMITED: Duration = Duration::from_secs(11);

/// The publisher's extension ids (the fixture's: mid 9, transport-wide sequence 3, rid 10).
const MID_ID: u8 = 9;
const TCC_ID: u8 = 3;
const RID_ID: u8 = 10;
const SSRCS: [u32; 3] = [0x1111_0000, 0x2222_0000, 0x3333_0000];
/// Packets per frame by temporal layer (T0, T1, T2), and their size, per encoding: about 190,
/// 450 and 1080 kbps at 30 frames/s, of which T0 (the reference frames, larger as an encoder
/// makes them) about 40, 50 and 55%.
const SHAPE: [([usize; 3], usize); 3] = [([2, 1, 1], 620), ([4, 2, 1], 940), ([10, 4, 2], 1000)];

/// A namespace, a veth pair into it and its addresses; removed on drop.
struct Link {
    namespace: String,
    host_if: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Link {
    fn create() -> Result<Link, String> {
        let id = std::process::id();
        // A /30 per process, in a block private networks rarely use.
        let subnet = (id % 16_000) * 4;
        let octets = |last: u32| Ipv4Addr::new(10, 213, ((subnet + last) >> 8) as u8, ((subnet + last) & 0xff) as u8);
        let link = Link {
            namespace: format!("fanout-bwe-{id}"),
            host_if: format!("fbw{id}h"),
            host_ip: octets(1),
            peer_ip: octets(2),
        };
        let peer_if = format!("fbw{id}p");
        let (ns, host, peer) = (link.namespace.as_str(), link.host_if.as_str(), peer_if.as_str());
        run(&["ip", "netns", "add", ns])?;
        // From here on, drop removes what was made.
        run(&["ip", "link", "add", host, "type", "veth", "peer", "name", peer])?;
        run(&["ip", "link", "set", peer, "netns", ns])?;
        run(&["ip", "addr", "add", &format!("{}/30", link.host_ip), "dev", host])?;
        run(&["ip", "link", "set", host, "up"])?;
        run(&["ip", "netns", "exec", ns, "ip", "addr", "add", &format!("{}/30", link.peer_ip), "dev", peer])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", peer, "up"])?;
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        Ok(link)
    }

    /// Limits what the host sends into the namespace to `kbit`: a token bucket of 10 KB with a
    /// 60 ms queue behind it, dropping what does not fit (a slow downlink's buffer).
    fn limit(&self, kbit: u32) -> Result<(), String> {
        run(&["tc", "qdisc", "replace", "dev", &self.host_if, "root", "tbf", "rate", &format!("{kbit}kbit"), "burst", "10kb", "latency", "60ms"])
    }

    fn drops(&self) -> String {
        let out = Command::new("tc").args(["-s", "qdisc", "show", "dev", &self.host_if]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default()
    }

    /// A UDP socket bound inside the namespace: opened by a thread that entered it (a socket
    /// stays in the namespace it was made in).
    fn socket(&self) -> std::net::UdpSocket {
        let path = format!("/var/run/netns/{}", self.namespace);
        let addr = SocketAddr::new(IpAddr::V4(self.peer_ip), 0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace's handle");
            // SAFETY: setns on a file descriptor we own; it only changes this thread's namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = std::net::UdpSocket::bind(addr).expect("a socket in the namespace");
            socket.set_nonblocking(true).unwrap();
            socket
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_if]);
        let _ = run(&["ip", "netns", "del", &self.namespace]);
    }
}

/// One RTP packet of the publisher's encoding `layer`.
struct Encoder {
    sequence: [u16; 3],
    picture_id: [u16; 3],
    tl0: [u8; 3],
    transport_sequence: u16,
    frame: u32,
    keyframe_wanted: [bool; 3],
}

impl Encoder {
    fn frame(&mut self, layer: usize) -> Vec<Vec<u8>> {
        // L1T3: temporal ids 0, 2, 1, 2.
        let tid = [0u8, 2, 1, 2][(self.frame % 4) as usize];
        let key = std::mem::take(&mut self.keyframe_wanted[layer]) || self.frame % 90 == 0;
        let (counts, size) = SHAPE[layer];
        let count = counts[usize::from(if key { 0 } else { tid })];
        if tid == 0 {
            self.tl0[layer] = self.tl0[layer].wrapping_add(1);
        }
        let tid = if key { 0 } else { tid };
        let picture_id = self.picture_id[layer];
        self.picture_id[layer] = (picture_id + 1) & 0x7fff;
        let mut packets = Vec::new();
        for i in 0..count {
            let sequence = self.sequence[layer];
            self.sequence[layer] = sequence.wrapping_add(1);
            self.transport_sequence = self.transport_sequence.wrapping_add(1);
            let mut p = vec![0x90, if i + 1 == count { 0x80 | 96 } else { 96 }];
            p.extend_from_slice(&sequence.to_be_bytes());
            p.extend_from_slice(&(self.frame * 3000).to_be_bytes());
            p.extend_from_slice(&SSRCS[layer].to_be_bytes());
            // One-byte extensions: mid "1", rid "rN", transport-wide sequence number.
            let rid = [b'r', b'0' + layer as u8];
            let mut ext = vec![MID_ID << 4, b'1', (RID_ID << 4) | 1, rid[0], rid[1], (TCC_ID << 4) | 1];
            ext.extend_from_slice(&self.transport_sequence.to_be_bytes());
            while ext.len() % 4 != 0 {
                ext.push(0);
            }
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&ext);
            // VP8 payload descriptor: X, S on the first packet; I (15-bit picture id), L, T.
            p.push(if i == 0 { 0x90 } else { 0x80 });
            p.push(0xE0);
            p.extend_from_slice(&(0x8000 | picture_id).to_be_bytes());
            p.push(self.tl0[layer]);
            p.push((tid << 6) | if tid > 0 { 0x20 } else { 0 });
            let header: [u8; 10] = match (i, key) {
                (0, true) => [0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01],
                (0, false) => [0x51, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0],
                _ => [0; 10],
            };
            p.extend_from_slice(&header);
            // What the subscriber reads back: the encoding this came from.
            p.push(layer as u8);
            p.resize(size, 0xAB);
            packets.push(p);
        }
        packets
    }
}

/// Publishes the three encodings at 30 frames/s until `stop`, answering PLI and FIR with a
/// keyframe of the encoding asked for.
async fn publish(mut peer: TestPeer, stop: Arc<AtomicBool>) {
    let mut encoder =
        Encoder { sequence: [100, 5000, 9000], picture_id: [10, 2000, 7000], tl0: [0; 3], transport_sequence: 0, frame: 0, keyframe_wanted: [true; 3] };
    let start = tokio::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for layer in 0..3 {
            for packet in encoder.frame(layer) {
                peer.send_rtp(&packet).await.expect("the publisher sends");
            }
        }
        encoder.frame += 1;
        let next = start + Duration::from_millis(u64::from(encoder.frame) * 1000 / 30);
        while let Ok(Some((true, rtcp))) = peer.recv(next.saturating_duration_since(tokio::time::Instant::now())).await {
            for ssrc in keyframe_requests(&rtcp) {
                if let Some(layer) = SSRCS.iter().position(|&s| s == ssrc) {
                    encoder.keyframe_wanted[layer] = true;
                }
            }
        }
    }
}

/// The media SSRCs that PLIs and FIRs in a compound packet ask keyframes of.
fn keyframe_requests(compound: &[u8]) -> Vec<u32> {
    let mut asked = Vec::new();
    let mut rest = compound;
    while rest.len() >= 12 {
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        let word = |at: usize| rest.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (rest[1], rest[0] & 0x1f) {
            (206, 1) => asked.extend(word(8)),
            (206, 4) => asked.extend(word(12)),
            _ => {}
        }
        let Some(next) = rest.get(len..) else { break };
        rest = next;
    }
    asked
}

/// What a subscriber saw in one second.
#[derive(Debug, Default, Clone)]
struct Second {
    bytes: usize,
    packets: u64,
    lost: u64,
    /// Packets per encoding.
    layers: [u64; 3],
}

impl Second {
    /// The encoding most of the second's packets came from.
    fn layer(&self) -> Option<usize> {
        (self.packets > 0).then(|| (0..3).max_by_key(|&l| self.layers[l]).unwrap_or(0))
    }
}

/// Receives the consumer's stream until `stop`, sending transport-wide feedback every 100 ms
/// as Chrome does; returns what arrived second by second.
async fn subscribe(mut peer: TestPeer, consumer: ConsumerCreated, stop: Arc<AtomicBool>) -> Vec<Second> {
    let ssrc = consumer.rtp_parameters.encodings[0].ssrc.expect("the consumer's SSRC").0;
    let tcc_id = consumer.rtp_parameters.header_extensions.iter().find(|e| e.uri == uri::TRANSPORT_WIDE_CC).expect("transport-cc negotiated").id;
    let mut feedback = TransportCcFeedback::new(tcc_id);
    let start = Instant::now();
    let mut seconds = vec![Second::default()];
    let mut highest: Option<u16> = None;
    while !stop.load(Ordering::Relaxed) {
        let received = peer.recv(Duration::from_millis(10)).await.expect("the subscriber receives");
        let now = Instant::now();
        if let Some((false, packet)) = received {
            let view = RtpView::parse(&packet).expect("RTP");
            if let Some(&[a, b]) = view.extension(&packet, tcc_id) {
                feedback.on_packet(RtpView::ssrc(&packet), u16::from_be_bytes([a, b]), now);
            }
            if RtpView::ssrc(&packet) == ssrc {
                let second = ((now - start).as_secs() as usize).min(60);
                if seconds.len() <= second {
                    seconds.resize(second + 1, Second::default());
                }
                let s = &mut seconds[second];
                s.bytes += packet.len();
                s.packets += 1;
                if let Some(&layer) = view.payload(&packet).get(16) {
                    s.layers[usize::from(layer).min(2)] += 1;
                }
                // Sequence numbers stay continuous across layer switches: a gap is loss.
                let sequence = RtpView::sequence(&packet);
                if let Some(prev) = highest {
                    let gap = sequence.wrapping_sub(prev);
                    if (1..0x8000).contains(&gap) {
                        s.lost += u64::from(gap - 1);
                        highest = Some(sequence);
                    }
                } else {
                    highest = Some(sequence);
                }
            }
        }
        for report in feedback.poll_feedback(now) {
            peer.send_rtcp(&report).await.expect("feedback is sent");
        }
    }
    seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_a_slow_link_moves_to_a_lower_simulcast_layer_and_the_other_keeps_the_top() {
    let link = Link::create().unwrap_or_else(|e| panic!("this test builds a network namespace and a veth pair, which needs root (CAP_NET_ADMIN) and iproute2: {e}"));
    let mut config = WorkerConfig::loopback((47400, 47419));
    config.listen_ip = IpAddr::V4(link.host_ip);
    config.announced_ip = IpAddr::V4(link.host_ip);
    let worker = start(config).await.expect("worker starts");
    let client = WorkerClient::new(None, Duration::from_secs(5));
    let endpoint = worker.endpoint();
    for name in ["alice", "near", "far"] {
        client.join(&endpoint, ROOM, &JoinRequest::new(name)).await.expect("joins");
    }
    let host_socket = || async { tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(link.host_ip), 0)).await.expect("a host socket") };

    let alice = PeerId::from("alice");
    let send = client.create_transport(&endpoint, ROOM, &alice, Direction::Send).await.expect("send transport");
    let mut publisher = TestPeer::with_socket(&TestPeer::network_of(&send), host_socket().await).expect("publisher");
    client.connect_transport(&endpoint, ROOM, &send.id, &publisher.dtls_parameters()).await.expect("connect");
    publisher.connect(WAIT).await.expect("the publisher's ICE and DTLS complete");
    let produce = ProduceRequest {
        peer_id: alice.clone(),
        transport_id: send.id.clone(),
        kind: MediaKind::Video,
        rtp_parameters: chrome_vp8_simulcast_parameters(),
        app_data: Default::default(),
        paused: false,
    };
    let camera: ProducerId = client.produce(&endpoint, ROOM, &produce).await.expect("simulcast camera").id;

    let mut subscribers = Vec::new();
    for (name, constrained) in [("near", false), ("far", true)] {
        let peer_id = PeerId::from(name);
        let recv = client.create_transport(&endpoint, ROOM, &peer_id, Direction::Recv).await.expect("recv transport");
        let socket = if constrained { tokio::net::UdpSocket::from_std(link.socket()).unwrap() } else { host_socket().await };
        let mut peer = TestPeer::with_socket(&TestPeer::network_of(&recv), socket).expect("subscriber");
        client.connect_transport(&endpoint, ROOM, &recv.id, &peer.dtls_parameters()).await.expect("connect");
        peer.connect(WAIT).await.expect("the subscriber's ICE and DTLS complete");
        let consume = ConsumeRequest {
            peer_id,
            transport_id: recv.id.clone(),
            producer_id: camera.clone(),
            rtp_capabilities: chrome_device_capabilities(),
            paused: false,
        };
        let consumer = client.consume(&endpoint, ROOM, &consume).await.expect("consume");
        subscribers.push((peer, consumer));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish(publisher, stop.clone()));
    let ids: Vec<ConsumerId> = subscribers.iter().map(|(_, c)| c.id.clone()).collect();
    let receiving: Vec<_> = subscribers.into_iter().map(|(peer, consumer)| tokio::spawn(subscribe(peer, consumer, stop.clone()))).collect();

    // The worker's view, once a second: each consumer's current layers and send bitrate.
    let started = Instant::now();
    let mut worker_view = Vec::new();
    let mut limited_at = None;
    while started.elapsed() < FREE + LIMITED {
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed() - Duration::from_secs(started.elapsed().as_secs()))).await;
        if limited_at.is_none() && started.elapsed() >= FREE {
            link.limit(LIMIT_KBIT).expect("tc limits the link");
            limited_at = Some(started.elapsed().as_secs() as usize);
        }
        let mut row = Vec::new();
        for id in &ids {
            let stats = client.consumer_stats(&endpoint, ROOM, id).await.expect("consumer stats");
            row.push((stats.current_layers.map(|l| l.spatial_layer), stats.bitrate, format!("{:?}", stats.state)));
        }
        worker_view.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();
    let mut seen = Vec::new();
    for task in receiving {
        seen.push(task.await.unwrap());
    }
    let limited_at = limited_at.unwrap();
    let qdisc = link.drops();
    worker.shutdown().await;
    drop(link);

    let (near, far) = (&seen[0], &seen[1]);
    println!("constrained link: {LIMIT_KBIT} kbit/s tbf on the far subscriber's downlink from {limited_at} s ({qdisc})");
    println!(" s | near: layer kbps lost | far: layer kbps lost | worker: near layer/kbps, far layer/kbps state");
    for s in 0..near.len().max(far.len()) {
        let cell = |v: &[Second]| {
            v.get(s).map_or("-".to_owned(), |x| format!("{:>5} {:>5} {:>4}", x.layer().map_or("-".into(), |l| format!("r{l}")), x.bytes * 8 / 1000, x.lost))
        };
        let w = worker_view.get(s).map_or(String::new(), |row| {
            row.iter().map(|(l, b, st)| format!("{}/{} {st}", l.map_or("-".into(), |l| format!("r{l}")), b / 1000)).collect::<Vec<_>>().join(", ")
        });
        println!("{s:>2} | {} | {} | {w}", cell(near), cell(far));
    }

    // Both reached the top layer on the free link.
    let top_before = |v: &[Second]| v[..limited_at].iter().any(|s| s.layer() == Some(2));
    assert!(top_before(near) && top_before(far), "both subscribers reach r2 before the limit");
    // Within 5 s of the limit the far one is below the top, and stays there.
    let settled = limited_at + 5;
    let tail = &far[settled..far.len() - 1];
    assert!(!tail.is_empty() && tail.iter().all(|s| s.layer().is_some_and(|l| l < 2)), "the far subscriber stays below r2 after {settled} s");
    // Without sustained loss: what was lost settling, not after.
    let (lost, packets) = tail.iter().fold((0, 0), |(l, p), s| (l + s.lost, p + s.packets + s.lost));
    println!("far subscriber after settling: {lost} of {packets} packets lost");
    assert!(lost * 100 <= packets * 5, "loss after settling stays under 5%: {lost} of {packets}");
    // The near one keeps the top layer (a dip of its own estimate, on a busy machine, aside).
    let near_tail = &near[settled..near.len() - 1];
    let on_top = near_tail.iter().filter(|s| s.layer() == Some(2)).count();
    println!("near subscriber after {settled} s: r2 in {on_top} of {} s", near_tail.len());
    assert!(on_top * 10 >= near_tail.len() * 7, "the near subscriber keeps r2");
}
