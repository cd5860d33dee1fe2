//! H264 over RTP (RFC 6184, packetization-mode 1 as browsers send, which includes mode 0's
//! single NAL units) back into access units as MP4 stores them: each NAL unit behind a
//! 4-byte big-endian length (the `avcC` box says `lengthSizeMinusOne = 3`). Pure functions.
//!
//! - Single NAL unit packets (types 1-23): the payload is the NAL unit.
//! - STAP-A (24): a 16-bit size before each of the NAL units it aggregates.
//! - FU-A (28): one NAL unit cut in pieces; the original header is rebuilt from the FU
//!   indicator's F/NRI bits and the FU header's type; `S` marks the first piece, `E` the last.
//!
//! An access unit with an IDR slice (type 5) is a keyframe; SPS (7) and PPS (8) stay in the
//! samples as they came (players read parameter sets in-band too), and the first ones also go
//! into the file's `avcC`.

use super::depacketize::Fragment;

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether a NAL unit of `kind` whose first byte after the header is `body_first` can begin
/// an access unit (H.264 7.4.1.2.3: AUD, SEI, SPS, PPS come before the first slice; a slice
/// begins one if it is its picture's first, `first_mb_in_slice` = `ue(v)` 0, the bit 1).
fn begins_access_unit(kind: u8, body_first: Option<u8>) -> bool {
    match kind {
        NAL_SEI | NAL_SPS | NAL_PPS | NAL_AUD | 14..=18 => true,
        NAL_SLICE..=NAL_IDR => body_first.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// What an H264 payload says of the access unit it carries a part of. `begins_frame` is set
/// for a packet that can start an access unit (a parameter set, SEI, AUD, or the first slice
/// of a picture): after a loss, a later slice of the same picture does not start a frame.
/// `keyframe` for a packet with an IDR slice or an SPS (browsers send SPS and PPS just before
/// each IDR, in a packet of their own: the keyframe is coming); the assembler decides from the
/// whole access unit ([`has_idr`]).
pub fn fragment(payload: &[u8]) -> Option<Fragment> {
    let header = *payload.first()?;
    if header & 0x80 != 0 {
        return None; // forbidden_zero_bit
    }
    let kind = header & 0x1f;
    match kind {
        1..=23 => Some(Fragment { offset: 0, begins_frame: begins_access_unit(kind, payload.get(1).copied()), ends_layer_frame: false, keyframe: kind == NAL_IDR || kind == NAL_SPS }),
        STAP_A => {
            let nals = stap_a(payload)?;
            let first = nals.first()?;
            Some(Fragment {
                offset: 0,
                begins_frame: begins_access_unit(first[0] & 0x1f, first.get(1).copied()),
                ends_layer_frame: false,
                keyframe: nals.iter().any(|n| matches!(n[0] & 0x1f, NAL_IDR | NAL_SPS)),
            })
        }
        FU_A => {
            let fu = *payload.get(1)?;
            payload.get(2)?;
            let start = fu & 0x80 != 0;
            let original = fu & 0x1f;
            Some(Fragment {
                offset: 0,
                begins_frame: start && begins_access_unit(original, payload.get(2).copied()),
                ends_layer_frame: false,
                keyframe: start && original == NAL_IDR,
            })
        }
        // STAP-B, MTAP, FU-B: not in packetization-mode 1.
        _ => None,
    }
}

/// The NAL units of a STAP-A payload; `None` if a size runs past the end.
fn stap_a(payload: &[u8]) -> Option<Vec<&[u8]>> {
    let mut nals = Vec::new();
    let mut at = 1;
    while at < payload.len() {
        let size = usize::from(u16::from_be_bytes([*payload.get(at)?, *payload.get(at + 1)?]));
        let nal = payload.get(at + 2..at + 2 + size).filter(|n| !n.is_empty())?;
        nals.push(nal);
        at += 2 + size;
    }
    (!nals.is_empty()).then_some(nals)
}

fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    out.extend_from_slice(nal);
}

/// The payloads of one access unit, in sequence order, as length-prefixed NAL units; `None`
/// if they do not make whole NAL units (a FU-A piece missing: no start, no end, or a piece
/// out of its run), which the assembler treats as a lost frame.
pub fn access_unit(payloads: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payloads.iter().map(|p| p.len() + 4).sum());
    // The NAL unit a FU-A run is rebuilding.
    let mut fu: Option<Vec<u8>> = None;
    for payload in payloads {
        let header = *payload.first()?;
        match header & 0x1f {
            FU_A => {
                let fu_header = *payload.get(1)?;
                let (start, end) = (fu_header & 0x80 != 0, fu_header & 0x40 != 0);
                let piece = payload.get(2..)?;
                match (&mut fu, start) {
                    (None, true) => {
                        let mut nal = vec![(header & 0xe0) | (fu_header & 0x1f)];
                        nal.extend_from_slice(piece);
                        fu = Some(nal);
                    }
                    (Some(nal), false) => nal.extend_from_slice(piece),
                    // A start inside a run, or a middle without a start: a piece is lost.
                    _ => return None,
                }
                if end {
                    push_nal(&mut out, &fu.take()?);
                }
            }
            _ if fu.is_some() => return None, // the run's end was lost
            STAP_A => {
                for nal in stap_a(payload)? {
                    push_nal(&mut out, nal);
                }
            }
            1..=23 => push_nal(&mut out, payload),
            _ => return None,
        }
    }
    (fu.is_none() && !out.is_empty()).then_some(out)
}

