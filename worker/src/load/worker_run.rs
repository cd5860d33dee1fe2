//! One measured run against a worker: set up publishers and subscribers over the REST API and
//! real ICE/DTLS, let media flow, and read the worker's CPU, memory and forwarding counters
//! around a measuring window.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::{ConsumeRequest, JoinRequest, ProduceRequest};
use crate::client::WorkerClient;
use crate::load::client_transport::ClientTransport;
use crate::load::net::{self, BatchReceiver};
use crate::load::procfs;
use crate::load::publisher::{spawn_publisher, Publisher, PublisherReport};
use crate::load::receiver::{spawn_receiver, ReceiverReport, Subscriber};
use crate::load::reception::StreamReception;
use crate::load::synthetic::{AudioSource, VideoSource};
use crate::load::{LoadError, Phase, RECEIVE_BUFFER};
use crate::media::dtls::DtlsIdentity;
use crate::room::{Direction, PeerId, ProducerId};
use crate::rtp::{MediaKind, RtpParameters, Ssrc};
use crate::testing::{chrome_device_capabilities, chrome_opus_parameters, chrome_vp8_parameters};

/// The worker under test.
#[derive(Debug, Clone)]
pub struct WorkerTarget {
    /// REST endpoint, e.g. `http://127.0.0.1:3000`.
    pub endpoint: String,
    /// Its process, for CPU and memory accounting.
    pub pid: u32,
    pub api_token: Option<String>,
    /// The CPU the worker has to itself, if it is pinned: its busy time is then read too.
    pub cpu: Option<usize>,
}

/// The worker's figures over the measuring window.
#[derive(Debug, Clone)]
pub struct WorkerRun {
    pub subscribers: usize,
    pub publishers: usize,
    pub window: Duration,
    /// Packets the worker forwarded (its own counter).
    pub forwarded: u64,
    /// CPU seconds of the whole worker process, and of its media threads alone.
    pub cpu_seconds: f64,
    pub media_cpu_seconds: Option<f64>,
    /// Seconds the worker's own CPU ran tasks, when it is pinned ([`procfs::cpu_busy_seconds`]).
    pub core_busy_seconds: Option<f64>,
    /// Worker RSS with the publishers only, and with every subscriber connected and receiving.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub setup: Duration,
    pub receiver: ReceiverReport,
    pub publisher: PublisherReport,
}

/// How long a producer's video stream takes to fill its retransmission buffer, and a second.
fn producer_buffers_fill() -> Duration {
    let slots = crate::rtcp::RetransmissionBuffer::DEFAULT_CAPACITY as f64;
    Duration::from_secs_f64(slots / crate::load::report::video_packets_per_second() + 1.0)
}

/// How many subscribers handshake at once (the worker's media thread does their DTLS).
const HANDSHAKE_CHUNK: usize = 200;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent REST calls while setting up subscribers.
const SETUP_CONCURRENCY: usize = 16;

fn api(e: impl std::fmt::Display) -> LoadError {
    LoadError::Worker(e.to_string())
}

