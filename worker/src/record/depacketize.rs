//! What one RTP payload holds of a codec frame: the bytes a container stores, where the frame
//! starts and ends, and whether it is a keyframe. Pure functions of the payload.
//!
//! - VP8 (RFC 7741): the payload descriptor is stripped; a frame starts at `S=1, PID=0` and
//!   is a keyframe when the VP8 frame tag's `P` bit (bit 0 of its first byte) is 0.
//! - VP9 (RFC 9628): the descriptor is stripped; `B`/`E` mark a layer frame's first and last
//!   packet; a picture without `P` (not inter-predicted) in its first layer is a keyframe.
//! - Opus (RFC 7587): every packet is one whole frame, and every frame can start a file.
//! - H264 (RFC 6184): see [`super::h264`]; the assembler keeps each payload whole and the
//!   access unit is rebuilt from them when it is complete.

/// A codec the recorder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordCodec {
    Opus,
    Vp8,
    Vp9,
    H264,
}

impl RecordCodec {
    /// The codec for a mediasoup `mimeType` (`audio/opus`, `video/VP8`...); `None` for the
    /// ones the recorder cannot write (RTX, anything else).
    pub fn from_mime_type(mime_type: &str) -> Option<Self> {
        let (_, name) = mime_type.split_once('/')?;
        if name.eq_ignore_ascii_case("opus") {
            Some(RecordCodec::Opus)
        } else if name.eq_ignore_ascii_case("VP8") {
            Some(RecordCodec::Vp8)
        } else if name.eq_ignore_ascii_case("VP9") {
            Some(RecordCodec::Vp9)
        } else if name.eq_ignore_ascii_case("H264") {
            Some(RecordCodec::H264)
        } else {
            None
        }
    }

    /// The codec's name as RTP and the recording status write it.
    pub fn name(self) -> &'static str {
        match self {
            RecordCodec::Opus => "opus",
            RecordCodec::Vp8 => "VP8",
            RecordCodec::Vp9 => "VP9",
            RecordCodec::H264 => "H264",
        }
    }

    pub fn is_video(self) -> bool {
        !matches!(self, RecordCodec::Opus)
    }

    /// The RTP clock rate of the codec (fixed by each RTP payload format).
    pub fn clock_rate(self) -> u32 {
        match self {
            RecordCodec::Opus => 48_000,
            RecordCodec::Vp8 | RecordCodec::Vp9 | RecordCodec::H264 => 90_000,
        }
    }
}

/// What a payload says of the frame it carries a part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Where the codec data starts in the payload (after the payload descriptor).
    pub offset: usize,
    /// The first packet of a frame (VP9: of a layer frame).
    pub begins_frame: bool,
    /// The last packet of a layer frame (VP9's `E`); `false` where the format does not say
    /// (VP8 ends its frames with the RTP marker bit).
    pub ends_layer_frame: bool,
    /// The frame this packet begins can be decoded on its own.
    pub keyframe: bool,
}

/// Reads a payload of `codec`; `None` for one that cannot be read (truncated, reserved bits
/// in use), which the assembler treats as a lost packet.
pub fn fragment(codec: RecordCodec, payload: &[u8]) -> Option<Fragment> {
    match codec {
        RecordCodec::Opus if !payload.is_empty() => {
            Some(Fragment { offset: 0, begins_frame: true, ends_layer_frame: true, keyframe: true })
        }
        RecordCodec::Opus => None,
        RecordCodec::Vp8 => vp8(payload),
        RecordCodec::Vp9 => vp9(payload),
        RecordCodec::H264 => super::h264::fragment(payload),
    }
}

