//! Per consumer: which packets of its producer it gets, packet by packet, so that its
//! decoder sees one continuous stream of the chosen layers.
//!
//! A [`LayerSelector`] holds the consumer's target and current layers (see
//! [`super::layers`]) and decides for each packet ([`LayerSelector::admit`]):
//!
//! - **Simulcast** (several encodings, or one VP8/H264 encoding with temporal layers): one
//!   encoding at a time. A move to the target encoding happens on its keyframe, never
//!   between (until then the current one goes on, so the picture never freezes); the caller
//!   then restarts its sequence numbers and timestamps where the old encoding left off, and
//!   VP8 picture ids and `TL0PICIDX` continue here. Temporal layers above the target are
//!   skipped by the descriptor's `TID`; a move up waits for a layer sync frame (`Y`).
//!   This is mediasoup's `SimulcastConsumer` with its VP8 encoding context.
//! - **SVC** (VP9 with several layers in one stream): spatial layers above the current one
//!   are skipped; a move up waits for a keyframe, a move down for the end of a frame of the
//!   lower layer (or, in K-SVC modes such as `L3T3_KEY`, whose upper layers only refer to
//!   lower ones at keyframes, for a keyframe); the last packet of the top forwarded layer of
//!   each picture gets the RTP marker. Temporal layers as above with `U` and the frame
//!   bounds. This is mediasoup's `SvcConsumer` with its VP9 encoding context.
//! - **Simple**: everything passes.
//!
//! Skipped packets are those the consumer must not miss ([`Verdict::Skip`]: the caller closes
//! its sequence numbers over them); dropped ones belong to another stream or come before the
//! consumer could start ([`Verdict::Drop`]).

use super::descriptor::PayloadInfo;
use super::layers::Layers;
use super::numbering::Renumbering;

/// How a consumer takes its producer's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One stream, no layers to choose.
    Simple,
    /// Encodings as spatial layers, one forwarded at a time.
    Simulcast,
    /// One stream of spatial layers; `k_svc` for modes whose upper layers depend on lower
    /// ones only at keyframes (`..._KEY`).
    Svc { k_svc: bool },
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this consumer now (another encoding, or before its first keyframe).
    Drop,
    /// A layer the consumer does not get, in the stream it receives: leave no gap for it.
    Skip,
    /// Send it, rewritten as [`Forward`] says.
    Forward(Forward),
}

/// How to send an admitted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forward {
    /// The consumer moved to another encoding with this packet (a keyframe): its sequence
    /// numbers and timestamps must continue from where the old one left off.
    pub switched: bool,
    /// Set the RTP marker (the packet ends the top forwarded layer of its picture).
    pub marker: bool,
    /// The VP8 picture id and `TL0PICIDX` to write, when they change.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
    /// The current layers changed with this packet.
    pub layers_changed: bool,
}

/// One consumer's layers and the state of its numbering.
#[derive(Debug, Clone)]
pub struct LayerSelector {
    mode: Mode,
    spatial_layers: u8,
    temporal_layers: u8,
    target: Option<Layers>,
    current: Option<Layers>,
    pictures: Renumbering,
    tl0: Renumbering,
}

