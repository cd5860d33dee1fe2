//! The machine's limit for forwarding: a minimal relay that does only what no SFU can avoid
//! per packet. It receives a datagram, SRTP-decrypts it once, then SRTP-encrypts and sends it
//! once per subscriber, each from its own socket as the worker's transports do, and with the
//! worker's sending technique (a frame's copies for one subscriber in one segmented send). No
//! routing table, no rewriting, no RTCP. The worker's cost is reported as a ratio to this
//! one, measured in the same run with the same publishers and the same receiving subscribers.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::load::net::{self, local};
use crate::load::procfs::{pin_this_thread, this_thread_cpu_seconds};
use crate::load::publisher::{spawn_publisher, Publisher, PublisherReport};
use crate::load::receiver::{spawn_receiver, Link, ReceiverReport, Subscriber};
use crate::load::reception::StreamReception;
use crate::load::synthetic::{AudioSource, VideoSource};
use crate::load::{tcp, LoadError, Media, Phase, Transport, RECEIVE_BUFFER};
use crate::media::dtls::SrtpSession;
use crate::media::egress::{self, SegmentBatch};
use crate::media::ice_tcp::{SendOutcome, SendQueue, SEND_QUEUE_LIMIT};
use crate::media::srtp::GcmRtpSealer;

/// The relay's figures over the measuring window.
#[derive(Debug, Clone)]
pub struct RelayRun {
    pub subscribers: usize,
    pub window: Duration,
    /// Copies sent.
    pub forwarded: u64,
    /// CPU seconds of the relay thread (user + system, so the kernel's UDP work counts).
    pub cpu_seconds: f64,
    /// Busy seconds of the relay's CPU, when it is pinned (see `WorkerRun::core_busy_seconds`).
    pub core_busy_seconds: Option<f64>,
    pub receiver: ReceiverReport,
    pub publisher: PublisherReport,
}

const PROFILE: ProtectionProfile = ProtectionProfile::AeadAes128Gcm;

