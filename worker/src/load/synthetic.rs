//! Synthetic media like a browser's: a VP8-like video stream (about 1 Mbps, 30 frames/s, a
//! keyframe every two seconds or on request, frames split into equal packets) and an opus-like
//! audio stream (20 ms frames). Pure: the caller paces and sends.
//!
//! A simulcast publisher sends three such video streams at once, as Chrome does for
//! mediasoup-client's `produce({encodings: [3]})`: encodings `r0`, `r1`, `r2` (low, mid and
//! high bitrate, [`SIMULCAST_LAYERS`]), each on its own SSRC and named by the RID header
//! extension, with the VP8 payload descriptor Chrome sends for `L1T3` (picture id,
//! `TL0PICIDX`, temporal layer and layer sync bit), so the worker's layer selection reads
//! real descriptors and switches on real keyframes.
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

/// How one video stream's frames are cut into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Packets of a delta frame and of a keyframe.
    pub delta_packets: usize,
    pub keyframe_packets: usize,
    /// RTP payload bytes of each packet (a browser cuts a frame into equal packets).
    pub payload: usize,
}

impl LayerShape {
    /// Packets per second, periodic keyframes included.
    pub fn packets_per_second(&self) -> f64 {
        let per_interval = (KEYFRAME_INTERVAL_FRAMES as usize - 1) * self.delta_packets + self.keyframe_packets;
        per_interval as f64 * VIDEO_FPS as f64 / KEYFRAME_INTERVAL_FRAMES as f64
    }
}

/// The single-layer stream: about 1 Mbps, 95 packets/s.
pub const SINGLE_LAYER: LayerShape = LayerShape { delta_packets: DELTA_FRAME_PACKETS, keyframe_packets: KEYFRAME_PACKETS, payload: VIDEO_PAYLOAD };

/// The encodings of a simulcast publisher, lowest first (`r0`, `r1`, `r2`): about 120 kbps
/// (one 420-byte packet a frame), 330 kbps (one full packet a frame) and 1 Mbps (the
/// single-layer stream), as Chrome sends a 720p camera under mediasoup-client's usual
/// `maxBitrate`s. The top one is [`SINGLE_LAYER`], so a consumer of it gets what a consumer
/// of a single-layer producer gets, and the two runs differ only by the layers around it.
pub const SIMULCAST_LAYERS: [LayerShape; 3] = [
    LayerShape { delta_packets: 1, keyframe_packets: 3, payload: 420 },
    LayerShape { delta_packets: 1, keyframe_packets: 4, payload: VIDEO_PAYLOAD },
    SINGLE_LAYER,
];

/// Temporal layers of a simulcast encoding (`L1T3`): frames cycle through TID 0, 2, 1, 2.
const TEMPORAL_PATTERN: [u8; 4] = [0, 2, 1, 2];
/// Opus at 20 ms per packet, about 48 kbps.
pub const AUDIO_PACKET_INTERVAL_MS: u64 = 20;
pub const AUDIO_PAYLOAD: usize = 120;

/// One-byte header extension ids the synthetic publisher uses (as `chrome_vp8_parameters`
/// and `chrome_opus_parameters` declare them).
pub const MID_EXTENSION_ID: u8 = 9;
pub const ABS_SEND_TIME_EXTENSION_ID: u8 = 2;
pub const TRANSPORT_WIDE_CC_EXTENSION_ID: u8 = 3;
/// The RID extension of `chrome_vp8_simulcast_parameters`.
pub const RID_EXTENSION_ID: u8 = 10;

const STAMP_MAGIC: u32 = 0xFA10_AD01;
/// Where the stamp sits in a video payload: after the VP8 payload descriptor (1 byte, or 6
/// with picture id, `TL0PICIDX` and temporal layer) and the 3-byte VP8 frame header (and a
/// keyframe's 7-byte start code and size).
const VIDEO_STAMP_OFFSET: usize = 16;
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
            if let Some(at) = payload.get_mut(offset..offset + STAMP_LEN)
                && at[..4] == STAMP_MAGIC.to_be_bytes()
            {
                at[4..12].copy_from_slice(&sent_ns.to_be_bytes());
                return true;
            }
        }
        false
    }
}

