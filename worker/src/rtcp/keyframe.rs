//! Keyframes: recognising them in RTP payloads, and asking producers for them.
//!
//! A video consumer can only start decoding at a keyframe, so a new or resumed one waits
//! behind a [`KeyframeGate`] (dropping video) and asks the producer stream's
//! [`KeyframeRequester`] for one. Consumers' own PLI/FIR go to the same requester. Encoding a
//! keyframe costs the sender a burst of bitrate, so while a request is outstanding (sent, and
//! no keyframe since) the requester merges every other need into it, however many consumers
//! ask, and repeats it once per interval (about a second) until a keyframe comes. Once a
//! keyframe has come, the next need is asked for at once: holding it back would leave a
//! consumer that joined just after a keyframe (its transport connecting late) waiting out the
//! interval, as mediasoup's `KeyFrameRequestManager` does not.

use std::time::{Duration, Instant};

use rtc::rtcp::packet::Packet;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;

use crate::rtp::Ssrc;

/// A video codec whose payloads [`is_keyframe`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// H.264 (RFC 6184), packetization mode 0 or 1.
    H264,
}

impl VideoCodec {
    /// The codec for a mediasoup `mimeType` such as `video/VP8`; `None` for audio, RTX and
    /// codecs without keyframe detection.
    pub fn from_mime_type(mime_type: &str) -> Option<Self> {
        let (kind, name) = mime_type.split_once('/')?;
        if !kind.eq_ignore_ascii_case("video") {
            return None;
        }
        if name.eq_ignore_ascii_case("VP8") {
            Some(VideoCodec::Vp8)
        } else if name.eq_ignore_ascii_case("VP9") {
            Some(VideoCodec::Vp9)
        } else if name.eq_ignore_ascii_case("H264") {
            Some(VideoCodec::H264)
        } else {
            None
        }
    }
}

/// True when the RTP `payload` (after the RTP header, without padding) is the first packet of
/// a keyframe, the point where a decoder can start. Malformed payloads are not keyframes.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_is_keyframe(payload),
        VideoCodec::Vp9 => vp9_is_keyframe(payload),
        VideoCodec::H264 => h264_is_keyframe(payload),
    }
}

/// RFC 7741 section 4.2: a keyframe starts in the packet with S = 1 and partition index 0,
/// and the VP8 payload header's P bit (inverse key frame flag) is 0.
fn vp8_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return false;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        // X: an extension byte with I, L, T, K flags follows.
        let Some(&extension) = payload.get(offset) else {
            return false;
        };
        offset += 1;
        if extension & 0x80 != 0 {
            // I: PictureID, two bytes when its M bit is set.
            let Some(&picture_id) = payload.get(offset) else {
                return false;
            };
            offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            // L: TL0PICIDX.
            offset += 1;
        }
        if extension & 0x30 != 0 {
            // T or K: one byte with TID, Y and KEYIDX.
            offset += 1;
        }
    }
    payload
        .get(offset)
        .is_some_and(|&header| header & 0x01 == 0)
}

/// RFC 9628 section 4.2: a keyframe is a picture that is not inter-picture predicted
/// (P = 0); it starts in the packet with B = 1, of the base spatial layer when layer indices
/// are present.
fn vp9_is_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let picture_id_present = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let layer_indices_present = first & 0x20 != 0;
    let begins_frame = first & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if !layer_indices_present {
        return true;
    }
    let mut offset = 1;
    if picture_id_present {
        let Some(&picture_id) = payload.get(offset) else {
            return false;
        };
        offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1).
    payload
        .get(offset)
        .is_some_and(|&layers| (layers >> 1) & 0x07 == 0)
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_STAP_B: u8 = 25;
const H264_FU_A: u8 = 28;
const H264_FU_B: u8 = 29;

