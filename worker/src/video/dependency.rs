//! The dependency descriptor RTP header extension
//! (<https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension>),
//! read for the layers of codecs whose payload has none: Chrome's H264 with temporal layers
//! (`scalabilityMode: 'L1T3'`) says which temporal layer a frame belongs to only there, as
//! libwebrtc sends it and mediasoup reads it.
//!
//! A descriptor names a frame by a template of the stream's template structure, which comes
//! with keyframes (and with any change of the structure); the others refer to it. So a
//! [`DependencyTracker`] per producer stream keeps the latest structure, and the temporal
//! layers of the stream's recent frames, by which it tells whether a frame refers only to
//! base-layer frames: a consumer can take up a higher temporal layer there (what VP8's `Y`
//! bit says in its payload).
//!
//! What is read: the mandatory fields, the extended fields' flags, the template structure
//! (template layers, decode target indications, frame diffs, chains, resolutions: all of it,
//! since the frame's own fields come after it), the active decode targets and the frame's
//! custom indications and diffs. Chains are passed over. A descriptor that does not parse
//! (truncated, over 64 templates, a template that is not in the structure, no structure
//! known yet) gives `None`, which means "no layer information": the packet is forwarded as
//! a packet without layers. A structure in a descriptor that does not parse is not taken.

/// Templates a structure can have (the template id is 6 bits).
pub const MAX_TEMPLATES: usize = 64;

/// Frame diffs kept per template: libwebrtc's structures have at most a few; more in one
/// template is read as a malformed descriptor rather than stored.
const MAX_TEMPLATE_FDIFFS: usize = 16;

/// How many recent frames' temporal layers are remembered, by frame number. A frame diff
/// beyond them (or to a frame not seen) counts as a reference to an upper layer.
const RECENT_FRAMES: usize = 32;

/// What one packet's descriptor says of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DependencyFrame {
    /// The packet is the first (last) of its frame.
    pub start_of_frame: bool,
    pub end_of_frame: bool,
    pub frame_number: u16,
    pub spatial: u8,
    pub temporal: u8,
    /// Every frame it refers to is a base-layer (temporal layer 0) frame this stream sent
    /// recently, or it refers to none: a consumer on a lower temporal layer can move up to
    /// this frame's layer here.
    pub base_sync: bool,
    /// The descriptor carried a template structure (libwebrtc attaches one to keyframes).
    pub new_structure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    spatial: u8,
    temporal: u8,
    fdiffs: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Structure {
    template_id_offset: u8,
    decode_targets: u8,
    templates: Vec<Template>,
}

/// A producer stream's descriptor state: its latest template structure and its recent
/// frames' temporal layers.
#[derive(Debug, Clone, Default)]
pub struct DependencyTracker {
    structure: Option<Structure>,
    recent: [Option<(u16, u8)>; RECENT_FRAMES],
}

