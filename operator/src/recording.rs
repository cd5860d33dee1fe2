//! What a Recording should do next (pure): given the Recording, its Room as the operator sees
//! it and, after a call, the worker's answer, the worker call to make and the status to write.
//!
//! The reconciler ([`crate::controller::recording`]) is the thin shell: it looks the Room up,
//! asks [`next`], makes the call, and writes what [`after`] says.
//!
//! The life of a Recording:
//! - no Room (`RoomNotFound`) or a Room not on a worker (`RoomNotPlaced`): `Pending`, retried;
//! - placed: `POST` to the room's worker; `Recording` once it answers, then a `GET` every
//!   [`POLL_INTERVAL`] copies the worker's files (sizes, durations) into the status;
//! - `spec.stop`: `DELETE` on the worker, `Stopped` with the final files;
//! - the worker reports `failed` (`RECORDING_DISK_FULL`, `RECORDING_WRITE_FAILED`): `Failed`;
//! - the room moved to another worker: the old worker's recording went with the room, so the
//!   recording starts again on the new one; the old files stay in the status, and the `Moved`
//!   condition says so.
//!
//! `Stopped` and `Failed` are final: the worker's files are finished, and a new Recording
//! makes new ones.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{condition, Recording, RecordingFile, RecordingPhase, RecordingStatus, RecordingWorker, Room, RoomPhase};
use crate::worker_api::{WorkerRecording, WorkerRecordingState};

/// How often a running recording's files are read from its worker.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How often a Recording waiting for its Room looks again (Room changes wake it sooner).
pub const PENDING_RETRY: Duration = Duration::from_secs(10);
/// How soon a call to an unreachable worker is tried again.
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(5);
/// How long a deleted Recording waits for a worker that answers with errors before its
/// finalizer is removed anyway (an unreachable worker does not hold it at all).
pub const CLEANUP_PATIENCE: Duration = Duration::from_secs(60);

/// The condition that says whether the room is being recorded, and why not.
pub const RECORDING_CONDITION: &str = "Recording";
/// The condition set once the room moved to another worker mid-recording.
pub const MOVED_CONDITION: &str = "Moved";

/// The Recording's Room, as far as recording goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomView {
    /// No such Room (or it is being deleted).
    Missing,
    /// The Room exists but is on no worker; `why` is its own account.
    NotPlaced { why: String },
    /// The Room's worker.
    Placed(RecordingWorker),
}

impl RoomView {
    /// The view of `room` (`None`: not in the cache).
    pub fn of(room: Option<&Room>) -> RoomView {
        let Some(room) = room.filter(|r| r.metadata.deletion_timestamp.is_none()) else { return RoomView::Missing };
        let status = room.status.as_ref();
        match status.and_then(|s| s.placement.as_ref()) {
            Some(p) => RoomView::Placed(RecordingWorker {
                sfu_worker: p.sfu_worker.clone(),
                pod: p.pod.clone(),
                pod_uid: p.pod_uid.clone(),
                endpoint: p.endpoint.clone(),
            }),
            None => {
                let why = status
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Scheduled"))
                    .map(|c| c.message.clone())
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| match status.and_then(|s| s.phase) {
                        Some(RoomPhase::Failed) => "the room failed".to_string(),
                        _ => "the room is not scheduled yet".to_string(),
                    });
                RoomView::NotPlaced { why }
            }
        }
    }
}

/// Which call to make on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Start,
    Poll,
    Stop,
}

/// A call to make on `worker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub kind: CallKind,
    pub worker: RecordingWorker,
    /// Set when starting on a new worker after the room moved: the pod it moved from.
    pub moved_from: Option<String>,
}

/// What to write, and when to look again (`None`: when something changes).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: RecordingStatus,
    pub requeue: Option<Duration>,
}

/// The next step of a Recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No worker call: write this.
    Write(Outcome),
    /// Make this call, then ask [`after`].
    Call(Call),
}

/// A worker's answer to a [`Call`], as decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok(WorkerRecording),
    /// Not reached at all (refused, timed out), or a 5xx other than `RECORDING_DISABLED`.
    Unreachable(String),
    /// 404: `ROOM_NOT_FOUND` or `RECORDING_NOT_FOUND`.
    NotFound { code: String, message: String },
    /// 503 `RECORDING_DISABLED`: the worker has no recording directory.
    Disabled(String),
    /// Any other refusal (400 `INVALID_ID`, ...).
    Refused { status: u16, code: String, message: String },
}