/// RFC 6184: a keyframe packet carries an IDR slice (type 5) or a sequence parameter set
/// (type 7, which encoders send right before an IDR), alone, in a STAP aggregate, or as the
/// start fragment of an FU.
fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let is_key_nal = |nal_type: u8| nal_type == H264_IDR || nal_type == H264_SPS;
    match header & 0x1f {
        nal_type @ 1..=23 => is_key_nal(nal_type),
        H264_STAP_A => stap_contains_key_nal(payload.get(1..).unwrap_or_default()),
        // STAP-B carries a 16-bit decoding order number before its units.
        H264_STAP_B => stap_contains_key_nal(payload.get(3..).unwrap_or_default()),
        H264_FU_A | H264_FU_B => payload.get(1).is_some_and(|&fu_header| {
            let start = fu_header & 0x80 != 0;
            start && is_key_nal(fu_header & 0x1f)
        }),
        _ => false,
    }
}

/// Walks the `size(2) NAL` units of an aggregation packet; a truncated unit ends the walk.
fn stap_contains_key_nal(mut units: &[u8]) -> bool {
    while let [high, low, rest @ ..] = units {
        let size = usize::from(u16::from_be_bytes([*high, *low]));
        let Some(nal) = rest.get(..size) else {
            return false;
        };
        if let Some(&nal_header) = nal.first() {
            let nal_type = nal_header & 0x1f;
            if nal_type == H264_IDR || nal_type == H264_SPS {
                return true;
            }
        }
        units = &rest[size..];
    }
    false
}

/// Which keyframe request the producer negotiated (`rtcpFeedback`): `nack pli` or `ccm fir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequestKind {
    /// Picture Loss Indication (RFC 4585); preferred when negotiated.
    Pli,
    /// Full Intra Request (RFC 5104), for producers that negotiated only `ccm fir`.
    Fir,
}

/// A keyframe request to send to the producer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    /// Send a PLI.
    Pli,
    /// Send a FIR with this command sequence number.
    Fir {
        /// Incremented per new request; a repeat of the same request keeps it (RFC 5104
        /// section 4.3.1.1) so the sender does not encode two keyframes for one need.
        sequence_number: u8,
    },
}

impl KeyframeRequest {
    /// The RTCP packet for this request from `sender_ssrc` (the worker's RTCP SSRC towards
    /// the producer) about the producer stream `media_ssrc`.
    pub fn to_packet(self, sender_ssrc: Ssrc, media_ssrc: Ssrc) -> Box<dyn Packet> {
        match self {
            KeyframeRequest::Pli => Box::new(PictureLossIndication {
                sender_ssrc: sender_ssrc.0,
                media_ssrc: media_ssrc.0,
            }),
            KeyframeRequest::Fir { sequence_number } => Box::new(FullIntraRequest {
                sender_ssrc: sender_ssrc.0,
                // RFC 5104 section 4.3.1.2: unused in FIR and set to 0; the entry names it.
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: media_ssrc.0,
                    sequence_number,
                }],
            }),
        }
    }
}

/// Decides when to ask one producer stream for a keyframe.
///
/// Lives per producer stream. Requests from any number of consumers merge into one need; the
/// need is met by the next keyframe to arrive. The first request of a need goes out at once;
/// while it is outstanding, further requests are duplicates and send nothing, and the request
/// is repeated every interval until a keyframe arrives (the request or its keyframe may be
/// lost). So the producer is asked at most once per interval and at most once per keyframe it
/// sends, as in mediasoup (which repeats only once; the gate of a waiting consumer drops all
/// its video, so its browser has nothing to notice the loss by and repeats are ours to make).
#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    kind: KeyframeRequestKind,
    interval: Duration,
    /// A consumer needs a keyframe that has not arrived yet.
    wanted: bool,
    last_sent: Option<Instant>,
    /// The FIR sequence number last sent.
    fir_sequence_number: u8,
    /// A FIR went out for the current need, so repeats reuse its sequence number.
    fir_sent_for_current_need: bool,
}

impl KeyframeRequester {
    /// The shortest time between two requests to one producer stream.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// A requester sending `kind` at most once per [`Self::DEFAULT_INTERVAL`].
    pub fn new(kind: KeyframeRequestKind) -> Self {
        Self::with_interval(kind, Self::DEFAULT_INTERVAL)
    }

