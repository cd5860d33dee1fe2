//! One measured run against a worker: set up publishers and subscribers over the REST API and
//! real ICE/DTLS (subscribers over UDP or ICE-TCP), let media flow, and read the worker's CPU,
//! memory and forwarding counters around a measuring window.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::api::{ConsumeRequest, JoinRequest, ProduceRequest, SetPreferredLayersRequest};
use crate::client::WorkerClient;
use crate::load::client_transport::ClientTransport;
use crate::load::net::{self, BatchReceiver};
use crate::load::procfs;
use crate::load::publisher::{spawn_publisher, Publisher, PublisherReport};
use crate::load::receiver::{spawn_receiver, Link, ReceiverReport, Subscriber};
use crate::load::reception::StreamReception;
use crate::load::synthetic::{AudioSource, VideoSource};
use crate::load::tcp::Connection;
use crate::load::{LoadError, Media, Phase, Transport, RECEIVE_BUFFER};
use crate::media::dtls::DtlsIdentity;
use crate::room::{Direction, IceProtocol, PeerId, ProducerId, TransportProtocols};
use crate::rtp::{MediaKind, RtpParameters, Ssrc};
use crate::testing::{chrome_device_capabilities, chrome_opus_parameters, chrome_vp8_parameters, chrome_vp8_simulcast_parameters};

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
    pub media: Media,
    pub window: Duration,
    /// Packets the worker forwarded (its own counter: copies sent to consumers).
    pub forwarded: u64,
    /// RTP packets the publishers sent it in the window (every simulcast encoding).
    pub received: u64,
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

/// How long the phases of a run last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Publishers alone, before the memory baseline ([`Timing::new`]).
    pub buffers_fill: Duration,
    /// Media to every subscriber, not counted.
    pub warmup: Duration,
    /// Counted.
    pub window: Duration,
}

impl Timing {
    /// The publishers send until the slowest of their video streams has filled its
    /// retransmission buffer (and a second more), so the producers' buffers are in the
    /// memory baseline and not counted as the consumers' memory: a video stream's buffer
    /// (768 KiB) is touched slot by slot as packets arrive. That is about 6.4 s for the
    /// single-layer stream and 17.5 s for a simulcast publisher's lowest encoding.
    pub fn new(media: &Media, warmup: Duration, window: Duration) -> Self {
        let slots = crate::rtcp::RetransmissionBuffer::DEFAULT_CAPACITY as f64;
        let buffers_fill = Duration::from_secs_f64(slots / media.slowest_stream_packets_per_second() + 1.0);
        Timing { buffers_fill, warmup, window }
    }
}

