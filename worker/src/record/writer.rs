//! The I/O end: one WebM file per producer, muxed by libwebm's mkvmuxer (the `webm` crate).
//!
//! libwebm reports a failed write only as "it failed"; the file handle under it keeps the
//! operating system's error, so a full disk reads as [`WriteError::DiskFull`].

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
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

/// A buffered file that keeps the first error and the bytes written, for after libwebm's
/// `false`. libwebm writes element by element, a few bytes at a time: unbuffered, that is
/// a system call per element.
struct Watched {
    file: BufWriter<File>,
    /// Where the next write goes (kept here: asking the file would flush the buffer).
    position: u64,
    error: Arc<Mutex<Option<io::Error>>>,
    bytes: Arc<AtomicU64>,
}

impl Watched {
    fn keep<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        result.map_err(|e| {
            let kind = e.kind();
            self.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            io::Error::from(kind)
        })
    }
}

impl Write for Watched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.file.write(buf);
        let n = self.keep(result)?;
        self.position += n as u64;
        self.bytes.fetch_max(self.position, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.file.flush();
        self.keep(result)
    }
}

impl Seek for Watched {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let result = self.file.seek(pos);
        self.position = self.keep(result)?;
        Ok(self.position)
    }

    /// libwebm asks where it is before nearly every element; the default (a seek to the
    /// current position) would flush the buffer and make a system call each time.
    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.position)
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
        let watched = Watched { file: BufWriter::with_capacity(64 * 1024, file), position: 0, error: error.clone(), bytes: bytes.clone() };
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
                let file = writer.into_inner().file.into_inner().map_err(|e| WriteError::of(&path, e.error()))?;
                file.sync_all().map_err(|e| WriteError::of(&path, &e))?;
                Ok(bytes.load(Ordering::Relaxed))
            }
            Err(_) => Err(WriteError::Failed { path: path.display().to_string(), reason: "the muxer could not finalise the file".into() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_reported_as_disk_full_naming_the_file() {
        // /dev/full takes every open and fails every write with ENOSPC.
        let path = Path::new("/dev/full");
        if !path.exists() {
            println!("SKIPPED: no /dev/full on this system");
            return;
        }
        let frame = vec![0u8; 16 * 1024];
        let error = (|| {
            let mut file = WebmFile::create(path, RecordCodec::Opus, (0, 0))?;
            for n in 0..64u64 {
                file.write(&frame, n * 20_000_000, true)?;
            }
            file.finalize().map(drop)
        })()
        .expect_err("nothing can be written to /dev/full");
        assert_eq!(error.code(), "RECORDING_DISK_FULL", "{error}");
        assert!(error.to_string().contains("/dev/full") && error.to_string().contains("free space"), "{error}");
    }

    #[test]
    fn other_write_errors_are_write_failed_with_the_reason() {
        let error = WebmFile::create(Path::new("/proc/fanout-cannot-create-this/x.webm"), RecordCodec::Vp8, (320, 240)).err().unwrap();
        assert_eq!(error.code(), "RECORDING_WRITE_FAILED", "{error}");
    }
}
