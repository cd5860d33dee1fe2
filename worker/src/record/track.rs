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
                        if self.codec == RecordCodec::H264 {
                            let (Some(sps), Some(pps)) = (self.sps.clone(), self.pps.clone()) else {
                                // An IDR whose parameter sets never came cannot be decoded:
                                // wait for one that brings them (browsers send SPS and PPS
                                // before every IDR), asking at most once a second.
                                if self.last_request.is_none_or(|at| frame.arrival.saturating_duration_since(at) >= KEYFRAME_RETRY) {
                                    self.last_request = Some(frame.arrival);
                                    actions.push(TrackAction::RequestKeyframe);
                                }
                                continue;
                            };
                            parameter_sets = Some(ParameterSets { sps, pps });
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
}