impl LayerSelector {
    /// A selector for a producer of `spatial_layers` (encodings, or SVC spatial layers) of
    /// `temporal_layers` each, with no target yet.
    pub fn new(mode: Mode, spatial_layers: u8, temporal_layers: u8) -> Self {
        LayerSelector {
            mode,
            spatial_layers: spatial_layers.max(1),
            temporal_layers: temporal_layers.max(1),
            target: None,
            current: None,
            pictures: Renumbering::new(15),
            tl0: Renumbering::new(8),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The layers it should get; `None` while nothing fits or nothing is sent.
    pub fn target(&self) -> Option<Layers> {
        self.target
    }

    /// The layers it gets now; `None` before the first keyframe of its target.
    pub fn current(&self) -> Option<Layers> {
        self.current
    }

    /// How many spatial and temporal layers the producer has.
    pub fn layer_counts(&self) -> (u8, u8) {
        (self.spatial_layers, self.temporal_layers)
    }

    /// Sets the target (from [`super::layers::choose_layers`]). Returns true when the
    /// target spatial layer differs from the current one: the caller asks the target's
    /// stream for a keyframe, the only point where the switch can happen.
    pub fn set_target(&mut self, target: Option<Layers>) -> bool {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
        match (target, self.current) {
            (Some(target), Some(current)) => {
                if target.spatial_layer == current.spatial_layer && current.temporal_layer > target.temporal_layer {
                    self.current = Some(target);
                }
                target.spatial_layer != current.spatial_layer
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Starts over as for a new consumer (resumed, or its transport just connected): nothing
    /// passes until a keyframe of the target.
    pub fn restart(&mut self) {
        self.current = None;
    }

    /// Whether a packet of encoding `encoding` could be anything but [`Verdict::Drop`] now,
    /// whatever its descriptor says. False only when [`LayerSelector::admit`] would drop it
    /// without looking further or changing anything: a simulcast consumer takes the encoding
    /// it forwards and the one it waits to switch to (for its keyframe), no other. The
    /// router keeps each producer stream's fan-out to the consumers for which this holds, so
    /// a packet of one encoding does not visit the consumers of the others.
    ///
    /// It changes only with [`LayerSelector::set_target`] (a new target encoding) and with
    /// [`LayerSelector::admit`], [`LayerSelector::restart`] (which only ever narrow it).
    pub fn may_admit(&self, encoding: u8) -> bool {
        match self.mode {
            Mode::Simple | Mode::Svc { .. } => true,
            Mode::Simulcast => {
                let Some(target) = self.target else { return false };
                target.spatial_layer == encoding || self.current.is_some_and(|c| c.spatial_layer == encoding)
            }
        }
    }

    /// The decision for a packet of encoding `encoding` (0 for a single-stream producer)
    /// whose payload descriptor says `info`.
    pub fn admit(&mut self, encoding: u8, info: &PayloadInfo) -> Verdict {
        match self.mode {
            Mode::Simple => Verdict::Forward(Forward::default()),
            Mode::Simulcast => self.admit_simulcast(encoding, info),
            Mode::Svc { k_svc } => self.admit_svc(info, k_svc),
        }
    }

    /// How a packet sent before is sent again (a NACK answered from the producer's buffer):
    /// with the numbers it got then and the marker of the top layer the consumer gets.
    pub fn renumber(&mut self, info: &PayloadInfo) -> Forward {
        let mut forward = Forward::default();
        match self.mode {
            Mode::Simple => {}
            Mode::Simulcast => {
                forward.picture_id = info.picture_id.map(|p| self.pictures.input(p.value));
                forward.tl0_pic_idx = info.tl0_pic_idx.map(|(value, _)| self.tl0.input(u16::from(value)) as u8);
            }
            Mode::Svc { .. } => {
                forward.marker = info.has_layers && info.ends_frame && self.current.is_some_and(|c| c.spatial_layer == info.spatial);
            }
        }
        forward
    }

    fn admit_simulcast(&mut self, encoding: u8, info: &PayloadInfo) -> Verdict {
        let Some(target) = self.target else { return Verdict::Drop };
        let mut forward = Forward::default();
        let current_spatial = self.current.map(|c| c.spatial_layer);
        if encoding == target.spatial_layer && current_spatial != Some(encoding) {
            if !info.keyframe {
                return Verdict::Drop;
            }
            self.current = Some(Layers::new(encoding, info.temporal.min(target.temporal_layer)));
            self.pictures.sync();
            self.tl0.sync();
            forward.switched = true;
            forward.layers_changed = true;
        } else if current_spatial != Some(encoding) {
            return Verdict::Drop;
        }
        let Some(mut current) = self.current else { return Verdict::Drop };
        if !forward.switched && info.has_layers {
            let skip = info.temporal > target.temporal_layer || (info.temporal > current.temporal_layer && !info.switching_up);
            if skip {
                if let Some(picture) = info.picture_id {
                    self.pictures.drop(picture.value);
                }
                return Verdict::Skip;
            }
            if info.temporal > current.temporal_layer {
                current.temporal_layer = info.temporal;
                forward.layers_changed = true;
            }
        }
        if current.temporal_layer > target.temporal_layer {
            current.temporal_layer = target.temporal_layer;
            forward.layers_changed = true;
        }
        self.current = Some(current);
        // A 7-bit id is numbered in the 15-bit space too and written as its low bits, which
        // stay continuous modulo 128.
        forward.picture_id = info.picture_id.map(|p| self.pictures.input(p.value));
        forward.tl0_pic_idx = info.tl0_pic_idx.map(|(value, _)| self.tl0.input(u16::from(value)) as u8);
        Verdict::Forward(forward)
    }

    fn admit_svc(&mut self, info: &PayloadInfo, k_svc: bool) -> Verdict {
        let Some(target) = self.target else { return Verdict::Drop };
        if !info.has_layers {
            return Verdict::Forward(Forward::default());
        }
        if info.spatial >= self.spatial_layers || info.temporal >= self.temporal_layers {
            return Verdict::Drop;
        }
        let (mut spatial, mut temporal) = match self.current {
            Some(c) => (Some(c.spatial_layer), Some(c.temporal_layer)),
            None => (None, None),
        };
        let mut switched = false;
        if spatial.is_none_or(|s| target.spatial_layer > s) {
            if info.keyframe {
                spatial = Some(target.spatial_layer);
                temporal = Some(0);
                switched = true;
            }
        } else if spatial.is_some_and(|s| target.spatial_layer < s) {
            let down = if k_svc { info.keyframe } else { info.spatial == target.spatial_layer && info.ends_frame };
            if down {
                spatial = Some(target.spatial_layer);
                temporal = Some(0);
                switched = true;
            }
        }
        let Some(spatial) = spatial else { return Verdict::Drop };
        // Layers above the current one, and in K-SVC other layers' inter frames (which do
        // not refer to the layers below).
        if info.spatial > spatial || (k_svc && info.inter_predicted && info.spatial != spatial) {
            self.note(spatial, temporal);
            return Verdict::Skip;
        }
        let mut temporal = temporal.unwrap_or(0);
        if target.temporal_layer > temporal {
            let up = info.temporal > temporal && info.temporal <= target.temporal_layer && info.switching_up && info.begins_frame;
            if up {
                temporal = info.temporal;
            }
        } else if target.temporal_layer < temporal && info.temporal == target.temporal_layer && info.ends_frame {
            temporal = target.temporal_layer;
        }
        if info.temporal > temporal {
            self.note(spatial, Some(temporal));
            return Verdict::Skip;
        }
        let before = self.current;
        self.note(spatial, Some(temporal));
        Verdict::Forward(Forward {
            switched: switched && before.is_none(),
            marker: info.spatial == spatial && info.ends_frame,
            layers_changed: before != self.current,
            ..Forward::default()
        })
    }

    fn note(&mut self, spatial: u8, temporal: Option<u8>) {
        self.current = Some(Layers::new(spatial, temporal.unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::VideoCodec;
    use crate::video::descriptor::parse;
    use crate::video::descriptor::tests::{vp8_payload, vp9_payload};

    fn vp8(picture_id: u16, tl0: u8, tid: u8, y: bool, keyframe: bool) -> PayloadInfo {
        parse(VideoCodec::Vp8, &vp8_payload(picture_id, tl0, tid, y, keyframe))
    }

    fn forwarded(verdict: Verdict) -> Forward {
        match verdict {
            Verdict::Forward(forward) => forward,
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    fn simulcast(target: Layers) -> LayerSelector {
        let mut selector = LayerSelector::new(Mode::Simulcast, 3, 3);
        assert!(selector.set_target(Some(target)), "no current layer yet: a keyframe is needed");
        selector
    }

    #[test]
    fn simulcast_starts_on_a_keyframe_of_the_target_encoding_only() {
        let mut s = simulcast(Layers::new(2, 2));
        assert_eq!(s.admit(0, &vp8(1, 1, 0, false, true)), Verdict::Drop, "another encoding's keyframe");
        assert_eq!(s.admit(2, &vp8(1, 1, 0, false, false)), Verdict::Drop, "not a keyframe");
        let first = forwarded(s.admit(2, &vp8(500, 7, 0, false, true)));
        assert!(first.switched && first.layers_changed);
        assert_eq!(s.current(), Some(Layers::new(2, 0)));
        assert_eq!(s.admit(1, &vp8(501, 7, 0, false, false)), Verdict::Drop);
    }

    #[test]
    fn simulcast_switches_down_on_a_keyframe_of_the_lower_encoding_and_keeps_forwarding_meanwhile() {
        let mut s = simulcast(Layers::new(2, 0));
        forwarded(s.admit(2, &vp8(100, 10, 0, false, true)));
        assert!(s.set_target(Some(Layers::new(0, 0))), "a keyframe of encoding 0 is needed");
        // Until it comes, encoding 2 goes on: no freeze.
        assert!(matches!(s.admit(2, &vp8(101, 11, 0, false, false)), Verdict::Forward(_)));
        assert_eq!(s.admit(0, &vp8(900, 50, 0, false, false)), Verdict::Drop);
        let switched = forwarded(s.admit(0, &vp8(901, 51, 0, false, true)));
        assert!(switched.switched);
        // The picture numbering continues across the switch.
        assert_eq!((switched.picture_id, switched.tl0_pic_idx), (Some(102), Some(12)));
        assert_eq!(s.admit(2, &vp8(102, 12, 0, false, false)), Verdict::Drop, "the old encoding is no longer forwarded");
        let next = forwarded(s.admit(0, &vp8(902, 52, 0, false, false)));
        assert_eq!((next.picture_id, next.tl0_pic_idx, next.switched), (Some(103), Some(13), false));
    }

    #[test]
    fn temporal_layers_above_the_target_are_skipped_and_leave_no_gap_in_picture_ids() {
        let mut s = simulcast(Layers::new(0, 0));
        // L1T3: T0 T2 T1 T2 T0 ...
        forwarded(s.admit(0, &vp8(10, 1, 0, false, true)));
        assert_eq!(s.admit(0, &vp8(11, 1, 2, true, false)), Verdict::Skip);
        assert_eq!(s.admit(0, &vp8(12, 1, 1, true, false)), Verdict::Skip);
        assert_eq!(s.admit(0, &vp8(13, 1, 2, false, false)), Verdict::Skip);
        let next = forwarded(s.admit(0, &vp8(14, 2, 0, false, false)));
        assert_eq!((next.picture_id, next.tl0_pic_idx), (Some(11), Some(2)));
    }

    #[test]
    fn a_higher_temporal_layer_is_taken_up_only_at_a_layer_sync_frame() {
        let mut s = simulcast(Layers::new(0, 0));
        forwarded(s.admit(0, &vp8(10, 1, 0, false, true)));
        assert!(!s.set_target(Some(Layers::new(0, 2))), "the same encoding: no keyframe needed");
        assert_eq!(s.admit(0, &vp8(11, 1, 2, false, false)), Verdict::Skip, "T2 without Y refers to a T2 frame not sent");
        let up = forwarded(s.admit(0, &vp8(12, 1, 1, true, false)));
        assert!(up.layers_changed);
        assert_eq!(s.current(), Some(Layers::new(0, 1)));
        let t2 = forwarded(s.admit(0, &vp8(13, 1, 2, true, false)));
        assert_eq!(s.current(), Some(Layers::new(0, 2)));
        assert_eq!(t2.picture_id, Some(12), "11 was skipped");
        // Back down at once.
        s.set_target(Some(Layers::new(0, 0)));
        assert_eq!(s.current(), Some(Layers::new(0, 0)));
        assert_eq!(s.admit(0, &vp8(14, 1, 2, true, false)), Verdict::Skip);
    }

    #[test]
    fn no_target_drops_everything_and_starts_over() {
        let mut s = simulcast(Layers::new(1, 2));
        forwarded(s.admit(1, &vp8(1, 1, 0, false, true)));
        assert!(!s.set_target(None));
        assert_eq!(s.current(), None);
        assert_eq!(s.admit(1, &vp8(2, 1, 0, false, false)), Verdict::Drop);
        assert!(s.set_target(Some(Layers::new(1, 2))));
        assert!(forwarded(s.admit(1, &vp8(3, 2, 0, false, true))).switched);
    }

    #[test]
    fn a_simulcast_consumer_may_admit_only_the_encoding_it_forwards_and_the_one_it_waits_for() {
        let mut s = LayerSelector::new(Mode::Simulcast, 3, 3);
        assert!(!(0..3).any(|e| s.may_admit(e)), "no target: nothing");
        s.set_target(Some(Layers::new(2, 2)));
        assert_eq!((0..3).map(|e| s.may_admit(e)).collect::<Vec<_>>(), [false, false, true], "waiting for r2's keyframe");
        forwarded(s.admit(2, &vp8(1, 1, 0, false, true)));
        s.set_target(Some(Layers::new(0, 2)));
        assert_eq!((0..3).map(|e| s.may_admit(e)).collect::<Vec<_>>(), [true, false, true], "r2 goes on until r0's keyframe");
        forwarded(s.admit(0, &vp8(7, 1, 0, false, true)));
        assert_eq!((0..3).map(|e| s.may_admit(e)).collect::<Vec<_>>(), [true, false, false], "switched");
        assert!(LayerSelector::new(Mode::Svc { k_svc: true }, 3, 3).may_admit(0));
        assert!(LayerSelector::new(Mode::Simple, 1, 1).may_admit(0));
    }

    /// The router skips a consumer for a packet when `may_admit` says no: then `admit` must
    /// have dropped it and left everything as it was. Checked over a long pseudo-random run
    /// of targets, restarts and packets of every encoding.
    #[test]
    fn what_may_not_be_admitted_would_have_been_dropped_without_a_trace() {
        let mut s = LayerSelector::new(Mode::Simulcast, 3, 3);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut skipped, mut picture) = (0, 0u16);
        for _ in 0..20_000 {
            match next(20) {
                0 => {
                    let target = (next(4) < 3).then(|| Layers::new(next(3) as u8, next(3) as u8));
                    s.set_target(target);
                }
                1 => s.restart(),
                _ => {
                    let encoding = next(3) as u8;
                    picture = picture.wrapping_add(1) & 0x7fff;
                    let info = vp8(picture, picture as u8, next(3) as u8, next(2) == 0, next(6) == 0);
                    if s.may_admit(encoding) {
                        s.admit(encoding, &info);
                    } else {
                        let before = format!("{s:?}");
                        assert_eq!(s.admit(encoding, &info), Verdict::Drop, "{before}");
                        assert_eq!(format!("{s:?}"), before, "admit changed the selector");
                        skipped += 1;
                    }
                }
            }
        }
        assert!(skipped > 5_000, "the run must exercise the skipped case: {skipped}");
    }

    #[test]
    fn a_simple_consumer_takes_everything() {
        let mut s = LayerSelector::new(Mode::Simple, 1, 1);
        assert!(matches!(s.admit(0, &vp8(1, 1, 2, false, false)), Verdict::Forward(_)));
    }

    // --- VP9 SVC ---

    fn vp9(sid: u8, tid: u8, begin: bool, end: bool, predicted: bool, switching_up: bool) -> PayloadInfo {
        parse(VideoCodec::Vp9, &vp9_payload(sid, tid, begin, end, predicted, switching_up))
    }

    /// One L3T1 picture, one packet per layer frame: (sid, begin, end) per packet.
    fn picture(predicted: bool) -> Vec<PayloadInfo> {
        (0..3).map(|sid| vp9(sid, 0, true, true, predicted, false)).collect()
    }

    fn verdicts(s: &mut LayerSelector, packets: &[PayloadInfo]) -> Vec<&'static str> {
        packets
            .iter()
            .map(|p| match s.admit(0, p) {
                Verdict::Drop => "drop",
                Verdict::Skip => "skip",
                Verdict::Forward(f) if f.marker => "send+marker",
                Verdict::Forward(_) => "send",
            })
            .collect()
    }

    #[test]
    fn svc_forwards_layers_up_to_the_target_and_marks_the_top_one() {
        let mut s = LayerSelector::new(Mode::Svc { k_svc: true }, 3, 1);
        s.set_target(Some(Layers::new(1, 0)));
        assert_eq!(verdicts(&mut s, &picture(true)), ["drop", "drop", "drop"], "before a keyframe");
        assert_eq!(verdicts(&mut s, &picture(false)), ["send", "send+marker", "skip"]);
        assert_eq!(s.current(), Some(Layers::new(1, 0)));
        // In K-SVC a layer's inter frames refer only to its own earlier frames: layer 0's are
        // not needed to decode layer 1.
        assert_eq!(verdicts(&mut s, &picture(true)), ["skip", "send+marker", "skip"]);
    }

    #[test]
    fn svc_moves_up_only_at_a_keyframe() {
        let mut s = LayerSelector::new(Mode::Svc { k_svc: true }, 3, 1);
        s.set_target(Some(Layers::new(0, 0)));
        assert_eq!(verdicts(&mut s, &picture(false)), ["send+marker", "skip", "skip"]);
        assert!(s.set_target(Some(Layers::new(2, 0))), "a keyframe is needed to move up");
        assert_eq!(verdicts(&mut s, &picture(true)), ["send+marker", "skip", "skip"], "still layer 0");
        assert_eq!(verdicts(&mut s, &picture(false)), ["send", "send", "send+marker"]);
        assert_eq!(s.current(), Some(Layers::new(2, 0)));
    }

    #[test]
    fn k_svc_moves_down_at_a_keyframe_and_full_svc_at_the_end_of_a_frame() {
        let mut k = LayerSelector::new(Mode::Svc { k_svc: true }, 3, 1);
        k.set_target(Some(Layers::new(2, 0)));
        verdicts(&mut k, &picture(false));
        k.set_target(Some(Layers::new(0, 0)));
        assert_eq!(verdicts(&mut k, &picture(true)), ["skip", "skip", "send+marker"], "K-SVC: layer 2 goes on until a keyframe");
        assert_eq!(verdicts(&mut k, &picture(false)), ["send+marker", "skip", "skip"]);

        let mut full = LayerSelector::new(Mode::Svc { k_svc: false }, 3, 1);
        full.set_target(Some(Layers::new(2, 0)));
        verdicts(&mut full, &picture(false));
        full.set_target(Some(Layers::new(0, 0)));
        assert_eq!(verdicts(&mut full, &picture(true)), ["send+marker", "skip", "skip"], "full SVC: at once");
    }

    #[test]
    fn svc_temporal_layers_are_skipped_above_the_target_and_taken_up_at_switching_points() {
        let mut s = LayerSelector::new(Mode::Svc { k_svc: true }, 1, 3);
        s.set_target(Some(Layers::new(0, 0)));
        assert!(matches!(s.admit(0, &vp9(0, 0, true, true, false, false)), Verdict::Forward(_)));
        assert_eq!(s.admit(0, &vp9(0, 2, true, true, true, true)), Verdict::Skip);
        assert_eq!(s.admit(0, &vp9(0, 1, true, true, true, true)), Verdict::Skip);
        s.set_target(Some(Layers::new(0, 2)));
        assert_eq!(s.admit(0, &vp9(0, 2, true, true, true, false)), Verdict::Skip, "no switching point");
        assert!(matches!(s.admit(0, &vp9(0, 1, true, true, true, true)), Verdict::Forward(_)));
        assert_eq!(s.current(), Some(Layers::new(0, 1)));
        assert!(matches!(s.admit(0, &vp9(0, 2, true, true, true, true)), Verdict::Forward(_)));
        assert_eq!(s.current(), Some(Layers::new(0, 2)));
    }
}
