//! One producer stream's RTP packets back into whole codec frames, sans-IO.
//!
//! Packets pass a small reorder window ([`WINDOW_PACKETS`], [`WINDOW_TIME`]): one that comes
//! early waits there for those before it, and a hole that outlives the window is given up on
//! (a retransmission the router unwrapped may still fill it in time). A frame that lost a
//! packet is dropped whole: a container takes only whole frames, and a decoder fed part of
//! one shows garbage. After a loss, video drops every frame until the next keyframe (what
//! came after the lost frame refers to it) and asks for one ([`Assembled::NeedKeyframe`],
//! repeated every [`KEYFRAME_RETRY`] while it waits); a video stream starts waiting, so that
//! its file starts at a keyframe. Opus frames are independent: a lost one is just missing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::media::rtp_packet::RtpView;

use super::depacketize::{fragment, RecordCodec};
use super::h264;

/// Packets held waiting for a hole to be filled, at most.
pub const WINDOW_PACKETS: usize = 128;
/// How long a hole is waited for once a later packet is there.
pub const WINDOW_TIME: Duration = Duration::from_millis(150);
/// How often a stream waiting for a keyframe asks for one again.
pub const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

/// A whole frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    pub timestamp: u32,
    pub ssrc: u32,
    pub keyframe: bool,
    /// When its first packet arrived.
    pub arrival: Instant,
}

/// What the assembler hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    Frame(Frame),
    /// Video lost a frame (or has not seen a keyframe yet): ask the producer for a keyframe.
    NeedKeyframe,
}

/// Counts for the status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Sequence numbers given up on.
    pub lost_packets: u64,
    /// Frames dropped: incomplete, or video before the next keyframe.
    pub dropped_frames: u64,
}

struct Building {
    timestamp: u32,
    ssrc: u32,
    keyframe: bool,
    arrival: Instant,
    /// Layer frames (VP9 spatial layers of one picture; one for the others).
    layers: Vec<Vec<u8>>,
}

/// The frame assembler of one producer stream.
pub struct FrameAssembler {
    codec: RecordCodec,
    window: BTreeMap<i64, (Vec<u8>, Instant)>,
    /// The next sequence number (unwrapped) to hand to the frame builder.
    next: Option<i64>,
    highest: Option<(u16, i64)>,
    ssrc: Option<u32>,
    building: Option<Building>,
    /// The frame being received lost a packet: drop until a frame begins.
    broken: bool,
    waiting_keyframe: bool,
    last_request: Option<Instant>,
    pub stats: AssemblerStats,
}

impl FrameAssembler {
    pub fn new(codec: RecordCodec) -> Self {
        FrameAssembler {
            codec,
            window: BTreeMap::new(),
            next: None,
            highest: None,
            ssrc: None,
            building: None,
            broken: false,
            waiting_keyframe: codec.is_video(),
            last_request: None,
            stats: AssemblerStats::default(),
        }
    }

    /// Whether video waits for a keyframe.
    pub fn waiting_keyframe(&self) -> bool {
        self.waiting_keyframe
    }

    fn unwrap_sequence(&mut self, sequence: u16) -> i64 {
        match self.highest {
            None => {
                let ext = i64::from(sequence) + (1 << 16);
                self.highest = Some((sequence, ext));
                ext
            }
            Some((raw, ext)) => {
                let ext = ext + i64::from(sequence.wrapping_sub(raw) as i16);
                if ext > self.highest.map_or(i64::MIN, |h| h.1) {
                    self.highest = Some((sequence, ext));
                }
                ext
            }
        }
    }

    /// An RTP packet of the stream arrived at `now` (in any order).
    pub fn push(&mut self, packet: Vec<u8>, now: Instant) -> Vec<Assembled> {
        let mut out = Vec::new();
        if RtpView::parse(&packet).is_none() {
            return out;
        }
        let ssrc = RtpView::ssrc(&packet);
        if self.ssrc.is_some_and(|s| s != ssrc) {
            // Another stream (an encoder restart): what is held of the old one is lost.
            self.stats.lost_packets += self.window.len() as u64;
            self.window.clear();
            self.next = None;
            self.highest = None;
            self.lose(&mut out, now);
        }
        self.ssrc = Some(ssrc);
        let ext = self.unwrap_sequence(RtpView::sequence(&packet));
        if self.next.is_some_and(|next| ext < next) || self.window.contains_key(&ext) {
            // Given up on already, or a duplicate.
            return self.poll_into(out, now);
        }
        self.next.get_or_insert(ext);
        self.window.insert(ext, (packet, now));
        self.poll_into(out, now)
    }