/// The SSRC of publisher `publisher`'s simulcast encoding `layer` (the browser picks them;
/// the worker learns them by RID).
fn simulcast_ssrc(publisher: usize, layer: usize) -> u32 {
    0x5100_0000 + 16 * publisher as u32 + layer as u32
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
    media: Media,
    timing: Timing,
) -> Result<WorkerRun, LoadError> {
    let Timing { buffers_fill, warmup, window } = timing;
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
        let camera = if media.simulcast.is_some() { chrome_vp8_simulcast_parameters() } else { chrome_vp8_parameters() };
        let (video, audio) = (publisher_parameters(camera, i), publisher_parameters(chrome_opus_parameters(), i));
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
        let video_sources = match media.simulcast {
            // Encodings named by RID only, as mediasoup-client signals them: the SSRCs are the
            // publisher's, and the worker binds them from the first packets.
            Some(_) => (0..media.encodings()).map(|layer| VideoSource::simulcast(simulcast_ssrc(i, layer), vpt, vmid.clone(), layer)).collect(),
            None => vec![VideoSource::new(vs, vpt, vmid)],
        };
        senders.push(Publisher {
            socket,
            remote,
            srtp: transport.srtp.take().ok_or_else(|| LoadError::Handshake(1, 1, "publisher".into()))?,
            video: video_sources,
            audio: AudioSource::new(as_, apt, amid),
            consent: Some((created.ice_parameters.username_fragment.clone(), created.ice_parameters.password.clone())),
            transport_sequence: 0,
        });
    }
    // One recording of the room, from its first packet to the end of the run.
    const RECORDING: &str = "load";
    if media.record {
        client.start_recording(endpoint, &room, RECORDING).await.map_err(api)?;
    }
    let phase = Arc::new(AtomicU8::new(Phase::Quiet as u8));
    let publisher = spawn_publisher(senders, phase.clone())?;
    // Media first, until the producers' own buffers are full ([`Timing::new`]).
    phase.store(Phase::Warmup as u8, Ordering::Release);
    tokio::time::sleep(buffers_fill).await;
    phase.store(Phase::Quiet as u8, Ordering::Release);
    let rss_before_kib = procfs::rss_kib(target.pid).ok_or(LoadError::Proc(target.pid))?;

    // Subscribers: join, a recv transport, connect, consume every producer.
    let setups = futures::stream::iter(0..subscribers)
        .map(|i| {
            let (client, room, producers, identity) = (&client, &room, &producers, identity.clone());
            async move {
                let peer = PeerId::from(format!("sub-{i}").as_str());
                client.join(endpoint, room, &JoinRequest::new(peer.as_str())).await.map_err(api)?;
                let protocols = match media.transport {
                    Transport::Udp => TransportProtocols::default(),
                    Transport::Tcp => TransportProtocols { enable_udp: Some(false), enable_tcp: Some(true), ..Default::default() },
                };
                let created = client.create_transport_over(endpoint, room, &peer, Direction::Recv, &protocols).await.map_err(api)?;
                let wanted = match media.transport {
                    Transport::Udp => IceProtocol::Udp,
                    Transport::Tcp => IceProtocol::Tcp,
                };
                if created.ice_candidates.first().map(|c| c.protocol) != Some(wanted) {
                    return Err(LoadError::Worker(format!(
                        "the worker offered no {wanted:?} candidate first (is its ICE-TCP listener on? --enable-tcp, --rtc-tcp-port)"
                    )));
                }
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
                    let layer = media.layer_of(i);
                    if consumer.kind == MediaKind::Video && media.simulcast.is_some() && layer + 1 < media.encodings() {
                        let preferred = SetPreferredLayersRequest { spatial_layer: layer as u8, temporal_layer: None };
                        client.set_consumer_preferred_layers(endpoint, room, &consumer.id, &preferred).await.map_err(api)?;
                    }
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

    eprintln!("  {subscribers} subscribers set up over the REST API after {:.1} s; ICE and DTLS next", started.elapsed().as_secs_f64());
    // ICE and DTLS for every subscriber, all on one client socket (or each on its own
    // ICE-TCP connection).
    let (link, transports) = tokio::task::spawn_blocking(move || {
        let link = match media.transport {
            Transport::Udp => {
                let receive = UdpSocket::bind("127.0.0.1:0")?;
                net::set_receive_buffer(&receive, RECEIVE_BUFFER);
                net::accept_coalesced(&receive)?;
                handshake(&receive, &mut transports, HANDSHAKE_CHUNK)?;
                Link::Udp(receive)
            }
            Transport::Tcp => Link::Tcp(handshake_tcp(&mut transports, HANDSHAKE_CHUNK)?),
        };
        Ok::<_, LoadError>((link, transports))
    })
    .await
    .map_err(|_| LoadError::Thread("handshake".into()))??;
    let receivers: Vec<Subscriber> = transports
        .into_iter()
        .zip(streams)
        .map(|(mut transport, (ssrcs, consent))| {
            let srtp = transport.srtp.take().expect("the handshake connected every transport");
            Subscriber {
                source_port: transport.remote.port(),
                inbound: srtp.inbound,
                streams: ssrcs.into_iter().map(|s| (s, StreamReception::default())).collect(),
                consent: Some(consent),
                outbound: Some(srtp.outbound),
            }
        })
        .collect();
    let setup = started.elapsed();
    let receiver = spawn_receiver(link, receivers, phase.clone())?;

    phase.store(Phase::Warmup as u8, Ordering::Release);
    tokio::time::sleep(warmup).await;
    let read = |pid| -> Result<(f64, Option<f64>), LoadError> {
        Ok((procfs::process_cpu_seconds(pid).ok_or(LoadError::Proc(pid))?, procfs::threads_cpu_seconds(pid, "fanout-media")))
    };
    let forwarded_before = forwarded_packets(endpoint).await?;
    let (cpu_before, media_before) = read(target.pid)?;
    let core_before = target.cpu.and_then(procfs::cpu_busy_seconds);
    let recorder_before = procfs::threads_cpu_seconds(target.pid, "fanout-recorder");
    phase.store(Phase::Measure as u8, Ordering::Release);
    let measuring = Instant::now();
    tokio::time::sleep(window).await;
    let (cpu_after, media_after) = read(target.pid)?;
    let core_after = target.cpu.and_then(procfs::cpu_busy_seconds);
    let recorder_cpu = procfs::threads_cpu_seconds(target.pid, "fanout-recorder").zip(recorder_before).map(|(a, b)| a - b);
    let forwarded_after = forwarded_packets(endpoint).await?;
    let window = measuring.elapsed();
    let rss_after_kib = procfs::rss_kib(target.pid).ok_or(LoadError::Proc(target.pid))?;
    phase.store(Phase::Stop as u8, Ordering::Release);
    let receiver = receiver.join().map_err(|_| LoadError::Thread("receiver".into()))?;
    let publisher = publisher.join().map_err(|_| LoadError::Thread("publisher".into()))?;
    if media.record {
        let recording = client.stop_recording(endpoint, &room, RECORDING).await.map_err(api)?;
        let bytes: u64 = recording.files.iter().map(|f| f.bytes).sum();
        let longest = recording.files.iter().map(|f| f.duration_ms).max().unwrap_or(0);
        eprintln!(
            "  recording: {:?}, {} files, {:.1} MB, {:.1} s, {} packets dropped by the recorder's queue, recorder thread CPU {} in the window{}",
            recording.state,
            recording.files.len(),
            bytes as f64 / 1e6,
            longest as f64 / 1e3,
            recording.dropped_packets,
            recorder_cpu.map_or("-".into(), |s| format!("{:.3} s", s)),
            recording.error.map(|e| format!(", error {}: {}", e.code, e.message)).unwrap_or_default()
        );
    }
    client.close_room(endpoint, &room).await.map_err(api)?;
    Ok(WorkerRun {
        subscribers,
        publishers,
        media,
        window,
        forwarded: forwarded_after.saturating_sub(forwarded_before),
        received: publisher.packets_sent_measured,
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
        if handshakes_over(transports, now, deadline)? {
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

/// Whether every transport has connected; an error once one failed, or some are still
/// pending past `deadline`. The verdict both handshakes (UDP and ICE-TCP) reach each round.
fn handshakes_over(transports: &[ClientTransport], now: Instant, deadline: Instant) -> Result<bool, LoadError> {
    let pending = transports.iter().filter(|t| !t.is_connected()).count();
    let failed = transports.iter().find_map(|t| t.failure());
    if failed.is_some() || (pending > 0 && now > deadline) {
        let reason = failed.map_or("timed out".to_string(), |f| f.to_string());
        return Err(LoadError::Handshake(pending, transports.len(), reason));
    }
    Ok(pending == 0)
}

/// [`handshake`] over ICE-TCP: each transport gets its own connection to its candidate (the
/// worker's TCP port) when its handshake starts, at most `at_once` in flight. Returns the
/// connections in the transports' order.
pub fn handshake_tcp(transports: &mut [ClientTransport], at_once: usize) -> Result<Vec<Connection>, LoadError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut connections: Vec<Connection> = Vec::with_capacity(transports.len());
    let mut out = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let total = transports.len();
    loop {
        let now = Instant::now();
        while connections.len() < transports.len() && transports[..connections.len()].iter().filter(|t| !t.is_connected()).count() < at_once.max(1) {
            connections.push(Connection::connect(transports[connections.len()].remote)?);
        }
        for (t, c) in transports.iter_mut().zip(connections.iter_mut()).filter(|(t, _)| !t.is_connected()) {
            t.poll_transmit(now, &mut out);
            for datagram in out.drain(..) {
                c.send(&datagram);
            }
        }
        if handshakes_over(transports, now, deadline)? {
            return Ok(connections);
        }
        std::thread::sleep(Duration::from_millis(2));
        let now = Instant::now();
        let pending = transports.iter().filter(|t| !t.is_connected()).count();
        for (t, c) in transports.iter_mut().zip(connections.iter_mut()) {
            c.read_frames(&mut buffer, |frame| t.on_datagram(frame, now))
                .map_err(|e| LoadError::Handshake(pending, total, format!("the worker closed an ICE-TCP connection: {e}")))?;
        }
    }
}
