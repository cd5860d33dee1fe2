//! Recording a room's producers to files (`docs/recording.md`).
//!
//! The media thread only copies: for a room with an active recording, its router hands a
//! copy of each producer packet (first simulcast encoding, retransmissions unwrapped) to a
//! [`RecordTap`], a bounded channel to the recorder thread. When the channel is full the
//! copy is dropped and counted, never waited for: forwarding to the room's consumers goes on
//! at its own pace whatever the disk does.
//!
//! The recorder thread owns the files. Each producer's packets go through a sans-IO
//! [`TrackPlan`] (reorder window and frame assembly in [`assembler`], RTP clock to media time
//! in [`clock`], payload formats in [`depacketize`]) whose decisions it carries out on a
//! [`MediaFile`] ([`writer`]): one file per producer, at
//! `<recording-dir>/<roomId>/<recordingId>/<producerId>.webm` (`.mp4` for H264, [`h264`]). A producer that appears later
//! gets its file when its first frame (video: keyframe) comes; a producer that closes has
//! its file finalised; stopping a recording, or its room closing, finalises them all.
//!
//! The control plane keeps the recordings' status in a registry both sides share: the REST
//! handlers read it, the recorder thread writes what it did.

pub mod assembler;
pub mod clock;
pub mod depacketize;
pub mod h264;
pub mod track;
pub mod writer;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::api::{ErrorBody, Recording, RecordingFile, RecordingState};
use crate::engine::MediaEngine;
use crate::room::{ProducerId, RoomId};
use crate::rtp::MediaKind;

pub use depacketize::RecordCodec;
pub use track::{start_offset_ms, TrackAction, TrackPlan};
pub use writer::{MediaFile, Mp4File, WebmFile, WriteError};

/// Packets the recorder thread may be behind by before copies are dropped: about 14 s of a
/// 1 Mbps camera and its microphone, or a second of a room of 14 such publishers, against
/// the 20 ms the thread sleeps between two looks.
pub const QUEUE_PACKETS: usize = 2048;

/// Stopped and failed recordings kept for `GET`, the oldest dropped first.
pub const KEPT_RECORDINGS: usize = 100;
/// Recordings running at once in one room, and on the whole worker: each writes a file per
/// producer and takes a copy of each packet, so an API client that never stops what it starts
/// must hit a wall, not the worker's file descriptors or its recorder thread's time.
pub const MAX_ROOM_RECORDINGS: usize = 4;
pub const MAX_WORKER_RECORDINGS: usize = 64;

/// How often the recorder thread takes what the media threads queued, gives up on holes and
/// repeats keyframe requests.
const TICK: Duration = Duration::from_millis(20);
const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// How long `DELETE` waits for the files to be finalised before it answers with what is
/// known (the thread finishes them anyway).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the control plane refused a recording request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    #[error("this worker does not record: start it with --recording-dir (FANOUT_RECORDING_DIR) on a writable volume")]
    Disabled,
    #[error("room {room} has no recording {id} on this worker (stopped ones are kept for the last {KEPT_RECORDINGS})")]
    NotFound { room: RoomId, id: String },
    #[error("{scope} already has {limit} recordings running, the most it may; stop one (DELETE its recording) before starting another")]
    TooMany { scope: String, limit: usize },
}

impl RecordingError {
    pub fn code(&self) -> &'static str {
        match self {
            RecordingError::Disabled => "RECORDING_DISABLED",
            RecordingError::NotFound { .. } => "RECORDING_NOT_FOUND",
            RecordingError::TooMany { .. } => "TOO_MANY_RECORDINGS",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            RecordingError::Disabled => 503,
            RecordingError::NotFound { .. } => 404,
            RecordingError::TooMany { .. } => 409,
        }
    }
}

/// A producer packet copied for the recorder.
pub struct Tapped {
    pub room: Arc<RoomId>,
    pub producer: ProducerId,
    pub kind: MediaKind,
    /// The codec, or the mime type of one the recorder cannot write.
    pub codec: Result<RecordCodec, String>,
    pub packet: Vec<u8>,
    pub arrival: Instant,
}

