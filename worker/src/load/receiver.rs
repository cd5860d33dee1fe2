//! The subscribers' side: many SRTP receivers behind one socket, or each on its own ICE-TCP
//! connection ([`Link`]). Over UDP a datagram is matched to its subscriber by the port it
//! came from (each worker transport, and each relay subscriber, sends from its own port).
//! Each is decrypted and checked: a known SSRC, an intact stamp, the sequence accounting and
//! the latency since the publisher stamped it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::srtp::context::Context;

use crate::load::net::{self, BatchReceiver};
use crate::load::tcp::{Connection, Readiness};
use crate::load::reception::{LatencyHistogram, ReceptionCounts, StreamReception};
use crate::load::synthetic::Stamp;
use crate::load::{epoch_ns, Phase};
use crate::media::ice::binding_request;
use crate::media::rtp_packet::RtpView;

/// How the subscribers receive.
pub enum Link {
    /// One socket for all; a datagram's subscriber is the one whose `source_port` sent it.
    Udp(UdpSocket),
    /// A connection per subscriber, in the subscribers' order.
    Tcp(Vec<Connection>),
}

/// One subscriber as the receive loop knows it.
pub struct Subscriber {
    /// The port its media comes from (over UDP).
    pub source_port: u16,
    /// Decrypts what it receives.
    pub inbound: Context,
    /// The SSRCs it should receive (its consumers'), with their accounting.
    pub streams: Vec<(u32, StreamReception)>,
    /// ICE consent refreshes toward the worker: (worker address, ufrag, password). Over TCP
    /// they go on the subscriber's connection.
    pub consent: Option<(SocketAddr, String, String)>,
    /// Encrypts its RTCP receiver reports to the worker (one a second, as a browser's video
    /// receiver sends them, [`REPORT_INTERVAL`]), sent where consent goes. None for the
    /// relay, which reads no RTCP.
    pub outbound: Option<Context>,
}

/// How often each subscriber sends a receiver report about its streams (libwebrtc's video
/// RTCP interval).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A subscriber's compound RTCP receiver report about `streams`, from `sender_ssrc`: report
/// blocks of 31 at most per packet (RFC 3550's count field). None when nothing was received.
pub fn receiver_report(sender_ssrc: u32, streams: &mut [(u32, StreamReception)]) -> Option<Vec<u8>> {
    let blocks: Vec<_> = streams.iter_mut().filter_map(|(ssrc, stream)| stream.report_block(*ssrc)).collect();
    if blocks.is_empty() {
        return None;
    }
    let packets: Vec<Box<dyn rtc::rtcp::packet::Packet>> = blocks
        .chunks(31)
        .map(|chunk| Box::new(rtc::rtcp::receiver_report::ReceiverReport { ssrc: sender_ssrc, reports: chunk.to_vec(), ..Default::default() }) as Box<dyn rtc::rtcp::packet::Packet>)
        .collect();
    rtc::rtcp::packet::marshal(&packets).ok().map(|b| b.to_vec())
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
    /// by the load program, not the worker. (TCP drops nothing.)
    pub socket_drops: u64,
    /// ICE-TCP connections that ended or broke during the run.
    pub connections_lost: u64,
    /// Seconds the receiving thread spent handling datagrams in the window (its polls of an
    /// empty socket left out): near the window's length, the load program, not the worker,
    /// limits what the subscribers see.
    pub busy_seconds: f64,
}

/// Runs [`receive_loop`] on a thread of its own.
pub fn spawn_receiver(link: Link, subscribers: Vec<Subscriber>, phase: Arc<AtomicU8>) -> std::io::Result<std::thread::JoinHandle<ReceiverReport>> {
    std::thread::Builder::new().name("load-receive".into()).spawn(move || receive_loop(link, subscribers, phase))
}

/// What the loop keeps besides the subscribers.
struct Tally {
    report: ReceiverReport,
    measuring: bool,
}

