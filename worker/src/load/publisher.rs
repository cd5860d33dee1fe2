//! Publishers: each sends a synthetic video and audio stream over SRTP at real-time pace,
//! answers keyframe requests (PLI/FIR) and keeps ICE consent. One thread drives them all.

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
    pub video: VideoSource,
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
        p.video.set_keyframe_phase(KEYFRAME_INTERVAL_FRAMES * i as u32 / count);
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
                if data.get(1).is_some_and(|pt| (192..=223).contains(pt)) {
                    if let Ok(plain) = p.srtp.inbound.decrypt_rtcp(data) {
                        let (keyframe, nack) = feedback(&plain);
                        if keyframe {
                            p.video.request_keyframe();
                            report.keyframe_requests += 1;
                        }
                        report.nacks_received += nack as u64;
                    }
                }
            }
        }
        if Phase::from(phase.load(Ordering::Acquire)) == Phase::Quiet {
            // Media starts with the warm-up; its pace starts from there too.
            for (due, (video, audio)) in due.iter_mut().zip(&offsets) {
                *due = (now + *video, now + *audio);
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        for (p, (next_frame, next_audio)) in publishers.iter_mut().zip(due.iter_mut()) {
            if now >= *next_frame {
                *next_frame += frame_interval;
                for packet in p.video.next_frame() {
                    report.packets_sent += send(p, packet) as u64;
                }
            }
            if now >= *next_audio {
                *next_audio += audio_interval;
                let packet = p.audio.next_packet();
                report.packets_sent += send(p, packet) as u64;
            }
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

/// Whether a compound RTCP packet asks for a keyframe (PLI or FIR), and how many NACK
/// packets it holds.
pub fn feedback(compound: &[u8]) -> (bool, usize) {
    let (mut keyframe, mut nacks) = (false, 0);
    let mut rest = compound;
    while rest.len() >= 4 {
        let (fmt, pt) = (rest[0] & 0x1f, rest[1]);
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        match (pt, fmt) {
            (206, 1) | (206, 4) => keyframe = true,
            (205, 1) => nacks += 1,
            _ => {}
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    (keyframe, nacks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pli_and_fir_ask_for_keyframes_and_nacks_are_counted() {
        let pli = crate::media::router::pli(1, 2);
        assert_eq!(feedback(&pli), (true, 0));
        let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 1]; // an empty RR
        compound.extend_from_slice(&[0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 0]);
        assert_eq!(feedback(&compound), (false, 1));
        let fir = [0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0];
        assert_eq!(feedback(&fir), (true, 0));
        assert_eq!(feedback(&[0x80]), (false, 0));
    }
}