/// Reads bits most significant first, refusing to read past the end.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn left(&self) -> usize {
        self.data.len() * 8 - self.at
    }

    fn read(&mut self, count: u32) -> Option<u32> {
        if count as usize > self.left() || count > 32 {
            return None;
        }
        let mut value = 0u32;
        for _ in 0..count {
            let bit = (self.data[self.at / 8] >> (7 - self.at % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.at += 1;
        }
        Some(value)
    }

    fn flag(&mut self) -> Option<bool> {
        self.read(1).map(|bit| bit == 1)
    }

    fn skip(&mut self, count: usize) -> Option<()> {
        if count > self.left() {
            return None;
        }
        self.at += count;
        Some(())
    }

    /// The spec's `ns(n)`: a value below `n` in a non-symmetric unsigned code.
    fn non_symmetric(&mut self, n: u32) -> Option<u32> {
        if n <= 1 {
            return Some(0);
        }
        let width = 32 - n.leading_zeros();
        let m = (1u32 << width) - n;
        let v = self.read(width - 1)?;
        if v < m {
            return Some(v);
        }
        let extra = self.read(1)?;
        Some((v << 1) - m + extra)
    }
}

impl DependencyTracker {
    pub fn new() -> Self {
        DependencyTracker::default()
    }

    /// Reads the descriptor `extension` (the header extension's value) of one packet of the
    /// stream; takes the structure it carries, if any, and remembers the frame's layer.
    pub fn read(&mut self, extension: &[u8]) -> Option<DependencyFrame> {
        self.read_as(extension, true)
    }

    /// [`DependencyTracker::read`] for a packet that comes late (a retransmission): read by
    /// what is known now, changing nothing. The structure it carries may be older than the
    /// one since taken, and must not replace it.
    pub fn read_late(&mut self, extension: &[u8]) -> Option<DependencyFrame> {
        self.read_as(extension, false)
    }

    fn read_as(&mut self, extension: &[u8], in_order: bool) -> Option<DependencyFrame> {
        let mut bits = Bits { data: extension, at: 0 };
        let start_of_frame = bits.flag()?;
        let end_of_frame = bits.flag()?;
        let template_id = bits.read(6)? as u8;
        let frame_number = bits.read(16)? as u16;
        let (mut structure_present, mut active_targets_present, mut custom_dtis, mut custom_fdiffs) = (false, false, false, false);
        if extension.len() > 3 {
            structure_present = bits.flag()?;
            active_targets_present = bits.flag()?;
            custom_dtis = bits.flag()?;
            custom_fdiffs = bits.flag()?;
            let _custom_chains = bits.flag()?;
        }
        let new_structure = if structure_present { Some(read_structure(&mut bits)?) } else { None };
        let structure = new_structure.as_ref().or(self.structure.as_ref())?;
        if active_targets_present {
            bits.skip(usize::from(structure.decode_targets))?;
        }
        let index = usize::from((template_id + 64 - structure.template_id_offset) % 64);
        let template = structure.templates.get(index)?;
        if custom_dtis {
            bits.skip(2 * usize::from(structure.decode_targets))?;
        }
        let recent = &self.recent;
        let refers_to_base = |fdiff: u16| {
            let referred = frame_number.wrapping_sub(fdiff);
            recent[usize::from(referred) % RECENT_FRAMES].is_some_and(|(number, temporal)| number == referred && temporal == 0)
        };
        let base_sync = if custom_fdiffs {
            let mut all_base = true;
            loop {
                let size = bits.read(2)?;
                if size == 0 {
                    break;
                }
                let fdiff = bits.read(4 * size)? + 1;
                all_base &= u16::try_from(fdiff).is_ok_and(refers_to_base);
            }
            all_base
        } else {
            template.fdiffs.iter().all(|&fdiff| refers_to_base(fdiff))
        };
        // Chains (frame_chain_fdiff) follow; nothing here needs them.
        let (spatial, temporal) = (template.spatial, template.temporal);
        if in_order {
            if let Some(structure) = new_structure {
                self.structure = Some(structure);
            }
            self.recent[usize::from(frame_number) % RECENT_FRAMES] = Some((frame_number, temporal));
        }
        Some(DependencyFrame {
            start_of_frame,
            end_of_frame,
            frame_number,
            spatial,
            temporal,
            base_sync,
            new_structure: structure_present,
        })
    }

    /// Temporal layers of the latest structure (its highest temporal id + 1), if one is known.
    pub fn temporal_layers(&self) -> Option<u8> {
        self.structure.as_ref().and_then(|s| s.templates.iter().map(|t| t.temporal).max()).map(|t| t + 1)
    }
}

/// `template_dependency_structure()`, all of it: the frame's own fields come after.
fn read_structure(bits: &mut Bits<'_>) -> Option<Structure> {
    let template_id_offset = bits.read(6)? as u8;
    let decode_targets = bits.read(5)? as u8 + 1;
    // template_layers()
    let mut templates = Vec::new();
    let (mut spatial, mut temporal) = (0u8, 0u8);
    loop {
        if templates.len() == MAX_TEMPLATES {
            return None;
        }
        templates.push(Template { spatial, temporal, fdiffs: Vec::new() });
        match bits.read(2)? {
            0 => {}
            1 => temporal += 1,
            2 => {
                temporal = 0;
                spatial += 1;
            }
            _ => break,
        }
    }
    // template_dtis(): two bits per template and decode target.
    bits.skip(2 * templates.len() * usize::from(decode_targets))?;
    // template_fdiffs()
    for template in templates.iter_mut() {
        while bits.flag()? {
            if template.fdiffs.len() == MAX_TEMPLATE_FDIFFS {
                return None;
            }
            template.fdiffs.push(bits.read(4)? as u16 + 1);
        }
    }
    // template_chains()
    let chains = bits.non_symmetric(u32::from(decode_targets) + 1)? as u8;
    if chains > 0 {
        for _ in 0..decode_targets {
            bits.non_symmetric(u32::from(chains))?;
        }
        bits.skip(4 * templates.len() * usize::from(chains))?;
    }
    // decode_target_layers() reads nothing; render_resolutions() 32 bits per spatial layer.
    if bits.flag()? {
        let spatial_layers = usize::from(templates.iter().map(|t| t.spatial).max().unwrap_or(0)) + 1;
        bits.skip(32 * spatial_layers)?;
    }
    Some(Structure { template_id_offset, decode_targets, templates })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes bits most significant first.
    #[derive(Default)]
    struct Writer {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl Writer {
        fn put(&mut self, count: u32, value: u32) -> &mut Self {
            for i in (0..count).rev() {
                if self.bits % 8 == 0 {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
            self
        }
    }

    /// libwebrtc's L1T3 (`ScalabilityStructureL1T3`): templates T0 key, T0, T1, T2, T2 with
    /// their decode target indications ("SSS", "SSS", "-DS", "--D", "--D"), frame diffs
    /// (none, 4, 2, 1, 1) and one chain; `offset` is the structure id.
    pub(crate) fn l1t3_structure_descriptor(offset: u8, frame_number: u16, start: bool, end: bool) -> Vec<u8> {
        let mut w = Writer::default();
        w.put(1, start as u32).put(1, end as u32).put(6, u32::from(offset)).put(16, u32::from(frame_number));
        // Structure present; no active targets, custom dtis, fdiffs or chains.
        w.put(1, 1).put(1, 0).put(1, 0).put(1, 0).put(1, 0);
        w.put(6, u32::from(offset)).put(5, 2);
        // Layers: T0, T0 (next same), T1 (next +1), T2 (next +1), T2 (same), end.
        for next in [0, 1, 1, 0, 3] {
            w.put(2, next);
        }
        // DTIs: 0 not present, 1 discardable, 2 switch, 3 required.
        for dtis in [[2, 2, 2], [2, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 1]] {
            for dti in dtis {
                w.put(2, dti);
            }
        }
        for fdiffs in [&[][..], &[4], &[2], &[1], &[1]] {
            for &fdiff in fdiffs {
                w.put(1, 1).put(4, fdiff - 1);
            }
            w.put(1, 0);
        }
        // One chain (ns(4) of 1: 2 bits), protecting every decode target (ns(1): no bits),
        // a 4-bit chain fdiff per template.
        w.put(2, 1);
        for chain_fdiff in [0, 4, 2, 1, 3] {
            w.put(4, chain_fdiff);
        }
        // Resolutions: 640x480.
        w.put(1, 1).put(16, 639).put(16, 479);
        w.bytes
    }

    /// A descriptor of the mandatory fields only: template `template` of the structure with
    /// offset `offset`.
    pub(crate) fn short_descriptor(offset: u8, template: u8, frame_number: u16, start: bool, end: bool) -> Vec<u8> {
        let id = (template + offset) % 64;
        let mut w = Writer::default();
        w.put(1, start as u32).put(1, end as u32).put(6, u32::from(id)).put(16, u32::from(frame_number));
        w.bytes
    }

    #[test]
    fn a_keyframes_structure_gives_the_layers_of_the_frames_that_follow() {
        let mut t = DependencyTracker::new();
        let key = t.read(&l1t3_structure_descriptor(5, 100, true, true)).unwrap();
        assert_eq!((key.spatial, key.temporal, key.new_structure, key.base_sync), (0, 0, true, true));
        assert_eq!(t.temporal_layers(), Some(3));
        // T0 T2 T1 T2 T0: templates 3 (T2 after T0), 2 (T1), 4 (T2 after T1), 1 (T0).
        let pattern = [(3u8, 2u8, true), (2, 1, true), (4, 2, false), (1, 0, true)];
        for (i, (template, temporal, base_sync)) in pattern.into_iter().enumerate() {
            let frame = t.read(&short_descriptor(5, template, 101 + i as u16, true, false)).unwrap();
            assert_eq!((frame.temporal, frame.base_sync, frame.new_structure), (temporal, base_sync, false), "frame {i}");
            assert_eq!(frame.frame_number, 101 + i as u16);
        }
    }

    #[test]
    fn the_template_id_is_taken_relative_to_the_structures_offset() {
        let mut t = DependencyTracker::new();
        t.read(&l1t3_structure_descriptor(62, 7, true, true)).unwrap();
        // Template 2 at offset 62 is id 0: the ids wrap at 64.
        assert_eq!(t.read(&short_descriptor(62, 2, 9, true, true)).unwrap().temporal, 1);
        // A new structure with another offset replaces the old one.
        t.read(&l1t3_structure_descriptor(10, 13, true, true)).unwrap();
        assert_eq!(t.read(&short_descriptor(10, 3, 14, true, true)).unwrap().temporal, 2);
        assert_eq!(t.read(&short_descriptor(62, 2, 15, true, true)), None, "id 0 is before the new offset: no such template");
    }

    #[test]
    fn frame_bounds_are_read_from_every_packet() {
        let mut t = DependencyTracker::new();
        let first = t.read(&l1t3_structure_descriptor(0, 1, true, false)).unwrap();
        assert!(first.start_of_frame && !first.end_of_frame);
        let last = t.read(&short_descriptor(0, 0, 1, false, true)).unwrap();
        assert!(!last.start_of_frame && last.end_of_frame);
    }

    #[test]
    fn a_reference_to_a_frame_not_seen_is_no_layer_sync() {
        let mut t = DependencyTracker::new();
        t.read(&l1t3_structure_descriptor(0, 1, true, true)).unwrap();
        // T1 two frames after the keyframe refers to it; one with frame number 50 refers to
        // 48, which never came.
        assert!(t.read(&short_descriptor(0, 2, 3, true, true)).unwrap().base_sync);
        assert!(!t.read(&short_descriptor(0, 2, 50, true, true)).unwrap().base_sync);
    }

    #[test]
    fn custom_frame_diffs_replace_the_templates() {
        let mut t = DependencyTracker::new();
        t.read(&l1t3_structure_descriptor(0, 1, true, true)).unwrap();
        t.read(&short_descriptor(0, 2, 3, true, true)).unwrap(); // T1, frame 3
        // Template 3 (T2, template fdiff 1) with custom fdiffs: frame 4 referring to frame 1
        // (diff 3, a T0) or to frame 3 (diff 1, the T1).
        let custom = |fdiff: u32| {
            let mut w = Writer::default();
            w.put(1, 1).put(1, 1).put(6, 3).put(16, 4);
            w.put(1, 0).put(1, 0).put(1, 0).put(1, 1).put(1, 0);
            w.put(2, 1).put(4, fdiff - 1).put(2, 0);
            w.bytes
        };
        assert!(t.clone().read(&custom(3)).unwrap().base_sync);
        let frame = t.read(&custom(1)).unwrap();
        assert!(!frame.base_sync);
        assert_eq!(frame.temporal, 2);
    }

    #[test]
    fn a_late_packet_is_read_by_the_structure_known_now_and_changes_nothing() {
        let mut t = DependencyTracker::new();
        let old = l1t3_structure_descriptor(0, 1, true, true);
        t.read(&old).unwrap();
        t.read(&l1t3_structure_descriptor(20, 40, true, true)).unwrap();
        // The first keyframe's packet, retransmitted: its own structure reads it...
        assert_eq!(t.read_late(&old).map(|f| f.temporal), Some(0));
        // ...but the newer structure stays, and frame 1 is not entered again.
        assert_eq!(t.read(&short_descriptor(20, 2, 42, true, true)).map(|f| (f.temporal, f.base_sync)), Some((1, true)));
        assert_eq!(t.read(&short_descriptor(0, 2, 43, true, true)), None, "offset 0 is gone");
        // A late T0 frame is not remembered: a T1 referring to it is no layer sync.
        assert_eq!(t.read_late(&short_descriptor(20, 1, 44, true, true)).map(|f| f.temporal), Some(0));
        assert!(!t.read(&short_descriptor(20, 2, 46, true, true)).unwrap().base_sync);
    }

    #[test]
    fn nothing_is_known_before_a_structure() {
        let mut t = DependencyTracker::new();
        assert_eq!(t.read(&short_descriptor(0, 0, 1, true, true)), None);
        assert_eq!(t.temporal_layers(), None);
    }

    #[test]
    fn hostile_descriptors_give_nothing_and_leave_the_known_structure() {
        let mut t = DependencyTracker::new();
        let good = l1t3_structure_descriptor(0, 1, true, true);
        // Every truncation of a structure-bearing descriptor fails cleanly...
        for len in 0..good.len() {
            let mut fresh = DependencyTracker::new();
            if let Some(frame) = fresh.read(&good[..len]) {
                panic!("{len} bytes of {}: {frame:?}", good.len());
            }
        }
        t.read(&good).unwrap();
        // ...and a bad one does not replace what is known.
        let mut bad = l1t3_structure_descriptor(9, 2, true, true);
        bad.truncate(bad.len() - 3);
        assert_eq!(t.read(&bad), None);
        assert_eq!(t.read(&short_descriptor(0, 2, 3, true, true)).unwrap().temporal, 1, "the old structure holds");
        // A template id past the structure's templates.
        assert_eq!(t.read(&short_descriptor(0, 5, 4, true, true)), None);
        // 65 templates: more than a 6-bit id can name.
        let mut w = Writer::default();
        w.put(8, 0xc0).put(16, 1).put(5, 0b10000).put(6, 0).put(5, 0);
        for _ in 0..64 {
            w.put(2, 0);
        }
        w.put(2, 3).put(32, 0).put(32, 0).put(32, 0);
        assert_eq!(DependencyTracker::new().read(&w.bytes), None);
        // Arbitrary bytes never panic.
        let mut state = 0x9e37_79b9u32;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = t.clone().read(&bytes);
            let _ = DependencyTracker::new().read(&bytes);
        }
    }

    #[test]
    fn non_symmetric_values_are_read_as_the_spec_codes_them() {
        // ns(5): w = 3, m = 3; 0..3 in two bits, 3 and 4 as 110 and 111.
        for (bits, value) in [(0b00u32 << 6, 0), (0b10 << 6, 2), (0b110 << 5, 3), (0b111 << 5, 4)] {
            let bytes = [bits as u8];
            assert_eq!(Bits { data: &bytes, at: 0 }.non_symmetric(5), Some(value));
        }
        assert_eq!(Bits { data: &[], at: 0 }.non_symmetric(1), Some(0), "ns(1) takes no bits");
    }
}