/// Receives until `phase` says stop; counts only while it says measure.
pub fn receive_loop(mut link: Link, mut subscribers: Vec<Subscriber>, phase: Arc<AtomicU8>) -> ReceiverReport {
    let mut by_port = vec![u32::MAX; 65536];
    for (i, s) in subscribers.iter().enumerate() {
        by_port[s.source_port as usize] = i as u32;
    }
    let mut readiness = match &link {
        Link::Tcp(connections) => {
            let readiness = Readiness::new(connections.len()).ok();
            for (i, c) in connections.iter().enumerate() {
                if let Some(r) = readiness.as_ref() {
                    let _ = r.add(&c.stream, i);
                }
            }
            readiness
        }
        Link::Udp(_) => None,
    };
    let mut open: Vec<bool> = vec![true; subscribers.len()];
    let mut ready = Vec::new();
    let mut read_buffer = vec![0u8; 64 * 1024];
    let provider = rtc::crypto::default_provider().ok();
    let mut batch = BatchReceiver::default();
    let mut tally = Tally { report: ReceiverReport::default(), measuring: false };
    let mut drops_at_start = 0;
    let mut busy = Duration::ZERO;
    let mut next_consent = 0usize;
    let mut consent_started = Instant::now();
    let mut next_report = 0usize;
    let mut reports_started = Instant::now();
    loop {
        match Phase::from(phase.load(Ordering::Acquire)) {
            Phase::Stop => break,
            Phase::Measure if !tally.measuring => {
                tally.measuring = true;
                let lost = tally.report.connections_lost;
                tally.report = ReceiverReport { connections_lost: lost, ..ReceiverReport::default() };
                if let Link::Udp(socket) = &link {
                    drops_at_start = net::socket_drops(socket).unwrap_or(0);
                }
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
                    let check = binding_request(ufrag, "loadpeer", password, true, provider.crypto());
                    match &mut link {
                        Link::Udp(socket) => {
                            let _ = socket.send_to(&check, to);
                        }
                        Link::Tcp(connections) => {
                            let _ = connections[next_consent].send(&check);
                        }
                    }
                }
                next_consent += 1;
            }
            if next_consent >= subscribers.len() && consent_started.elapsed() >= interval {
                next_consent = 0;
                consent_started = Instant::now();
            }
        }
        // Receiver reports, spread evenly over their interval too.
        let due = ((reports_started.elapsed().as_secs_f64() / REPORT_INTERVAL.as_secs_f64()) * subscribers.len() as f64) as usize;
        while next_report < due.min(subscribers.len()) {
            let index = next_report;
            next_report += 1;
            let subscriber = &mut subscribers[index];
            let (Some(outbound), Some((to, ..))) = (subscriber.outbound.as_mut(), subscriber.consent.as_ref()) else { continue };
            let Some(report) = receiver_report(0x1_0000 + index as u32, &mut subscriber.streams) else { continue };
            let Ok(sealed) = outbound.encrypt_rtcp(&report) else { continue };
            match &mut link {
                Link::Udp(socket) => {
                    let _ = socket.send_to(&sealed, to);
                }
                Link::Tcp(connections) => {
                    let _ = connections[index].send(&sealed);
                }
            }
        }
        if next_report >= subscribers.len() && reports_started.elapsed() >= REPORT_INTERVAL {
            next_report = 0;
            reports_started = Instant::now();
        }
        // Polled, never waited for: a receiver asleep in the kernel has to be woken for
        // each datagram, and on loopback that wake-up is work done on the sender's core,
        // which would charge the worker (or the relay) for the load program's sleep. Across a
        // real network the subscriber's wake-up happens on the subscriber's machine.
        let handling = match &mut link {
            Link::Udp(socket) => {
                let n = match batch.poll(socket) {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                if n == 0 {
                    // The publisher threads share this core: let them run when they are due.
                    std::thread::yield_now();
                    continue;
                }
                let handling = Instant::now();
                let now_ns = epoch_ns();
                for i in 0..n {
                    let (datagrams, port) = batch.get(i);
                    for data in datagrams {
                        let index = by_port[port as usize];
                        match subscribers.get_mut(index as usize) {
                            Some(subscriber) => on_datagram(subscriber, data, now_ns, &mut tally),
                            None if is_media(data) => tally.report.strangers += 1,
                            None => {}
                        }
                    }
                }
                handling
            }
            Link::Tcp(connections) => {
                if readiness.as_mut().is_none_or(|r| r.ready(&mut ready).is_err()) || ready.is_empty() {
                    std::thread::yield_now();
                    continue;
                }
                let handling = Instant::now();
                let now_ns = epoch_ns();
                for &i in &ready {
                    let (Some(connection), Some(subscriber)) = (connections.get_mut(i), subscribers.get_mut(i)) else { continue };
                    if !open[i] {
                        continue;
                    }
                    if connection.read_frames(&mut read_buffer, |frame| on_datagram(subscriber, frame, now_ns, &mut tally)).is_err() {
                        // Ended: stop watching it (epoll would report it again and again).
                        open[i] = false;
                        tally.report.connections_lost += 1;
                        let _ = connection.stream.shutdown(std::net::Shutdown::Both);
                    }
                }
                handling
            }
        };
        busy += handling.elapsed();
    }
    let mut report = tally.report;
    for s in &subscribers {
        for (_, stream) in &s.streams {
            report.counts += stream.counts();
        }
    }
    report.busy_seconds = busy.as_secs_f64();
    if let Link::Udp(socket) = &link {
        report.socket_drops = net::socket_drops(socket).unwrap_or(0).saturating_sub(drops_at_start);
    }
    report
}