/// The media thread's end of a room's recording channel.
#[derive(Clone)]
pub struct RecordTap {
    room: Arc<RoomId>,
    sender: SyncSender<Tapped>,
    /// Copies dropped for this room, and for the whole worker.
    dropped: Arc<AtomicU64>,
    dropped_total: Arc<AtomicU64>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap").field("room", &self.room).finish_non_exhaustive()
    }
}

impl RecordTap {
    /// Hands a copy of `packet` to the recorder, or drops it (counted) if the recorder is
    /// behind. Never blocks.
    pub fn offer(&self, producer: &ProducerId, kind: MediaKind, codec: Result<RecordCodec, String>, packet: &[u8], arrival: Instant) {
        let tapped = Tapped { room: self.room.clone(), producer: producer.clone(), kind, codec, packet: packet.to_vec(), arrival };
        match self.sender.try_send(tapped) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
            // The recorder is gone (the worker is stopping): nothing to record to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

type Key = (RoomId, String);

/// What both sides know of the recordings.
#[derive(Default)]
struct Registry {
    /// Recordings not yet stopped, with what the thread last published.
    active: HashMap<Key, Recording>,
    finished: VecDeque<Recording>,
    /// Each room's tap while it has an active recording.
    taps: HashMap<RoomId, RecordTap>,
    /// Each room's copies dropped, kept across its recordings.
    room_drops: HashMap<RoomId, Arc<AtomicU64>>,
    /// `DELETE`s waiting for their recording's files to be finalised.
    waiting: HashMap<Key, Vec<tokio::sync::oneshot::Sender<Recording>>>,
}

impl Registry {
    fn find(&self, room: &RoomId, id: &str) -> Option<Recording> {
        let key = (room.clone(), id.to_owned());
        self.active.get(&key).cloned().or_else(|| self.finished.iter().rev().find(|r| &r.room_id == room && r.recording_id == id).cloned())
    }

    fn finish(&mut self, recording: Recording) {
        let key = (recording.room_id.clone(), recording.recording_id.clone());
        self.active.remove(&key);
        self.finished.retain(|r| !(r.room_id == key.0 && r.recording_id == key.1));
        self.finished.push_back(recording.clone());
        while self.finished.len() > KEPT_RECORDINGS {
            self.finished.pop_front();
        }
        for waiter in self.waiting.remove(&key).unwrap_or_default() {
            let _ = waiter.send(recording.clone());
        }
        // Kept per room only while it records: every room ever recorded would otherwise stay.
        if !self.room_records(&key.0, None) {
            self.room_drops.remove(&key.0);
        }
    }

    /// Whether `room` has a recording still running other than `except`.
    fn room_records(&self, room: &RoomId, except: Option<&str>) -> bool {
        self.active.keys().any(|(r, id)| r == room && Some(id.as_str()) != except)
    }
}

enum Control {
    Start { room: RoomId, id: String, started_at: String, started: Instant, dropped: Arc<AtomicU64> },
    Stop { room: RoomId, id: String },
    StopRoom { room: RoomId },
    ProducerClosed { room: RoomId, producer: ProducerId },
    /// Finalise everything, say so, and end.
    Shutdown(Sender<()>),
}

/// What `DELETE` gets: the final status now, or once the files are finalised.
pub enum StopAnswer {
    Done(Recording),
    Pending(tokio::sync::oneshot::Receiver<Recording>, Recording),
}

/// The recorder: a thread writing files, and the handle the control plane drives it with.
pub struct Recorder {
    dir: PathBuf,
    engine: Arc<dyn MediaEngine>,
    registry: Arc<Mutex<Registry>>,
    control: Mutex<Sender<Control>>,
    packets: SyncSender<Tapped>,
    dropped_total: Arc<AtomicU64>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().round(jiff::Unit::Millisecond).map(|t| t.to_string()).unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

impl Recorder {
    /// Starts the recorder thread, writing under `dir` (created if missing; an error if it
    /// cannot be). `engine` installs the rooms' taps and passes keyframe requests on.
    pub fn start(dir: PathBuf, engine: Arc<dyn MediaEngine>) -> std::io::Result<Arc<Recorder>> {
        std::fs::create_dir_all(&dir)?;
        let probe = dir.join(".fanout-write-test");
        std::fs::write(&probe, b"")?;
        let _ = std::fs::remove_file(&probe);
        let (packets, packets_rx) = mpsc::sync_channel(QUEUE_PACKETS);
        let (control, control_rx) = mpsc::channel();
        let registry = Arc::new(Mutex::new(Registry::default()));
        let mut thread = RecorderThread {
            dir: dir.clone(),
            engine: engine.clone(),
            registry: registry.clone(),
            active: BTreeMap::new(),
            last_publish: Instant::now(),
        };
        std::thread::Builder::new().name("fanout-recorder".into()).spawn(move || thread.run(packets_rx, control_rx))?;
        Ok(Arc::new(Recorder { dir, engine, registry, control: Mutex::new(control), packets, dropped_total: Arc::new(AtomicU64::new(0)) }))
    }

    /// The directory files are written under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies dropped because the recorder was behind, over the worker's life.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    fn send(&self, control: Control) {
        let _ = lock(&self.control).send(control);
    }

    /// Starts recording `room` as `id` (checked by the caller), or answers the recording of
    /// that id as it is: `(status, true)` when it was started now.
    pub fn start_recording(&self, room: &RoomId, id: &str) -> Result<(Recording, bool), RecordingError> {
        let mut registry = lock(&self.registry);
        if let Some(existing) = registry.find(room, id) {
            return Ok((existing, false));
        }
        if registry.active.len() >= MAX_WORKER_RECORDINGS {
            return Err(RecordingError::TooMany { scope: "this worker".into(), limit: MAX_WORKER_RECORDINGS });
        }
        if registry.active.keys().filter(|(r, _)| r == room).count() >= MAX_ROOM_RECORDINGS {
            return Err(RecordingError::TooMany { scope: format!("room {room}"), limit: MAX_ROOM_RECORDINGS });
        }
        let started_at = now_rfc3339();
        // The same moment on the monotonic clock the packets' arrivals are on.
        let started = Instant::now();
        let recording = Recording {
            recording_id: id.to_owned(),
            room_id: room.clone(),
            state: RecordingState::Recording,
            started_at: started_at.clone(),
            stopped_at: None,
            files: Vec::new(),
            dropped_packets: 0,
            error: None,
        };
        registry.active.insert((room.clone(), id.to_owned()), recording.clone());
        let dropped = registry.room_drops.entry(room.clone()).or_default().clone();
        // Before the tap: the thread sees the start before any packet it copies.
        self.send(Control::Start { room: room.clone(), id: id.to_owned(), started_at, started, dropped: dropped.clone() });
        if !registry.taps.contains_key(room) {
            let tap = RecordTap { room: Arc::new(room.clone()), sender: self.packets.clone(), dropped: dropped.clone(), dropped_total: self.dropped_total.clone() };
            registry.taps.insert(room.clone(), tap.clone());
            self.engine.set_recording_tap(room, Some(tap));
        }
        Ok((recording, true))
    }

    /// The recording's status.
    pub fn recording(&self, room: &RoomId, id: &str) -> Result<Recording, RecordingError> {
        lock(&self.registry).find(room, id).ok_or_else(|| RecordingError::NotFound { room: room.clone(), id: id.to_owned() })
    }

    /// Stops the recording: its files are finalised by the recorder thread.
    pub fn stop_recording(&self, room: &RoomId, id: &str) -> Result<StopAnswer, RecordingError> {
        let mut registry = lock(&self.registry);
        let key = (room.clone(), id.to_owned());
        let Some(current) = registry.active.get(&key).cloned() else {
            return registry.find(room, id).map(StopAnswer::Done).ok_or_else(|| RecordingError::NotFound { room: room.clone(), id: id.to_owned() });
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        registry.waiting.entry(key).or_default().push(tx);
        if !registry.room_records(room, Some(id)) && registry.taps.remove(room).is_some() {
            self.engine.set_recording_tap(room, None);
        }
        self.send(Control::Stop { room: room.clone(), id: id.to_owned() });
        Ok(StopAnswer::Pending(rx, current))
    }

    /// The room closed: its recordings stop (the engine dropped its tap with the room).
    pub fn room_closed(&self, room: &RoomId) {
        lock(&self.registry).taps.remove(room);
        self.send(Control::StopRoom { room: room.clone() });
    }

    /// Finalises every recording (the worker is stopping), waiting up to `timeout` for the
    /// files to be written.
    pub fn shutdown(&self, timeout: Duration) {
        let (done, finished) = mpsc::channel();
        self.send(Control::Shutdown(done));
        if finished.recv_timeout(timeout).is_err() {
            tracing::warn!(?timeout, "recordings were not all finalised in time; their files may lack cues and duration");
        }
    }

    /// A producer of the room closed: its files are finalised.
    pub fn producer_closed(&self, room: &RoomId, producer: &ProducerId) {
        self.send(Control::ProducerClosed { room: room.clone(), producer: producer.clone() });
    }
}

/// One producer's file of a running recording.
struct FileState {
    plan: TrackPlan,
    file: Option<MediaFile>,
    info: Option<RecordingFile>,
    closed: bool,
}

/// A running recording, as the thread has it.
struct Active {
    room: RoomId,
    id: String,
    started_at: String,
    started: Instant,
    files: BTreeMap<ProducerId, FileState>,
    /// Producers refused (codec), each told once in `error`.
    refused: HashSet<ProducerId>,
    dropped: Arc<AtomicU64>,
    dropped_at_start: u64,
    error: Option<ErrorBody>,
    failed: bool,
    /// Something changed since it was last published.
    dirty: bool,
}

impl Active {
    fn status(&self, state: RecordingState, stopped_at: Option<String>) -> Recording {
        Recording {
            recording_id: self.id.clone(),
            room_id: self.room.clone(),
            state,
            started_at: self.started_at.clone(),
            stopped_at,
            files: self.files.values().filter_map(|f| f.info.clone()).collect(),
            dropped_packets: self.dropped.load(Ordering::Relaxed).saturating_sub(self.dropped_at_start),
            error: self.error.clone(),
        }
    }

    fn relative_dir(&self) -> String {
        format!("{}/{}", self.room, self.id)
    }
}

struct RecorderThread {
    dir: PathBuf,
    engine: Arc<dyn MediaEngine>,
    registry: Arc<Mutex<Registry>>,
    active: BTreeMap<Key, Active>,
    last_publish: Instant,
}

impl RecorderThread {
    fn run(&mut self, packets: Receiver<Tapped>, control: Receiver<Control>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            // Woken by the clock, not by each packet: a sender whose receiver is asleep in
            // the channel would make a system call per packet on the media thread to wake it.
            // The queue holds far more than a tick's packets.
            std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
            next_tick = Instant::now() + TICK;
            // Control first: a recording's start is queued before any packet copied for it.
            loop {
                match control.try_recv() {
                    Ok(Control::Shutdown(done)) => {
                        let keys: Vec<Key> = self.active.keys().cloned().collect();
                        for key in keys {
                            self.stop(&key);
                        }
                        let _ = done.send(());
                        return;
                    }
                    Ok(c) => self.on_control(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        // The worker is stopping: finalise what is open.
                        let keys: Vec<Key> = self.active.keys().cloned().collect();
                        for key in keys {
                            self.stop(&key);
                        }
                        return;
                    }
                }
            }
            for tapped in packets.try_iter().take(QUEUE_PACKETS) {
                self.on_packet(tapped);
            }
            self.tick(Instant::now());
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Start { room, id, started_at, started, dropped } => {
                let dropped_at_start = dropped.load(Ordering::Relaxed);
                let key = (room.clone(), id.clone());
                self.active.insert(key, Active {
                    room,
                    id,
                    started_at,
                    started,
                    files: BTreeMap::new(),
                    refused: HashSet::new(),
                    dropped,
                    dropped_at_start,
                    error: None,
                    failed: false,
                    dirty: true,
                });
            }
            Control::Stop { room, id } => self.stop(&(room, id)),
            Control::StopRoom { room } => {
                let keys: Vec<Key> = self.active.keys().filter(|(r, _)| *r == room).cloned().collect();
                for key in keys {
                    self.stop(&key);
                }
            }
            // Handled by the loop, which ends with it.
            Control::Shutdown(_) => {}
            Control::ProducerClosed { room, producer } => {
                for active in self.active.values_mut().filter(|a| a.room == room) {
                    if let Some(state) = active.files.get_mut(&producer) {
                        state.closed = true;
                        if let Err(error) = finalize(state) {
                            fail(active, &error);
                        }
                        active.dirty = true;
                    }
                }
                self.retire_failed();
            }
        }
    }

    fn on_packet(&mut self, tapped: Tapped) {
        let Tapped { room, producer, kind, codec, packet, arrival } = tapped;
        let keys: Vec<Key> = self.active.range((room.as_ref().clone(), String::new())..).take_while(|((r, _), _)| r == room.as_ref()).map(|(k, _)| k.clone()).collect();
        let count = keys.len();
        let mut packet = Some(packet);
        for (index, key) in keys.iter().enumerate() {
            let Some(active) = self.active.get_mut(key) else { continue };
            // The last recording of the room takes the packet itself, the others a copy.
            let copy = if index + 1 == count { packet.take().unwrap_or_default() } else { packet.clone().unwrap_or_default() };
            let codec = match &codec {
                Ok(codec) => *codec,
                Err(mime) => {
                    if active.refused.insert(producer.clone()) && active.error.is_none() {
                        active.error = Some(ErrorBody {
                            code: "RECORDING_CODEC_UNSUPPORTED".into(),
                            message: format!(
                                "producer {producer} sends {mime}, which this worker does not record (it records VP8, VP9, H264 and Opus); the room's other producers are recorded"
                            ),
                        });
                        active.dirty = true;
                    }
                    continue;
                }
            };
            let dir = self.dir.join(active.relative_dir());
            let relative = active.relative_dir();
            let started = active.started;
            let state = active.files.entry(producer.clone()).or_insert_with(|| FileState { plan: TrackPlan::new(codec), file: None, info: None, closed: false });
            if state.closed || state.plan.codec() != codec || kind != if codec.is_video() { MediaKind::Video } else { MediaKind::Audio } {
                continue;
            }
            let actions = state.plan.push(copy, arrival);
            if let Err(error) = carry_out(&self.engine, &room, &producer, state, actions, &dir, &relative, started) {
                fail(active, &error);
            }
            active.dirty = true;
        }
        self.retire_failed();
    }

    fn tick(&mut self, now: Instant) {
        for active in self.active.values_mut() {
            let dir = self.dir.join(active.relative_dir());
            let relative = active.relative_dir();
            let started = active.started;
            let room = active.room.clone();
            let mut failure = None;
            for (producer, state) in active.files.iter_mut().filter(|(_, s)| !s.closed) {
                let actions = state.plan.poll(now);
                if actions.is_empty() {
                    continue;
                }
                if let Err(error) = carry_out(&self.engine, &room, producer, state, actions, &dir, &relative, started) {
                    failure = Some(error);
                    break;
                }
            }
            if let Some(error) = failure {
                fail(active, &error);
            }
        }
        self.retire_failed();
        if now.saturating_duration_since(self.last_publish) >= PUBLISH_INTERVAL {
            self.last_publish = now;
            let mut registry = lock(&self.registry);
            for (key, active) in self.active.iter_mut() {
                let counted = active.dropped.load(Ordering::Relaxed).saturating_sub(active.dropped_at_start);
                let published = registry.active.get(key).map(|r| r.dropped_packets);
                if !active.dirty && published == Some(counted) {
                    continue;
                }
                active.dirty = false;
                if let Some(entry) = registry.active.get_mut(key) {
                    *entry = active.status(RecordingState::Recording, None);
                }
            }
        }
    }

    /// Moves failed recordings out: their files are closed, and their status says why.
    fn retire_failed(&mut self) {
        let failed: Vec<Key> = self.active.iter().filter(|(_, a)| a.failed).map(|(k, _)| k.clone()).collect();
        for key in failed {
            self.stop(&key);
        }
    }

    fn stop(&mut self, key: &Key) {
        let Some(mut active) = self.active.remove(key) else { return };
        let errors: Vec<WriteError> = active.files.values_mut().filter_map(|state| finalize(state).err()).collect();
        for error in errors {
            fail(&mut active, &error);
        }
        let state = if active.failed { RecordingState::Failed } else { RecordingState::Stopped };
        let status = active.status(state, Some(now_rfc3339()));
        tracing::info!(room = %active.room, recording = %active.id, state = ?state, files = status.files.len(), "recording ended");
        let mut registry = lock(&self.registry);
        if !registry.room_records(&active.room, Some(&active.id)) && registry.taps.remove(&active.room).is_some() {
            self.engine.set_recording_tap(&active.room, None);
        }
        registry.finish(status);
    }
}

fn fail(active: &mut Active, error: &WriteError) {
    tracing::error!(room = %active.room, recording = %active.id, code = error.code(), %error, "recording failed");
    if !active.failed {
        active.failed = true;
        active.error = Some(ErrorBody { code: error.code().into(), message: error.to_string() });
    }
}

/// Finalises a producer's file if it is open; it takes no more frames after.
fn finalize(state: &mut FileState) -> Result<(), WriteError> {
    state.closed = true;
    let Some(file) = state.file.take() else { return Ok(()) };
    let bytes = file.finalize()?;
    if let Some(info) = state.info.as_mut() {
        info.bytes = bytes;
    }
    Ok(())
}

fn carry_out(
    engine: &Arc<dyn MediaEngine>,
    room: &RoomId,
    producer: &ProducerId,
    state: &mut FileState,
    actions: Vec<TrackAction>,
    dir: &Path,
    relative: &str,
    started: Instant,
) -> Result<(), WriteError> {
    for action in actions {
        match action {
            TrackAction::RequestKeyframe => engine.request_keyframe(room, producer),
            TrackAction::Open { size, parameter_sets } => {
                let codec = state.plan.codec();
                let (name, file) = MediaFile::create(dir, &producer.to_string(), codec, size, parameter_sets.as_ref())?;
                state.info = Some(RecordingFile {
                    name: name.clone(),
                    path: format!("{relative}/{name}"),
                    producer_id: producer.clone(),
                    kind: if codec.is_video() { MediaKind::Video } else { MediaKind::Audio },
                    codec: codec.name().into(),
                    container: file.container().into(),
                    bytes: file.bytes(),
                    duration_ms: 0,
                    start_offset_ms: state.plan.first_arrival.map_or(0, |first| start_offset_ms(started, first)),
                });
                state.file = Some(file);
            }
            TrackAction::Write { timestamp_ns, keyframe, data } => {
                let Some(file) = state.file.as_mut() else { continue };
                file.write(&data, timestamp_ns, keyframe)?;
                if let Some(info) = state.info.as_mut() {
                    info.bytes = file.bytes();
                    info.duration_ms = timestamp_ns / 1_000_000;
                }
            }
        }
    }
    Ok(())
}

/// What the recorder's unit tests feed it.
#[cfg(test)]
pub(crate) mod test_packets {
    /// An RTP packet of payload type 96 (SSRC 0x12345678, no extensions) carrying `payload`.
    pub fn rtp(sequence: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, if marker { 0x80 | 96 } else { 96 }];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}