/// The NAL units of a length-prefixed access unit.
pub fn nal_units(avcc: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(avcc.get(at..at + 4)?.try_into().ok()?) as usize;
        let nal = avcc.get(at + 4..at + 4 + size)?;
        at += 4 + size;
        Some(nal)
    })
}

/// Whether a length-prefixed access unit has an IDR slice.
pub fn has_idr(avcc: &[u8]) -> bool {
    nal_units(avcc).any(|n| n.first().is_some_and(|h| h & 0x1f == NAL_IDR))
}

/// An SPS's RBSP: the NAL unit after its header, emulation prevention bytes (00 00 03)
/// removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.at / 8)?;
        let bit = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: usize) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some((v << 1) | self.bit()?))
    }

    /// Exp-Golomb `ue(v)`.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { (k / 2 + 1) as i32 } else { -((k / 2) as i32) })
    }
}

/// The picture size an SPS NAL unit (header byte first) gives (H.264 7.3.2.1.1), after its
/// frame cropping; `None` if it cannot be read.
pub fn sps_size(sps: &[u8]) -> Option<(u32, u32)> {
    if sps.first()? & 0x1f != NAL_SPS {
        return None;
    }
    let data = rbsp(sps);
    let mut b = Bits { data: &data, at: 0 };
    let profile = b.bits(8)?;
    b.bits(16)?; // constraint flags, level_idc
    b.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_colour_planes = 0;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = b.ue()?;
        if chroma_format == 3 {
            separate_colour_planes = b.bit()?;
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            // seq_scaling_matrix_present_flag: skip each list that is present.
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if b.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + b.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            b.bit()?;
            b.se()?;
            b.se()?;
            for _ in 0..b.ue()? {
                b.se()?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = b.ue()? + 1;
    let height_map_units = b.ue()? + 1;
    let frame_mbs_only = b.bit()?;
    if frame_mbs_only == 0 {
        b.bit()?; // mb_adaptive_frame_field_flag
    }
    b.bit()?; // direct_8x8_inference_flag
    let mut width = width_mbs * 16;
    let mut height = (2 - frame_mbs_only) * height_map_units * 16;
    if b.bit()? == 1 {
        let (left, right, top, bottom) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        let (crop_x, crop_y) = match (chroma_format, separate_colour_planes) {
            (0, _) | (3, 1) => (1, 2 - frame_mbs_only),
            (1, _) => (2, 2 * (2 - frame_mbs_only)),
            (2, _) => (2, 2 - frame_mbs_only),
            _ => (1, 2 - frame_mbs_only),
        };
        width = width.checked_sub(crop_x * (left + right))?;
        height = height.checked_sub(crop_y * (top + bottom))?;
    }
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Parameter sets x264 wrote (ffmpeg -c:v libx264): baseline 320x240 (20 x 15 macroblocks).
    const SPS_320X240: [u8; 24] = [0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80];
    const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn lengths(avcc: &[u8]) -> Vec<Vec<u8>> {
        nal_units(avcc).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn sps_gives_the_picture_size_with_cropping() {
        assert_eq!(sps_size(&SPS_320X240), Some((320, 240)));
        // 1280x720 high profile (x264): 80 x 45 macroblocks, no cropping.
        let high = [0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60];
        assert_eq!(sps_size(&high), Some((1280, 720)));
        // 1920x1080 baseline: 120 x 68 macroblocks cropped by 8 lines (frame_crop_bottom 4).
        let full_hd = [0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20];
        assert_eq!(sps_size(&full_hd), Some((1920, 1080)));
        assert_eq!(sps_size(&PPS), None);
        assert_eq!(sps_size(&SPS_320X240[..5]), None);
    }

    #[test]
    fn single_nal_units_are_length_prefixed_and_idr_is_a_keyframe() {
        let idr = vec![0x65, 0x88, 0x84, 0x00];
        let f = fragment(&idr).unwrap();
        assert!(f.begins_frame && f.keyframe);
        let au = access_unit(&[idr.clone()]).unwrap();
        assert_eq!(au, [&[0, 0, 0, 4][..], &idr].concat());
        assert!(has_idr(&au));
        // A non-IDR slice, first of its picture (first_mb_in_slice 0), then a later slice.
        let p = vec![0x41, 0x9a, 0x02];
        assert!(fragment(&p).unwrap().begins_frame && !fragment(&p).unwrap().keyframe);
        let later_slice = vec![0x41, 0x1a, 0x02];
        assert!(!fragment(&later_slice).unwrap().begins_frame);
        assert!(!has_idr(&access_unit(&[p]).unwrap()));
        // forbidden_zero_bit set, empty: unreadable.
        assert_eq!(fragment(&[0xe5, 1]), None);
        assert_eq!(fragment(&[]), None);
    }

    #[test]
    fn stap_a_with_sps_pps_and_idr_is_one_keyframe_keeping_the_parameter_sets() {
        let idr = [0x65, 0x88, 0x80];
        let mut stap = vec![0x78];
        for nal in [&SPS_320X240[..], &PPS[..], &idr[..]] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let f = fragment(&stap).unwrap();
        assert!(f.begins_frame && f.keyframe);
        let au = access_unit(&[stap.clone()]).unwrap();
        assert_eq!(lengths(&au), vec![SPS_320X240.to_vec(), PPS.to_vec(), idr.to_vec()]);
        // A size past the end is unreadable.
        let mut broken = stap.clone();
        broken.truncate(stap.len() - 1);
        assert_eq!(fragment(&broken), None);
        assert_eq!(access_unit(&[broken]), None);
    }

    fn fu_a(nal: &[u8], pieces: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let chunk = body.len().div_ceil(pieces);
        let n = body.chunks(chunk).count();
        body.chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                let mut fu = if i == 0 { 0x80 } else { 0 } | nal[0] & 0x1f;
                if i + 1 == n {
                    fu |= 0x40;
                }
                let mut p = vec![(nal[0] & 0xe0) | FU_A, fu];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn fu_a_start_middle_and_end_rebuild_the_nal_unit() {
        let idr: Vec<u8> = [0x65, 0x88].into_iter().chain((0..30).map(|i| i as u8)).collect();
        let pieces = fu_a(&idr, 3);
        assert_eq!(pieces.len(), 3);
        let (start, middle, end) = (fragment(&pieces[0]).unwrap(), fragment(&pieces[1]).unwrap(), fragment(&pieces[2]).unwrap());
        assert!(start.begins_frame && start.keyframe);
        assert!(!middle.begins_frame && !middle.keyframe && !end.begins_frame);
        let mut payloads = vec![[&[0x78, 0, 24][..], &SPS_320X240, &[0, 5], &PPS].concat()];
        payloads.extend(pieces.iter().cloned());
        let au = access_unit(&payloads).unwrap();
        assert_eq!(lengths(&au), vec![SPS_320X240.to_vec(), PPS.to_vec(), idr.clone()]);
        assert!(has_idr(&au));
    }

    #[test]
    fn a_fu_a_run_missing_a_piece_is_no_access_unit() {
        let nal: Vec<u8> = [0x41, 0x9a].into_iter().chain(0..40).collect();
        let pieces = fu_a(&nal, 4);
        // Middle lost.
        let without_middle = vec![pieces[0].clone(), pieces[2].clone(), pieces[3].clone()];
        assert!(access_unit(&without_middle).is_some(), "a middle's loss shows only in the sequence numbers");
        // Start lost, end lost, or the run interrupted by another NAL unit.
        assert_eq!(access_unit(&pieces[1..]), None);
        assert_eq!(access_unit(&pieces[..3]), None);
        assert_eq!(access_unit(&[pieces[0].clone(), vec![0x41, 0x9a], pieces[3].clone()]), None);
    }
}
