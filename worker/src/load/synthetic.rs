//! Synthetic media like a browser's: a VP8-like video stream (about 1 Mbps, 30 frames/s, a
//! keyframe every two seconds or on request, frames split into equal packets) and an opus-like
//! audio stream (20 ms frames). Pure: the caller paces and sends.
//!
//! Every payload carries a [`Stamp`] (a magic number, the publisher's send time and a packet
//! counter) that subscribers read back to check integrity and measure added latency. The
//! worker rewrites headers only, so the stamp arrives as sent.

use crate::media::rtp_packet::RtpView;

/// Video frames per second.
pub const VIDEO_FPS: u32 = 30;
/// Packets in a delta frame and in a keyframe. With [`VIDEO_PAYLOAD`] this makes about
/// 95 packets/s and 1 Mbps on the wire.
pub const DELTA_FRAME_PACKETS: usize = 3;
pub const KEYFRAME_PACKETS: usize = 12;
/// A keyframe every this many frames (two seconds), besides those requested.
pub const KEYFRAME_INTERVAL_FRAMES: u32 = 60;
/// RTP payload bytes of a video packet (Chrome's packets are near 1,200 bytes).
pub const VIDEO_PAYLOAD: usize = 1_250;
/// Opus at 20 ms per packet, about 48 kbps.
pub const AUDIO_PACKET_INTERVAL_MS: u64 = 20;
pub const AUDIO_PAYLOAD: usize = 120;

/// One-byte header extension ids the synthetic publisher uses (as `chrome_vp8_parameters`
/// and `chrome_opus_parameters` declare them).
pub const MID_EXTENSION_ID: u8 = 9;
pub const ABS_SEND_TIME_EXTENSION_ID: u8 = 2;
pub const TRANSPORT_WIDE_CC_EXTENSION_ID: u8 = 3;

const STAMP_MAGIC: u32 = 0xFA_10AD_01;
/// Where the stamp sits in a video payload: after the 1-byte VP8 payload descriptor and the
/// 3-byte VP8 frame header (and a keyframe's 7-byte start code and size).
const VIDEO_STAMP_OFFSET: usize = 12;
const AUDIO_STAMP_OFFSET: usize = 0;
const STAMP_LEN: usize = 20;

/// What a payload carries for the receiver to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher's clock (nanoseconds since a process-wide epoch) just before encryption.
    pub sent_ns: u64,
    /// The publisher's count of packets in this stream.
    pub index: u64,
}

impl Stamp {
    fn write(self, at: &mut [u8]) {
        at[..4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
        at[4..12].copy_from_slice(&self.sent_ns.to_be_bytes());
        at[12..20].copy_from_slice(&self.index.to_be_bytes());
    }

    fn read(at: &[u8]) -> Option<Stamp> {
        let at = at.get(..STAMP_LEN)?;
        if at[..4] != STAMP_MAGIC.to_be_bytes() {
            return None;
        }
        let sent_ns = u64::from_be_bytes(at[4..12].try_into().ok()?);
        let index = u64::from_be_bytes(at[12..20].try_into().ok()?);
        Some(Stamp { sent_ns, index })
    }

    /// The stamp in an RTP payload of either kind of synthetic stream.
    pub fn find(payload: &[u8]) -> Option<Stamp> {
        Stamp::read(payload.get(VIDEO_STAMP_OFFSET..).unwrap_or_default())
            .or_else(|| Stamp::read(payload.get(AUDIO_STAMP_OFFSET..).unwrap_or_default()))
    }

    /// Writes the send time into a packet built by a source, just before it is encrypted.
    pub fn set_sent(packet: &mut [u8], sent_ns: u64) -> bool {
        let Some(view) = RtpView::parse(packet) else { return false };
        let start = packet.len() - view.payload(packet).len();
        let payload = &mut packet[start..];
        for offset in [VIDEO_STAMP_OFFSET, AUDIO_STAMP_OFFSET] {
            if let Some(at) = payload.get_mut(offset..offset + STAMP_LEN) {
                if at[..4] == STAMP_MAGIC.to_be_bytes() {
                    at[4..12].copy_from_slice(&sent_ns.to_be_bytes());
                    return true;
                }
            }
        }
        false
    }
}

/// The RTP header with the one-byte extensions Chrome sends: MID, abs-send-time and the
/// transport-wide sequence number (zero here: the publisher numbers its packets as it sends
/// them, [`set_transport_sequence`]).
fn header(packet: &mut Vec<u8>, pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, mid: &str) {
    packet.push(0x90); // V=2, X=1
    packet.push(pt | if marker { 0x80 } else { 0 });
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&ts.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    let mut elements = vec![(MID_EXTENSION_ID << 4) | (mid.len() as u8 - 1)];
    elements.extend_from_slice(mid.as_bytes());
    elements.push((ABS_SEND_TIME_EXTENSION_ID << 4) | 2);
    elements.extend_from_slice(&[0, 0, 0]);
    elements.push((TRANSPORT_WIDE_CC_EXTENSION_ID << 4) | 1);
    elements.extend_from_slice(&[0, 0]);
    while elements.len() % 4 != 0 {
        elements.push(0);
    }
    packet.extend_from_slice(&[0xBE, 0xDE]);
    packet.extend_from_slice(&((elements.len() / 4) as u16).to_be_bytes());
    packet.extend_from_slice(&elements);
}

/// Writes the transport-wide sequence number into a packet built by a source, as a browser
/// numbers every packet of its transport (audio and video in one sequence).
pub fn set_transport_sequence(packet: &mut Vec<u8>, sequence: u16) -> bool {
    RtpView::parse(packet).is_some_and(|view| view.set_extension_value(packet, TRANSPORT_WIDE_CC_EXTENSION_ID, &sequence.to_be_bytes()))
}

/// A VP8-like video stream.
#[derive(Debug, Clone)]
pub struct VideoSource {
    pub ssrc: u32,
    pub payload_type: u8,
    pub mid: String,
    sequence: u16,
    frame: u32,
    packets: u64,
    keyframe_requested: bool,
    /// Shifts the periodic keyframes: publishers' encoders do not run in step.
    keyframe_phase: u32,
}

impl VideoSource {
    pub fn new(ssrc: u32, payload_type: u8, mid: impl Into<String>) -> Self {
        VideoSource { ssrc, payload_type, mid: mid.into(), sequence: (ssrc >> 16) as u16, frame: 0, packets: 0, keyframe_requested: false, keyframe_phase: 0 }
    }