impl Answer {
    /// Reads a worker client's result.
    pub fn from_result(result: Result<WorkerRecording, fanout_worker::client::ClientError>) -> Answer {
        use fanout_worker::client::ClientError;
        match result {
            Ok(r) => Answer::Ok(r),
            Err(ClientError::Api { code, message, .. }) if code == "RECORDING_DISABLED" => Answer::Disabled(message),
            Err(ClientError::Api { status: 404, code, message }) => Answer::NotFound { code, message },
            Err(ClientError::Api { status, code, message }) if status >= 500 => {
                Answer::Unreachable(format!("the worker answered {status} {code}: {message}"))
            }
            Err(ClientError::Api { status, code, message }) => Answer::Refused { status, code, message },
            Err(e) => Answer::Unreachable(e.to_string()),
        }
    }
}

/// What the Recording needs next, before any worker call.
pub fn next(rec: &Recording, room: &RoomView, now: Timestamp) -> Step {
    let status = rec.status.clone().unwrap_or_default();
    let phase = status.phase;
    if matches!(phase, Some(RecordingPhase::Stopped | RecordingPhase::Failed)) {
        // Final; rewriting the same status costs nothing (the shell skips equal writes), and
        // keeps observedGeneration current.
        return Step::Write(Outcome { status: StatusBuilder::new(rec, now).finish(), requeue: None });
    }

    if rec.spec.stop {
        return match &status.worker {
            // Something may be recording: stop it there.
            Some(worker) => Step::Call(Call { kind: CallKind::Stop, worker: worker.clone(), moved_from: None }),
            None => {
                let mut b = StatusBuilder::new(rec, now);
                b.stopped("Stopped", "stopped (spec.stop) before recording began".into(), None);
                Step::Write(Outcome { status: b.finish(), requeue: None })
            }
        };
    }

    match room {
        RoomView::Missing => match &status.worker {
            // Recording and the Room went: its worker closed the room and, with it, the
            // recording; ask for the final files by stopping (idempotent on the worker).
            Some(worker) if phase == Some(RecordingPhase::Recording) => {
                Step::Call(Call { kind: CallKind::Stop, worker: worker.clone(), moved_from: None })
            }
            _ => {
                let mut b = StatusBuilder::new(rec, now);
                let message = format!("room {} does not exist in this namespace; recording starts once it is created", rec.spec.room_name);
                b.pending("RoomNotFound", message);
                Step::Write(Outcome { status: b.finish(), requeue: Some(PENDING_RETRY) })
            }
        },
        RoomView::NotPlaced { why } => {
            let mut b = StatusBuilder::new(rec, now);
            let message = format!("room {} is not on a worker ({why}); recording starts once it is placed", rec.spec.room_name);
            b.pending("RoomNotPlaced", message);
            Step::Write(Outcome { status: b.finish(), requeue: Some(PENDING_RETRY) })
        }
        RoomView::Placed(target) => {
            let previous = status.worker.as_ref();
            let same_worker = previous.is_some_and(|w| w.pod_uid == target.pod_uid);
            if same_worker && phase == Some(RecordingPhase::Recording) {
                return Step::Call(Call { kind: CallKind::Poll, worker: target.clone(), moved_from: None });
            }
            // Moved: the room was placed again on another pod, and a worker keeps a room's
            // recordings only as long as it hosts the room.
            let moved_from = previous.filter(|_| !same_worker).map(|w| w.pod.clone());
            Step::Call(Call { kind: CallKind::Start, worker: target.clone(), moved_from })
        }
    }
}

