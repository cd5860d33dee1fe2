//! The I/O end: one file per producer. WebM for VP8, VP9 and Opus, muxed by libwebm's
//! mkvmuxer (the `webm` crate); fragmented MP4 for H264, muxed by `muxide` (the libwebm
//! wrapper takes no H264).
//!
//! libwebm reports a failed write only as "it failed"; the file handle under it keeps the
//! operating system's error, so a full disk reads as [`WriteError::DiskFull`].

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use webm::mux::{AudioCodecId, AudioTrack, Segment, SegmentBuilder, SegmentMode, VideoCodecId, VideoTrack, Writer};

use std::time::Duration;

use muxide::fragmented::{FragmentConfig, FragmentedMuxer};

use super::depacketize::RecordCodec;
use super::track::ParameterSets;

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
            RecordCodec::H264 => return Err(failed("H264 (it goes to an MP4 file)")),
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

/// A fragment is written out once it spans this much: what a crash can lose, at most, and
/// about what memory holds.
pub const FRAGMENT: Duration = Duration::from_secs(1);

/// Whether the fragment being collected (`count` frames from `first_ns` to `last_ns`) goes
/// out before the next frame.
pub fn flush_before(first_ns: u64, last_ns: u64, count: u64) -> bool {
    count > 0 && last_ns.saturating_sub(first_ns) >= FRAGMENT.as_nanos() as u64
}

/// Sets the decode time (`tfdt`, in `moof`/`traf`) of a fragment muxide made. muxide starts
/// each fragment after the first at the previous one's last frame plus its average frame
/// interval, not at its own first frame's time: after a pause, or a fragment holding one,
/// that is off by up to the pause, and fragments then overlap (players drop frames). The
/// recorder knows the first frame's time and writes it. `false` if there is no `tfdt`.
pub fn set_fragment_time(segment: &mut [u8], ticks: u64) -> bool {
    fn find(data: &mut [u8], path: &[&[u8; 4]]) -> Option<usize> {
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().ok()?) as usize;
            if size < 8 || at + size > data.len() {
                return None;
            }
            if &data[at + 4..at + 8] == path[0] {
                if path.len() == 1 {
                    return Some(at);
                }
                return find(&mut data[at + 8..at + size], &path[1..]).map(|inner| at + 8 + inner);
            }
            at += size;
        }
        None
    }
    let Some(tfdt) = find(segment, &[b"moof", b"traf", b"tfdt"]) else { return false };
    // Full box: version (1: a 64-bit time, as muxide writes) and flags, then the time.
    match segment.get(tfdt + 8) {
        Some(1) if segment.len() >= tfdt + 20 => {
            segment[tfdt + 12..tfdt + 20].copy_from_slice(&ticks.to_be_bytes());
            true
        }
        Some(0) if segment.len() >= tfdt + 16 => {
            segment[tfdt + 12..tfdt + 16].copy_from_slice(&(ticks as u32).to_be_bytes());
            true
        }
        _ => false,
    }
}

/// An open fragmented MP4 file of one H264 track: the init segment (`ftyp`, `moov` with the
/// first SPS and PPS), then a `moof` and `mdat` per fragment, each written and flushed to the
/// file as it is cut. Memory holds one fragment; a crash leaves every fragment written
/// readable.
pub struct Mp4File {
    path: PathBuf,
    file: BufWriter<File>,
    muxer: FragmentedMuxer,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    count: u64,
}

/// MP4's video timescale: the RTP clock of H264.
const MP4_TIMESCALE: u32 = 90_000;

/// Nanoseconds to the timescale, rounded (33 333 333 ns is 3000 ticks, not 2999).
fn ticks(ns: u64) -> u64 {
    ((u128::from(ns) * u128::from(MP4_TIMESCALE) + 500_000_000) / 1_000_000_000) as u64
}