/// Sets up `publishers` publishers and `subscribers` subscribers in a new room, lets media
/// flow for `warmup`, then measures for `window`.
pub async fn run_worker(
    target: &WorkerTarget,
    subscribers: usize,
    publishers: usize,
    warmup: Duration,
    window: Duration,
) -> Result<WorkerRun, LoadError> {
    let started = Instant::now();
    let client = WorkerClient::new(target.api_token.clone(), Duration::from_secs(30));
    let endpoint = target.endpoint.as_str();
    let room = format!("load-{subscribers}-{}", std::process::id());
    let provider = rtc::crypto::default_provider().map_err(|e| LoadError::Srtp(e.to_string()))?;
    let identity = DtlsIdentity::generate(provider).map_err(|e| LoadError::Srtp(e.to_string()))?;

    // Publishers: a send transport each, camera and microphone.
    let mut senders = Vec::new();
    let mut producers: Vec<ProducerId> = Vec::new();
    for i in 0..publishers {
        let peer = PeerId::from(format!("pub-{i}").as_str());
        client.join(endpoint, &room, &JoinRequest::new(peer.as_str())).await.map_err(api)?;
        let created = client.create_transport(endpoint, &room, &peer, Direction::Send).await.map_err(api)?;
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let mut transport = ClientTransport::new(&created, identity.clone(), Instant::now())
            .ok_or_else(|| LoadError::Worker("the transport has no candidate".into()))?;
        client.connect_transport(endpoint, &room, &created.id, &transport.dtls_parameters()).await.map_err(api)?;
        let socket = tokio::task::spawn_blocking(move || handshake(&socket, std::slice::from_mut(&mut transport), 1).map(|_| (socket, transport)))
            .await
            .map_err(|_| LoadError::Thread("handshake".into()))??;
        let (socket, mut transport) = socket;
        let (video, audio) = (publisher_parameters(chrome_vp8_parameters(), i), publisher_parameters(chrome_opus_parameters(), i));
        for (kind, parameters) in [(MediaKind::Video, &video), (MediaKind::Audio, &audio)] {
            let request = ProduceRequest {
                peer_id: peer.clone(),
                transport_id: created.id.clone(),
                kind,
                rtp_parameters: parameters.clone(),
                app_data: Default::default(),
                paused: false,
            };
            producers.push(client.produce(endpoint, &room, &request).await.map_err(api)?.id);
        }
        let source = |p: &RtpParameters| (p.encodings[0].ssrc.map_or(0, |s| s.0), p.codecs[0].payload_type.0, p.mid.clone().unwrap_or_default());
        let ((vs, vpt, vmid), (as_, apt, amid)) = (source(&video), source(&audio));
        let remote = transport.remote;
        senders.push(Publisher {
            socket,
            remote,
            srtp: transport.srtp.take().ok_or_else(|| LoadError::Handshake(1, 1, "publisher".into()))?,
            video: VideoSource::new(vs, vpt, vmid),
            audio: AudioSource::new(as_, apt, amid),
            consent: Some((created.ice_parameters.username_fragment.clone(), created.ice_parameters.password.clone())),
            transport_sequence: 0,
        });
    }
    let phase = Arc::new(AtomicU8::new(Phase::Quiet as u8));
    let publisher = spawn_publisher(senders, phase.clone())?;
    // Media first, until the producers' own buffers are full, so they are in the baseline and
    // not counted as the consumers' memory: a video stream's retransmission buffer (768 KiB)
    // is touched slot by slot as packets arrive, and fills in about 5.5 s.
    phase.store(Phase::Warmup as u8, Ordering::Release);
    tokio::time::sleep(producer_buffers_fill()).await;
    phase.store(Phase::Quiet as u8, Ordering::Release);
    let rss_before_kib = procfs::rss_kib(target.pid).ok_or(LoadError::Proc(target.pid))?;

    // Subscribers: join, a recv transport, connect, consume every producer.
    let setups = futures::stream::iter(0..subscribers)
        .map(|i| {
            let (client, room, producers, identity) = (&client, &room, &producers, identity.clone());
            async move {
                let peer = PeerId::from(format!("sub-{i}").as_str());
                client.join(endpoint, room, &JoinRequest::new(peer.as_str())).await.map_err(api)?;
                let created = client.create_transport(endpoint, room, &peer, Direction::Recv).await.map_err(api)?;
                let transport = ClientTransport::new(&created, identity, Instant::now())
                    .ok_or_else(|| LoadError::Worker("the transport has no candidate".into()))?;
                client.connect_transport(endpoint, room, &created.id, &transport.dtls_parameters()).await.map_err(api)?;
                let mut ssrcs = Vec::new();
                for producer in producers {
                    let request = ConsumeRequest {
                        peer_id: peer.clone(),
                        transport_id: created.id.clone(),
                        producer_id: producer.clone(),
                        rtp_capabilities: chrome_device_capabilities(),
                        paused: false,
                    };
                    let consumer = client.consume(endpoint, room, &request).await.map_err(api)?;
                    ssrcs.push(consumer.rtp_parameters.encodings.first().and_then(|e| e.ssrc).map_or(0, |s| s.0));
                }
                let consent = (transport.remote, created.ice_parameters.username_fragment.clone(), created.ice_parameters.password.clone());
                Ok::<_, LoadError>((transport, ssrcs, consent))
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut transports = Vec::new();
    let mut streams = Vec::new();
    for setup in setups {
        let (transport, ssrcs, consent) = setup?;
        transports.push(transport);
        streams.push((ssrcs, consent));
    }

    // ICE and DTLS for every subscriber, all on one client socket.
    let receive = UdpSocket::bind("127.0.0.1:0")?;
    net::set_receive_buffer(&receive, RECEIVE_BUFFER);
    net::accept_coalesced(&receive)?;
    let (receive, transports) = tokio::task::spawn_blocking(move || {
        handshake(&receive, &mut transports, HANDSHAKE_CHUNK)?;
        Ok::<_, LoadError>((receive, transports))
    })
    .await
    .map_err(|_| LoadError::Thread("handshake".into()))??;
    let receivers: Vec<Subscriber> = transports
        .into_iter()
        .zip(streams)
        .map(|(mut transport, (ssrcs, consent))| Subscriber {
            source_port: transport.remote.port(),
            inbound: transport.srtp.take().map(|s| s.inbound).expect("the handshake connected every transport"),
            streams: ssrcs.into_iter().map(|s| (s, StreamReception::default())).collect(),
            consent: Some(consent),
        })
        .collect();
    let setup = started.elapsed();
    let receiver = spawn_receiver(receive, receivers, phase.clone())?;

    phase.store(Phase::Warmup as u8, Ordering::Release);
    tokio::time::sleep(warmup).await;
    let read = |pid| -> Result<(f64, Option<f64>), LoadError> {
        Ok((procfs::process_cpu_seconds(pid).ok_or(LoadError::Proc(pid))?, procfs::threads_cpu_seconds(pid, "fanout-media")))
    };
    let forwarded_before = forwarded_packets(endpoint).await?;
    let (cpu_before, media_before) = read(target.pid)?;
    let core_before = target.cpu.and_then(procfs::cpu_busy_seconds);
    phase.store(Phase::Measure as u8, Ordering::Release);
    let measuring = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu_after, media_after) = read(target.pid)?;
    let core_after = target.cpu.and_then(procfs::cpu_busy_seconds);
    let forwarded_after = forwarded_packets(endpoint).await?;
    let window = measuring.elapsed();
    let rss_after_kib = procfs::rss_kib(target.pid).ok_or(LoadError::Proc(target.pid))?;
    phase.store(Phase::Stop as u8, Ordering::Release);
    let receiver = receiver.join().map_err(|_| LoadError::Thread("receiver".into()))?;
    let publisher = publisher.join().map_err(|_| LoadError::Thread("publisher".into()))?;
    client.close_room(endpoint, &room).await.map_err(api)?;
    Ok(WorkerRun {
        subscribers,
        publishers,
        window,
        forwarded: forwarded_after.saturating_sub(forwarded_before),
        cpu_seconds: cpu_after - cpu_before,
        media_cpu_seconds: media_after.zip(media_before).map(|(a, b)| a - b),
        core_busy_seconds: core_after.zip(core_before).map(|(a, b)| a - b),
        rss_before_kib,
        rss_after_kib,
        setup,
        receiver,
        publisher,
    })
}

/// Publisher `i`'s parameters: the Chrome fixture with SSRCs of its own.
fn publisher_parameters(mut parameters: RtpParameters, i: usize) -> RtpParameters {
    for encoding in &mut parameters.encodings {
        encoding.ssrc = encoding.ssrc.map(|s| Ssrc(s.0.wrapping_add(16 * i as u32)));
        if let Some(rtx) = encoding.rtx.as_mut() {
            rtx.ssrc = Ssrc(rtx.ssrc.0.wrapping_add(16 * i as u32));
        }
    }
    parameters
}

/// The worker's `fanout_worker_packets_forwarded_total`.
async fn forwarded_packets(endpoint: &str) -> Result<u64, LoadError> {
    let text = reqwest::get(format!("{endpoint}/metrics")).await.map_err(api)?.text().await.map_err(api)?;
    text.lines()
        .find_map(|l| l.strip_prefix("fanout_worker_packets_forwarded_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| LoadError::Worker("no fanout_worker_packets_forwarded_total in /metrics".into()))
}

/// Runs ICE and DTLS for `transports` over one socket until all are connected, at most
/// `at_once` handshakes in flight. Media reaching connected ones meanwhile is opened too.
pub fn handshake(socket: &UdpSocket, transports: &mut [ClientTransport], at_once: usize) -> Result<(), LoadError> {
    let by_port: HashMap<u16, usize> = transports.iter().enumerate().map(|(i, t)| (t.remote.port(), i)).collect();
    socket.set_read_timeout(Some(Duration::from_millis(5)))?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut batch = BatchReceiver::default();
    let mut out = Vec::new();
    let mut started = 0;
    loop {
        let now = Instant::now();
        while started < transports.len() && transports[..started].iter().filter(|t| !t.is_connected()).count() < at_once.max(1) {
            started += 1;
        }
        for t in transports[..started].iter_mut().filter(|t| !t.is_connected()) {
            t.poll_transmit(now, &mut out);
            for datagram in out.drain(..) {
                socket.send_to(&datagram, t.remote)?;
            }
        }
        let pending = transports.iter().filter(|t| !t.is_connected()).count();
        let failed: Vec<&str> = transports.iter().filter_map(|t| t.failure()).collect();
        if !failed.is_empty() || (pending > 0 && now > deadline) {
            let reason = failed.first().map_or("timed out".to_string(), |f| f.to_string());
            return Err(LoadError::Handshake(pending, transports.len(), reason));
        }
        if pending == 0 {
            return Ok(());
        }
        if let Ok(n) = batch.receive(socket) {
            let now = Instant::now();
            for i in 0..n {
                let (datagrams, port) = batch.get(i);
                if let Some(&index) = by_port.get(&port) {
                    for data in datagrams {
                        transports[index].on_datagram(data, now);
                    }
                }
            }
        }
    }
}
