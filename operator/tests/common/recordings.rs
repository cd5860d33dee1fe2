//! Recordings as a worker reports them, for the tests that play the worker (the reconcile
//! tests' fake workers, the API-server tests' fake recording API).
#![allow(dead_code)]

use fanout_operator::worker_api::{WorkerRecording, WorkerRecordingFile, WorkerRecordingState};

/// A recording the worker has just started: no files yet.
pub fn started(room: &str, id: &str) -> WorkerRecording {
    WorkerRecording {
        recording_id: id.into(),
        room_id: room.into(),
        state: WorkerRecordingState::Recording,
        started_at: jiff::Timestamp::now().to_string(),
        stopped_at: None,
        files: Vec::new(),
        dropped_packets: 0,
        error: None,
    }
}

/// An Opus file `<dir>/<name>` of a recording, 40 ms into it.
pub fn audio_file(dir: &str, name: &str, bytes: u64, duration_ms: u64) -> WorkerRecordingFile {
    WorkerRecordingFile {
        name: name.into(),
        path: format!("{dir}/{name}"),
        producer_id: format!("producer-{name}").into(),
        kind: fanout_worker::rtp::MediaKind::Audio,
        codec: "opus".into(),
        container: "webm".into(),
        bytes,
        duration_ms,
        start_offset_ms: 40,
    }
}
