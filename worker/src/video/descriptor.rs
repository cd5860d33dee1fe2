//! What a video packet's payload descriptor says about its layers, read once per packet on
//! the producer side (every consumer of the packet uses it), and the in-place rewrite of its
//! picture numbering for one consumer.
//!
//! - VP8 (RFC 7741 section 4.2): the temporal layer (`TID`), whether the frame is a layer
//!   sync point (`Y`: it depends only on temporal layer 0, so a consumer can move up to its
//!   layer there), and where the `PictureID` and `TL0PICIDX` fields are, which a simulcast
//!   consumer rewrites so that the decoder sees one numbering across encodings.
//! - VP9 (RFC 9628 section 4.2): spatial and temporal layer (`SID`, `TID`), switching-up
//!   point (`U`), first and last packet of a layer frame (`B`, `E`) and inter-picture
//!   prediction (`P`), by which an SVC consumer drops the layers it does not get.
//! - H264: whether the packet starts a keyframe ([`is_keyframe`]); its temporal layer, which
//!   its payload does not carry, comes from the dependency descriptor extension when the
//!   producer sends one ([`PayloadInfo::with_dependency`], [`super::dependency`]).
//!
//! Parsing never fails: a truncated or odd descriptor just yields less information (no
//! layers, no picture id), which means "forward as is".

use super::dependency::DependencyFrame;
use crate::rtcp::{is_keyframe, VideoCodec};

/// Where a VP8 picture id is in the payload, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    /// The 7- or 15-bit value.
    pub value: u16,
    /// Its first byte's offset in the payload.
    pub offset: u8,
    /// 15 bits (two bytes, `M` set) rather than 7.
    pub long: bool,
}

impl PictureId {
    /// The modulus of its numbering.
    pub fn modulus(&self) -> u32 {
        if self.long { 1 << 15 } else { 1 << 7 }
    }
}

/// The layer information of one video packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The packet starts a keyframe, where a decoder (or a layer switch) can start.
    pub keyframe: bool,
    /// The descriptor carries layer indices (VP8 `T`, VP9 `L`); without them every packet
    /// counts as layer 0.
    pub has_layers: bool,
    /// VP9 spatial layer; 0 for VP8 and H264 (their spatial layers are simulcast encodings).
    pub spatial: u8,
    /// Temporal layer.
    pub temporal: u8,
    /// A frame from which the consumer may move up to this temporal layer (VP8 `Y`, VP9 `U`).
    pub switching_up: bool,
    /// The first packet of a (layer) frame (VP8 `S` with partition 0, VP9 `B`).
    pub begins_frame: bool,
    /// The last packet of a layer frame (VP9 `E`); for VP8 and H264 unknown (false).
    pub ends_frame: bool,
    /// VP9 `P`: the frame refers to earlier pictures of its layer.
    pub inter_predicted: bool,
    /// VP8's picture id (VP9's stays as the encoder numbered it).
    pub picture_id: Option<PictureId>,
    /// VP8's `TL0PICIDX` and its offset in the payload.
    pub tl0_pic_idx: Option<(u8, u8)>,
}

impl PayloadInfo {
    /// The layers of a packet whose payload says none (H264), from its dependency descriptor:
    /// its temporal layer, whether a consumer may move up to that layer here (the frame
    /// refers only to base-layer frames, VP8's `Y`) and the frame's bounds. A payload that
    /// carries layers (VP8, VP9) keeps its own. The spatial layer stays 0: H264's spatial
    /// layers are simulcast encodings, each a stream of its own.
    pub fn with_dependency(self, frame: &DependencyFrame) -> PayloadInfo {
        if self.has_layers {
            return self;
        }
        PayloadInfo {
            has_layers: true,
            temporal: frame.temporal,
            switching_up: frame.base_sync,
            begins_frame: frame.start_of_frame,
            ends_frame: frame.end_of_frame,
            ..self
        }
    }
}

/// Reads `payload` (the RTP payload, padding excluded) of a packet of `codec`.
pub fn parse(codec: VideoCodec, payload: &[u8]) -> PayloadInfo {
    let mut info = match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => PayloadInfo::default(),
    };
    info.keyframe = is_keyframe(codec, payload);
    info
}

