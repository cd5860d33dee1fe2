//! The subscribers' side: many SRTP receivers behind one socket. A datagram is matched to its
//! subscriber by the port it came from (each worker transport, and each relay subscriber,
//! sends from its own port), decrypted, and checked: a known SSRC, an intact stamp, the
//! sequence accounting and the latency since the publisher stamped it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::srtp::context::Context;

use crate::load::net::{self, BatchReceiver};
use crate::load::reception::{LatencyHistogram, ReceptionCounts, StreamReception};
use crate::load::synthetic::Stamp;
use crate::load::{epoch_ns, Phase};
use crate::media::ice::binding_request;
use crate::media::rtp_packet::RtpView;

/// One subscriber as the receive loop knows it.
pub struct Subscriber {
    /// The port its media comes from.
    pub source_port: u16,
    /// Decrypts what it receives.
    pub inbound: Context,
    /// The SSRCs it should receive (its consumers'), with their accounting.
    pub streams: Vec<(u32, StreamReception)>,
    /// ICE consent refreshes toward the worker: (worker address, ufrag, password).
    pub consent: Option<(SocketAddr, String, String)>,
}

/// What the subscribers saw during the measuring window.
#[derive(Debug, Clone, Default)]
pub struct ReceiverReport {
    pub packets: u64,
    pub bytes: u64,
    pub counts: ReceptionCounts,
    pub latency: LatencyHistogram,
    /// Decrypted packets with an SSRC the subscriber does not consume or without an intact stamp.
    pub corrupt: u64,
    /// Datagrams that failed SRTP authentication.
    pub undecryptable: u64,
    /// Datagrams from a port no subscriber has.
    pub strangers: u64,
    /// Datagrams the kernel dropped for the receive socket (its buffer was full): loss caused
    /// by the load program, not the worker.
    pub socket_drops: u64,
    /// Seconds the receiving thread spent handling datagrams in the window (its polls of an
    /// empty socket left out): near the window's length, the load program, not the worker,
    /// limits what the subscribers see.
    pub busy_seconds: f64,
}

/// Runs [`receive_loop`] on a thread of its own.
pub fn spawn_receiver(socket: UdpSocket, subscribers: Vec<Subscriber>, phase: Arc<AtomicU8>) -> std::io::Result<std::thread::JoinHandle<ReceiverReport>> {
    std::thread::Builder::new().name("load-receive".into()).spawn(move || receive_loop(socket, subscribers, phase))
}

/// Receives until `phase` says stop; counts only while it says measure.
pub fn receive_loop(socket: UdpSocket, mut subscribers: Vec<Subscriber>, phase: Arc<AtomicU8>) -> ReceiverReport {
    let mut by_port = vec![u32::MAX; 65536];
    for (i, s) in subscribers.iter().enumerate() {
        by_port[s.source_port as usize] = i as u32;
    }
    let provider = rtc::crypto::default_provider().ok();
    let mut batch = BatchReceiver::default();
    let mut report = ReceiverReport::default();
    let mut measuring = false;
    let mut drops_at_start = 0;
    let mut busy = Duration::ZERO;
    let mut next_consent = 0usize;
    let mut consent_started = Instant::now();
    loop {
        match Phase::from(phase.load(Ordering::Acquire)) {
            Phase::Stop => break,
            Phase::Measure if !measuring => {
                measuring = true;
                report = ReceiverReport::default();
                drops_at_start = net::socket_drops(&socket).unwrap_or(0);
                busy = Duration::ZERO;
                for s in &mut subscribers {
                    for (_, stream) in &mut s.streams {
                        stream.restart_window();
                    }
                }
            }
            _ => {}
        }
        // Consent refreshes, spread evenly over the interval.
        if let Some(provider) = provider.as_ref() {
            let interval = crate::load::client_transport::CONSENT_INTERVAL;
            let due = ((consent_started.elapsed().as_secs_f64() / interval.as_secs_f64()) * subscribers.len() as f64) as usize;
            while next_consent < due.min(subscribers.len()) {
                if let Some((to, ufrag, password)) = &subscribers[next_consent].consent {
                    let _ = socket.send_to(&binding_request(ufrag, "loadpeer", password, true, provider.crypto()), to);
                }
                next_consent += 1;
            }
            if next_consent >= subscribers.len() && consent_started.elapsed() >= interval {
                next_consent = 0;
                consent_started = Instant::now();
            }
        }
        // Polled, never waited for: a receiver asleep in the kernel has to be woken for
        // each datagram, and on loopback that wake-up is work done on the sender's core,
        // which would charge the worker (or the relay) for the load program's sleep. Across a
        // real network the subscriber's wake-up happens on the subscriber's machine.
        let n = match batch.poll(&socket) {
            Ok(0) | Err(_) => {
                // The publisher threads share this core: let them run when they are due.
                std::thread::yield_now();
                continue;
            }
            Ok(n) => n,
        };
        let handling = Instant::now();
        let now_ns = epoch_ns();
        for i in 0..n {
            let (datagrams, port) = batch.get(i);
            for data in datagrams {
                if !data.first().is_some_and(|b| (128..=191).contains(b)) || data.get(1).is_some_and(|pt| (192..=223).contains(pt)) {
                    continue; // STUN answers, DTLS, RTCP.
                }
                let index = by_port[port as usize];
                let Some(subscriber) = subscribers.get_mut(index as usize) else {
                    report.strangers += 1;
                    continue;
                };
                let Ok(plain) = subscriber.inbound.decrypt_rtp(data) else {
                    report.undecryptable += 1;
                    continue;
                };
                if !measuring {
                    // Keep sequence continuity through the warm-up.
                    let ssrc = RtpView::ssrc(&plain);
                    if let Some((_, stream)) = subscriber.streams.iter_mut().find(|(s, _)| *s == ssrc) {
                        stream.on_packet(RtpView::sequence(&plain));
                    }
                    continue;
                }
                report.packets += 1;
                report.bytes += data.len() as u64;
                let ssrc = RtpView::ssrc(&plain);
                let stamp = RtpView::parse(&plain).and_then(|view| Stamp::find(view.payload(&plain)));
                match (subscriber.streams.iter_mut().find(|(s, _)| *s == ssrc), stamp) {
                    (Some((_, stream)), Some(stamp)) => {
                        stream.on_packet(RtpView::sequence(&plain));
                        report.latency.record(now_ns.saturating_sub(stamp.sent_ns));
                    }
                    _ => report.corrupt += 1,
                }
            }
        }
        busy += handling.elapsed();
    }
    for s in &subscribers {
        for (_, stream) in &s.streams {
            report.counts += stream.counts();
        }
    }
    report.busy_seconds = busy.as_secs_f64();
    report.socket_drops = net::socket_drops(&socket).unwrap_or(0).saturating_sub(drops_at_start);
    report
}