/// The status after `call` got `answer`.
pub fn after(rec: &Recording, room: &RoomView, call: &Call, answer: Answer, now: Timestamp) -> Outcome {
    let mut b = StatusBuilder::new(rec, now);
    let pod = &call.worker.pod;
    if let Some(from) = &call.moved_from
        && matches!(answer, Answer::Ok(_))
    {
        let message = format!("room {} moved from {from} to {pod}; recording again there, {from}'s files kept", rec.spec.room_name);
        b.moved(message);
    }
    match (call.kind, answer) {
        (_, Answer::Ok(report)) => {
            b.worker(call.worker.clone());
            b.files(pod, &report);
            b.started_at(Some(report.started_at.as_str()));
            match report.state {
                WorkerRecordingState::Recording if call.kind == CallKind::Stop => {
                    // A worker that still says recording after a stop: ask again.
                    b.recording(format!("asked {pod} to stop; it still records"));
                    Outcome { status: b.finish(), requeue: Some(UNREACHABLE_RETRY) }
                }
                WorkerRecordingState::Recording => {
                    // A worker records on past a producer it cannot take (an unsupported codec)
                    // and says so in `error`: worth showing, not a failure.
                    let note = match &report.error {
                        Some(e) => format!("; {} ({})", e.message, e.code),
                        None => String::new(),
                    };
                    b.recording(format!("recording on {pod} ({} files){note}", report.files.len()));
                    Outcome { status: b.finish(), requeue: Some(POLL_INTERVAL) }
                }
                WorkerRecordingState::Stopped => {
                    let (reason, message) = if rec.spec.stop {
                        ("Stopped", format!("stopped (spec.stop) on {pod}"))
                    } else if *room == RoomView::Missing {
                        ("RoomNotFound", format!("room {} was deleted; its recording on {pod} ended with it", rec.spec.room_name))
                    } else {
                        ("Stopped", format!("{pod} stopped recording (the room closed there)"))
                    };
                    b.stopped(reason, message, report.stopped_at.as_deref());
                    Outcome { status: b.finish(), requeue: None }
                }
                WorkerRecordingState::Failed => {
                    let (code, detail) = report.error.map(|e| (e.code, e.message)).unwrap_or_default();
                    let reason = match code.as_str() {
                        "RECORDING_DISK_FULL" => "DiskFull",
                        "RECORDING_WRITE_FAILED" => "WriteFailed",
                        _ => "WorkerFailed",
                    };
                    let detail = if detail.is_empty() { "no reason given".to_string() } else { detail };
                    b.failed(reason, format!("{pod} could not record: {detail} ({code})"), report.stopped_at.as_deref());
                    Outcome { status: b.finish(), requeue: None }
                }
            }
        }
        (CallKind::Stop, Answer::NotFound { .. }) => {
            // Nothing recording there any more (the worker restarted, or the room closed and
            // the worker forgot it): the files as last reported are the final ones.
            let message = if rec.spec.stop {
                format!("stopped (spec.stop); {pod} no longer had the recording")
            } else {
                format!("room {} was deleted; {pod} no longer had the recording", rec.spec.room_name)
            };
            let reason = if rec.spec.stop { "Stopped" } else { "RoomNotFound" };
            b.stopped(reason, message, None);
            Outcome { status: b.finish(), requeue: None }
        }
        (CallKind::Stop, Answer::Unreachable(why)) => {
            let still_there = matches!(room, RoomView::Placed(w) if w.pod_uid == call.worker.pod_uid);
            if still_there {
                // The worker may come back with the recording still running: keep asking.
                b.not_recording_keep_phase("WorkerUnreachable", format!("cannot reach {pod} to stop the recording: {why}"));
                Outcome { status: b.finish(), requeue: Some(UNREACHABLE_RETRY) }
            } else {
                let reason = if rec.spec.stop { "Stopped" } else { "RoomNotFound" };
                let message = format!("{pod} is unreachable and no longer hosts the room, so nothing records there: {why}");
                b.stopped(reason, message, None);
                Outcome { status: b.finish(), requeue: None }
            }
        }
        (CallKind::Poll, Answer::NotFound { message, .. }) => {
            // The worker lost the recording (a restart of its process): start it again there.
            b.pending("RecordingLost", format!("{pod} no longer has the recording ({message}); starting it again"));
            Outcome { status: b.finish(), requeue: Some(Duration::from_secs(1)) }
        }
        (CallKind::Start, Answer::NotFound { code, message }) => {
            // The room is placed but nobody has joined yet: a worker opens a room at its first
            // join (signalling opens it with the room's codecs).
            let reason = if code == "ROOM_NOT_FOUND" { "RoomNotOpen" } else { "WorkerRefused" };
            b.pending(reason, format!("{pod} has not opened room {} yet ({message}); recording starts once someone joins", rec.spec.room_name));
            Outcome { status: b.finish(), requeue: Some(POLL_INTERVAL) }
        }
        (CallKind::Start, Answer::Unreachable(why)) => {
            b.pending("WorkerUnreachable", format!("cannot reach {pod} to start recording: {why}"));
            Outcome { status: b.finish(), requeue: Some(UNREACHABLE_RETRY) }
        }
        (CallKind::Poll, Answer::Unreachable(why)) => {
            b.not_recording_keep_phase("WorkerUnreachable", format!("cannot reach {pod} for the recording's files: {why}"));
            Outcome { status: b.finish(), requeue: Some(UNREACHABLE_RETRY) }
        }
        (_, Answer::Disabled(message)) => {
            // The pool has no recording volume. Not final: giving the pool one replaces its
            // pods, the room moves to a new one, and recording starts there.
            let message = format!("{pod} cannot record: {message}; give SfuWorker {} a spec.recording volume", call.worker.sfu_worker);
            b.pending("RecordingDisabled", message);
            Outcome { status: b.finish(), requeue: Some(PENDING_RETRY) }
        }
        (_, Answer::Refused { status, code, message }) => {
            b.failed("WorkerRefused", format!("{pod} refused the recording ({status} {code}): {message}"), None);
            Outcome { status: b.finish(), requeue: None }
        }
    }
}

