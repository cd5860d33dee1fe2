//! Answering NACKs: recent packets of a producer stream, and RTX packets built from them.
//!
//! The buffer lives per producer stream, not per consumer: every consumer of a stream gets the
//! same packets (only the header differs), and a consumer's sequence numbers map back to the
//! producer's through its [`super::SeqRewriter`], so one copy of each packet serves them all.
//! That keeps a consumer's own state tiny however many packets are kept.
//!
//! Built for the forwarding path: the packet bytes live in one slab allocated up front, each
//! slot fixed-size and indexed by `sequence number % capacity`, so inserting and looking up are
//! O(1) and never allocate.

use std::time::{Duration, Instant};

use crate::rtp::{PayloadType, Ssrc};

/// Why a packet was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Shorter than an RTP header.
    #[error("not an RTP packet")]
    NotRtp,
    /// Longer than a slot.
    #[error("packet of {len} bytes exceeds the {max} bytes a slot holds")]
    TooLarge {
        /// The packet's length.
        len: usize,
        /// The slot size.
        max: usize,
    },
    /// So far behind the newest stored packet that its slot belongs to a newer one.
    #[error("packet is older than the buffer's window")]
    TooOld,
}

/// Recent packets of one producer stream, by sequence number.
#[derive(Debug, Clone)]
pub struct RetransmissionBuffer {
    /// `capacity * slot_len` bytes; slot `i` is `slab[i * slot_len..][..len]`.
    slab: Box<[u8]>,
    slots: Box<[Slot]>,
    slot_len: usize,
    /// `capacity - 1`; the capacity is a power of two, so slot = seq & mask, and the mapping
    /// stays continuous where the 16-bit sequence number wraps.
    mask: u16,
    max_age: Duration,
    /// The newest sequence number stored.
    newest: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    sequence_number: u16,
    len: u16,
    /// `None` for a slot never written (or cleared).
    stored_at: Option<Instant>,
}

impl RetransmissionBuffer {
    /// Slots per stream: about 1.5 s of a 3 Mbit/s video stream.
    pub const DEFAULT_CAPACITY: usize = 512;
    /// Slot size: the largest RTP packet that fits a 1500-byte Ethernet MTU.
    pub const DEFAULT_MAX_PACKET_LEN: usize = 1500;
    /// Older packets are not resent: by then the receiver's jitter buffer has moved on.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(1);

    /// A buffer with the default capacity, slot size and age.
    pub fn with_defaults() -> Self {
        Self::new(
            Self::DEFAULT_CAPACITY,
            Self::DEFAULT_MAX_PACKET_LEN,
            Self::DEFAULT_MAX_AGE,
        )
    }

