//! A zero-copy view of an RTP packet, and in-place rewrites for forwarding.
//!
//! Forwarding rewrites a handful of fields per consumer (SSRC, payload type, sequence number,
//! timestamp, header extension ids); parsing into owned structs per packet would cost more
//! than the crypto. The view checks bounds once ([`RtpView::parse`]) and every accessor after
//! that stays within them, so peer input cannot make it panic.
//!
//! Header extensions (RFC 8285) are rewritten in place: an id is replaced, and an extension
//! the consumer did not negotiate is blanked with zero bytes, which both the one-byte and the
//! two-byte forms treat as padding. Nothing moves, so no copy is needed.

use std::collections::BTreeMap;

/// Byte offsets of a parsed RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView {
    /// Offset of the header extension block's first element, and its end.
    extensions: Option<(usize, usize, ExtensionForm)>,
    /// Offset of the payload.
    payload_start: usize,
    /// End of the payload (before padding).
    payload_end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtensionForm {
    OneByte,
    TwoByte,
    /// Some other profile: left untouched.
    Other,
}

impl RtpView {
    /// Checks the packet's structure; `None` for anything that is not a well-formed RTP packet.
    pub fn parse(packet: &[u8]) -> Option<RtpView> {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return None;
        }
        let csrc_count = (packet[0] & 0x0f) as usize;
        let mut offset = 12 + 4 * csrc_count;
        let mut extensions = None;
        if packet[0] & 0x10 != 0 {
            let header = packet.get(offset..offset + 4)?;
            let profile = u16::from_be_bytes([header[0], header[1]]);
            let words = u16::from_be_bytes([header[2], header[3]]) as usize;
            let start = offset + 4;
            let end = start + 4 * words;
            if end > packet.len() {
                return None;
            }
            let form = match profile {
                0xBEDE => ExtensionForm::OneByte,
                p if p & 0xfff0 == 0x1000 => ExtensionForm::TwoByte,
                _ => ExtensionForm::Other,
            };
            extensions = Some((start, end, form));
            offset = end;
        }
        let mut payload_end = packet.len();
        if packet[0] & 0x20 != 0 {
            let pad = *packet.last()? as usize;
            if pad == 0 || offset + pad > packet.len() {
                return None;
            }
            payload_end -= pad;
        }
        if offset > payload_end {
            return None;
        }
        Some(RtpView { extensions, payload_start: offset, payload_end })
    }

    pub fn payload_type(packet: &[u8]) -> u8 {
        packet[1] & 0x7f
    }

    pub fn marker(packet: &[u8]) -> bool {
        packet[1] & 0x80 != 0
    }

    pub fn sequence(packet: &[u8]) -> u16 {
        u16::from_be_bytes([packet[2], packet[3]])
    }

    pub fn timestamp(packet: &[u8]) -> u32 {
        u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]])
    }

    pub fn ssrc(packet: &[u8]) -> u32 {
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
    }

    /// Bytes before the payload: the fixed header, CSRCs and header extensions.
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    pub fn payload<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        &packet[self.payload_start..self.payload_end]
    }

    pub fn set_marker(packet: &mut [u8], marker: bool) {
        packet[1] = (packet[1] & 0x7f) | if marker { 0x80 } else { 0 };
    }

    pub fn set_payload_type(packet: &mut [u8], pt: u8) {
        packet[1] = (packet[1] & 0x80) | (pt & 0x7f);
    }

    pub fn set_sequence(packet: &mut [u8], seq: u16) {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_timestamp(packet: &mut [u8], ts: u32) {
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
    }

    pub fn set_ssrc(packet: &mut [u8], ssrc: u32) {
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }

    /// The value of header extension `id`, if present.
    pub fn extension<'a>(&self, packet: &'a [u8], id: u8) -> Option<&'a [u8]> {
        let mut found = None;
        self.walk_extensions(packet, |ext_id, _, value| {
            if ext_id == id && found.is_none() {
                found = Some(value);
            }
        });
        found.map(|(s, e)| &packet[s..e])
    }

    /// Maps every extension id through `ids` (producer id to consumer id); extensions without
    /// a mapping are blanked. A one-byte element cannot carry an id above 14, so such a mapping
    /// blanks the element too.
    pub fn rewrite_extension_ids(&self, packet: &mut [u8], ids: &BTreeMap<u8, u8>) {
        let Some((_, _, form)) = self.extensions else { return };
        if form == ExtensionForm::Other {
            return;
        }
        // Edited as it is walked (this runs for every forwarded copy: no allocation).
        let mut at = self.extensions.map_or(0, |(start, _, _)| start);
        while let Some((id, header_at, (_, value_end), next)) = self.next_extension(packet, at) {
            let new = ids.get(&id).copied().filter(|n| form == ExtensionForm::TwoByte || (1..=14).contains(n));
            match (new, form) {
                (Some(n), ExtensionForm::OneByte) => packet[header_at] = (n << 4) | (packet[header_at] & 0x0f),
                (Some(n), _) => packet[header_at] = n,
                (None, _) => packet[header_at..value_end].fill(0),
            }
            at = next;
        }
    }

    /// Sets the value of extension `id`, which must be present: in place when the length is
    /// unchanged, otherwise by rebuilding the extension block. Returns false when the packet
    /// has no such extension or the value cannot be encoded (then the packet is left as it
    /// was).
    ///
    /// A rebuild is common, not rare: a subscriber's tenth consumer has the two-character mid
    /// "10" while publishers send "0" or "1". It runs for every forwarded copy, so it does not
    /// allocate while `packet` has spare capacity (the forwarding scratch buffer has): the new
    /// block is written after the payload and then rotated into place.
    pub fn set_extension_value(&self, packet: &mut Vec<u8>, id: u8, value: &[u8]) -> bool {
        let Some((ext_start, ext_end, form)) = self.extensions else { return false };
        let mut found = None;
        self.walk_extensions(packet, |ext_id, _, range| {
            if ext_id == id && found.is_none() {
                found = Some(range);
            }
        });
        let Some((start, end)) = found else { return false };
        if end - start == value.len() {
            packet[start..end].copy_from_slice(value);
            return true;
        }
        if value.is_empty() || value.len() > 255 || form == ExtensionForm::Other {
            return false;
        }
        self.rebuild_extensions(packet, (ext_start, ext_end), id, value, false)
    }

    /// Adds extension `id` with `value`, which must be absent: into the existing block (rebuilt
    /// as [`RtpView::set_extension_value`] does), or as a new one-byte block (two-byte when the
    /// element needs it) after the CSRCs. Returns false when the packet already has it, its
    /// block is of another profile, or the value cannot be encoded; the packet is then left as
    /// it was. Like `set_extension_value` it does not allocate while `packet` has spare capacity.
    pub fn add_extension(&self, packet: &mut Vec<u8>, id: u8, value: &[u8]) -> bool {
        if id == 0 || value.is_empty() || value.len() > 255 {
            return false;
        }
        match self.extensions {
            Some((_, _, ExtensionForm::Other)) => false,
            Some((start, end, _)) => self.extension(packet, id).is_none() && self.rebuild_extensions(packet, (start, end), id, value, true),
            None => {
                let header_end = self.payload_start;
                let old_len = packet.len();
                if (1..=14).contains(&id) && value.len() <= 16 {
                    packet.extend_from_slice(&[0xBE, 0xDE, 0, 0, (id << 4) | (value.len() as u8 - 1)]);
                } else {
                    packet.extend_from_slice(&[0x10, 0x00, 0, 0, id, value.len() as u8]);
                }
                packet.extend_from_slice(value);
                while !(packet.len() - old_len).is_multiple_of(4) {
                    packet.push(0);
                }
                let block_len = packet.len() - old_len;
                let words = ((block_len - 4) / 4) as u16;
                packet[old_len + 2..old_len + 4].copy_from_slice(&words.to_be_bytes());
                packet[header_end..].rotate_right(block_len);
                packet[0] |= 0x10;
                true
            }
        }
    }

    /// Writes the extension block again with `id` set to `value` (`added`: appended as a new
    /// element), after the payload, then rotates it into the old block's place.
    fn rebuild_extensions(&self, packet: &mut Vec<u8>, (ext_start, ext_end): (usize, usize), id: u8, value: &[u8], added: bool) -> bool {
        let value_len = |ext_id: u8, (s, e): (usize, usize)| if ext_id == id { value.len() } else { e - s };
        // The one-byte form when every element, ours included, fits it (RFC 8285 4.2).
        let mut one_byte = !added || ((1..=14).contains(&id) && value.len() <= 16);
        self.walk_extensions(packet, |ext_id, _, range| {
            one_byte &= (1..=14).contains(&ext_id) && (1..=16).contains(&value_len(ext_id, range));
        });
        // The new block after the payload: profile, length (set below), elements, padding.
        let old_len = packet.len();
        packet.extend_from_slice(if one_byte { &[0xBE, 0xDE, 0, 0] } else { &[0x10, 0x00, 0, 0] });
        let push_element = |packet: &mut Vec<u8>, ext_id: u8, len: usize| {
            if one_byte {
                packet.push((ext_id << 4) | (len as u8 - 1));
            } else {
                packet.extend_from_slice(&[ext_id, len as u8]);
            }
        };
        let mut at = ext_start;
        while let Some((ext_id, _, range, next)) = self.next_extension(&packet[..old_len], at) {
            let len = value_len(ext_id, range);
            push_element(packet, ext_id, len);
            if ext_id == id {
                packet.extend_from_slice(value);
            } else {
                packet.extend_from_within(range.0..range.1);
            }
            at = next;
        }
        if added {
            push_element(packet, id, value.len());
            packet.extend_from_slice(value);
        }
        while !(packet.len() - old_len).is_multiple_of(4) {
            packet.push(0);
        }
        let block_len = packet.len() - old_len;
        let words = ((block_len - 4) / 4) as u16;
        packet[old_len + 2..old_len + 4].copy_from_slice(&words.to_be_bytes());
        // [header | old block | payload | new block] -> [header | new block | payload].
        let header_end = ext_start - 4;
        packet[header_end..].rotate_right(block_len);
        let old_block = header_end + block_len..header_end + block_len + (ext_end - header_end);
        packet.drain(old_block);
        true
    }

    /// Calls `f(id, element header offset, (value start, value end))` for each element.
    fn walk_extensions(&self, packet: &[u8], mut f: impl FnMut(u8, usize, (usize, usize))) {
        let mut at = self.extensions.map_or(0, |(start, _, _)| start);
        while let Some((id, header_at, value, next)) = self.next_extension(packet, at) {
            f(id, header_at, value);
            at = next;
        }
    }

    /// The extension element at or after `at` (padding skipped): its id, where its header
    /// starts, its value's range, and where the next one may start. Editing the element
    /// (its id, or zeroing it into padding) does not change where the next one is.
    fn next_extension(&self, packet: &[u8], mut at: usize) -> Option<(u8, usize, (usize, usize), usize)> {
        let (_, end, form) = self.extensions?;
        while at < end {
            let b = packet[at];
            if b == 0 {
                at += 1; // padding
                continue;
            }
            return match form {
                ExtensionForm::OneByte => {
                    let id = b >> 4;
                    if id == 15 {
                        return None; // reserved: stop parsing (RFC 8285 4.2)
                    }
                    let len = (b & 0x0f) as usize + 1;
                    (at + 1 + len <= end).then_some((id, at, (at + 1, at + 1 + len), at + 1 + len))
                }
                ExtensionForm::TwoByte => {
                    let len = *packet.get(at + 1)? as usize;
                    (at + 2 + len <= end).then_some((b, at, (at + 2, at + 2 + len), at + 2 + len))
                }
                ExtensionForm::Other => None,
            };
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RTP packet with one-byte extensions `(id, value)`.
    pub(crate) fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, exts: &[(u8, &[u8])], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![if exts.is_empty() { 0x80 } else { 0x90 }, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if !exts.is_empty() {
            let mut block = Vec::new();
            for (id, value) in exts {
                block.push((id << 4) | (value.len() as u8 - 1));
                block.extend_from_slice(value);
            }
            while block.len() % 4 != 0 {
                block.push(0);
            }
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&block);
        }
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fields_are_read_and_rewritten_in_place() {
        let mut p = packet(96, 65535, 90000, 0xdead_beef, &[], b"frame");
        let view = RtpView::parse(&p).unwrap();
        assert_eq!((RtpView::payload_type(&p), RtpView::sequence(&p), RtpView::timestamp(&p), RtpView::ssrc(&p)), (96, 65535, 90000, 0xdead_beef));
        assert_eq!(view.payload(&p), b"frame");
        p[1] |= 0x80; // marker
        RtpView::set_payload_type(&mut p, 101);
        RtpView::set_sequence(&mut p, 7);
        RtpView::set_timestamp(&mut p, 1);
        RtpView::set_ssrc(&mut p, 42);
        assert!(RtpView::marker(&p), "the marker bit survives a payload type rewrite");
        assert_eq!((RtpView::payload_type(&p), RtpView::sequence(&p), RtpView::timestamp(&p), RtpView::ssrc(&p)), (101, 7, 1, 42));
    }

    #[test]
    fn extension_ids_are_mapped_and_unknown_ones_blanked() {
        let mut p = packet(96, 1, 1, 1, &[(1, b"0"), (3, &[0, 1, 2]), (4, &[9])], b"x");
        let view = RtpView::parse(&p).unwrap();
        let ids = BTreeMap::from([(1, 10), (4, 5)]);
        view.rewrite_extension_ids(&mut p, &ids);
        let view = RtpView::parse(&p).unwrap();
        assert_eq!(view.extension(&p, 10), Some(&b"0"[..]));
        assert_eq!(view.extension(&p, 5), Some(&[9u8][..]));
        assert_eq!(view.extension(&p, 3), None, "unmapped extension removed");
        assert_eq!(view.extension(&p, 1), None);
        assert_eq!(view.payload(&p), b"x", "payload untouched");
    }

    #[test]
    fn an_extension_value_of_the_same_length_is_replaced_in_place() {
        let mut p = packet(96, 1, 1, 1, &[(1, b"1"), (2, &[5, 6, 7])], b"payload");
        let before = p.len();
        let view = RtpView::parse(&p).unwrap();
        assert!(view.set_extension_value(&mut p, 1, b"4"));
        let view = RtpView::parse(&p).unwrap();
        assert_eq!((view.extension(&p, 1), p.len()), (Some(&b"4"[..]), before));
    }

    #[test]
    fn an_extension_value_of_another_length_rebuilds_the_block() {
        let mut p = packet(96, 1, 1, 1, &[(1, b"1"), (2, &[5, 6, 7])], b"payload");
        let view = RtpView::parse(&p).unwrap();
        assert!(view.set_extension_value(&mut p, 1, b"12"));
        let view = RtpView::parse(&p).unwrap();
        assert_eq!(view.extension(&p, 1), Some(&b"12"[..]));
        assert_eq!(view.extension(&p, 2), Some(&[5u8, 6, 7][..]));
        assert_eq!(view.payload(&p), b"payload");
        assert_eq!(RtpView::sequence(&p), 1);
        assert!(!view.set_extension_value(&mut p, 9, b"x"), "absent extensions are not added");
    }

    #[test]
    fn a_rebuilt_block_stays_in_the_packets_buffer() {
        let mut p = packet(96, 1, 1, 1, &[(9, b"1"), (2, &[5, 6, 7])], b"payload");
        p.reserve(64);
        let buffer = p.as_ptr();
        let view = RtpView::parse(&p).unwrap();
        assert!(view.set_extension_value(&mut p, 9, b"10"));
        assert_eq!(p.as_ptr(), buffer, "no reallocation: this runs for every forwarded copy");
        let view = RtpView::parse(&p).unwrap();
        assert_eq!((view.extension(&p, 9), view.extension(&p, 2)), (Some(&b"10"[..]), Some(&[5u8, 6, 7][..])));
        assert_eq!(view.payload(&p), b"payload");
        // And back to one character: the block shrinks.
        assert!(view.set_extension_value(&mut p, 9, b"7"));
        assert_eq!(p, packet(96, 1, 1, 1, &[(9, b"7"), (2, &[5, 6, 7])], b"payload"));
    }

    #[test]
    fn an_extension_is_added_to_a_block_or_as_a_new_block_without_reallocating() {
        let mut p = packet(96, 1, 1, 1, &[(1, b"1"), (2, &[5, 6, 7])], b"payload");
        p.reserve(64);
        let buffer = p.as_ptr();
        let view = RtpView::parse(&p).unwrap();
        assert!(view.add_extension(&mut p, 5, &[0xAB, 0xCD]));
        assert_eq!(p, packet(96, 1, 1, 1, &[(1, b"1"), (2, &[5, 6, 7]), (5, &[0xAB, 0xCD])], b"payload"));
        assert!(!RtpView::parse(&p).unwrap().add_extension(&mut p, 5, &[1, 2]), "already there");
        let mut bare = packet(96, 1, 1, 1, &[], b"payload");
        bare.reserve(64);
        assert!(RtpView::parse(&bare).unwrap().add_extension(&mut bare, 5, &[0xAB, 0xCD]));
        assert_eq!(bare, packet(96, 1, 1, 1, &[(5, &[0xAB, 0xCD])], b"payload"));
        assert_eq!(p.as_ptr(), buffer, "no reallocation: this runs for every forwarded copy");
        // With CSRCs and padding the block goes after the CSRCs, the padding stays last.
        let mut c = packet(96, 1, 1, 1, &[], b"abc");
        c[0] |= 0x21;
        c.splice(12..12, [0, 0, 0, 9]);
        c.extend_from_slice(&[0, 0, 3]);
        assert!(RtpView::parse(&c).unwrap().add_extension(&mut c, 14, &[7]));
        let view = RtpView::parse(&c).unwrap();
        assert_eq!((view.extension(&c, 14), view.payload(&c)), (Some(&[7u8][..]), &b"abc"[..]));
        assert_eq!(&c[12..16], &[0, 0, 0, 9]);
    }

    #[test]
    fn a_value_too_long_for_one_byte_elements_switches_to_two_byte_ones() {
        let mut p = packet(96, 1, 1, 1, &[(1, b"1"), (2, &[5, 6, 7])], b"payload");
        let view = RtpView::parse(&p).unwrap();
        let long = [b'm'; 20];
        assert!(view.set_extension_value(&mut p, 1, &long));
        assert_eq!(&p[12..14], &[0x10, 0x00], "two-byte profile (RFC 8285 4.3)");
        let view = RtpView::parse(&p).unwrap();
        assert_eq!((view.extension(&p, 1), view.extension(&p, 2)), (Some(&long[..]), Some(&[5u8, 6, 7][..])));
        assert_eq!(view.payload(&p), b"payload");
    }

    #[test]
    fn padding_and_csrcs_are_respected() {
        let mut p = packet(96, 1, 1, 1, &[], b"abc");
        p[0] |= 0x20; // padding
        p.extend_from_slice(&[0, 0, 3]);
        assert_eq!(RtpView::parse(&p).unwrap().payload(&p), b"abc");
        let mut c = packet(96, 1, 1, 1, &[], b"abc");
        c[0] |= 1; // one CSRC
        c.splice(12..12, [0, 0, 0, 9]);
        assert_eq!(RtpView::parse(&c).unwrap().payload(&c), b"abc");
    }

    #[test]
    fn truncated_or_malformed_packets_are_refused_not_panicked_on() {
        let good = packet(96, 1, 1, 1, &[(1, b"ab")], b"payload");
        for len in 0..good.len() {
            let _ = RtpView::parse(&good[..len]);
        }
        assert_eq!(RtpView::parse(&good[..11]), None);
        let mut bad_version = good.clone();
        bad_version[0] = 0x40;
        assert_eq!(RtpView::parse(&bad_version), None);
        let mut bad_padding = packet(96, 1, 1, 1, &[], b"");
        bad_padding[0] |= 0x20;
        bad_padding.push(200);
        assert_eq!(RtpView::parse(&bad_padding), None);
        let mut seed = 7u32;
        for _ in 0..2000 {
            let mut p = good.clone();
            for b in p.iter_mut() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if seed.is_multiple_of(5) {
                    *b = (seed >> 16) as u8;
                }
            }
            if let Some(v) = RtpView::parse(&p) {
                let _ = v.payload(&p);
                let _ = v.extension(&p, 1);
                v.rewrite_extension_ids(&mut p, &BTreeMap::from([(1, 2)]));
                let mut q = p.clone();
                if v.set_extension_value(&mut q, 2, b"abc") {
                    assert!(RtpView::parse(&q).is_some(), "a rebuilt packet parses");
                }
            }
        }
    }
}