fn vp8(payload: &[u8]) -> Option<Fragment> {
    let first = *payload.first()?;
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let mut offset = 1;
    if extended {
        let x = *payload.get(offset)?;
        offset += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let m = *payload.get(offset)? & 0x80 != 0;
            offset += if m { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            offset += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            offset += 1; // TID/Y/KEYIDX
        }
    }
    let data = payload.get(offset..).filter(|d| !d.is_empty())?;
    let begins_frame = start && partition == 0;
    // The frame tag's inverse key frame flag, only meaningful in a frame's first byte.
    let keyframe = begins_frame && data[0] & 0x01 == 0;
    Some(Fragment { offset, begins_frame, ends_layer_frame: false, keyframe })
}

fn vp9(payload: &[u8]) -> Option<Fragment> {
    let first = *payload.first()?;
    let picture_id = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let layers = first & 0x20 != 0;
    let flexible = first & 0x10 != 0;
    let begins = first & 0x08 != 0;
    let ends = first & 0x04 != 0;
    let scalability = first & 0x02 != 0;
    let mut offset = 1;
    if picture_id {
        let m = *payload.get(offset)? & 0x80 != 0;
        offset += if m { 2 } else { 1 };
    }
    let mut spatial = 0;
    if layers {
        spatial = (*payload.get(offset)? >> 1) & 0x07;
        offset += 1;
        if !flexible {
            offset += 1; // TL0PICIDX
        }
    }
    if flexible && inter_predicted {
        // Up to three P_DIFF bytes, each saying whether another follows.
        for _ in 0..3 {
            let diff = *payload.get(offset)?;
            offset += 1;
            if diff & 0x01 == 0 {
                break;
            }
        }
    }
    if scalability {
        let ss = *payload.get(offset)?;
        offset += 1;
        let spatial_layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            offset += 4 * spatial_layers; // widths and heights
        }
        if ss & 0x08 != 0 {
            let pictures = *payload.get(offset)?;
            offset += 1;
            for _ in 0..pictures {
                let picture = *payload.get(offset)?;
                offset += 1 + usize::from((picture >> 2) & 0x03);
            }
        }
    }
    payload.get(offset..).filter(|d| !d.is_empty())?;
    Some(Fragment { offset, begins_frame: begins, ends_layer_frame: ends, keyframe: begins && !inter_predicted && spatial == 0 })
}

/// A video keyframe's picture size, read from the codec bitstream (the container needs it
/// before the first frame): VP8's keyframe header, VP9's uncompressed header.
pub fn picture_size(codec: RecordCodec, frame: &[u8]) -> Option<(u32, u32)> {
    match codec {
        RecordCodec::Vp8 => {
            // 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
            if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let width = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
            let height = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
            (width > 0 && height > 0).then_some((width, height))
        }
        RecordCodec::Vp9 => vp9_size(frame),
        RecordCodec::H264 => super::h264::nal_units(frame).find(|n| n.first().is_some_and(|h| h & 0x1f == super::h264::NAL_SPS)).and_then(super::h264::sps_size),
        RecordCodec::Opus => None,
    }
}

/// Reads bits MSB first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..n {
            let byte = *self.data.get(self.at / 8)?;
            value = (value << 1) | u32::from((byte >> (7 - self.at % 8)) & 1);
            self.at += 1;
        }
        Some(value)
    }
}

