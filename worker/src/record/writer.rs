//! The I/O end: one WebM file per producer, muxed by libwebm's mkvmuxer (the `webm` crate).
//!
//! libwebm reports a failed write only as "it failed"; the file handle under it keeps the
//! operating system's error, so a full disk reads as [`WriteError::DiskFull`].

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webm::mux::{AudioCodecId, AudioTrack, Segment, SegmentBuilder, SegmentMode, VideoCodecId, VideoTrack, Writer};

use super::depacketize::RecordCodec;

/// Why a file could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("the recording volume is full writing {path}: free space there or give the worker a larger volume (--recording-dir)")]
    DiskFull { path: String },
    #[error("could not write {path}: {reason}")]
    Failed { path: String, reason: String },
}

impl WriteError {
    /// The stable code in the recording's status.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::DiskFull { .. } => "RECORDING_DISK_FULL",
            WriteError::Failed { .. } => "RECORDING_WRITE_FAILED",
        }
    }

    fn of(path: &Path, error: &io::Error) -> Self {
        let path = path.display().to_string();
        if error.kind() == io::ErrorKind::StorageFull || error.raw_os_error() == Some(libc::ENOSPC) || error.raw_os_error() == Some(libc::EDQUOT) {
            WriteError::DiskFull { path }
        } else {
            WriteError::Failed { path, reason: error.to_string() }
        }
    }
}

/// A file that keeps the first error and the bytes written, for after libwebm's `false`.
struct Watched {
    file: File,
    error: Arc<Mutex<Option<io::Error>>>,
    bytes: Arc<AtomicU64>,
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.write(buf) {
            Ok(n) => {
                let end = self.file.stream_position().unwrap_or(0);
                self.bytes.fetch_max(end, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                Err(io::Error::from(kind))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Watched {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

enum Track {
    Video(VideoTrack),
    Audio(AudioTrack),
}

/// An open WebM file of one track.
pub struct WebmFile {
    path: PathBuf,
    segment: Segment<Watched>,
    track: Track,
    error: Arc<Mutex<Option<io::Error>>>,
    bytes: Arc<AtomicU64>,
}

/// Opus's identification header (RFC 7845 section 5.1) as Matroska's CodecPrivate: stereo
/// (what WebRTC's opus is negotiated as), 48 kHz, no pre-skip, no gain, mapping family 0.
fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1); // version
    head.push(2); // channels
    head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // mapping family
    head
}

impl WebmFile {
    /// Creates the file (and its directories) with one track; `size` is a video's picture
    /// size.
    pub fn create(path: &Path, codec: RecordCodec, size: (u32, u32)) -> Result<Self, WriteError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WriteError::of(dir, &e))?;
        }
        let file = File::create(path).map_err(|e| WriteError::of(path, &e))?;
        let error = Arc::new(Mutex::new(None));
        let bytes = Arc::new(AtomicU64::new(0));
        let watched = Watched { file, error: error.clone(), bytes: bytes.clone() };
        let failed = |what: &str| WriteError::Failed { path: path.display().to_string(), reason: format!("the muxer refused {what}") };
        let builder = SegmentBuilder::new(Writer::new(watched))
            .and_then(|b| b.set_mode(SegmentMode::File))
            .and_then(|b| b.set_writing_app("fanout-worker"))
            .map_err(|_| failed("the file header"))?;
        let (builder, track) = match codec {
            RecordCodec::Opus => {
                let (builder, track) = builder.add_audio_track(48_000, 2, AudioCodecId::Opus, None).map_err(|_| failed("the audio track"))?;
                let builder = builder.set_codec_private(track, &opus_head()).map_err(|_| failed("the Opus header"))?;
                (builder, Track::Audio(track))
            }
            RecordCodec::Vp8 | RecordCodec::Vp9 => {
                let id = if codec == RecordCodec::Vp8 { VideoCodecId::VP8 } else { VideoCodecId::VP9 };
                let (builder, track) = builder.add_video_track(size.0.max(1), size.1.max(1), id, None).map_err(|_| failed("the video track"))?;
                (builder, Track::Video(track))
            }
        };
        let segment = builder.build();
        let file = WebmFile { path: path.to_owned(), segment, track, error, bytes };
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> Result<(), WriteError> {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(e) => Err(WriteError::of(&self.path, e)),
            None => Ok(()),
        }
    }

    /// Writes a frame at `timestamp_ns` from the file's start.
    pub fn write(&mut self, data: &[u8], timestamp_ns: u64, keyframe: bool) -> Result<(), WriteError> {
        let result = match self.track {
            Track::Video(t) => self.segment.add_frame(t, data, timestamp_ns, keyframe),
            Track::Audio(t) => self.segment.add_frame(t, data, timestamp_ns, keyframe),
        };
        self.check()?;
        result.map_err(|e| WriteError::Failed { path: self.path.display().to_string(), reason: format!("the muxer refused a frame: {e}") })
    }

    /// Bytes in the file so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Writes the cues and the duration, and closes the file.
    pub fn finalize(self) -> Result<u64, WriteError> {
        let WebmFile { path, segment, error, bytes, .. } = self;
        let result = segment.finalize(None);
        if let Some(e) = error.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(WriteError::of(&path, e));
        }
        match result {
            Ok(writer) => {
                let watched = writer.into_inner();
                watched.file.sync_all().map_err(|e| WriteError::of(&path, &e))?;
                Ok(bytes.load(Ordering::Relaxed))
            }
            Err(_) => Err(WriteError::Failed { path: path.display().to_string(), reason: "the muxer could not finalise the file".into() }),
        }
    }
}