    /// A requester sending `kind` at most once per `interval`.
    pub fn with_interval(kind: KeyframeRequestKind, interval: Duration) -> Self {
        KeyframeRequester {
            kind,
            interval,
            wanted: false,
            last_sent: None,
            // The first FIR gets 0: the wrapping increment happens when a need begins.
            fir_sequence_number: u8::MAX,
            fir_sent_for_current_need: false,
        }
    }

    /// A consumer needs a keyframe: it is new or resumed, or its PLI/FIR arrived. Returns the
    /// request to send now, if one may go out now; otherwise it goes out from
    /// [`Self::poll`] when the interval allows.
    pub fn request(&mut self, now: Instant) -> Option<KeyframeRequest> {
        if !self.wanted {
            self.wanted = true;
            self.fir_sent_for_current_need = false;
        }
        self.poll(now)
    }

    /// A keyframe arrived from the producer: it meets every request made so far, and the next
    /// need is a new one, asked for at once.
    pub fn on_keyframe(&mut self) {
        self.wanted = false;
        self.last_sent = None;
    }

    /// True while a request is unmet.
    pub fn is_waiting(&self) -> bool {
        self.wanted
    }

    /// The request to send now, if any: call when [`Self::poll_timeout`] is reached.
    pub fn poll(&mut self, now: Instant) -> Option<KeyframeRequest> {
        if !self.wanted {
            return None;
        }
        // Outstanding: the repeat waits for the interval (forever, for an interval too large
        // to add, as `poll_timeout` says).
        if let Some(last) = self.last_sent
            && last.checked_add(self.interval).is_none_or(|due| now < due)
        {
            return None;
        }
        self.last_sent = Some(now);
        Some(match self.kind {
            KeyframeRequestKind::Pli => KeyframeRequest::Pli,
            KeyframeRequestKind::Fir => {
                if !self.fir_sent_for_current_need {
                    self.fir_sequence_number = self.fir_sequence_number.wrapping_add(1);
                    self.fir_sent_for_current_need = true;
                }
                KeyframeRequest::Fir {
                    sequence_number: self.fir_sequence_number,
                }
            }
        })
    }

    /// When [`Self::poll`] next has something to send; `None` when nothing is wanted.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.wanted {
            return None;
        }
        // `request` sends at once when nothing is outstanding, so an unmet need always has a
        // `last_sent`. An interval too large to add never comes due.
        self.last_sent.and_then(|last| last.checked_add(self.interval))
    }
}

/// How far back a consumer that starts late may be given a keyframe again
/// ([`LatestKeyframe::replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// The keyframe's first packet arrived at most this long ago. Everything since it is sent
    /// at once, so this bounds the burst in time and how stale the first picture is.
    pub max_age: Duration,
    /// At most this many packets from the keyframe's first to the newest, all inclusive.
    pub max_packets: u16,
}

impl ReplayLimits {
    /// Half a second, 256 packets: a consumer resumed after its transport connects (the
    /// client resumes once its own consumer exists, a round trip later) finds the keyframe
    /// asked for at connect, with a few frames after it. 256 packets is half a default
    /// [`super::RetransmissionBuffer`], so the packets are still there, and at most 384 KB.
    pub const DEFAULT: ReplayLimits = ReplayLimits { max_age: Duration::from_millis(500), max_packets: 256 };
}

/// The packets to send again, by the producer's sequence numbers: `first` (a keyframe's
/// first packet) and the `count - 1` after it, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRange {
    pub first: u16,
    pub count: u16,
}

impl ReplayRange {
    /// The sequence numbers, oldest first, across the 16-bit wrap.
    pub fn sequence_numbers(self) -> impl Iterator<Item = u16> {
        (0..self.count).map(move |i| self.first.wrapping_add(i))
    }
}