fn vp8(payload: &[u8]) -> PayloadInfo {
    let mut info = PayloadInfo::default();
    let Some(&first) = payload.first() else { return info };
    info.begins_frame = first & 0x10 != 0 && first & 0x07 == 0;
    if first & 0x80 == 0 {
        return info;
    }
    let Some(&extension) = payload.get(1) else { return info };
    let mut offset = 2usize;
    if extension & 0x80 != 0 {
        let Some(&high) = payload.get(offset) else { return info };
        let long = high & 0x80 != 0;
        let value = if long {
            let Some(&low) = payload.get(offset + 1) else { return info };
            (u16::from(high & 0x7f) << 8) | u16::from(low)
        } else {
            u16::from(high & 0x7f)
        };
        info.picture_id = Some(PictureId { value, offset: offset as u8, long });
        offset += if long { 2 } else { 1 };
    }
    if extension & 0x40 != 0 {
        let Some(&tl0) = payload.get(offset) else { return info };
        info.tl0_pic_idx = Some((tl0, offset as u8));
        offset += 1;
    }
    if extension & 0x20 != 0 {
        let Some(&byte) = payload.get(offset) else { return info };
        info.has_layers = true;
        info.temporal = byte >> 6;
        info.switching_up = byte & 0x20 != 0;
    }
    info
}

fn vp9(payload: &[u8]) -> PayloadInfo {
    let mut info = PayloadInfo::default();
    let Some(&first) = payload.first() else { return info };
    let (picture_id, layers, flexible) = (first & 0x80 != 0, first & 0x20 != 0, first & 0x10 != 0);
    info.inter_predicted = first & 0x40 != 0;
    info.begins_frame = first & 0x08 != 0;
    info.ends_frame = first & 0x04 != 0;
    let mut offset = 1usize;
    if picture_id {
        let Some(&high) = payload.get(offset) else { return info };
        offset += if high & 0x80 != 0 { 2 } else { 1 };
    }
    if layers {
        let Some(&byte) = payload.get(offset) else { return info };
        info.has_layers = true;
        info.temporal = byte >> 5;
        info.switching_up = byte & 0x10 != 0;
        info.spatial = (byte >> 1) & 0x07;
        // TL0PICIDX follows in non-flexible mode; nothing here needs it.
        let _ = flexible;
    }
    info
}