    /// Gives up on holes that waited long enough and asks for a keyframe again if one is
    /// still awaited; call it now and then (the recorder does every few tens of ms).
    pub fn poll(&mut self, now: Instant) -> Vec<Assembled> {
        self.poll_into(Vec::new(), now)
    }

    fn poll_into(&mut self, mut out: Vec<Assembled>, now: Instant) -> Vec<Assembled> {
        loop {
            let Some(next) = self.next else { break };
            if let Some((packet, arrival)) = self.window.remove(&next) {
                self.next = Some(next + 1);
                self.on_packet(&packet, arrival, &mut out, now);
                continue;
            }
            let Some((&first, &(_, arrival))) = self.window.iter().next() else { break };
            let expired = self.window.len() > WINDOW_PACKETS || now.saturating_duration_since(arrival) >= WINDOW_TIME;
            if !expired {
                break;
            }
            self.stats.lost_packets += (first - next) as u64;
            self.next = Some(first);
            self.lose(&mut out, now);
        }
        // Not while a keyframe is coming in: that one ends the wait.
        let keyframe_coming = self.building.as_ref().is_some_and(|b| b.keyframe);
        if self.waiting_keyframe
            && !keyframe_coming
            && self.last_request.is_none_or(|at| now.saturating_duration_since(at) >= KEYFRAME_RETRY)
        {
            self.last_request = Some(now);
            out.push(Assembled::NeedKeyframe);
        }
        out
    }

    /// Packets were lost: the frame they were part of goes, and video waits for a keyframe.
    fn lose(&mut self, out: &mut Vec<Assembled>, now: Instant) {
        if self.building.take().is_some() {
            self.stats.dropped_frames += 1;
        }
        self.broken = true;
        if self.codec.is_video() && !self.waiting_keyframe {
            self.waiting_keyframe = true;
            self.last_request = Some(now);
            out.push(Assembled::NeedKeyframe);
        }
    }