    /// Periodic keyframes `frames` frames later than the schedule's (the first frame stays a
    /// keyframe: a decoder needs one to start).
    pub fn set_keyframe_phase(&mut self, frames: u32) {
        self.keyframe_phase = frames % KEYFRAME_INTERVAL_FRAMES;
        self.keyframe_requested |= self.frame == 0 && self.keyframe_phase != 0;
    }

    /// A PLI or FIR arrived: the next frame is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// The packets of the next frame (the first frame is a keyframe).
    pub fn next_frame(&mut self) -> Vec<Vec<u8>> {
        let keyframe = (self.frame + self.keyframe_phase) % KEYFRAME_INTERVAL_FRAMES == 0 || self.keyframe_requested;
        self.keyframe_requested = false;
        let count = if keyframe { KEYFRAME_PACKETS } else { DELTA_FRAME_PACKETS };
        let timestamp = self.frame.wrapping_mul(90_000 / VIDEO_FPS);
        self.frame += 1;
        (0..count)
            .map(|i| {
                let mut packet = Vec::with_capacity(64 + VIDEO_PAYLOAD);
                header(&mut packet, self.payload_type, i + 1 == count, self.sequence, timestamp, self.ssrc, &self.mid);
                self.sequence = self.sequence.wrapping_add(1);
                let start = packet.len();
                packet.resize(start + VIDEO_PAYLOAD, 0);
                let payload = &mut packet[start..];
                // VP8 payload descriptor: S=1 on the frame's first packet, partition 0.
                payload[0] = if i == 0 { 0x10 } else { 0x00 };
                if i == 0 {
                    // VP8 frame header: P (inverse keyframe flag) in bit 0, then for a keyframe the
                    // start code 9d 01 2a.
                    payload[1] = if keyframe { 0x50 } else { 0x51 };
                    if keyframe {
                        payload[4..7].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                    }
                }
                for (k, byte) in payload[VIDEO_STAMP_OFFSET + STAMP_LEN..].iter_mut().enumerate() {
                    *byte = k as u8;
                }
                Stamp { sent_ns: 0, index: self.packets }.write(&mut payload[VIDEO_STAMP_OFFSET..]);
                self.packets += 1;
                packet
            })
            .collect()
    }
}

/// An opus-like audio stream, one packet per 20 ms.
#[derive(Debug, Clone)]
pub struct AudioSource {
    pub ssrc: u32,
    pub payload_type: u8,
    pub mid: String,
    sequence: u16,
    packets: u64,
}

impl AudioSource {
    pub fn new(ssrc: u32, payload_type: u8, mid: impl Into<String>) -> Self {
        AudioSource { ssrc, payload_type, mid: mid.into(), sequence: (ssrc >> 16) as u16, packets: 0 }
    }