fn vp9_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut bits = Bits { data: frame, at: 0 };
    if bits.read(2)? != 2 {
        return None; // frame_marker
    }
    let profile = bits.read(1)? | (bits.read(1)? << 1);
    if profile == 3 {
        bits.read(1)?;
    }
    if bits.read(1)? == 1 {
        return None; // show_existing_frame
    }
    if bits.read(1)? != 0 {
        return None; // not a keyframe
    }
    bits.read(2)?; // show_frame, error_resilient_mode
    if bits.read(24)? != 0x49_83_42 {
        return None; // sync code
    }
    if profile >= 2 {
        bits.read(1)?; // ten_or_twelve_bit
    }
    let color_space = bits.read(3)?;
    if color_space != 7 {
        bits.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            bits.read(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        bits.read(1)?;
    }
    let width = bits.read(16)? + 1;
    let height = bits.read(16)? + 1;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_descriptor_is_stripped_and_keyframes_are_read_from_the_frame_tag() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; then a keyframe tag.
        let payload = [0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        let f = fragment(RecordCodec::Vp8, &payload).unwrap();
        assert_eq!(f, Fragment { offset: 4, begins_frame: true, ends_layer_frame: false, keyframe: true });
        // The same frame as an interframe (P=1) and as a continuation (S=0).
        let inter = [0x90, 0x80, 0x81, 0x23, 0x11];
        assert!(!fragment(RecordCodec::Vp8, &inter).unwrap().keyframe);
        let continuation = [0x80, 0x80, 0x81, 0x23, 0x00];
        let f = fragment(RecordCodec::Vp8, &continuation).unwrap();
        assert!(!f.begins_frame && !f.keyframe);
        // A descriptor with nothing after it is unreadable.
        assert_eq!(fragment(RecordCodec::Vp8, &[0x90, 0x80, 0x81, 0x23]), None);
    }

    #[test]
    fn vp9_descriptor_with_layers_and_scalability_structure_is_stripped() {
        // I, L, B, E, V (non-flexible): picture id 7 bits, layer byte + TL0PICIDX, SS with
        // one spatial layer, its size, and no picture group.
        let payload = [0xAE, 0x05, 0x00, 0x07, 0x10, 0x01, 0x40, 0x00, 0xF0, 0x82, 0x49];
        let f = fragment(RecordCodec::Vp9, &payload).unwrap();
        assert_eq!(f.offset, 9);
        assert!(f.begins_frame && f.ends_layer_frame && f.keyframe);
        // Inter-predicted (P=1), flexible with one P_DIFF byte.
        let inter = [0xD8, 0x05, 0x02, 0x82];
        let f = fragment(RecordCodec::Vp9, &inter).unwrap();
        assert_eq!(f.offset, 3);
        assert!(f.begins_frame && !f.keyframe);
    }

    #[test]
    fn opus_packets_are_whole_frames() {
        let f = fragment(RecordCodec::Opus, &[0x78, 1, 2]).unwrap();
        assert!(f.begins_frame && f.keyframe && f.offset == 0);
        assert_eq!(fragment(RecordCodec::Opus, &[]), None);
    }

    #[test]
    fn picture_sizes_come_from_keyframe_headers() {
        // VP8 keyframe 320x240.
        let vp8 = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 0x00];
        assert_eq!(picture_size(RecordCodec::Vp8, &vp8), Some((320, 240)));
        assert_eq!(picture_size(RecordCodec::Vp8, &vp8[..8]), None);
        // VP9 profile 0 keyframe 320x240: marker 10, profile 00, show_existing 0, frame_type
        // 0, show 1, error_res 0, sync code, color space 010 + range 0, width-1 = 319,
        // height-1 = 239.
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010"; // sync code
        bits += "0100"; // color space BT.601, studio range
        bits += &format!("{:016b}{:016b}", 319, 239);
        while bits.len() % 8 != 0 {
            bits.push('0');
        }
        let bytes: Vec<u8> = bits.as_bytes().chunks(8).map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap()).collect();
        assert_eq!(picture_size(RecordCodec::Vp9, &bytes), Some((320, 240)));
        // An interframe (frame_type 1) has no size.
        let mut inter = bytes.clone();
        inter[0] |= 0x04;
        assert_eq!(picture_size(RecordCodec::Vp9, &inter), None);
    }

    #[test]
    fn unknown_codecs_are_not_recorded() {
        assert_eq!(RecordCodec::from_mime_type("video/H264"), Some(RecordCodec::H264));
        assert_eq!(RecordCodec::from_mime_type("video/rtx"), None);
        assert_eq!(RecordCodec::from_mime_type("audio/opus"), Some(RecordCodec::Opus));
        assert_eq!(RecordCodec::from_mime_type("video/vp9"), Some(RecordCodec::Vp9));
    }
}