    fn on_packet(&mut self, packet: &[u8], arrival: Instant, out: &mut Vec<Assembled>, now: Instant) {
        let Some(view) = RtpView::parse(packet) else { return };
        let payload = view.payload(packet);
        if payload.is_empty() {
            return; // padding (a bandwidth probe): no media
        }
        let (timestamp, ssrc, marker) = (RtpView::timestamp(packet), RtpView::ssrc(packet), RtpView::marker(packet));
        let Some(fragment) = fragment(self.codec, payload) else {
            // Unreadable: as good as lost.
            self.stats.lost_packets += 1;
            return self.lose(out, now);
        };
        // A new timestamp ends the frame before it even without its marker (some senders
        // leave it off); all its packets came, in order.
        if self.building.as_ref().is_some_and(|b| b.timestamp != timestamp) {
            self.finish(out);
        }
        let data = &payload[fragment.offset..];
        // H264 keeps each payload whole: FU-A pieces and STAP-A are undone per access unit.
        let h264 = self.codec == RecordCodec::H264;
        match self.building.as_mut() {
            Some(building) if fragment.begins_frame || h264 => {
                // An IDR's slices may come after its parameter sets' packet.
                building.keyframe |= fragment.keyframe;
                building.layers.push(data.to_vec());
            }
            Some(building) => match building.layers.last_mut() {
                Some(layer) => layer.extend_from_slice(data),
                None => building.layers.push(data.to_vec()),
            },
            None if fragment.begins_frame => {
                self.broken = false;
                self.building = Some(Building { timestamp, ssrc, keyframe: fragment.keyframe, arrival, layers: vec![data.to_vec()] });
            }
            // The middle of a frame whose start was lost (or dropped).
            None => {
                if !self.broken {
                    self.broken = true;
                    self.stats.dropped_frames += 1;
                }
            }
        }
        if marker || self.codec == RecordCodec::Opus {
            self.finish(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Assembled>) {
        let Some(mut building) = self.building.take() else { return };
        if self.waiting_keyframe && !building.keyframe {
            self.stats.dropped_frames += 1;
            return;
        }
        if self.codec == RecordCodec::H264 {
            let Some(access_unit) = h264::access_unit(&building.layers) else {
                // A FU-A piece missing that the sequence numbers did not show (its run
                // started or ended in a packet lost at the frame's edge): as a lost frame.
                self.stats.dropped_frames += 1;
                self.broken = true;
                if !self.waiting_keyframe {
                    self.waiting_keyframe = true;
                    self.last_request = None;
                }
                return;
            };
            building.keyframe = h264::has_idr(&access_unit);
            if self.waiting_keyframe && !building.keyframe {
                self.stats.dropped_frames += 1;
                return;
            }
            self.waiting_keyframe = false;
            out.push(Assembled::Frame(Frame { data: access_unit, timestamp: building.timestamp, ssrc: building.ssrc, keyframe: building.keyframe, arrival: building.arrival }));
            return;
        }
        self.waiting_keyframe = false;
        let data = if building.layers.len() == 1 {
            building.layers.into_iter().next().unwrap_or_default()
        } else {
            superframe(building.layers)
        };
        out.push(Assembled::Frame(Frame { data, timestamp: building.timestamp, ssrc: building.ssrc, keyframe: building.keyframe, arrival: building.arrival }));
    }
}

/// VP9's superframe (VP9 bitstream spec, annex B): the layer frames of one picture in a row,
/// then an index of their sizes, which is how a container stores a picture of several
/// spatial layers.
fn superframe(layers: Vec<Vec<u8>>) -> Vec<u8> {
    let count = layers.len().min(8);
    let marker = 0xc0 | (3 << 3) | (count as u8 - 1); // 4 bytes per size
    let mut data: Vec<u8> = Vec::new();
    for layer in &layers[..count] {
        data.extend_from_slice(layer);
    }
    data.push(marker);
    for layer in &layers[..count] {
        data.extend_from_slice(&(layer.len() as u32).to_le_bytes());
    }
    data.push(marker);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::record::test_packets::rtp;

    /// VP8 frame `n` as three packets; a keyframe when `key`.
    fn vp8_frame(n: u16, key: bool) -> Vec<Vec<u8>> {
        let ts = 3_000 * u32::from(n);
        let seq = n.wrapping_mul(3).wrapping_add(65_500); // wraps during the tests
        let tag = if key { 0x00 } else { 0x01 };
        vec![
            rtp(seq, ts, false, &[0x10, tag, n as u8]),
            rtp(seq.wrapping_add(1), ts, false, &[0x00, 0xA1]),
            rtp(seq.wrapping_add(2), ts, true, &[0x00, 0xA2]),
        ]
    }

    fn frames(out: &[Assembled]) -> Vec<(u32, bool, Vec<u8>)> {
        out.iter()
            .filter_map(|a| match a {
                Assembled::Frame(f) => Some((f.timestamp / 3_000, f.keyframe, f.data.clone())),
                Assembled::NeedKeyframe => None,
            })
            .collect()
    }

    fn needs(out: &[Assembled]) -> usize {
        out.iter().filter(|a| **a == Assembled::NeedKeyframe).count()
    }

    #[test]
    fn vp8_frames_are_assembled_across_sequence_wraparound_and_start_at_a_keyframe() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Vp8);
        let mut out = Vec::new();
        // An interframe before any keyframe is dropped, and a keyframe is asked for.
        for p in vp8_frame(0, false) {
            out.extend(a.push(p, t));
        }
        assert_eq!(frames(&out), vec![]);
        assert_eq!(needs(&out), 1);
        out.clear();
        for n in 1..30 {
            for p in vp8_frame(n, n == 1) {
                out.extend(a.push(p, t));
            }
        }
        let got = frames(&out);
        assert_eq!(got.len(), 29);
        assert_eq!(got[0], (1, true, vec![0x00, 1, 0xA1, 0xA2]));
        assert!(got[1..].iter().all(|(_, key, _)| !key));
        assert_eq!(a.stats, AssemblerStats { lost_packets: 0, dropped_frames: 1 });
    }