    /// A buffer of `capacity` slots (rounded up to a power of two, between 1 and 32768) of
    /// `max_packet_len` bytes (at most 65535), keeping packets for `max_age`. Allocates
    /// `capacity * max_packet_len` bytes now and never again.
    pub fn new(capacity: usize, max_packet_len: usize, max_age: Duration) -> Self {
        let capacity = capacity.clamp(1, 1 << 15).next_power_of_two();
        let slot_len = max_packet_len.min(usize::from(u16::MAX));
        RetransmissionBuffer {
            slab: vec![0; capacity * slot_len].into_boxed_slice(),
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            slot_len,
            // `capacity` is at most 2^15, so `capacity - 1` fits a u16.
            mask: (capacity - 1) as u16,
            max_age,
            newest: None,
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes held by the buffer (slab and slot table), for memory accounting.
    pub fn memory_bytes(&self) -> usize {
        self.slab.len() + std::mem::size_of_val(&*self.slots)
    }

    /// Stores an RTP `packet` (as the producer sent it, decrypted) under its sequence number.
    ///
    /// A packet older than the newest stored one is kept when it is within the buffer's
    /// window (a late or retransmitted packet fills its slot); a duplicate replaces the copy.
    pub fn insert(&mut self, packet: &[u8], now: Instant) -> Result<(), InsertError> {
        let sequence_number = rtp_sequence_number(packet).ok_or(InsertError::NotRtp)?;
        if packet.len() > self.slot_len {
            return Err(InsertError::TooLarge {
                len: packet.len(),
                max: self.slot_len,
            });
        }
        match self.newest {
            Some(newest) if (sequence_number.wrapping_sub(newest) as i16) <= 0 => {
                if newest.wrapping_sub(sequence_number) > self.mask {
                    return Err(InsertError::TooOld);
                }
            }
            _ => self.newest = Some(sequence_number),
        }
        let index = usize::from(sequence_number & self.mask);
        let start = index * self.slot_len;
        self.slab[start..start + packet.len()].copy_from_slice(packet);
        self.slots[index] = Slot {
            sequence_number,
            // Checked against `slot_len` (at most u16::MAX) above.
            len: packet.len() as u16,
            stored_at: Some(now),
        };
        Ok(())
    }

    /// The stored packet with `sequence_number`, if it is still in the window and younger
    /// than the maximum age at `now`.
    pub fn lookup(&self, sequence_number: u16, now: Instant) -> Option<&[u8]> {
        let newest = self.newest?;
        // A slot can also hold a packet 65536 numbers older with the same number; the window
        // check rules that out (together with the age for very slow streams).
        if newest.wrapping_sub(sequence_number) > self.mask {
            return None;
        }
        let index = usize::from(sequence_number & self.mask);
        let slot = self.slots[index];
        let stored_at = slot.stored_at?;
        if slot.sequence_number != sequence_number
            || now.saturating_duration_since(stored_at) > self.max_age
        {
            return None;
        }
        let start = index * self.slot_len;
        Some(&self.slab[start..start + usize::from(slot.len)])
    }

    /// Forgets every packet (the producer stream restarted); keeps the memory.
    pub fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.newest = None;
    }
}

/// The sequence numbers one generic NACK entry (RFC 4585 section 6.2.1) names: `pid`, then
/// `pid + i + 1` for each bit `i` set in `blp`. Allocation-free.
pub fn nack_to_seqs(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
    std::iter::once(pid).chain(
        (0..16u16)
            .filter(move |bit| blp & (1 << bit) != 0)
            .map(move |bit| pid.wrapping_add(bit + 1)),
    )
}

/// The header fields of an RTX packet (RFC 4588) towards one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxHeader {
    /// The consumer's RTX SSRC.
    pub ssrc: Ssrc,
    /// The consumer's RTX payload type for the original's codec (its `apt`).
    pub payload_type: PayloadType,
    /// The next number of the consumer's RTX stream, which has its own sequence.
    pub sequence_number: u16,
}

/// Why an RTX packet could not be built or unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtxError {
    /// The input is not a well-formed RTP packet (or RTX packet, when unwrapping).
    #[error("malformed RTP packet")]
    Malformed,
    /// The output buffer is too small.
    #[error("output buffer of {have} bytes, {need} needed")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Writes into `out` the RTX packet (RFC 4588 section 4) retransmitting `original`, and