/// Per producer video stream: where its newest keyframe starts and the newest packet since.
///
/// A consumer that starts (is resumed, or its transport connects) just after a keyframe
/// passed would otherwise wait for a new one: a keyframe request, the publisher's encoder
/// (the next captured frame) and its pacer, tens to hundreds of milliseconds. With this, the
/// keyframe and the packets after it are sent to it again from the stream's retransmission
/// buffer, which already holds them for NACKs: no memory per consumer, and nothing changes for
/// consumers already receiving.
#[derive(Debug, Clone, Default)]
pub struct LatestKeyframe {
    /// The keyframe's first packet: its sequence number and when it arrived.
    start: Option<(u16, Instant)>,
    /// The newest sequence number since (wrap-aware), the keyframe's own at first.
    newest: u16,
}

impl LatestKeyframe {
    pub fn new() -> Self {
        Self::default()
    }

    /// A packet of the stream arrived (a retransmission too); `keyframe` when it is the first
    /// packet of one ([`is_keyframe`]).
    pub fn on_packet(&mut self, sequence_number: u16, keyframe: bool, now: Instant) {
        let newer = |a: u16, b: u16| (a.wrapping_sub(b) as i16) > 0;
        match self.start {
            // A retransmission of the keyframe's first packet: the same keyframe.
            Some((first, _)) if keyframe && first == sequence_number => {}
            _ if keyframe => {
                let older_than_newest = self.start.is_some() && !newer(sequence_number, self.newest);
                self.start = Some((sequence_number, now));
                if !older_than_newest {
                    self.newest = sequence_number;
                }
            }
            Some((first, _)) if newer(sequence_number, self.newest) && newer(sequence_number, first) => {
                self.newest = sequence_number;
            }
            _ => {}
        }
    }

    /// The producer stream restarted (new SSRC or numbering): what was known is not.
    pub fn clear(&mut self) {
        self.start = None;
    }

    /// The packets to send a consumer starting `now`: from the newest keyframe to the newest
    /// packet, when it is within `limits`; `None` when a keyframe must be asked for.
    pub fn replay(&self, now: Instant, limits: ReplayLimits) -> Option<ReplayRange> {
        let (first, at) = self.start?;
        if now.saturating_duration_since(at) > limits.max_age {
            return None;
        }
        let count = self.newest.wrapping_sub(first).checked_add(1)?;
        (count <= limits.max_packets).then_some(ReplayRange { first, count })
    }
}

/// Per consumer stream: drops video until a keyframe arrives, so the consumer's decoder
/// starts at a picture it can decode.
///
/// Starts closed (a new consumer). [`Self::close`] it on resume; call
/// [`super::SeqRewriter::resync`] at the same time so the dropped packets leave no gap.
#[derive(Debug, Clone, Default)]
pub struct KeyframeGate {
    open: bool,
}

impl KeyframeGate {
    /// A closed gate: nothing passes until a keyframe.
    pub fn new() -> Self {
        KeyframeGate { open: false }
    }

    /// An open gate, for audio or for codecs without keyframe detection.
    pub fn open() -> Self {
        KeyframeGate { open: true }
    }

    /// Drop everything again until the next keyframe.
    pub fn close(&mut self) {
        self.open = false;
    }

    /// True while waiting for a keyframe.
    pub fn is_waiting(&self) -> bool {
        !self.open
    }

