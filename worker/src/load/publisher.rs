//! Publishers: each sends a synthetic video (one stream, or three simulcast encodings) and
//! audio stream over SRTP at real-time pace, answers keyframe requests (PLI/FIR) for the
//! encoding they name and keeps ICE consent. One thread drives them all.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::client_transport::CONSENT_INTERVAL;
use crate::load::synthetic::{set_transport_sequence, AudioSource, Stamp, VideoSource, AUDIO_PACKET_INTERVAL_MS, KEYFRAME_INTERVAL_FRAMES, VIDEO_FPS};
use crate::load::{epoch_ns, Phase};
use crate::media::dtls::SrtpSession;
use crate::media::ice::binding_request;

pub struct Publisher {
    pub socket: UdpSocket,
    pub remote: SocketAddr,
    pub srtp: SrtpSession,
    /// One stream, or a simulcast publisher's encodings (lowest first), whose frames are
    /// captured together and sent back to back.
    pub video: Vec<VideoSource>,
    pub audio: AudioSource,
    /// ICE consent toward the worker: (ufrag, password). None for the in-process relay.
    pub consent: Option<(String, String)>,
    /// The next transport-wide sequence number.
    pub transport_sequence: u16,
}

/// What the publishers did.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublisherReport {
    pub packets_sent: u64,
    /// Sent during the measuring window: what the worker received from publishers.
    pub packets_sent_measured: u64,
    pub keyframe_requests: u64,
    pub nacks_received: u64,
}

/// Runs [`publish_loop`] on a thread of its own.
pub fn spawn_publisher(publishers: Vec<Publisher>, phase: Arc<AtomicU8>) -> std::io::Result<std::thread::JoinHandle<PublisherReport>> {
    std::thread::Builder::new().name("load-publish".into()).spawn(move || publish_loop(publishers, phase))
}