impl Mp4File {
    /// Creates the file (and its directories) and writes its init segment.
    pub fn create(path: &Path, size: (u32, u32), sets: &ParameterSets) -> Result<Self, WriteError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| WriteError::of(dir, &e))?;
        }
        let mut config = FragmentConfig::new(size.0.clamp(1, 65_535), size.1.clamp(1, 65_535), MP4_TIMESCALE);
        config.sps = sets.sps.clone();
        config.pps = sets.pps.clone();
        let muxer = FragmentedMuxer::new(config).map_err(|e| WriteError::Failed { path: path.display().to_string(), reason: format!("the muxer refused the track: {e}") })?;
        let file = File::create(path).map_err(|e| WriteError::of(path, &e))?;
        let mut mp4 = Mp4File { path: path.to_owned(), file: BufWriter::with_capacity(64 * 1024, file), muxer, bytes: 0, first_ns: 0, last_ns: 0, count: 0 };
        let init = mp4.muxer.init_segment();
        mp4.put(&init)?;
        Ok(mp4)
    }

    fn put(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.file.write_all(data).and_then(|()| self.file.flush()).map_err(|e| WriteError::of(&self.path, &e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    fn flush_fragment(&mut self) -> Result<(), WriteError> {
        self.count = 0;
        let Some(mut segment) = self.muxer.flush_segment() else { return Ok(()) };
        if !set_fragment_time(&mut segment, ticks(self.first_ns)) {
            return Err(WriteError::Failed { path: self.path.display().to_string(), reason: "the muxer made a fragment without a decode time".into() });
        }
        self.put(&segment)
    }

    /// Writes an access unit (length-prefixed NAL units) at `timestamp_ns` from the file's
    /// start.
    pub fn write(&mut self, data: &[u8], timestamp_ns: u64, keyframe: bool) -> Result<(), WriteError> {
        if flush_before(self.first_ns, self.last_ns, self.count) {
            self.flush_fragment()?;
        }
        if self.count == 0 {
            self.first_ns = timestamp_ns;
        }
        let ticks = ticks(timestamp_ns);
        // Browsers' H264 has no B-frames: presentation order is decode order.
        self.muxer
            .write_video(ticks, ticks, data, keyframe)
            .map_err(|e| WriteError::Failed { path: self.path.display().to_string(), reason: format!("the muxer refused a frame: {e}") })?;
        self.last_ns = timestamp_ns;
        self.count += 1;
        Ok(())
    }

    /// Bytes in the file so far (fragments written out).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the last fragment and closes the file.
    pub fn finalize(mut self) -> Result<u64, WriteError> {
        self.flush_fragment()?;
        let file = self.file.into_inner().map_err(|e| WriteError::of(&self.path, e.error()))?;
        file.sync_all().map_err(|e| WriteError::of(&self.path, &e))?;
        Ok(self.bytes)
    }
}

/// A producer's open file, in the container its codec goes to.
pub enum MediaFile {
    Webm(WebmFile),
    Mp4(Mp4File),
}

impl MediaFile {
    /// The file for `codec`: MP4 for H264 (with its parameter sets), WebM for the others.
    pub fn create(dir: &Path, producer: &str, codec: RecordCodec, size: (u32, u32), sets: Option<&ParameterSets>) -> Result<(String, Self), WriteError> {
        match (codec, sets) {
            (RecordCodec::H264, Some(sets)) => {
                let name = format!("{producer}.mp4");
                Mp4File::create(&dir.join(&name), size, sets).map(|f| (name, MediaFile::Mp4(f)))
            }
            (RecordCodec::H264, None) => Err(WriteError::Failed { path: dir.join(format!("{producer}.mp4")).display().to_string(), reason: "no H264 parameter sets to start the file with".into() }),
            _ => {
                let name = format!("{producer}.webm");
                WebmFile::create(&dir.join(&name), codec, size).map(|f| (name, MediaFile::Webm(f)))
            }
        }
    }

    /// The `container` of the recording status.
    pub fn container(&self) -> &'static str {
        match self {
            MediaFile::Webm(_) => "webm",
            MediaFile::Mp4(_) => "mp4",
        }
    }

    pub fn write(&mut self, data: &[u8], timestamp_ns: u64, keyframe: bool) -> Result<(), WriteError> {
        match self {
            MediaFile::Webm(f) => f.write(data, timestamp_ns, keyframe),
            MediaFile::Mp4(f) => f.write(data, timestamp_ns, keyframe),
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            MediaFile::Webm(f) => f.bytes(),
            MediaFile::Mp4(f) => f.bytes(),
        }
    }

    pub fn finalize(self) -> Result<u64, WriteError> {
        match self {
            MediaFile::Webm(f) => f.finalize(),
            MediaFile::Mp4(f) => f.finalize(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fragments_are_cut_after_a_second() {
        assert!(!flush_before(0, 29 * 33 * MS, 30));
        assert!(flush_before(0, 31 * 33 * MS, 32));
        assert!(!flush_before(0, 0, 0));
    }

    #[test]
    fn a_fragment_gets_its_first_frame_time_whatever_muxide_estimated() {
        let sets = ParameterSets { sps: vec![0x67, 0x42, 0xc0, 0x0d], pps: vec![0x68, 0xcb] };
        let mut config = FragmentConfig::new(320, 240, MP4_TIMESCALE);
        config.sps = sets.sps;
        config.pps = sets.pps;
        let mut muxer = FragmentedMuxer::new(config).unwrap();
        muxer.write_video(0, 0, &[0, 0, 0, 1, 0x65], true).unwrap();
        muxer.write_video(3_000, 3_000, &[0, 0, 0, 1, 0x41], false).unwrap();
        muxer.flush_segment().unwrap();
        // After a 2 s pause: muxide would start this fragment at 6000.
        muxer.write_video(186_000, 186_000, &[0, 0, 0, 1, 0x41], false).unwrap();
        let mut segment = muxer.flush_segment().unwrap();
        let at = segment.windows(4).position(|w| w == b"tfdt").unwrap();
        assert_eq!(u64::from_be_bytes(segment[at + 8..at + 16].try_into().unwrap()), 6_000, "what muxide writes");
        assert!(set_fragment_time(&mut segment, 186_000));
        assert_eq!(u64::from_be_bytes(segment[at + 8..at + 16].try_into().unwrap()), 186_000);
        assert!(!set_fragment_time(&mut [0, 0, 0, 8, b'm', b'd', b'a', b't'], 1));
        assert_eq!(ticks(33_333_333), 3_000);
    }

    #[test]
    fn an_mp4_file_writes_its_fragments_as_they_are_cut() {
        let dir = std::env::temp_dir().join(format!("fanout-mp4-writer-{}", std::process::id()));
        let sets = ParameterSets { sps: vec![0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10], pps: vec![0x68, 0xcb, 0x83, 0xcb, 0x20] };
        let mut file = Mp4File::create(&dir.join("x.mp4"), (320, 240), &sets).unwrap();
        let init = file.bytes();
        assert!(init > 0);
        let frame = [0, 0, 0, 3, 0x65, 0x88, 0x84];
        for n in 0..31u64 {
            file.write(&frame, n * 33 * MS, n == 0).unwrap();
        }
        assert_eq!(file.bytes(), init, "less than a second: held");
        file.write(&frame, 31 * 33 * MS, false).unwrap();
        file.write(&frame, 32 * 33 * MS, false).unwrap();
        let written = file.bytes();
        assert!(written > init + 32 * frame.len() as u64, "the first fragment is in the file");
        assert_eq!(std::fs::metadata(dir.join("x.mp4")).unwrap().len(), written);
        let total = file.finalize().unwrap();
        assert!(total > written);
        assert_eq!(std::fs::metadata(dir.join("x.mp4")).unwrap().len(), total);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