    /// Whether to forward a packet; `is_keyframe` is [`is_keyframe`] of its payload. The
    /// keyframe's first packet opens the gate, and everything after it passes.
    pub fn admit(&mut self, is_keyframe: bool) -> bool {
        self.open |= is_keyframe;
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- VP8 ---

    #[test]
    fn vp8_minimal_descriptor_keyframe_is_detected() {
        // S=1, PID=0; payload header with P=0.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a]
        ));
    }

    #[test]
    fn vp8_interframe_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10, 0x51, 0x01, 0x00]));
    }

    #[test]
    fn vp8_continuation_packet_is_not_a_keyframe() {
        // S=0: the P bit position holds frame data, not a header.
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x00, 0x50]));
    }

    #[test]
    fn vp8_later_partition_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x11, 0x50]));
    }

    #[test]
    fn vp8_extended_descriptor_with_long_picture_id_is_skipped() {
        // X=1; I=1 L=1 T=1; PictureID with M=1 (2 bytes); TL0PICIDX; TID/KEYIDX; header P=0.
        let payload = [0x90, 0xe0, 0x80, 0x01, 0x05, 0x20, 0x50];
        assert!(is_keyframe(VideoCodec::Vp8, &payload));
    }

    #[test]
    fn vp8_extended_descriptor_with_short_picture_id_is_skipped() {
        // X=1; I=1; 7-bit PictureID; header P=1.
        let payload = [0x90, 0x80, 0x05, 0x51];
        assert!(!is_keyframe(VideoCodec::Vp8, &payload));
        let payload = [0x90, 0x80, 0x05, 0x50];
        assert!(is_keyframe(VideoCodec::Vp8, &payload));
    }

    #[test]
    fn vp8_truncated_descriptor_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp8, &[]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x80, 0x01]));
    }

    // --- VP9 ---

    #[test]
    fn vp9_non_predicted_frame_start_is_a_keyframe() {
        // I=1 P=0 L=0 F=0 B=1; 15-bit picture id.
        assert!(is_keyframe(VideoCodec::Vp9, &[0x88, 0x80, 0x01, 0xaa]));
    }

    #[test]
    fn vp9_inter_predicted_frame_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xc8, 0x80, 0x01, 0xaa]));
    }

    #[test]
    fn vp9_packet_not_beginning_a_frame_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp9, &[0x80, 0x80, 0x01, 0xaa]));
    }

    #[test]
    fn vp9_base_spatial_layer_keyframe_is_detected() {
        // I=1 L=1 B=1; 7-bit picture id; layer indices TID=0 SID=0.
        assert!(is_keyframe(VideoCodec::Vp9, &[0xa8, 0x05, 0x00, 0x00]));
    }

    #[test]
    fn vp9_upper_spatial_layer_is_not_a_keyframe() {
        // SID=1.
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xa8, 0x05, 0x02, 0x00]));
    }

    #[test]
    fn vp9_truncated_layer_indices_are_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::Vp9, &[]));
        assert!(!is_keyframe(VideoCodec::Vp9, &[0xa8, 0x85]));
    }

    // --- H.264 ---

    #[test]
    fn h264_single_idr_is_a_keyframe() {
        assert!(is_keyframe(VideoCodec::H264, &[0x65, 0x88]));
    }

    #[test]
    fn h264_single_sps_is_a_keyframe() {
        assert!(is_keyframe(VideoCodec::H264, &[0x67, 0x42]));
    }

    #[test]
    fn h264_non_idr_slice_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
    }

    #[test]
    fn h264_stap_a_with_sps_is_a_keyframe() {
        // STAP-A: SEI (size 2), SPS (size 3).
        let payload = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x03, 0x67, 0x42, 0x00];
        assert!(is_keyframe(VideoCodec::H264, &payload));
    }

    #[test]
    fn h264_stap_a_without_key_nal_is_not_a_keyframe() {
        let payload = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x02, 0x41, 0x9a];
        assert!(!is_keyframe(VideoCodec::H264, &payload));
    }

    #[test]
    fn h264_truncated_stap_a_is_not_a_keyframe() {
        // The second unit claims 16 bytes; only 2 follow.
        let payload = [0x78, 0x00, 0x02, 0x06, 0x05, 0x00, 0x10, 0x67, 0x42];
        assert!(!is_keyframe(VideoCodec::H264, &payload));
    }

    #[test]
    fn h264_stap_b_skips_its_decoding_order_number() {
        let payload = [0x79, 0x00, 0x01, 0x00, 0x02, 0x65, 0x88];
        assert!(is_keyframe(VideoCodec::H264, &payload));
    }

    #[test]
    fn h264_fu_a_start_of_idr_is_a_keyframe() {
        // FU indicator type 28, FU header S=1 type 5.
        assert!(is_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x88]));
    }

    #[test]
    fn h264_fu_a_middle_of_idr_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x88]));
    }

    #[test]
    fn h264_fu_a_start_of_non_idr_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c, 0x81, 0x88]));
    }

    #[test]
    fn h264_empty_or_truncated_payload_is_not_a_keyframe() {
        assert!(!is_keyframe(VideoCodec::H264, &[]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x7c]));
        assert!(!is_keyframe(VideoCodec::H264, &[0x78, 0x00]));
    }

    #[test]
    fn codec_is_known_by_mime_type_in_any_case() {
        assert_eq!(
            VideoCodec::from_mime_type("video/VP8"),
            Some(VideoCodec::Vp8)
        );
        assert_eq!(
            VideoCodec::from_mime_type("video/vp9"),
            Some(VideoCodec::Vp9)
        );
        assert_eq!(
            VideoCodec::from_mime_type("Video/H264"),
            Some(VideoCodec::H264)
        );
        assert_eq!(VideoCodec::from_mime_type("video/rtx"), None);
        assert_eq!(VideoCodec::from_mime_type("audio/opus"), None);
        assert_eq!(VideoCodec::from_mime_type("VP8"), None);
    }

    // --- KeyframeRequester ---

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_request_is_sent_at_once() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        assert_eq!(requester.request(start), Some(KeyframeRequest::Pli));
    }

    #[test]
    fn nothing_is_sent_without_a_request() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        assert_eq!(requester.poll(start + ms(5000)), None);
        assert_eq!(requester.poll_timeout(), None);
    }

    #[test]
    fn requests_within_the_interval_merge_into_one() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        requester.request(start);
        assert_eq!(requester.request(start + ms(100)), None);
        assert_eq!(requester.request(start + ms(900)), None);
    }

    #[test]
    fn keyframe_meets_pending_requests() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        requester.request(start);
        requester.request(start + ms(100));
        requester.on_keyframe();
        assert!(!requester.is_waiting());
        assert_eq!(requester.poll(start + ms(1000)), None);
        assert_eq!(requester.poll_timeout(), None);
    }

    #[test]
    fn request_after_a_keyframe_is_sent_at_once() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        requester.request(start);
        requester.on_keyframe();
        // The late joiner: its transport connects 300 ms after the keyframe that met the
        // first request. Held back to the interval, it would wait 700 ms more.
        assert_eq!(requester.request(start + ms(300)), Some(KeyframeRequest::Pli));
        assert_eq!(requester.poll_timeout(), Some(start + ms(1300)), "repeated if unmet");
    }

    #[test]
    fn duplicates_while_a_request_is_outstanding_send_nothing() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        assert_eq!(requester.request(start), Some(KeyframeRequest::Pli));
        for later in [1, 50, 400, 999] {
            assert_eq!(requester.request(start + ms(later)), None, "{later} ms");
        }
        assert_eq!(requester.poll(start + ms(999)), None);
        assert_eq!(requester.poll(start + ms(1000)), Some(KeyframeRequest::Pli), "one repeat for all of them");
    }

    #[test]
    fn new_consumer_after_a_quiet_interval_passes_at_once() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        requester.request(start);
        requester.on_keyframe();
        assert_eq!(
            requester.request(start + ms(1500)),
            Some(KeyframeRequest::Pli)
        );
    }

    #[test]
    fn unmet_request_is_repeated_every_interval() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        requester.request(start);
        assert_eq!(requester.poll(start + ms(1000)), Some(KeyframeRequest::Pli));
        assert_eq!(requester.poll(start + ms(1500)), None);
        assert_eq!(requester.poll(start + ms(2000)), Some(KeyframeRequest::Pli));
    }

    #[test]
    fn under_a_storm_the_producer_is_asked_once_per_keyframe_it_sends_and_once_per_interval_without() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Pli);
        let mut sent = 0;
        // 10 s of requests every 10 ms; a keyframe arrives 40 ms after each request that went
        // out, as an encoder answers.
        let mut keyframe_due = None;
        for tick in 0..1000 {
            let now = start + ms(tick * 10);
            if keyframe_due.is_some_and(|due| now >= due) {
                requester.on_keyframe();
                keyframe_due = None;
            }
            if requester.request(now).is_some() {
                sent += 1;
                keyframe_due = Some(now + ms(40));
            }
        }
        // Each request is met after 40 ms, and the tick that brings the keyframe asks again:
        // one request per keyframe, one per 40 ms.
        assert_eq!(sent, 250);
        // A producer that never answers is asked once per interval.
        let mut silent = KeyframeRequester::new(KeyframeRequestKind::Pli);
        let asked = (0..1000).filter(|tick| silent.request(start + ms(tick * 10)).is_some()).count();
        assert_eq!(asked, 10);
    }

    #[test]
    fn an_interval_too_large_to_add_never_panics() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::with_interval(KeyframeRequestKind::Pli, Duration::MAX);
        assert_eq!(requester.request(start), Some(KeyframeRequest::Pli));
        assert_eq!(requester.poll_timeout(), None);
        assert_eq!(requester.request(start + ms(5000)), None, "the repeat never comes due");
        requester.on_keyframe();
        assert_eq!(requester.request(start + ms(6000)), Some(KeyframeRequest::Pli));
    }

    #[test]
    fn custom_interval_is_honoured() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::with_interval(KeyframeRequestKind::Pli, ms(250));
        requester.request(start);
        assert_eq!(requester.poll(start + ms(250)), Some(KeyframeRequest::Pli));
    }

    #[test]
    fn fir_is_sent_when_only_fir_was_negotiated() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Fir);
        assert_eq!(
            requester.request(start),
            Some(KeyframeRequest::Fir { sequence_number: 0 })
        );
    }

    #[test]
    fn repeated_fir_keeps_its_sequence_number() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Fir);
        requester.request(start);
        assert_eq!(
            requester.poll(start + ms(1000)),
            Some(KeyframeRequest::Fir { sequence_number: 0 })
        );
    }

    #[test]
    fn new_fir_after_a_keyframe_increments_its_sequence_number() {
        let start = Instant::now();
        let mut requester = KeyframeRequester::new(KeyframeRequestKind::Fir);
        requester.request(start);
        requester.on_keyframe();
        assert_eq!(
            requester.request(start + ms(2000)),
            Some(KeyframeRequest::Fir { sequence_number: 1 })
        );
    }

    #[test]
    fn pli_packet_names_sender_and_media() {
        let packet = KeyframeRequest::Pli.to_packet(Ssrc(1), Ssrc(2));
        let pli = packet
            .as_any()
            .downcast_ref::<PictureLossIndication>()
            .expect("a PLI");
        assert_eq!((pli.sender_ssrc, pli.media_ssrc), (1, 2));
    }

    #[test]
    fn fir_packet_names_the_media_in_its_entry() {
        let packet = KeyframeRequest::Fir { sequence_number: 9 }.to_packet(Ssrc(1), Ssrc(2));
        let fir = packet
            .as_any()
            .downcast_ref::<FullIntraRequest>()
            .expect("a FIR");
        assert_eq!(fir.media_ssrc, 0);
        assert_eq!(
            fir.fir,
            vec![FirEntry {
                ssrc: 2,
                sequence_number: 9
            }]
        );
    }

    // --- LatestKeyframe ---

    #[test]
    fn nothing_is_replayed_before_a_keyframe() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        for seq in 1..10 {
            latest.on_packet(seq, false, start);
        }
        assert_eq!(latest.replay(start, ReplayLimits::DEFAULT), None);
    }

    #[test]
    fn a_recent_keyframe_is_replayed_with_everything_after_it() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(99, false, start);
        latest.on_packet(100, true, start);
        for seq in 101..=105 {
            latest.on_packet(seq, false, start + ms(10));
        }
        // The consumer is resumed 120 ms after the keyframe came.
        let range = latest.replay(start + ms(120), ReplayLimits::DEFAULT).unwrap();
        assert_eq!(range, ReplayRange { first: 100, count: 6 });
        assert_eq!(range.sequence_numbers().collect::<Vec<_>>(), vec![100, 101, 102, 103, 104, 105]);
    }

    #[test]
    fn a_keyframe_older_than_the_limit_is_not_replayed() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(100, true, start);
        let limits = ReplayLimits { max_age: ms(500), max_packets: 256 };
        assert!(latest.replay(start + ms(500), limits).is_some());
        assert_eq!(latest.replay(start + ms(501), limits), None);
    }

    #[test]
    fn too_many_packets_since_the_keyframe_are_not_replayed() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(10, true, start);
        let limits = ReplayLimits { max_age: ms(500), max_packets: 4 };
        latest.on_packet(13, false, start);
        assert_eq!(latest.replay(start, limits), Some(ReplayRange { first: 10, count: 4 }));
        latest.on_packet(14, false, start);
        assert_eq!(latest.replay(start, limits), None);
    }

    #[test]
    fn a_newer_keyframe_replaces_the_older() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(10, true, start);
        latest.on_packet(11, false, start);
        latest.on_packet(12, true, start + ms(300));
        latest.on_packet(13, false, start + ms(300));
        assert_eq!(latest.replay(start + ms(700), ReplayLimits::DEFAULT), Some(ReplayRange { first: 12, count: 2 }));
    }

    #[test]
    fn the_range_crosses_the_sequence_number_wrap() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(65534, true, start);
        latest.on_packet(65535, false, start);
        latest.on_packet(0, false, start);
        latest.on_packet(1, false, start);
        let range = latest.replay(start, ReplayLimits::DEFAULT).unwrap();
        assert_eq!(range.sequence_numbers().collect::<Vec<_>>(), vec![65534, 65535, 0, 1]);
    }

    #[test]
    fn late_and_retransmitted_packets_do_not_move_the_range() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(100, true, start);
        latest.on_packet(103, false, start);
        // Reordered (101), from before the keyframe (98), and the keyframe's first packet
        // again (its retransmission): the range stays 100..=103, its age that of the first.
        latest.on_packet(101, false, start + ms(5));
        latest.on_packet(98, false, start + ms(5));
        latest.on_packet(100, true, start + ms(400));
        assert_eq!(latest.replay(start + ms(450), ReplayLimits::DEFAULT), Some(ReplayRange { first: 100, count: 4 }));
        assert_eq!(latest.replay(start + ms(501), ReplayLimits::DEFAULT), None, "aged from its first arrival");
    }

    #[test]
    fn a_restored_first_packet_of_a_newer_keyframe_keeps_the_newest() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(100, true, start);
        // The next keyframe's first packet (110) was lost; 111..=113 came, then 110 repaired.
        for seq in 101..=113 {
            if seq != 110 {
                latest.on_packet(seq, false, start + ms(200));
            }
        }
        latest.on_packet(110, true, start + ms(220));
        assert_eq!(latest.replay(start + ms(230), ReplayLimits::DEFAULT), Some(ReplayRange { first: 110, count: 4 }));
    }

    #[test]
    fn a_cleared_stream_replays_nothing() {
        let start = Instant::now();
        let mut latest = LatestKeyframe::new();
        latest.on_packet(100, true, start);
        latest.clear();
        assert_eq!(latest.replay(start, ReplayLimits::DEFAULT), None);
        latest.on_packet(101, false, start);
        assert_eq!(latest.replay(start, ReplayLimits::DEFAULT), None);
    }

    // --- KeyframeGate ---

    #[test]
    fn new_gate_drops_until_a_keyframe() {
        let mut gate = KeyframeGate::new();
        assert!(!gate.admit(false));
        assert!(gate.admit(true));
        assert!(gate.admit(false));
    }

    #[test]
    fn closed_gate_waits_for_the_next_keyframe() {
        let mut gate = KeyframeGate::open();
        assert!(gate.admit(false));
        gate.close();
        assert!(gate.is_waiting());
        assert!(!gate.admit(false));
        assert!(gate.admit(true));
        assert!(!gate.is_waiting());
    }
}