/// What the finalizer of a deleted Recording does first: the worker to stop the recording on,
/// if anything may still record.
pub fn cleanup_call(rec: &Recording) -> Option<Call> {
    let status = rec.status.as_ref()?;
    match status.phase {
        Some(RecordingPhase::Stopped | RecordingPhase::Failed) => None,
        _ => status.worker.clone().map(|worker| Call { kind: CallKind::Stop, worker, moved_from: None }),
    }
}

/// Whether the finalizer may go after the stop call got `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Remove the finalizer; `note`, when set, is worth a log line.
    Release { note: Option<String> },
    /// Ask again after this long.
    Retry(Duration),
}

pub fn cleanup_after(rec: &Recording, call: &Call, answer: &Answer, now: Timestamp) -> Cleanup {
    let pod = &call.worker.pod;
    match answer {
        Answer::Ok(_) | Answer::NotFound { .. } => Cleanup::Release { note: None },
        // A worker that cannot be reached cannot record for anyone to read either; holding the
        // deletion until it answers could hold it forever.
        Answer::Unreachable(why) => Cleanup::Release {
            note: Some(format!("{pod} is unreachable ({why}); the Recording is deleted without stopping it there")),
        },
        Answer::Disabled(_) => Cleanup::Release { note: None },
        Answer::Refused { status, code, message } => {
            let since = rec.metadata.deletion_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            let waited = now.duration_since(since).unsigned_abs();
            if waited >= CLEANUP_PATIENCE {
                Cleanup::Release {
                    note: Some(format!(
                        "{pod} kept refusing to stop the recording ({status} {code}: {message}) for {}s; deleting anyway",
                        waited.as_secs()
                    )),
                }
            } else {
                Cleanup::Retry(UNREACHABLE_RETRY)
            }
        }
    }
}

/// A status made from the previous one.
struct StatusBuilder {
    status: RecordingStatus,
    previous: Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl StatusBuilder {
    fn new(rec: &Recording, now: Timestamp) -> StatusBuilder {
        let status = rec.status.clone().unwrap_or_default();
        let previous = status.conditions.clone();
        StatusBuilder { status, previous, generation: rec.metadata.generation, now }
    }

    fn set_condition(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        let c = condition(&self.previous, type_, ok, reason, message, self.generation, self.now);
        match self.status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = c,
            None => self.status.conditions.push(c),
        }
    }

    fn pending(&mut self, reason: &str, message: String) {
        self.status.phase = Some(RecordingPhase::Pending);
        self.set_condition(RECORDING_CONDITION, false, reason, message);
    }

    fn recording(&mut self, message: String) {
        self.status.phase = Some(RecordingPhase::Recording);
        self.set_condition(RECORDING_CONDITION, true, "Recording", message);
    }

    /// Not recording as far as anyone can tell, but the phase stays (a blip of the worker).
    fn not_recording_keep_phase(&mut self, reason: &str, message: String) {
        if self.status.phase.is_none() {
            self.status.phase = Some(RecordingPhase::Pending);
        }
        self.set_condition(RECORDING_CONDITION, false, reason, message);
    }

    fn stopped(&mut self, reason: &str, message: String, at: Option<&str>) {
        self.status.phase = Some(RecordingPhase::Stopped);
        self.stopped_at(at);
        self.set_condition(RECORDING_CONDITION, false, reason, message);
    }

    fn failed(&mut self, reason: &str, message: String, at: Option<&str>) {
        self.status.phase = Some(RecordingPhase::Failed);
        self.stopped_at(at);
        self.set_condition(RECORDING_CONDITION, false, reason, message);
    }

