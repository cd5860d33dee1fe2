//! One producer's file, as decisions: when the file opens (audio: its first frame; video: its
//! first keyframe, whose picture size the container needs), which frames go in at which
//! media time, and when to ask for a keyframe. Sans-IO: the recorder thread carries out the
//! [`TrackAction`]s.

use std::time::Instant;

use super::assembler::{Assembled, FrameAssembler, KEYFRAME_RETRY};
use super::clock::MediaClock;
use super::depacketize::{picture_size, RecordCodec};
use super::h264;

/// Picture size for a VP8/VP9 keyframe whose header cannot be read (players take the size
/// from the bitstream anyway; the container only needs one that is not zero).
pub const FALLBACK_SIZE: (u32, u32) = (640, 480);

/// What to do with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackAction {
    /// Create the file, with this picture size for video, and H264's parameter sets.
    Open { size: (u32, u32), parameter_sets: Option<ParameterSets> },
    /// Write a frame at this media time.
    Write { timestamp_ns: u64, keyframe: bool, data: Vec<u8> },
    /// Ask the producer for a keyframe.
    RequestKeyframe,
}

/// H264's latest sequence and picture parameter sets (NAL units, header byte first), which an
/// MP4 file's `avcC` needs before its first sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterSets {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
}

/// Where a file's time 0 is on its recording's time line: ms from the recording's start to
/// the file's first frame (0 for a frame queued before the start was seen).
pub fn start_offset_ms(recording_started: Instant, first_arrival: Instant) -> u64 {
    first_arrival.saturating_duration_since(recording_started).as_millis() as u64
}

/// A producer's track.
pub struct TrackPlan {
    codec: RecordCodec,
    assembler: FrameAssembler,
    clock: MediaClock,
    opened: bool,
    /// H264: the latest SPS and PPS seen, in whichever frame they came.
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    last_request: Option<Instant>,
    /// When the file's first frame arrived (its first packet), once it is open.
    pub first_arrival: Option<Instant>,
    /// The last frame's media time.
    pub last_ns: u64,
    pub frames: u64,
}

impl TrackPlan {
    pub fn new(codec: RecordCodec) -> Self {
        TrackPlan { codec, assembler: FrameAssembler::new(codec), clock: MediaClock::new(codec.clock_rate()), opened: false, sps: None, pps: None, last_request: None, first_arrival: None, last_ns: 0, frames: 0 }
    }

    pub fn codec(&self) -> RecordCodec {
        self.codec
    }

    pub fn opened(&self) -> bool {
        self.opened
    }

    /// A packet of the producer arrived.
    pub fn push(&mut self, packet: Vec<u8>, now: Instant) -> Vec<TrackAction> {
        let assembled = self.assembler.push(packet, now);
        self.act(assembled)
    }

    /// Time passed (holes given up on, keyframe requests repeated).
    pub fn poll(&mut self, now: Instant) -> Vec<TrackAction> {
        let assembled = self.assembler.poll(now);
        self.act(assembled)
    }