/// SRTP, not STUN, DTLS or RTCP.
fn is_media(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (128..=191).contains(b)) && !data.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// One datagram for `subscriber`: decrypted and checked (counted only while measuring).
fn on_datagram(subscriber: &mut Subscriber, data: &[u8], now_ns: u64, tally: &mut Tally) {
    if !is_media(data) {
        return; // STUN answers, DTLS, RTCP.
    }
    let report = &mut tally.report;
    let Ok(plain) = subscriber.inbound.decrypt_rtp(data) else {
        report.undecryptable += 1;
        return;
    };
    let ssrc = RtpView::ssrc(&plain);
    if !tally.measuring {
        // Keep sequence continuity through the warm-up.
        if let Some((_, stream)) = subscriber.streams.iter_mut().find(|(s, _)| *s == ssrc) {
            stream.on_packet(RtpView::sequence(&plain));
        }
        return;
    }
    report.packets += 1;
    report.bytes += data.len() as u64;
    let stamp = RtpView::parse(&plain).and_then(|view| Stamp::find(view.payload(&plain)));
    match (subscriber.streams.iter_mut().find(|(s, _)| *s == ssrc), stamp) {
        (Some((_, stream)), Some(stamp)) => {
            stream.on_packet(RtpView::sequence(&plain));
            report.latency.record(now_ns.saturating_sub(stamp.sent_ns));
        }
        _ => report.corrupt += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_report_covers_every_stream_received_in_packets_of_31_blocks() {
        use rtc::rtcp::receiver_report::ReceiverReport;
        let mut streams: Vec<(u32, StreamReception)> = (0..40).map(|ssrc| (ssrc, StreamReception::default())).collect();
        assert_eq!(receiver_report(7, &mut streams), None, "nothing received yet");
        for (_, stream) in streams.iter_mut().take(35) {
            stream.on_packet(100);
            stream.on_packet(102);
        }
        let compound = receiver_report(7, &mut streams).unwrap();
        let packets = rtc::rtcp::packet::unmarshal(&mut &compound[..]).unwrap();
        let reports: Vec<&ReceiverReport> = packets.iter().filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>()).collect();
        assert_eq!(reports.iter().map(|r| r.reports.len()).collect::<Vec<_>>(), [31, 4]);
        assert!(reports.iter().all(|r| r.ssrc == 7));
        let block = &reports[0].reports[0];
        assert_eq!((block.ssrc, block.total_lost, block.last_sequence_number), (0, 1, 102));
    }
}