/// returns its length.
///
/// `original` is the packet as the consumer first got it (its header already rewritten for
/// that consumer), and `original_sequence_number` the consumer's number for it, which goes in
/// the first two payload bytes. The RTX packet keeps the original's timestamp, marker, CSRCs
/// and header extensions, takes the RTX SSRC, payload type and sequence number from `rtx`, and
/// drops the original's padding.
pub fn build_rtx(
    original: &[u8],
    original_sequence_number: u16,
    rtx: RtxHeader,
    out: &mut [u8],
) -> Result<usize, RtxError> {
    let layout = RtpLayout::parse(original).ok_or(RtxError::Malformed)?;
    let payload = &original[layout.header_len..layout.payload_end];
    let need = layout.header_len + 2 + payload.len();
    if out.len() < need {
        return Err(RtxError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    out[..layout.header_len].copy_from_slice(&original[..layout.header_len]);
    write_header(out, rtx.ssrc, rtx.payload_type, rtx.sequence_number);
    out[layout.header_len..layout.header_len + 2]
        .copy_from_slice(&original_sequence_number.to_be_bytes());
    out[layout.header_len + 2..need].copy_from_slice(payload);
    Ok(need)
}

/// Writes into `out` the original packet an RTX packet carries (RFC 4588 section 4), with
/// the media stream's `ssrc` and `payload_type`, and returns its length and sequence number.
///
/// For a producer's retransmissions: they come back on its RTX stream after the worker NACKs.
pub fn unwrap_rtx(
    rtx_packet: &[u8],
    ssrc: Ssrc,
    payload_type: PayloadType,
    out: &mut [u8],
) -> Result<(usize, u16), RtxError> {
    let layout = RtpLayout::parse(rtx_packet).ok_or(RtxError::Malformed)?;
    let payload = &rtx_packet[layout.header_len..layout.payload_end];
    let [high, low, media @ ..] = payload else {
        return Err(RtxError::Malformed);
    };
    let original_sequence_number = u16::from_be_bytes([*high, *low]);
    let need = layout.header_len + media.len();
    if out.len() < need {
        return Err(RtxError::BufferTooSmall {
            need,
            have: out.len(),
        });
    }
    out[..layout.header_len].copy_from_slice(&rtx_packet[..layout.header_len]);
    write_header(out, ssrc, payload_type, original_sequence_number);
    out[layout.header_len..need].copy_from_slice(media);
    Ok((need, original_sequence_number))
}

/// Rewrites SSRC, payload type and sequence number of the header in `out`, and clears the
/// padding bit because the payload is copied without padding.
fn write_header(out: &mut [u8], ssrc: Ssrc, payload_type: PayloadType, sequence_number: u16) {
    out[0] &= !0x20;
    out[1] = (out[1] & 0x80) | (payload_type.0 & 0x7f);
    out[2..4].copy_from_slice(&sequence_number.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
}

/// The sequence number of an RTP packet, if it is long enough to have one.
fn rtp_sequence_number(packet: &[u8]) -> Option<u16> {
    if packet.len() < RTP_FIXED_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    Some(u16::from_be_bytes([packet[2], packet[3]]))
}

const RTP_FIXED_HEADER_LEN: usize = 12;

/// Where an RTP packet's header ends and its padding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RtpLayout {
    header_len: usize,
    payload_end: usize,
}

impl RtpLayout {
    fn parse(packet: &[u8]) -> Option<Self> {
        rtp_sequence_number(packet)?;
        let csrc_count = usize::from(packet[0] & 0x0f);
        let mut header_len = RTP_FIXED_HEADER_LEN + 4 * csrc_count;
        if packet[0] & 0x10 != 0 {
            let words = packet.get(header_len + 2..header_len + 4)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut payload_end = packet.len();
        if packet[0] & 0x20 != 0 {
            let padding = usize::from(*packet.last()?);
            payload_end = payload_end.checked_sub(padding)?;
            if padding == 0 {
                return None;
            }
        }
        if payload_end < header_len {
            return None;
        }
        Some(RtpLayout {
            header_len,
            payload_end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet: version 2, PT 96, the given sequence number, timestamp 0x01020304, SSRC
    /// 0x0a0b0c0d, and `payload`.
    fn packet(sequence_number: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x80, 96];
        bytes.extend_from_slice(&sequence_number.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        bytes.extend_from_slice(payload);
        bytes
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn buffer(capacity: usize) -> RetransmissionBuffer {
        RetransmissionBuffer::new(capacity, 200, Duration::from_secs(1))
    }

    // --- RetransmissionBuffer ---

    #[test]
    fn stored_packet_is_found_by_its_sequence_number() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"hello"), now).unwrap();
        assert_eq!(buffer.lookup(100, now), Some(&packet(100, b"hello")[..]));
    }

    #[test]
    fn unknown_sequence_number_is_not_found() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"x"), now).unwrap();
        assert_eq!(buffer.lookup(99, now), None);
        assert_eq!(buffer.lookup(101, now), None);
    }

    #[test]
    fn empty_buffer_finds_nothing() {
        assert_eq!(buffer(8).lookup(0, Instant::now()), None);
    }

    #[test]
    fn packet_older_than_the_max_age_is_not_found() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"x"), now).unwrap();
        assert!(buffer.lookup(100, now + ms(1000)).is_some());
        assert_eq!(buffer.lookup(100, now + ms(1001)), None);
    }

    #[test]
    fn newer_packet_evicts_the_one_capacity_behind() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        for seq in 100..=108 {
            buffer.insert(&packet(seq, b"x"), now).unwrap();
        }
        assert_eq!(buffer.lookup(100, now), None);
        assert!(buffer.lookup(101, now).is_some());
    }

    #[test]
    fn skipped_slots_do_not_answer_for_numbers_never_stored() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"x"), now).unwrap();
        // Jump by exactly the capacity: slot of 100 is reused by 108.
        buffer.insert(&packet(108, b"y"), now).unwrap();
        assert_eq!(buffer.lookup(100, now), None);
        assert_eq!(buffer.lookup(104, now), None);
    }

    #[test]
    fn late_packet_within_the_window_is_stored() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"a"), now).unwrap();
        buffer.insert(&packet(102, b"c"), now).unwrap();
        buffer.insert(&packet(101, b"b"), now).unwrap();
        assert_eq!(buffer.lookup(101, now), Some(&packet(101, b"b")[..]));
        assert!(buffer.lookup(102, now).is_some());
    }

    #[test]
    fn packet_older_than_the_window_is_refused() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(100, b"a"), now).unwrap();
        assert_eq!(
            buffer.insert(&packet(92, b"z"), now),
            Err(InsertError::TooOld)
        );
        assert!(buffer.lookup(100, now).is_some());
    }

    #[test]
    fn sequence_wrap_keeps_packets_on_both_sides() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        for seq in [65533u16, 65534, 65535, 0, 1, 2] {
            buffer
                .insert(&packet(seq, &seq.to_be_bytes()), now)
                .unwrap();
        }
        for seq in [65533u16, 65534, 65535, 0, 1, 2] {
            assert_eq!(
                buffer.lookup(seq, now),
                Some(&packet(seq, &seq.to_be_bytes())[..])
            );
        }
    }

    #[test]
    fn duplicate_replaces_the_stored_copy() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(5, b"old"), now).unwrap();
        buffer.insert(&packet(5, b"new"), now + ms(10)).unwrap();
        assert_eq!(buffer.lookup(5, now + ms(10)), Some(&packet(5, b"new")[..]));
    }

    #[test]
    fn oversized_packet_is_refused() {
        let mut buffer = RetransmissionBuffer::new(8, 20, ms(1000));
        let result = buffer.insert(&packet(1, &[0; 9]), Instant::now());
        assert_eq!(result, Err(InsertError::TooLarge { len: 21, max: 20 }));
    }

    #[test]
    fn non_rtp_input_is_refused() {
        let mut buffer = buffer(8);
        assert_eq!(
            buffer.insert(&[0x80, 96, 0], Instant::now()),
            Err(InsertError::NotRtp)
        );
        let mut wrong_version = packet(1, b"x");
        wrong_version[0] = 0x40;
        assert_eq!(
            buffer.insert(&wrong_version, Instant::now()),
            Err(InsertError::NotRtp)
        );
    }

    #[test]
    fn capacity_is_rounded_up_to_a_power_of_two() {
        assert_eq!(buffer(500).capacity(), 512);
        assert_eq!(buffer(0).capacity(), 1);
        assert_eq!(buffer(1_000_000).capacity(), 32768);
    }

    #[test]
    fn default_buffer_memory_is_allocated_once_up_front() {
        let buffer = RetransmissionBuffer::with_defaults();
        assert_eq!(buffer.capacity(), 512);
        let slab = 512 * 1500;
        assert!(buffer.memory_bytes() >= slab && buffer.memory_bytes() < slab + 512 * 32);
    }

    #[test]
    fn clear_forgets_everything() {
        let now = Instant::now();
        let mut buffer = buffer(8);
        buffer.insert(&packet(7, b"x"), now).unwrap();
        buffer.clear();
        assert_eq!(buffer.lookup(7, now), None);
        // After a clear an older number is a fresh start, not "too old".
        assert!(buffer.insert(&packet(3, b"y"), now).is_ok());
    }

    #[test]
    fn long_run_keeps_exactly_the_last_capacity_packets() {
        let now = Instant::now();
        let mut buffer = buffer(16);
        for i in 0..70_000u32 {
            buffer
                .insert(&packet(i as u16, &i.to_be_bytes()), now)
                .unwrap();
        }
        let newest = (70_000u32 - 1) as u16;
        for back in 0..16u16 {
            assert!(buffer.lookup(newest.wrapping_sub(back), now).is_some());
        }
        assert_eq!(buffer.lookup(newest.wrapping_sub(16), now), None);
    }

    // --- nack_to_seqs ---

    #[test]
    fn nack_without_bitmask_names_only_pid() {
        assert_eq!(nack_to_seqs(10, 0).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn nack_bitmask_names_following_numbers() {
        assert_eq!(nack_to_seqs(10, 0b101).collect::<Vec<_>>(), [10, 11, 13]);
    }

    #[test]
    fn nack_full_bitmask_names_seventeen_numbers() {
        let seqs: Vec<_> = nack_to_seqs(100, 0xffff).collect();
        assert_eq!(seqs, (100..=116).collect::<Vec<u16>>());
    }

    #[test]
    fn nack_bitmask_wraps_the_sequence_number() {
        assert_eq!(nack_to_seqs(65535, 0b11).collect::<Vec<_>>(), [65535, 0, 1]);
    }

    #[test]
    fn nack_matches_the_rtc_crate_reading() {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
        for blp in [0u16, 1, 0x8000, 0x1234, 0xffff] {
            let pair = NackPair {
                packet_id: 65530,
                lost_packets: blp,
            };
            assert_eq!(
                nack_to_seqs(65530, blp).collect::<Vec<_>>(),
                pair.packet_list()
            );
        }
    }

    // --- RTX ---

    fn rtx_header() -> RtxHeader {
        RtxHeader {
            ssrc: Ssrc(0x11223344),
            payload_type: PayloadType(97),
            sequence_number: 7,
        }
    }

    #[test]
    fn rtx_packet_carries_the_original_sequence_number_first() {
        let original = packet(500, b"media");
        let mut out = [0u8; 64];
        let len = build_rtx(&original, 1234, rtx_header(), &mut out).unwrap();
        assert_eq!(len, 12 + 2 + 5);
        assert_eq!(&out[12..14], &1234u16.to_be_bytes());
        assert_eq!(&out[14..len], b"media");
    }

    #[test]
    fn rtx_packet_takes_rtx_ssrc_payload_type_and_sequence_number() {
        let original = packet(500, b"media");
        let mut out = [0u8; 64];
        build_rtx(&original, 500, rtx_header(), &mut out).unwrap();
        assert_eq!(out[1] & 0x7f, 97);
        assert_eq!(&out[2..4], &7u16.to_be_bytes());
        assert_eq!(&out[8..12], &0x11223344u32.to_be_bytes());
    }

    #[test]
    fn rtx_packet_keeps_timestamp_and_marker() {
        let mut original = packet(500, b"media");
        original[1] |= 0x80;
        let mut out = [0u8; 64];
        build_rtx(&original, 500, rtx_header(), &mut out).unwrap();
        assert_eq!(out[1] & 0x80, 0x80);
        assert_eq!(&out[4..8], &[1, 2, 3, 4]);
    }

    #[test]
    fn rtx_packet_keeps_csrcs_and_header_extensions() {
        // CC=1, X=1: one CSRC, then a one-byte-profile extension block of one word.
        let mut original = vec![0x91, 96, 0, 1, 1, 2, 3, 4, 9, 9, 9, 9];
        original.extend_from_slice(&[0xca, 0xfe, 0xba, 0xbe]);
        original.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
        original.extend_from_slice(b"data");
        let mut out = [0u8; 64];
        let len = build_rtx(&original, 1, rtx_header(), &mut out).unwrap();
        assert_eq!(&out[12..24], &original[12..24]);
        assert_eq!(&out[24..26], &1u16.to_be_bytes());
        assert_eq!(&out[26..len], b"data");
    }

    #[test]
    fn rtx_packet_drops_the_original_padding() {
        let mut original = packet(500, b"media");
        original[0] |= 0x20;
        original.extend_from_slice(&[0, 0, 3]);
        let mut out = [0u8; 64];
        let len = build_rtx(&original, 500, rtx_header(), &mut out).unwrap();
        assert_eq!(out[0] & 0x20, 0);
        assert_eq!(&out[14..len], b"media");
    }

    #[test]
    fn rtx_into_a_short_buffer_is_an_error() {
        let original = packet(500, b"media");
        let mut out = [0u8; 18];
        assert_eq!(
            build_rtx(&original, 500, rtx_header(), &mut out),
            Err(RtxError::BufferTooSmall { need: 19, have: 18 })
        );
    }

    #[test]
    fn rtx_from_malformed_input_is_an_error() {
        let mut out = [0u8; 64];
        assert_eq!(
            build_rtx(&[0x80, 96], 1, rtx_header(), &mut out),
            Err(RtxError::Malformed)
        );
        // X=1 but the extension header is missing.
        let truncated = [0x90, 96, 0, 1, 1, 2, 3, 4, 9, 9, 9, 9, 0xbe];
        assert_eq!(
            build_rtx(&truncated, 1, rtx_header(), &mut out),
            Err(RtxError::Malformed)
        );
        // Padding longer than the packet.
        let mut padded = packet(1, b"");
        padded[0] |= 0x20;
        padded.push(200);
        assert_eq!(
            build_rtx(&padded, 1, rtx_header(), &mut out),
            Err(RtxError::Malformed)
        );
    }

    #[test]
    fn unwrapping_rtx_restores_the_original() {
        let original = packet(500, b"media");
        let mut rtx = [0u8; 64];
        let rtx_len = build_rtx(&original, 500, rtx_header(), &mut rtx).unwrap();
        let mut out = [0u8; 64];
        let (len, seq) =
            unwrap_rtx(&rtx[..rtx_len], Ssrc(0x0a0b0c0d), PayloadType(96), &mut out).unwrap();
        assert_eq!(seq, 500);
        assert_eq!(&out[..len], &original[..]);
    }

    #[test]
    fn unwrapping_rtx_without_original_sequence_number_is_an_error() {
        // Padding-only probes on the RTX stream have no OSN.
        let probe = packet(9, b"\x01");
        let mut out = [0u8; 64];
        assert_eq!(
            unwrap_rtx(&probe, Ssrc(1), PayloadType(96), &mut out),
            Err(RtxError::Malformed)
        );
    }
}