/// Sends until `phase` says stop.
pub fn publish_loop(mut publishers: Vec<Publisher>, phase: Arc<AtomicU8>) -> PublisherReport {
    let mut report = PublisherReport::default();
    let frame_interval = Duration::from_nanos(1_000_000_000 / VIDEO_FPS as u64);
    let audio_interval = Duration::from_millis(AUDIO_PACKET_INTERVAL_MS);
    // Publishers' encoders do not run in step: each one's frames and audio packets are
    // shifted by its share of the interval (and its keyframes by its share of the keyframe
    // interval), as in a real room.
    let count = publishers.len().max(1) as u32;
    let offsets: Vec<(Duration, Duration)> = (0..count).map(|i| (frame_interval * i / count, audio_interval * i / count)).collect();
    for (i, p) in publishers.iter_mut().enumerate() {
        for video in &mut p.video {
            video.set_keyframe_phase(KEYFRAME_INTERVAL_FRAMES * i as u32 / count);
        }
    }
    let start = Instant::now();
    let mut next_consent = start;
    let mut due: Vec<(Instant, Instant)> = offsets.iter().map(|(video, audio)| (start + *video, start + *audio)).collect();
    let provider = rtc::crypto::default_provider().ok();
    for p in &publishers {
        let _ = p.socket.set_nonblocking(true);
    }
    let mut buf = [0u8; 2048];
    while Phase::from(phase.load(Ordering::Acquire)) != Phase::Stop {
        let now = Instant::now();
        if now >= next_consent {
            next_consent += CONSENT_INTERVAL;
            for p in &publishers {
                if let (Some((ufrag, password)), Some(provider)) = (&p.consent, &provider) {
                    let _ = p.socket.send_to(&binding_request(ufrag, "loadpub", password, true, provider.crypto()), p.remote);
                }
            }
        }
        // RTCP from the worker: keyframe requests and NACKs.
        for p in &mut publishers {
            while let Ok((n, _)) = p.socket.recv_from(&mut buf) {
                let data = &buf[..n];
                if data.get(1).is_some_and(|pt| (192..=223).contains(pt))
                    && let Ok(plain) = p.srtp.inbound.decrypt_rtcp(data)
                {
                    let asked = feedback(&plain);
                    for ssrc in asked.keyframes {
                        if let Some(video) = p.video.iter_mut().find(|v| v.ssrc == ssrc) {
                            video.request_keyframe();
                            report.keyframe_requests += 1;
                        }
                    }
                    report.nacks_received += asked.nacks as u64;
                }
            }
        }
        let current = Phase::from(phase.load(Ordering::Acquire));
        if current == Phase::Quiet {
            // Media starts with the warm-up; its pace starts from there too.
            for (due, (video, audio)) in due.iter_mut().zip(&offsets) {
                *due = (now + *video, now + *audio);
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let sent_before = report.packets_sent;
        for (p, (next_frame, next_audio)) in publishers.iter_mut().zip(due.iter_mut()) {
            if now >= *next_frame {
                *next_frame += frame_interval;
                for layer in 0..p.video.len() {
                    for packet in p.video[layer].next_frame() {
                        report.packets_sent += send(p, packet) as u64;
                    }
                }
            }
            if now >= *next_audio {
                *next_audio += audio_interval;
                let packet = p.audio.next_packet();
                report.packets_sent += send(p, packet) as u64;
            }
        }
        if current == Phase::Measure {
            report.packets_sent_measured += report.packets_sent - sent_before;
        }
        let wake = due.iter().map(|(video, audio)| *video.min(audio)).min().unwrap_or(now);
        let now = Instant::now();
        if wake > now {
            std::thread::sleep((wake - now).min(Duration::from_millis(5)));
        }
    }
    report
}

fn send(p: &mut Publisher, mut packet: Vec<u8>) -> bool {
    set_transport_sequence(&mut packet, p.transport_sequence);
    p.transport_sequence = p.transport_sequence.wrapping_add(1);
    Stamp::set_sent(&mut packet, epoch_ns());
    match p.srtp.outbound.encrypt_rtp(&packet) {
        Ok(sealed) => p.socket.send_to(&sealed, p.remote).is_ok(),
        Err(_) => false,
    }
}

/// What a compound RTCP packet from the worker asks of a publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    /// The media SSRCs a PLI or FIR asks a keyframe of (a simulcast publisher's encodings are
    /// asked one by one).
    pub keyframes: Vec<u32>,
    /// NACK packets.
    pub nacks: usize,
}

/// Reads the keyframe requests (PLI, FIR) and NACKs of a compound RTCP packet.
pub fn feedback(compound: &[u8]) -> Feedback {
    let mut asked = Feedback::default();
    let ssrc_at = |packet: &[u8], at: usize| packet.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let mut rest = compound;
    while rest.len() >= 4 {
        let (fmt, pt) = (rest[0] & 0x1f, rest[1]);
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        let packet = rest.get(..len).unwrap_or(rest);
        match (pt, fmt) {
            // PLI: the media source SSRC after the sender's.
            (206, 1) => asked.keyframes.extend(ssrc_at(packet, 8)),
            // FIR: one 8-byte entry per SSRC after the common header (RFC 5104 4.3.1).
            (206, 4) => asked.keyframes.extend((12..packet.len()).step_by(8).filter_map(|at| ssrc_at(packet, at))),
            (205, 1) => asked.nacks += 1,
            _ => {}
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    asked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pli_and_fir_ask_the_encoding_they_name_for_a_keyframe_and_nacks_are_counted() {
        let pli = crate::media::router::pli(1, 2);
        assert_eq!(feedback(&pli), Feedback { keyframes: vec![2], nacks: 0 });
        let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 1]; // an empty RR
        compound.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 0]);
        compound.extend_from_slice(&crate::media::router::pli(1, 7));
        assert_eq!(feedback(&compound), Feedback { keyframes: vec![7], nacks: 1 });
        let fir = [0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0];
        assert_eq!(feedback(&fir), Feedback { keyframes: vec![2], nacks: 0 });
        assert_eq!(feedback(&[0x80]), Feedback::default());
    }
}