    fn act(&mut self, assembled: Vec<Assembled>) -> Vec<TrackAction> {
        let mut actions = Vec::new();
        for item in assembled {
            match item {
                Assembled::NeedKeyframe => actions.push(TrackAction::RequestKeyframe),
                Assembled::Frame(frame) => {
                    if self.codec == RecordCodec::H264 {
                        for nal in h264::nal_units(&frame.data) {
                            match nal.first().map(|h| h & 0x1f) {
                                Some(h264::NAL_SPS) => self.sps = Some(nal.to_vec()),
                                Some(h264::NAL_PPS) => self.pps = Some(nal.to_vec()),
                                _ => {}
                            }
                        }
                    }
                    if !self.opened {
                        let mut parameter_sets = None;
                        let sets = match (self.sps.clone(), self.pps.clone()) {
                            (Some(sps), Some(pps)) => Some(ParameterSets { sps, pps }),
                            _ => None,
                        };
                        // A file starts at a keyframe it can decode. The assembler hands video
                        // on from a keyframe, but H264's parameter sets may come only after
                        // it (then the frames that follow are no start), and an IDR whose
                        // parameter sets never came cannot be decoded: wait for one that
                        // brings them (browsers send SPS and PPS before every IDR), asking
                        // at most once a second.
                        let startable = !self.codec.is_video() || (frame.keyframe && (self.codec != RecordCodec::H264 || sets.is_some()));
                        if !startable {
                            if self.last_request.is_none_or(|at| frame.arrival.saturating_duration_since(at) >= KEYFRAME_RETRY) {
                                self.last_request = Some(frame.arrival);
                                actions.push(TrackAction::RequestKeyframe);
                            }
                            continue;
                        }
                        if self.codec == RecordCodec::H264 {
                            parameter_sets = sets;
                        }
                        // The assembler hands video on from a keyframe only.
                        let size = if self.codec.is_video() { picture_size(self.codec, &frame.data).unwrap_or(FALLBACK_SIZE) } else { (0, 0) };
                        let size = match &parameter_sets {
                            Some(sets) => h264::sps_size(&sets.sps).unwrap_or(size),
                            None => size,
                        };
                        actions.push(TrackAction::Open { size, parameter_sets });
                        self.opened = true;
                        self.first_arrival = Some(frame.arrival);
                    }
                    let timestamp_ns = self.clock.media_ns(frame.ssrc, frame.timestamp, frame.arrival);
                    self.last_ns = timestamp_ns;
                    self.frames += 1;
                    actions.push(TrackAction::Write { timestamp_ns, keyframe: frame.keyframe, data: frame.data });
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::record::test_packets::rtp;

    #[test]
    fn a_video_file_opens_at_the_first_keyframe_with_its_size_and_times_start_at_zero() {
        let t = Instant::now();
        let mut track = TrackPlan::new(RecordCodec::Vp8);
        // An interframe: nothing opens, a keyframe is asked for.
        assert_eq!(track.push(rtp(1, 90_000, true, &[0x10, 0x01, 0x00]), t), vec![TrackAction::RequestKeyframe]);
        // A 320x240 keyframe 100 ms later.
        let key = [0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        let actions = track.push(rtp(2, 99_000, true, &key), t + Duration::from_millis(100));
        assert_eq!(actions[0], TrackAction::Open { size: (320, 240), parameter_sets: None });
        assert!(matches!(actions[1], TrackAction::Write { timestamp_ns: 0, keyframe: true, .. }));
        assert_eq!(track.first_arrival, Some(t + Duration::from_millis(100)), "the keyframe's, not the interframe's before it");
        assert_eq!(start_offset_ms(t - Duration::from_millis(250), track.first_arrival.unwrap()), 350);
        assert_eq!(start_offset_ms(t + Duration::from_secs(1), t), 0, "never before the start");
        let actions = track.push(rtp(3, 102_000, true, &[0x10, 0x01]), t + Duration::from_millis(133));
        assert!(matches!(actions[..], [TrackAction::Write { timestamp_ns: 33_333_333, keyframe: false, .. }]));
    }

    #[test]
    fn an_audio_file_opens_at_its_first_frame() {
        let t = Instant::now();
        let mut track = TrackPlan::new(RecordCodec::Opus);
        let actions = track.push(rtp(9, 4_800, false, &[0x78, 0x01]), t);
        assert_eq!(actions[0], TrackAction::Open { size: (0, 0), parameter_sets: None });
        assert_eq!(actions[1], TrackAction::Write { timestamp_ns: 0, keyframe: true, data: vec![0x78, 0x01] });
        let actions = track.push(rtp(10, 5_760, false, &[0x78, 0x02]), t + Duration::from_millis(20));
        assert_eq!(actions, vec![TrackAction::Write { timestamp_ns: 20_000_000, keyframe: true, data: vec![0x78, 0x02] }]);
    }

    #[test]
    fn an_h264_file_opens_at_an_idr_with_the_latest_parameter_sets_and_the_sps_size() {
        let t = Instant::now();
        let mut track = TrackPlan::new(RecordCodec::H264);
        // x264's 320x240 SPS and PPS, with an IDR, in one STAP-A.
        let sps = [0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80];
        let pps = [0x68, 0xcb, 0x83, 0xcb, 0x20];
        // An IDR alone first: no parameter sets yet, so no file, and a keyframe is asked for.
        let actions = track.push(rtp(1, 0, true, &[0x65, 0x88, 0x01]), t);
        assert_eq!(actions, vec![TrackAction::RequestKeyframe]);
        let mut stap = vec![0x78];
        for nal in [&sps[..], &pps[..], &[0x65, 0x88, 0x02][..]] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let actions = track.push(rtp(2, 3_000, true, &stap), t + Duration::from_millis(33));
        assert_eq!(actions[0], TrackAction::Open { size: (320, 240), parameter_sets: Some(ParameterSets { sps: sps.to_vec(), pps: pps.to_vec() }) });
        assert!(matches!(actions[1], TrackAction::Write { timestamp_ns: 0, keyframe: true, .. }));
    }

    /// A small deterministic generator (xorshift64*), so a failure replays.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Up to `most - 1` random bytes.
        fn bytes(&mut self, most: u64) -> Vec<u8> {
            let len = self.below(most);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Hostile or broken producers: packets with random payloads (often starting like a real
    /// payload descriptor or NAL header), sequence numbers that jump, repeat and go back,
    /// timestamps anywhere, markers at random, and datagrams that are no RTP at all. A track
    /// must neither panic nor hand the muxer what corrupts a file: nothing written before the
    /// file is open, one open, video starting at a keyframe, and media time never going back.
    #[test]
    fn garbage_from_a_producer_never_panics_nor_writes_a_file_out_of_order() {
        for codec in [RecordCodec::Opus, RecordCodec::Vp8, RecordCodec::Vp9, RecordCodec::H264] {
            let mut written = 0u64;
            for seed in 1..=8u64 {
                let mut noise = Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut track = TrackPlan::new(codec);
                let mut now = Instant::now();
                let (mut sequence, mut timestamp) = (noise.next() as u16, noise.next() as u32);
                let (mut opens, mut writes, mut last_ns) = (0, 0u64, None::<u64>);
                for _ in 0..3000 {
                    let packet = match noise.below(20) {
                        0 => noise.bytes(16),
                        _ => {
                            sequence = match noise.below(10) {
                                0 => sequence.wrapping_sub(noise.below(200) as u16),
                                1 => sequence.wrapping_add(noise.below(5000) as u16),
                                2 => sequence,
                                _ => sequence.wrapping_add(1),
                            };
                            timestamp = match noise.below(10) {
                                0 => noise.next() as u32,
                                1 => timestamp.wrapping_sub(noise.below(90_000) as u32),
                                _ => timestamp.wrapping_add(noise.below(4000) as u32),
                            };
                            let mut payload = noise.bytes(1400);
                            if let (Some(first), true) = (payload.first_mut(), noise.below(2) == 0) {
                                // Often a plausible start: VP8 S bit, VP9 B bit, an H264 IDR,
                                // SPS, PPS, STAP-A or FU-A header.
                                *first = [0x10, 0x90, 0x08, 0x65, 0x67, 0x68, 0x78, 0x7c][noise.below(8) as usize];
                            }
                            rtp(sequence, timestamp, noise.below(4) == 0, &payload)
                        }
                    };
                    now += Duration::from_millis(noise.below(40));
                    let mut actions = track.push(packet, now);
                    if noise.below(8) == 0 {
                        now += Duration::from_millis(noise.below(2000));
                        actions.extend(track.poll(now));
                    }
                    for action in actions {
                        match action {
                            TrackAction::Open { .. } => opens += 1,
                            TrackAction::Write { timestamp_ns, keyframe, .. } => {
                                assert_eq!(opens, 1, "{codec:?} seed {seed}: a write with {opens} opens");
                                if writes == 0 && codec != RecordCodec::Opus {
                                    assert!(keyframe, "{codec:?} seed {seed}: the file starts at a keyframe");
                                }
                                if let Some(last) = last_ns {
                                    assert!(timestamp_ns >= last, "{codec:?} seed {seed}: media time went back from {last} to {timestamp_ns}");
                                }
                                last_ns = Some(timestamp_ns);
                                writes += 1;
                            }
                            TrackAction::RequestKeyframe => {}
                        }
                    }
                }
                assert!(opens <= 1, "{codec:?} seed {seed}: opened {opens} times");
                written += writes;
            }
            eprintln!("{codec:?}: {written} frames written from garbage over 8 seeds");
            assert!(written > 0, "{codec:?}: the garbage never got a frame written, so the checks above checked nothing");
        }
    }
}