/// The RTP header with the one-byte extensions Chrome sends: MID, abs-send-time and the
/// transport-wide sequence number (zero here: the publisher numbers its packets as it sends
/// them, [`set_transport_sequence`]).
/// A simulcast encoding's packets also carry its RID.
#[allow(clippy::too_many_arguments)]
fn header(packet: &mut Vec<u8>, pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, mid: &str, rid: Option<&str>) {
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
    if let Some(rid) = rid {
        elements.push((RID_EXTENSION_ID << 4) | (rid.len() as u8 - 1));
        elements.extend_from_slice(rid.as_bytes());
    }
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

/// A VP8-like video stream: a single-layer stream, or one encoding of a simulcast publisher.
#[derive(Debug, Clone)]
pub struct VideoSource {
    pub ssrc: u32,
    pub payload_type: u8,
    pub mid: String,
    /// The encoding's RID (simulcast only).
    pub rid: Option<String>,
    shape: LayerShape,
    /// The picture numbers of the extended payload descriptor (simulcast only): 15-bit
    /// picture id, `TL0PICIDX`, and where the frame is in the temporal pattern (which a
    /// keyframe restarts).
    numbering: Option<Vp8Numbering>,
    sequence: u16,
    frame: u32,
    packets: u64,
    keyframe_requested: bool,
    /// Shifts the periodic keyframes: publishers' encoders do not run in step.
    keyframe_phase: u32,
}

#[derive(Debug, Clone, Copy)]
struct Vp8Numbering {
    picture_id: u16,
    tl0_pic_idx: u8,
    pattern: usize,
}

impl VideoSource {
    /// The single-layer stream ([`SINGLE_LAYER`], a 1-byte payload descriptor).
    pub fn new(ssrc: u32, payload_type: u8, mid: impl Into<String>) -> Self {
        VideoSource {
            ssrc,
            payload_type,
            mid: mid.into(),
            rid: None,
            shape: SINGLE_LAYER,
            numbering: None,
            sequence: (ssrc >> 16) as u16,
            frame: 0,
            packets: 0,
            keyframe_requested: false,
            keyframe_phase: 0,
        }
    }

    /// Encoding `layer` (0 lowest) of a simulcast publisher: RID `r<layer>`, the shape of
    /// [`SIMULCAST_LAYERS`], and the `L1T3` payload descriptor.
    pub fn simulcast(ssrc: u32, payload_type: u8, mid: impl Into<String>, layer: usize) -> Self {
        let mut source = VideoSource::new(ssrc, payload_type, mid);
        source.rid = Some(format!("r{layer}"));
        source.shape = SIMULCAST_LAYERS[layer.min(SIMULCAST_LAYERS.len() - 1)];
        source.numbering = Some(Vp8Numbering { picture_id: (ssrc & 0x7fff) as u16, tl0_pic_idx: (ssrc >> 8) as u8, pattern: 0 });
        source
    }

    pub fn shape(&self) -> LayerShape {
        self.shape
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
        let keyframe = (self.frame + self.keyframe_phase).is_multiple_of(KEYFRAME_INTERVAL_FRAMES) || self.keyframe_requested;
        self.keyframe_requested = false;
        let count = if keyframe { self.shape.keyframe_packets } else { self.shape.delta_packets };
        let timestamp = self.frame.wrapping_mul(90_000 / VIDEO_FPS);
        self.frame += 1;
        // The extended descriptor: a keyframe restarts the temporal pattern; each frame of
        // layer 0 moves TL0PICIDX on; frames of layers 1 and 2 right after a layer-0 frame
        // refer only to it, so they are layer sync points (Y).
        let descriptor = self.numbering.as_mut().map(|n| {
            if keyframe {
                n.pattern = 0;
            }
            let temporal = TEMPORAL_PATTERN[n.pattern % TEMPORAL_PATTERN.len()];
            let sync = temporal > 0 && n.pattern % TEMPORAL_PATTERN.len() <= 2;
            n.picture_id = (n.picture_id + 1) & 0x7fff;
            if temporal == 0 {
                n.tl0_pic_idx = n.tl0_pic_idx.wrapping_add(1);
            }
            n.pattern += 1;
            let [high, low] = n.picture_id.to_be_bytes();
            [0x80, 0xE0, 0x80 | high, low, n.tl0_pic_idx, (temporal << 6) | if sync { 0x20 } else { 0 }]
        });
        (0..count)
            .map(|i| {
                let mut packet = Vec::with_capacity(64 + self.shape.payload);
                header(&mut packet, self.payload_type, i + 1 == count, self.sequence, timestamp, self.ssrc, &self.mid, self.rid.as_deref());
                self.sequence = self.sequence.wrapping_add(1);
                let start = packet.len();
                packet.resize(start + self.shape.payload, 0);
                let payload = &mut packet[start..];
                // VP8 payload descriptor: S=1 on the frame's first packet, partition 0.
                let start_of_frame = if i == 0 { 0x10 } else { 0x00 };
                let at = match &descriptor {
                    Some(bytes) => {
                        payload[..bytes.len()].copy_from_slice(bytes);
                        payload[0] |= start_of_frame;
                        bytes.len()
                    }
                    None => {
                        payload[0] = start_of_frame;
                        1
                    }
                };
                if i == 0 {
                    // VP8 frame header: P (inverse keyframe flag) in bit 0, then for a keyframe the
                    // start code 9d 01 2a.
                    payload[at] = if keyframe { 0x50 } else { 0x51 };
                    if keyframe {
                        payload[at + 3..at + 6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
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
        header(&mut packet, self.payload_type, false, self.sequence, timestamp, self.ssrc, &self.mid, None);
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

    #[test]
    fn simulcast_encodings_are_low_mid_and_high_with_the_top_one_the_single_layer_stream() {
        let bitrate = |layer: usize| {
            let mut video = VideoSource::simulcast(1000 + layer as u32, 96, "1", layer);
            let bits: usize = (0..VIDEO_FPS * 10).flat_map(|_| video.next_frame()).map(|p| (p.len() + 16) * 8).sum();
            bits / 10
        };
        let rates: Vec<usize> = (0..3).map(bitrate).collect();
        assert!((90_000..=160_000).contains(&rates[0]), "{rates:?}");
        assert!((250_000..=400_000).contains(&rates[1]), "{rates:?}");
        assert!((900_000..=1_100_000).contains(&rates[2]), "{rates:?}");
        assert_eq!(SIMULCAST_LAYERS[2], SINGLE_LAYER);
        assert!((SINGLE_LAYER.packets_per_second() - 94.5).abs() < 0.01);
        let total: f64 = SIMULCAST_LAYERS.iter().map(LayerShape::packets_per_second).sum();
        assert!((total - 157.0).abs() < 0.01, "{total}");
    }

    #[test]
    fn a_simulcast_encoding_carries_its_rid_and_the_descriptor_chrome_sends_for_l1t3() {
        use crate::video::descriptor::parse;
        let mut video = VideoSource::simulcast(0x5100_0001, 96, "1", 1);
        let frames: Vec<Vec<Vec<u8>>> = (0..9).map(|_| video.next_frame()).collect();
        let infos: Vec<_> = frames
            .iter()
            .map(|f| {
                let view = RtpView::parse(&f[0]).unwrap();
                assert_eq!(view.extension(&f[0], RID_EXTENSION_ID), Some(&b"r1"[..]));
                assert_eq!(view.extension(&f[0], MID_EXTENSION_ID), Some(&b"1"[..]));
                assert!(Stamp::find(view.payload(&f[0])).is_some());
                parse(VideoCodec::Vp8, view.payload(&f[0]))
            })
            .collect();
        assert!(infos[0].keyframe && infos.iter().skip(1).all(|i| !i.keyframe));
        assert!(infos.iter().all(|i| i.has_layers && i.begins_frame));
        let temporal: Vec<u8> = infos.iter().map(|i| i.temporal).collect();
        assert_eq!(temporal, [0, 2, 1, 2, 0, 2, 1, 2, 0]);
        let sync: Vec<bool> = infos.iter().map(|i| i.switching_up).collect();
        assert_eq!(sync, [false, true, true, false, false, true, true, false, false]);
        // Picture ids one apart, TL0PICIDX moving on with each layer-0 frame.
        let pictures: Vec<u16> = infos.iter().map(|i| i.picture_id.unwrap().value).collect();
        assert!(pictures.windows(2).all(|w| w[1] == (w[0] + 1) & 0x7fff), "{pictures:?}");
        assert!(infos.iter().all(|i| i.picture_id.unwrap().long));
        let tl0: Vec<u8> = infos.iter().map(|i| i.tl0_pic_idx.unwrap().0).collect();
        assert_eq!(tl0[4], tl0[0].wrapping_add(1));
        assert_eq!(tl0[3], tl0[0]);
        // A requested keyframe restarts the temporal pattern at layer 0.
        video.request_keyframe();
        let keyframe = video.next_frame();
        let view = RtpView::parse(&keyframe[0]).unwrap();
        let info = parse(VideoCodec::Vp8, view.payload(&keyframe[0]));
        assert!(info.keyframe && info.temporal == 0);
        assert_eq!(keyframe.len(), SIMULCAST_LAYERS[1].keyframe_packets);
        // Later packets of a frame repeat the descriptor without S.
        let later = parse(VideoCodec::Vp8, RtpView::parse(&keyframe[1]).unwrap().payload(&keyframe[1]));
        assert!(!later.begins_frame && !later.keyframe && later.picture_id == info.picture_id);
    }
}