/// Random SRTP master keys for one direction.
struct Keys {
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl Keys {
    fn random() -> Self {
        let mut key = vec![0u8; PROFILE.key_len()];
        let mut salt = vec![0u8; PROFILE.salt_len()];
        rand::rng().fill_bytes(&mut key);
        rand::rng().fill_bytes(&mut salt);
        Keys { key, salt }
    }

    fn context(&self) -> Result<Context, LoadError> {
        let provider = rtc::crypto::default_provider().map_err(|e| LoadError::Srtp(e.to_string()))?;
        Context::new(&self.key, &self.salt, PROFILE, None, None, provider.crypto()).map_err(|e| LoadError::Srtp(e.to_string()))
    }

    /// The in-place sealer the worker's forwarding path uses, so both pay the same crypto.
    fn sealer(&self) -> Result<GcmRtpSealer, LoadError> {
        let provider = rtc::crypto::default_provider().map_err(|e| LoadError::Srtp(e.to_string()))?;
        GcmRtpSealer::new(provider.crypto(), &self.key, &self.salt).map_err(|e| LoadError::Srtp(e.to_string()))
    }
}

/// Runs the relay with `subscribers` receivers of `publishers` publishers: `warmup`, then the
/// measuring `window`. The relay thread runs on `relay_cpu` when given.
pub fn run_relay(
    subscribers: usize,
    publishers: usize,
    media: Media,
    warmup: Duration,
    window: Duration,
    relay_cpu: Option<usize>,
) -> Result<RelayRun, LoadError> {
    let relay_in = UdpSocket::bind("127.0.0.1:0")?;
    let receive = UdpSocket::bind("127.0.0.1:0")?;
    net::set_receive_buffer(&receive, RECEIVE_BUFFER);
    // Like the worker's subscribers (the relay sends datagram by datagram, so nothing arrives
    // coalesced: the same socket, for the same measure).
    net::accept_coalesced(&receive)?;
    let client = local(&receive);

    let mut senders = Vec::new();
    let mut inbound = Vec::new();
    // Each video SSRC's encoding: a subscriber gets the packets of its own and of no other.
    let mut layers: HashMap<u32, usize> = HashMap::new();
    for i in 0..publishers {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let keys = Keys::random();
        inbound.push((local(&socket).port(), keys.context()?));
        let ssrc = 0x1000_0000 + 16 * i as u32;
        let video: Vec<VideoSource> = match media.simulcast {
            Some(_) => (0..media.encodings()).map(|layer| VideoSource::simulcast(ssrc + 2 + layer as u32, 96, "1", layer)).collect(),
            None => vec![VideoSource::new(ssrc, 96, "1")],
        };
        for (layer, v) in video.iter().enumerate() {
            layers.insert(v.ssrc, layer);
        }
        senders.push(Publisher {
            socket,
            remote: local(&relay_in),
            // The relay sends no RTCP; the publisher still needs something to open it with.
            srtp: SrtpSession { profile: PROFILE, inbound: Keys::random().context()?, outbound: keys.context()?, rtp_sealer: None },
            video,
            audio: AudioSource::new(ssrc + 1, 111, "0"),
            consent: None,
            transport_sequence: 0,
        });
    }
    let mut outputs = Vec::new();
    let mut receivers = Vec::new();
    let mut pairs = match media.transport {
        Transport::Tcp => tcp::connected_pairs(subscribers)?,
        Transport::Udp => Vec::new(),
    };
    let mut connections = Vec::new();
    for index in 0..subscribers {
        let keys = Keys::random();
        let layer = media.layer_of(index);
        let (link, source_port) = match pairs.pop() {
            Some((relay_end, subscriber_end)) => {
                connections.push(subscriber_end);
                (Output::Tcp(relay_end, SendQueue::new(SEND_QUEUE_LIMIT)), 0)
            }
            None => {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                let port = local(&socket).port();
                (Output::Udp(socket), port)
            }
        };
        receivers.push(Subscriber {
            source_port,
            inbound: keys.context()?,
            streams: senders
                .iter()
                .flat_map(|p| [(p.video[layer.min(p.video.len() - 1)].ssrc, StreamReception::default()), (p.audio.ssrc, StreamReception::default())])
                .collect(),
            consent: None,
            outbound: None,
        });
        outputs.push(RelayOutput { link, sealer: keys.sealer()?, layer });
    }
    let link = match media.transport {
        Transport::Tcp => Link::Tcp(connections),
        Transport::Udp => Link::Udp(receive),
    };

    let phase = Arc::new(AtomicU8::new(Phase::Warmup as u8));
    let receiver = spawn_receiver(link, receivers, phase.clone())?;
    let relay = {
        let phase = phase.clone();
        std::thread::Builder::new().name("load-relay".into()).spawn(move || {
            if let Some(cpu) = relay_cpu {
                pin_this_thread(cpu);
            }
            relay_loop(relay_in, inbound, layers, outputs, client, phase)
        })?
    };
    let publisher = spawn_publisher(senders, phase.clone())?;
    std::thread::sleep(warmup);
    let core_before = relay_cpu.and_then(crate::load::procfs::cpu_busy_seconds);
    phase.store(Phase::Measure as u8, Ordering::Release);
    std::thread::sleep(window);
    let core_after = relay_cpu.and_then(crate::load::procfs::cpu_busy_seconds);
    phase.store(Phase::Stop as u8, Ordering::Release);
    let joined = |what: &str| LoadError::Thread(what.to_string());
    let (forwarded, cpu_seconds) = relay.join().map_err(|_| joined("relay"))?;
    let publisher = publisher.join().map_err(|_| joined("publisher"))?;
    let receiver = receiver.join().map_err(|_| joined("receiver"))?;
    let core_busy_seconds = core_after.zip(core_before).map(|(a, b)| a - b);
    Ok(RelayRun { subscribers, window, forwarded, cpu_seconds, core_busy_seconds, receiver, publisher })
}

/// Datagrams the relay takes from its socket before sending their copies, as the worker does.
const RECEIVE_BATCH: usize = 16;

/// Where one subscriber's copies go.
enum Output {
    /// Its own socket, to the subscribers' shared one.
    Udp(UdpSocket),
    /// Its own connection, written as the worker writes a TCP leg.
    Tcp(TcpStream, SendQueue),
}

struct RelayOutput {
    link: Output,
    sealer: GcmRtpSealer,
    /// The simulcast encoding it gets.
    layer: usize,
}

/// The relay itself. Returns the copies sent and the thread's CPU seconds in the window.
///
/// What is queued is taken as one batch (a frame's packets), each packet decrypted once, and
/// then each subscriber gets its copies of the batch sealed and sent together: one
/// segmented send ([`crate::media::egress`]) where the sizes allow, as the worker sends; over
/// TCP one framed write per copy, as the worker writes. The minimal work, done the way the
/// worker does it, so the ratio compares the two fairly.
fn relay_loop(
    socket: UdpSocket,
    mut inbound: Vec<(u16, Context)>,
    layers: HashMap<u32, usize>,
    mut outputs: Vec<RelayOutput>,
    client: SocketAddr,
    phase: Arc<AtomicU8>,
) -> (u64, f64) {
    let _ = socket.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 2048];
    // Each packet with its encoding (None: audio, for everyone).
    let mut plain: Vec<(Option<usize>, Vec<u8>)> = Vec::new();
    let mut copy = Vec::with_capacity(2048);
    let mut batch = SegmentBatch::default();
    let mut segmentation = true;
    let (mut forwarded, mut measuring) = (0u64, false);
    let (mut forwarded_at_start, mut cpu_at_start) = (0, 0.0);
    loop {
        match Phase::from(phase.load(Ordering::Acquire)) {
            Phase::Stop => break,
            Phase::Measure if !measuring => {
                measuring = true;
                forwarded_at_start = forwarded;
                cpu_at_start = this_thread_cpu_seconds();
            }
            _ => {}
        }
        plain.clear();
        // Wait (up to the read timeout) for the first datagram, then take what is queued.
        let _ = socket.set_nonblocking(false);
        while plain.len() < RECEIVE_BATCH {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { break };
            let _ = socket.set_nonblocking(true);
            let Some((_, open)) = inbound.iter_mut().find(|(port, _)| *port == from.port()) else { continue };
            if let Ok(packet) = open.decrypt_rtp(&buf[..n]) {
                let layer = layers.get(&crate::media::rtp_packet::RtpView::ssrc(&packet)).copied();
                plain.push((layer, packet.to_vec()));
            }
        }
        for output in outputs.iter_mut() {
            let RelayOutput { link, sealer, layer } = output;
            for (_, packet) in plain.iter().filter(|(of, _)| of.is_none_or(|of| of == *layer)) {
                copy.clear();
                copy.extend_from_slice(packet);
                if sealer.seal(&mut copy).is_err() {
                    continue;
                }
                match link {
                    Output::Udp(out) => {
                        if !batch.push(&copy, client) {
                            forwarded += egress::send_batch(out.as_raw_fd(), &batch, &mut segmentation);
                            batch.clear();
                            let _ = batch.push(&copy, client);
                        }
                    }
                    Output::Tcp(stream, queue) => {
                        let outcome = queue.send(&copy, |slices| stream.write_vectored(slices));
                        forwarded += matches!(outcome, SendOutcome::Written | SendOutcome::Queued) as u64;
                    }
                }
            }
            match link {
                Output::Udp(out) => {
                    forwarded += egress::send_batch(out.as_raw_fd(), &batch, &mut segmentation);
                    batch.clear();
                }
                // What the socket did not take goes when it takes more (the worker's leg
                // task flushes on writability; here at the next batch).
                Output::Tcp(stream, queue) => {
                    if !queue.is_empty() {
                        let _ = queue.flush(|slices| stream.write_vectored(slices));
                    }
                }
            }
        }
    }
    (forwarded - forwarded_at_start, this_thread_cpu_seconds() - cpu_at_start)
}