    fn moved(&mut self, message: String) {
        self.set_condition(MOVED_CONDITION, true, "Moved", message);
    }

    fn worker(&mut self, worker: RecordingWorker) {
        self.status.worker = Some(worker);
    }

    /// The first start counts; later ones (after a move) keep it.
    fn started_at(&mut self, reported: Option<&str>) {
        if self.status.started_at.is_none() {
            self.status.started_at = Some(Time(parse_time(reported).unwrap_or(self.now)));
        }
    }

    fn stopped_at(&mut self, reported: Option<&str>) {
        if self.status.stopped_at.is_none() {
            self.status.stopped_at = Some(Time(parse_time(reported).unwrap_or(self.now)));
        }
    }

    /// The worker's files replace what was known of the same files on the same pod; files of
    /// other pods (before a move) stay as they were.
    fn files(&mut self, pod: &str, report: &WorkerRecording) {
        let mut reported: Vec<RecordingFile> = report
            .files
            .iter()
            .map(|f| RecordingFile {
                pod: pod.to_string(),
                name: f.name.clone(),
                path: f.path.clone(),
                producer_id: f.producer_id.as_str().to_owned(),
                kind: f.kind.as_str().to_owned(),
                codec: f.codec.clone(),
                container: f.container.clone(),
                bytes: i64::try_from(f.bytes).unwrap_or(i64::MAX),
                duration_ms: i64::try_from(f.duration_ms).unwrap_or(i64::MAX),
                start_offset_ms: i64::try_from(f.start_offset_ms).unwrap_or(i64::MAX),
            })
            .collect();
        for known in &mut self.status.files {
            if let Some(i) = reported.iter().position(|f| f.pod == known.pod && f.path == known.path) {
                *known = reported.remove(i);
            }
        }
        self.status.files.extend(reported);
    }

    fn finish(mut self) -> RecordingStatus {
        self.status.observed_generation = self.generation;
        self.status
    }
}