/// Writes a picture id and a `TL0PICIDX` into a payload whose descriptor [`parse`] described
/// as `info`, in place (the fields keep their size: a 7-bit picture id gets the low 7 bits).
pub fn write_picture_numbers(payload: &mut [u8], info: &PayloadInfo, picture_id: Option<u16>, tl0_pic_idx: Option<u8>) {
    if let (Some(field), Some(value)) = (info.picture_id, picture_id) {
        let at = usize::from(field.offset);
        if field.long {
            if let Some(bytes) = payload.get_mut(at..at + 2) {
                bytes[0] = 0x80 | ((value >> 8) as u8 & 0x7f);
                bytes[1] = value as u8;
            }
        } else if let Some(byte) = payload.get_mut(at) {
            *byte = value as u8 & 0x7f;
        }
    }
    if let (Some((_, at)), Some(value)) = (info.tl0_pic_idx, tl0_pic_idx)
        && let Some(byte) = payload.get_mut(usize::from(at))
    {
        *byte = value;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A VP8 payload: descriptor with a 15-bit picture id, TL0PICIDX and TID/Y, then a
    /// payload header (keyframe or not) and some bytes.
    pub(crate) fn vp8_payload(picture_id: u16, tl0: u8, tid: u8, y: bool, keyframe: bool) -> Vec<u8> {
        let mut p = vec![0x90, 0xe0, 0x80 | (picture_id >> 8) as u8, picture_id as u8, tl0, (tid << 6) | if y { 0x20 } else { 0 }];
        p.push(if keyframe { 0x00 } else { 0x01 });
        p.extend_from_slice(&[0x9d, 0x01, 0x2a, 0, 0, 0, 0]);
        p
    }

    /// A VP9 payload with layer indices (non-flexible: TL0PICIDX after them).
    pub(crate) fn vp9_payload(sid: u8, tid: u8, begin: bool, end: bool, predicted: bool, switching_up: bool) -> Vec<u8> {
        let mut first = 0x80 | 0x20;
        if predicted {
            first |= 0x40;
        }
        if begin {
            first |= 0x08;
        }
        if end {
            first |= 0x04;
        }
        let layers = (tid << 5) | if switching_up { 0x10 } else { 0 } | (sid << 1);
        vec![first, 0x80, 0x05, layers, 0x07, 0xaa, 0xbb]
    }

    #[test]
    fn vp8_layers_and_picture_numbers_are_read() {
        let info = parse(VideoCodec::Vp8, &vp8_payload(0x1234, 9, 2, true, false));
        assert!(info.has_layers && info.switching_up && info.begins_frame && !info.keyframe);
        assert_eq!(info.temporal, 2);
        assert_eq!(info.picture_id, Some(PictureId { value: 0x1234, offset: 2, long: true }));
        assert_eq!(info.tl0_pic_idx, Some((9, 4)));
        assert!(parse(VideoCodec::Vp8, &vp8_payload(1, 0, 0, false, true)).keyframe);
    }

    #[test]
    fn vp8_without_extensions_has_no_layers() {
        let info = parse(VideoCodec::Vp8, &[0x10, 0x50, 0x01]);
        assert_eq!((info.has_layers, info.temporal, info.picture_id, info.tl0_pic_idx), (false, 0, None, None));
        // A 7-bit picture id and no TL0PICIDX.
        let info = parse(VideoCodec::Vp8, &[0x90, 0x80, 0x05, 0x51]);
        assert_eq!(info.picture_id, Some(PictureId { value: 5, offset: 2, long: false }));
    }

    #[test]
    fn truncated_descriptors_yield_what_was_there() {
        for len in 0..7 {
            let payload = &vp8_payload(0x1234, 9, 2, true, false)[..len];
            let info = parse(VideoCodec::Vp8, payload);
            assert!(len >= 6 || !info.has_layers, "{len}: {info:?}");
        }
        for len in 0..4 {
            let info = parse(VideoCodec::Vp9, &vp9_payload(1, 1, true, true, true, false)[..len]);
            assert!(!info.has_layers, "{len}: {info:?}");
        }
    }

    #[test]
    fn vp9_layers_and_frame_bounds_are_read() {
        let info = parse(VideoCodec::Vp9, &vp9_payload(2, 1, false, true, true, true));
        assert!(info.has_layers && info.ends_frame && !info.begins_frame && info.inter_predicted && info.switching_up);
        assert_eq!((info.spatial, info.temporal), (2, 1));
        let key = parse(VideoCodec::Vp9, &vp9_payload(0, 0, true, false, false, false));
        assert!(key.keyframe);
        assert!(!parse(VideoCodec::Vp9, &vp9_payload(1, 0, true, false, false, false)).keyframe, "only layer 0 starts a keyframe");
    }

    #[test]
    fn an_h264_packet_takes_its_layers_from_its_dependency_descriptor_and_vp8_keeps_its_own() {
        use crate::video::dependency::{DependencyTracker, tests::{l1t3_structure_descriptor, short_descriptor}};
        let mut tracker = DependencyTracker::new();
        // An IDR slice (NAL type 5) with the L1T3 structure, then a T2 frame's FU-A.
        let idr = [0x65, 0x88, 0x84, 0x00];
        let key = parse(VideoCodec::H264, &idr).with_dependency(&tracker.read(&l1t3_structure_descriptor(0, 1, true, true)).unwrap());
        assert!(key.keyframe && key.has_layers && key.switching_up);
        assert_eq!((key.spatial, key.temporal), (0, 0));
        let fu_a = [0x7c, 0x81, 0x9a, 0x00];
        let t2 = parse(VideoCodec::H264, &fu_a).with_dependency(&tracker.read(&short_descriptor(0, 3, 2, true, false)).unwrap());
        assert!(!t2.keyframe && t2.has_layers && t2.switching_up && t2.begins_frame && !t2.ends_frame);
        assert_eq!(t2.temporal, 2);
        let vp8 = parse(VideoCodec::Vp8, &vp8_payload(7, 1, 1, false, false));
        assert_eq!(vp8.with_dependency(&tracker.read(&short_descriptor(0, 3, 3, true, true)).unwrap()), vp8);
    }

    #[test]
    fn picture_numbers_are_written_in_place() {
        let mut payload = vp8_payload(0x1234, 9, 0, false, false);
        let info = parse(VideoCodec::Vp8, &payload);
        write_picture_numbers(&mut payload, &info, Some(0x7ffe), Some(200));
        let again = parse(VideoCodec::Vp8, &payload);
        assert_eq!(again.picture_id.map(|p| p.value), Some(0x7ffe));
        assert_eq!(again.tl0_pic_idx.map(|t| t.0), Some(200));
        assert_eq!(&payload[6..], &vp8_payload(0, 0, 0, false, false)[6..], "the rest untouched");
        let mut short = vec![0x90, 0x80, 0x05, 0x51];
        let info = parse(VideoCodec::Vp8, &short);
        write_picture_numbers(&mut short, &info, Some(300), None);
        assert_eq!(short, [0x90, 0x80, 300u16 as u8 & 0x7f, 0x51]);
    }
}