    #[test]
    fn packets_reordered_within_the_window_still_make_whole_frames() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Vp8);
        let mut out = Vec::new();
        for n in 0..4 {
            let mut packets = vp8_frame(n, n == 0);
            if n > 0 {
                packets.swap(0, 2); // marker first, start last
            }
            for p in packets {
                out.extend(a.push(p, t + Duration::from_millis(u64::from(n) * 33)));
            }
        }
        assert_eq!(frames(&out).iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(a.stats.lost_packets, 0);
    }

    #[test]
    fn a_missing_packet_drops_its_frame_and_video_waits_for_the_next_keyframe() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Vp8);
        let mut out = Vec::new();
        let mut at = t;
        for n in 0..10 {
            at = t + Duration::from_millis(u64::from(n) * 33);
            for (i, p) in vp8_frame(n, n == 0 || n == 7).into_iter().enumerate() {
                if n == 3 && i == 1 {
                    continue; // lost
                }
                out.extend(a.push(p, at));
            }
        }
        out.extend(a.poll(at + WINDOW_TIME));
        let got: Vec<u32> = frames(&out).iter().map(|f| f.0).collect();
        // 3 lost a packet; 4..6 refer to it; 7 is a keyframe.
        assert_eq!(got, vec![0, 1, 2, 7, 8, 9]);
        assert_eq!(a.stats.lost_packets, 1);
        assert_eq!(needs(&out), 1, "for the loss only: the stream started with a keyframe");
    }

    #[test]
    fn while_waiting_the_keyframe_request_repeats_every_second() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Vp8);
        assert_eq!(needs(&a.push(vp8_frame(0, false).remove(0), t)), 1);
        assert_eq!(needs(&a.poll(t + Duration::from_millis(500))), 0);
        assert_eq!(needs(&a.poll(t + KEYFRAME_RETRY)), 1);
        for p in vp8_frame(1, true) {
            a.push(p, t + KEYFRAME_RETRY);
        }
        // Frame 0's other packets never come: once the window gives up on them, the
        // keyframe behind them ends the wait.
        assert!(a.waiting_keyframe());
        let out = a.poll(t + KEYFRAME_RETRY + WINDOW_TIME);
        assert_eq!(frames(&out).len(), 1);
        assert!(!a.waiting_keyframe());
        assert_eq!(needs(&a.poll(t + KEYFRAME_RETRY * 3)), 0);
    }

    #[test]
    fn a_lost_opus_packet_is_just_missing() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Opus);
        let mut out = Vec::new();
        for n in 0u16..6 {
            if n == 2 {
                continue;
            }
            out.extend(a.push(rtp(n, u32::from(n) * 960, n == 0, &[0x78, n as u8]), t + Duration::from_millis(u64::from(n) * 20)));
        }
        out.extend(a.poll(t + Duration::from_secs(1)));
        let ts: Vec<u32> = out.iter().filter_map(|o| if let Assembled::Frame(f) = o { Some(f.timestamp / 960) } else { None }).collect();
        assert_eq!(ts, vec![0, 1, 3, 4, 5]);
        assert_eq!(needs(&out), 0);
    }

    #[test]
    fn a_hole_waits_for_the_window_before_it_is_given_up() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Opus);
        assert_eq!(a.push(rtp(1, 0, false, &[1]), t).len(), 1);
        // 3 before 2: held.
        assert!(a.push(rtp(3, 1920, false, &[3]), t).is_empty());
        assert!(a.poll(t + WINDOW_TIME / 2).is_empty());
        // 2 arrives late but within the window: both go, in order.
        let out = a.push(rtp(2, 960, false, &[2]), t + WINDOW_TIME / 2);
        assert_eq!(out.len(), 2);
        // 5 without 4: after the window, 5 goes and 4 counts as lost; 4 coming later is ignored.
        assert!(a.push(rtp(5, 3840, false, &[5]), t + WINDOW_TIME).is_empty());
        assert_eq!(a.poll(t + WINDOW_TIME * 2).len(), 1);
        assert!(a.push(rtp(4, 2880, false, &[4]), t + WINDOW_TIME * 2).is_empty());
        assert_eq!(a.stats.lost_packets, 1);
    }

    #[test]
    fn vp9_spatial_layers_of_a_picture_become_a_superframe() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::Vp9);
        // Picture 0: layer 0 (B, E) then layer 1 (B, E, marker); flexible mode, L=1.
        let l0 = rtp(10, 0, false, &[0x3C, 0x00, 0xAA, 0xBB]);
        let l1 = rtp(11, 0, true, &[0x3C, 0x02, 0xCC]);
        let mut out = a.push(l0, t);
        out.extend(a.push(l1, t));
        let got = frames(&out);
        assert_eq!(got.len(), 1);
        let data = &got[0].2;
        assert_eq!(&data[..5], &[0xAA, 0xBB, 0xCC, 0xD9, 2]);
        assert_eq!(data.last(), Some(&0xD9));
        assert!(got[0].1, "a picture whose base layer is not inter-predicted is a keyframe");
    }

    /// H264 access unit `n`: a STAP-A of SPS and PPS plus an IDR in three FU-A pieces when
    /// `key`, else a non-IDR slice in three FU-A pieces.
    fn h264_frame(n: u16, key: bool) -> Vec<Vec<u8>> {
        let ts = 3_000 * u32::from(n);
        let seq = n.wrapping_mul(4);
        let mut packets = Vec::new();
        let nal_type = if key { 0x65 } else { 0x41 };
        if key {
            let mut stap = vec![0x78, 0, 3, 0x67, 0x42, n as u8, 0, 2, 0x68, 0xce];
            stap.truncate(10);
            packets.push(stap);
        } else {
            packets.push(vec![0x06, 0x05, 0x01]); // an SEI begins the access unit
        }
        // FU-A start (first_mb_in_slice 0), middle, end.
        packets.push(vec![0x7c, 0x80 | (nal_type & 0x1f), 0x88, n as u8]);
        packets.push(vec![0x7c, nal_type & 0x1f, 0xB1]);
        packets.push(vec![0x7c, 0x40 | (nal_type & 0x1f), 0xB2]);
        let count = packets.len();
        packets.into_iter().enumerate().map(|(i, p)| rtp(seq.wrapping_add(i as u16), ts, i + 1 == count, &p)).collect()
    }

    #[test]
    fn h264_stap_a_and_fu_a_become_length_prefixed_access_units_starting_at_an_idr() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::H264);
        let mut out = Vec::new();
        for n in 0..6 {
            for p in h264_frame(n, n == 1 || n == 4) {
                out.extend(a.push(p, t));
            }
        }
        let got = frames(&out);
        // Frame 0 (not an IDR) waits for the keyframe; 1 is one though its first packet is the
        // parameter sets' STAP-A.
        assert_eq!(got.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), vec![(1, true), (2, false), (3, false), (4, true), (5, false)]);
        let nals: Vec<Vec<u8>> = h264::nal_units(&got[0].2).map(<[u8]>::to_vec).collect();
        assert_eq!(nals, vec![vec![0x67, 0x42, 1], vec![0x68, 0xce], vec![0x65, 0x88, 1, 0xB1, 0xB2]]);
        assert_eq!(a.stats.dropped_frames, 1);
    }

    #[test]
    fn h264_losing_a_fu_a_middle_drops_the_frame_until_the_next_idr() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::H264);
        let mut out = Vec::new();
        let mut at = t;
        for n in 0..8 {
            at = t + Duration::from_millis(u64::from(n) * 33);
            for (i, p) in h264_frame(n, n == 0 || n == 6).into_iter().enumerate() {
                if n == 2 && i == 2 {
                    continue; // the FU-A middle
                }
                out.extend(a.push(p, at));
            }
        }
        out.extend(a.poll(at + WINDOW_TIME));
        assert_eq!(frames(&out).iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 1, 6, 7]);
        assert_eq!(needs(&out), 1);
        assert_eq!(a.stats.lost_packets, 1);
    }

    #[test]
    fn h264_a_later_slice_after_a_loss_does_not_start_a_frame() {
        let t = Instant::now();
        let mut a = FrameAssembler::new(RecordCodec::H264);
        for p in h264_frame(0, true) {
            a.push(p, t);
        }
        // Frame 1: its first slice (sequence 4) lost; the second slice (first_mb_in_slice 5:
        // ue(v) 00110) comes alone with the marker.
        let out = a.push(rtp(5, 3_000, true, &[0x41, 0x30, 0x01]), t);
        let out: Vec<_> = out.into_iter().chain(a.poll(t + WINDOW_TIME)).collect();
        assert!(frames(&out).is_empty(), "{out:?}");
        assert!(a.waiting_keyframe());
    }
}