fn parse_time(t: Option<&str>) -> Option<Timestamp> {
    t.and_then(|t| t.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RecordingSpec;
    use crate::worker_api::{WorkerRecordingError, WorkerRecordingFile};

    fn t(s: u64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s as i64).unwrap()
    }

    fn rec(stop: bool) -> Recording {
        let mut r = Recording::new("lecture-rec", RecordingSpec { room_name: "lecture".into(), stop });
        r.metadata.namespace = Some("media".into());
        r.metadata.uid = Some("uid-1".into());
        r.metadata.generation = Some(1);
        r
    }

    fn worker(pod: &str) -> RecordingWorker {
        RecordingWorker {
            sfu_worker: "sfu".into(),
            pod: pod.into(),
            pod_uid: format!("uid-{pod}"),
            endpoint: format!("http://{pod}:3000"),
        }
    }

    fn report(state: WorkerRecordingState, files: &[(&str, u64)]) -> WorkerRecording {
        WorkerRecording {
            recording_id: "uid-1".into(),
            room_id: "lecture".into(),
            state,
            started_at: "2027-01-15T08:00:00Z".into(),
            stopped_at: None,
            files: files
                .iter()
                .map(|(name, bytes)| WorkerRecordingFile {
                    name: name.to_string(),
                    path: format!("uid-1/{name}"),
                    producer_id: format!("p-{name}").into(),
                    kind: fanout_worker::rtp::MediaKind::Audio,
                    codec: "opus".into(),
                    container: "webm".into(),
                    bytes: *bytes,
                    duration_ms: bytes / 4,
                    start_offset_ms: bytes / 8,
                })
                .collect(),
            dropped_packets: 0,
            error: None,
        }
    }

    fn apply(r: &mut Recording, outcome: &Outcome) {
        r.status = Some(outcome.status.clone());
    }

    fn cond<'a>(s: &'a RecordingStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    /// Runs one reconcile: next, and for a call, the answer the worker gives.
    fn step(r: &mut Recording, room: &RoomView, answer: impl FnOnce(&Call) -> Answer, now: Timestamp) -> (Option<Call>, Outcome) {
        let (call, outcome) = match next(r, room, now) {
            Step::Write(o) => (None, o),
            Step::Call(c) => {
                let o = after(r, room, &c, answer(&c), now);
                (Some(c), o)
            }
        };
        apply(r, &outcome);
        (call, outcome)
    }

    #[test]
    fn waits_for_the_room_to_exist_and_be_placed_then_starts_on_its_worker() {
        let mut r = rec(false);
        let (call, o) = step(&mut r, &RoomView::Missing, |_| unreachable!(), t(0));
        assert!(call.is_none());
        assert_eq!(o.status.phase, Some(RecordingPhase::Pending));
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "RoomNotFound");
        assert_eq!(o.requeue, Some(PENDING_RETRY));

        let (_, o) = step(&mut r, &RoomView::NotPlaced { why: "no worker can host 500 more peers".into() }, |_| unreachable!(), t(5));
        let c = cond(&o.status, RECORDING_CONDITION);
        assert_eq!(c.reason, "RoomNotPlaced");
        assert!(c.message.contains("500 more peers"), "{}", c.message);
        // Still False: the transition time is the first one's.
        assert_eq!(c.last_transition_time.0, t(0));

        let placed = RoomView::Placed(worker("sfu-0"));
        let (call, o) = step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(10));
        assert_eq!(call.unwrap().kind, CallKind::Start);
        assert_eq!(o.status.phase, Some(RecordingPhase::Recording));
        assert_eq!(o.status.worker, Some(worker("sfu-0")));
        assert_eq!(o.status.started_at.as_ref().unwrap().0, "2027-01-15T08:00:00Z".parse::<Timestamp>().unwrap());
        let c = cond(&o.status, RECORDING_CONDITION);
        assert_eq!((c.status.as_str(), c.last_transition_time.0), ("True", t(10)));
        assert_eq!(o.requeue, Some(POLL_INTERVAL));
        assert_eq!(o.status.observed_generation, Some(1));
    }

    #[test]
    fn polls_copy_growing_files_and_a_stop_keeps_the_final_ones() {
        let mut r = rec(false);
        let placed = RoomView::Placed(worker("sfu-0"));
        step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 100)])), t(0));
        let (call, o) = step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 900), ("b.webm", 10)])), t(5));
        assert_eq!(call.unwrap().kind, CallKind::Poll);
        let files: Vec<(&str, i64)> = o.status.files.iter().map(|f| (f.name.as_str(), f.bytes)).collect();
        assert_eq!(files, [("a.webm", 900), ("b.webm", 10)]);
        assert_eq!(o.status.files[0].duration_ms, 225);
        assert_eq!(o.status.files[0].start_offset_ms, 112, "where the file starts on the recording's time line is copied too");
        assert_eq!(o.status.files[0].pod, "sfu-0");

        r.spec.stop = true;
        let mut last = report(WorkerRecordingState::Stopped, &[("a.webm", 1000), ("b.webm", 50)]);
        last.stopped_at = Some("2027-01-15T09:00:00Z".into());
        let (call, o) = step(&mut r, &placed, |_| Answer::Ok(last), t(10));
        assert_eq!(call.unwrap().kind, CallKind::Stop);
        assert_eq!(o.status.phase, Some(RecordingPhase::Stopped));
        assert_eq!(o.status.stopped_at.as_ref().unwrap().0, "2027-01-15T09:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(o.status.files.iter().map(|f| f.bytes).sum::<i64>(), 1050);
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "Stopped");
        assert_eq!(o.requeue, None);

        // Final: nothing more is asked of the worker.
        let (call, o2) = step(&mut r, &placed, |_| unreachable!(), t(20));
        assert!(call.is_none());
        assert_eq!(o2.status, o.status);
    }

    #[test]
    fn a_producer_the_worker_cannot_record_is_shown_while_the_others_record() {
        let mut r = rec(false);
        let mut partial = report(WorkerRecordingState::Recording, &[("a.webm", 1)]);
        partial.error = Some(WorkerRecordingError { code: "RECORDING_CODEC_UNSUPPORTED".into(), message: "H264 is not recorded".into() });
        let (_, o) = step(&mut r, &RoomView::Placed(worker("sfu-0")), |_| Answer::Ok(partial), t(0));
        assert_eq!(o.status.phase, Some(RecordingPhase::Recording));
        let c = cond(&o.status, RECORDING_CONDITION);
        assert_eq!(c.status, "True");
        assert!(c.message.contains("H264 is not recorded (RECORDING_CODEC_UNSUPPORTED)"), "{}", c.message);
    }

    #[test]
    fn stop_before_any_worker_recorded_needs_no_call() {
        let mut r = rec(true);
        let (call, o) = step(&mut r, &RoomView::Missing, |_| unreachable!(), t(0));
        assert!(call.is_none());
        assert_eq!(o.status.phase, Some(RecordingPhase::Stopped));
        assert_eq!(o.status.stopped_at.as_ref().unwrap().0, t(0));
    }

    #[test]
    fn disk_full_and_write_failures_fail_the_recording_with_the_workers_message() {
        for (code, reason) in [("RECORDING_DISK_FULL", "DiskFull"), ("RECORDING_WRITE_FAILED", "WriteFailed"), ("SOMETHING_NEW", "WorkerFailed")] {
            let mut r = rec(false);
            let placed = RoomView::Placed(worker("sfu-0"));
            step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 1)])), t(0));
            let mut failed = report(WorkerRecordingState::Failed, &[("a.webm", 4096)]);
            failed.error = Some(WorkerRecordingError { code: code.into(), message: "no space left on device (os error 28)".into() });
            let (_, o) = step(&mut r, &placed, |_| Answer::Ok(failed), t(5));
            assert_eq!(o.status.phase, Some(RecordingPhase::Failed), "{code}");
            let c = cond(&o.status, RECORDING_CONDITION);
            assert_eq!(c.reason, reason);
            assert!(c.message.contains("no space left on device") && c.message.contains(code), "{}", c.message);
            assert_eq!(o.status.files[0].bytes, 4096, "the files written before the failure are reported");
            assert_eq!(o.status.stopped_at.as_ref().unwrap().0, t(5));
            assert_eq!(o.requeue, None);
        }
    }

    #[test]
    fn a_move_starts_again_on_the_new_worker_and_keeps_the_old_files() {
        let mut r = rec(false);
        step(&mut r, &RoomView::Placed(worker("sfu-0")), |_| Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 700)])), t(0));
        // Between placements: pending, files kept.
        let (_, o) = step(&mut r, &RoomView::NotPlaced { why: "moving".into() }, |_| unreachable!(), t(5));
        assert_eq!(o.status.phase, Some(RecordingPhase::Pending));
        assert_eq!(o.status.files.len(), 1);

        let moved = RoomView::Placed(worker("sfu-1"));
        let (call, o) = step(&mut r, &moved, |c| {
            assert_eq!(c.worker.pod, "sfu-1");
            Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 30)]))
        }, t(10));
        let call = call.unwrap();
        assert_eq!((call.kind, call.moved_from.as_deref()), (CallKind::Start, Some("sfu-0")));
        assert_eq!(o.status.phase, Some(RecordingPhase::Recording));
        let files: Vec<(&str, &str, i64)> = o.status.files.iter().map(|f| (f.pod.as_str(), f.name.as_str(), f.bytes)).collect();
        assert_eq!(files, [("sfu-0", "a.webm", 700), ("sfu-1", "a.webm", 30)]);
        let m = cond(&o.status, MOVED_CONDITION);
        assert_eq!(m.status, "True");
        assert!(m.message.contains("from sfu-0 to sfu-1"), "{}", m.message);
        // The first start time stays.
        assert_eq!(o.status.started_at.as_ref().unwrap().0, "2027-01-15T08:00:00Z".parse::<Timestamp>().unwrap());

        // Moving straight from one placement to the next (no NotPlaced in between) too.
        let (call, _) = step(&mut r, &RoomView::Placed(worker("sfu-2")), |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(15));
        assert_eq!(call.unwrap().moved_from.as_deref(), Some("sfu-1"));
    }

    #[test]
    fn an_unreachable_worker_is_retried_without_losing_the_phase() {
        let mut r = rec(false);
        let placed = RoomView::Placed(worker("sfu-0"));
        let (_, o) = step(&mut r, &placed, |_| Answer::Unreachable("connection refused".into()), t(0));
        assert_eq!(o.status.phase, Some(RecordingPhase::Pending));
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "WorkerUnreachable");
        assert_eq!(o.requeue, Some(UNREACHABLE_RETRY));
        assert!(o.status.worker.is_none(), "it never recorded anywhere");

        step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(5));
        let (call, o) = step(&mut r, &placed, |_| Answer::Unreachable("timed out".into()), t(10));
        assert_eq!(call.unwrap().kind, CallKind::Poll);
        assert_eq!(o.status.phase, Some(RecordingPhase::Recording), "a blip does not end the recording");
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "WorkerUnreachable");

        // Stop while unreachable: retried while the room is still there, stopped once it left.
        r.spec.stop = true;
        let (_, o) = step(&mut r, &placed, |_| Answer::Unreachable("timed out".into()), t(15));
        assert_eq!((o.status.phase, o.requeue), (Some(RecordingPhase::Recording), Some(UNREACHABLE_RETRY)));
        let (_, o) = step(&mut r, &RoomView::Placed(worker("sfu-1")), |c| {
            assert_eq!(c.worker.pod, "sfu-0", "the stop goes to the worker that recorded");
            Answer::Unreachable("timed out".into())
        }, t(20));
        assert_eq!(o.status.phase, Some(RecordingPhase::Stopped));
    }

    #[test]
    fn worker_refusals_map_to_reasons() {
        let placed = RoomView::Placed(worker("sfu-0"));
        let mut r = rec(false);
        let (_, o) = step(&mut r, &placed, |_| Answer::NotFound { code: "ROOM_NOT_FOUND".into(), message: "no room lecture".into() }, t(0));
        assert_eq!((o.status.phase, cond(&o.status, RECORDING_CONDITION).reason.as_str()), (Some(RecordingPhase::Pending), "RoomNotOpen"));

        let mut r = rec(false);
        let (_, o) = step(&mut r, &placed, |_| Answer::Disabled("this worker has no recording directory".into()), t(0));
        let c = cond(&o.status, RECORDING_CONDITION);
        assert_eq!((o.status.phase, c.reason.as_str()), (Some(RecordingPhase::Pending), "RecordingDisabled"));
        assert!(c.message.contains("SfuWorker sfu"), "{}", c.message);

        let mut r = rec(false);
        let (_, o) = step(&mut r, &placed, |_| Answer::Refused { status: 400, code: "INVALID_ID".into(), message: "bad".into() }, t(0));
        assert_eq!(o.status.phase, Some(RecordingPhase::Failed));

        // A worker that lost the recording gets it started again.
        let mut r = rec(false);
        step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(0));
        let (_, o) = step(&mut r, &placed, |_| Answer::NotFound { code: "RECORDING_NOT_FOUND".into(), message: "gone".into() }, t(5));
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "RecordingLost");
        let (call, o) = step(&mut r, &placed, |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(6));
        let call = call.unwrap();
        assert_eq!((call.kind, call.moved_from), (CallKind::Start, None));
        assert_eq!(o.status.phase, Some(RecordingPhase::Recording));
    }

    #[test]
    fn a_deleted_room_ends_the_recording_with_its_final_files() {
        let mut r = rec(false);
        step(&mut r, &RoomView::Placed(worker("sfu-0")), |_| Answer::Ok(report(WorkerRecordingState::Recording, &[("a.webm", 5)])), t(0));
        let (call, o) = step(&mut r, &RoomView::Missing, |_| Answer::Ok(report(WorkerRecordingState::Stopped, &[("a.webm", 50)])), t(5));
        assert_eq!(call.unwrap().kind, CallKind::Stop);
        assert_eq!(o.status.phase, Some(RecordingPhase::Stopped));
        assert_eq!(cond(&o.status, RECORDING_CONDITION).reason, "RoomNotFound");
        assert_eq!(o.status.files[0].bytes, 50);
    }

    #[test]
    fn the_finalizer_stops_a_running_recording_and_does_not_wait_forever() {
        let mut r = rec(false);
        assert_eq!(cleanup_call(&r), None, "never started: nothing to stop");
        step(&mut r, &RoomView::Placed(worker("sfu-0")), |_| Answer::Ok(report(WorkerRecordingState::Recording, &[])), t(0));
        let call = cleanup_call(&r).expect("a running recording is stopped first");
        assert_eq!((call.kind, call.worker.pod.as_str()), (CallKind::Stop, "sfu-0"));

        assert_eq!(cleanup_after(&r, &call, &Answer::Ok(report(WorkerRecordingState::Stopped, &[])), t(1)), Cleanup::Release { note: None });
        assert!(matches!(cleanup_after(&r, &call, &Answer::Unreachable("refused".into()), t(1)), Cleanup::Release { note: Some(_) }));
        r.metadata.deletion_timestamp = Some(Time(t(0)));
        let refused = Answer::Refused { status: 400, code: "X".into(), message: "no".into() };
        assert_eq!(cleanup_after(&r, &call, &refused, t(10)), Cleanup::Retry(UNREACHABLE_RETRY));
        assert!(matches!(cleanup_after(&r, &call, &refused, t(61)), Cleanup::Release { note: Some(_) }));
    }
}