    pub fn next_packet(&mut self) -> Vec<u8> {
        let mut packet = Vec::with_capacity(64 + AUDIO_PAYLOAD);
        let timestamp = (self.packets as u32).wrapping_mul(48 * AUDIO_PACKET_INTERVAL_MS as u32);
        header(&mut packet, self.payload_type, false, self.sequence, timestamp, self.ssrc, &self.mid);
        self.sequence = self.sequence.wrapping_add(1);
        let start = packet.len();
        packet.resize(start + AUDIO_PAYLOAD, 0x5a);
        Stamp { sent_ns: 0, index: self.packets }.write(&mut packet[start + AUDIO_STAMP_OFFSET..]);
        self.packets += 1;
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::{is_keyframe, VideoCodec};

    #[test]
    fn video_is_about_one_megabit_and_a_hundred_packets_a_second() {
        let mut video = VideoSource::new(1234, 96, "0");
        let frames: Vec<Vec<Vec<u8>>> = (0..VIDEO_FPS * 10).map(|_| video.next_frame()).collect();
        let packets: usize = frames.iter().map(|f| f.len()).sum();
        // SRTP adds a 16-byte tag per packet on the wire.
        let bits: usize = frames.iter().flatten().map(|p| (p.len() + 16) * 8).sum();
        let (per_second, bitrate) = (packets / 10, bits / 10);
        assert!((90..=110).contains(&per_second), "{per_second} packets/s");
        assert!((900_000..=1_100_000).contains(&bitrate), "{bitrate} bit/s");
    }

    #[test]
    fn keyframes_come_every_two_seconds_and_on_request() {
        let mut video = VideoSource::new(1234, 96, "0");
        let payload = |p: &Vec<u8>| RtpView::parse(p).unwrap().payload(p).to_vec();
        let keyframes: Vec<bool> =
            (0..121).map(|_| is_keyframe(VideoCodec::Vp8, &payload(&video.next_frame()[0]))).collect();
        let at: Vec<usize> = keyframes.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect();
        assert_eq!(at, vec![0, 60, 120]);
        video.request_keyframe();
        let frame = video.next_frame();
        assert!(is_keyframe(VideoCodec::Vp8, &payload(&frame[0])));
        assert_eq!(frame.len(), KEYFRAME_PACKETS);
        assert!(!is_keyframe(VideoCodec::Vp8, &payload(&video.next_frame()[0])));
    }


    #[test]
    fn a_keyframe_phase_moves_the_periodic_keyframes_but_not_the_first() {
        let mut video = VideoSource::new(7, 96, "0");
        video.set_keyframe_phase(20);
        let payload = |p: &Vec<u8>| RtpView::parse(p).unwrap().payload(p).to_vec();
        let at: Vec<usize> = (0..121)
            .map(|_| is_keyframe(VideoCodec::Vp8, &payload(&video.next_frame()[0])))
            .enumerate()
            .filter(|(_, k)| *k)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at, vec![0, 40, 100]);
    }
    #[test]
    fn a_frame_is_consecutive_equal_packets_with_the_marker_on_the_last() {
        let mut video = VideoSource::new(0x0102_0304, 96, "0");
        let frame = video.next_frame();
        let seqs: Vec<u16> = frame.iter().map(|p| RtpView::sequence(p)).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        assert!(frame.iter().all(|p| p.len() == frame[0].len()));
        let markers: Vec<bool> = frame.iter().map(|p| p[1] & 0x80 != 0).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1);
        assert!(markers[frame.len() - 1]);
        assert!(frame.iter().all(|p| RtpView::ssrc(p) == 0x0102_0304 && RtpView::payload_type(p) == 96));
    }

    #[test]
    fn the_stamp_survives_and_carries_the_send_time() {
        let mut audio = AudioSource::new(77, 111, "1");
        let mut video = VideoSource::new(78, 96, "0");
        for (i, mut packet) in [audio.next_packet(), audio.next_packet(), video.next_frame().remove(1)].into_iter().enumerate() {
            assert!(Stamp::set_sent(&mut packet, 1_000 + i as u64));
            let view = RtpView::parse(&packet).unwrap();
            let stamp = Stamp::find(view.payload(&packet)).unwrap();
            assert_eq!(stamp.sent_ns, 1_000 + i as u64);
            assert_eq!(stamp.index, [0, 1, 1][i]);
        }
        assert_eq!(Stamp::find(&[0u8; 64]), None);
    }

    #[test]
    fn packets_carry_mid_and_abs_send_time_extensions() {
        let mut audio = AudioSource::new(77, 111, "1");
        let packet = audio.next_packet();
        let view = RtpView::parse(&packet).unwrap();
        assert_eq!(view.extension(&packet, MID_EXTENSION_ID), Some(&b"1"[..]));
        assert_eq!(view.extension(&packet, ABS_SEND_TIME_EXTENSION_ID).map(|v| v.len()), Some(3));
        assert_eq!(view.payload(&packet).len(), AUDIO_PAYLOAD);
    }
}
