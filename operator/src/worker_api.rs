//! What the operator asks of workers, behind a trait so reconcilers are testable without one.
//!
//! [`HttpWorkers`] is the real thing: the worker's typed client. Recordings are read into the
//! operator's own [`WorkerRecording`], which every reconciler and test works with (and which
//! defaults what an older worker leaves out).

use std::time::Duration;

use async_trait::async_trait;
use fanout_worker::api::{Recording, RecordingState, WorkerStats};
use fanout_worker::client::{ClientError, WorkerClient};
use serde::{Deserialize, Serialize};

#[async_trait]
pub trait WorkerApi: Send + Sync {
    /// Current load of the worker at `endpoint`.
    async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError>;
    /// Closes `room` on the worker (its router and every peer's transports).
    async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError>;
    /// Peers joined to `room` on the worker; 0 when the worker does not know the room.
    async fn room_peers(&self, endpoint: &str, room: &str) -> Result<u32, ClientError>;
    /// `POST /v1/rooms/{room}/recordings`: starts recording `room` as `id`; an id the worker
    /// already records answers its current state (the call is idempotent).
    async fn start_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError>;
    /// `GET /v1/rooms/{room}/recordings/{id}`.
    async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError>;
    /// `DELETE /v1/rooms/{room}/recordings/{id}`: stops and answers the final state.
    async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError>;
}

/// A recording as the worker reports it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecording {
    pub recording_id: String,
    pub room_id: String,
    pub state: WorkerRecordingState,
    /// RFC 3339.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub files: Vec<WorkerRecordingFile>,
    #[serde(default)]
    pub dropped_packets: u64,
    /// Why the recording failed (`state` is `failed`): `RECORDING_DISK_FULL`,
    /// `RECORDING_WRITE_FAILED`, ...
    #[serde(default)]
    pub error: Option<WorkerRecordingError>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkerRecordingState {
    #[default]
    Recording,
    Stopped,
    Failed,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerRecordingFile {
    pub name: String,
    pub path: String,
    pub producer_id: String,
    pub kind: String,
    pub codec: String,
    pub container: String,
    pub bytes: u64,
    pub duration_ms: u64,
    /// From the recording's start to the file's first frame (0 from workers before it).
    #[serde(default)]
    pub start_offset_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerRecordingError {
    pub code: String,
    pub message: String,
}

/// The operator's worker access over HTTP, with the workers' shared bearer token.
pub struct HttpWorkers {
    client: WorkerClient,
}

impl HttpWorkers {
    /// `timeout` bounds each request.
    pub fn new(token: Option<String>, timeout: Duration) -> HttpWorkers {
        HttpWorkers { client: WorkerClient::new(token, timeout) }
    }
}

impl From<Recording> for WorkerRecording {
    fn from(r: Recording) -> Self {
        WorkerRecording {
            recording_id: r.recording_id,
            room_id: r.room_id.as_str().to_owned(),
            state: match r.state {
                RecordingState::Recording => WorkerRecordingState::Recording,
                RecordingState::Stopped => WorkerRecordingState::Stopped,
                RecordingState::Failed => WorkerRecordingState::Failed,
            },
            started_at: Some(r.started_at),
            stopped_at: r.stopped_at,
            files: r
                .files
                .into_iter()
                .map(|f| WorkerRecordingFile {
                    name: f.name,
                    path: f.path,
                    producer_id: f.producer_id.as_str().to_owned(),
                    kind: f.kind.as_str().to_owned(),
                    codec: f.codec,
                    container: f.container,
                    bytes: f.bytes,
                    duration_ms: f.duration_ms,
                    start_offset_ms: f.start_offset_ms,
                })
                .collect(),
            dropped_packets: r.dropped_packets,
            error: r.error.map(|e| WorkerRecordingError { code: e.code, message: e.message }),
        }
    }
}

#[async_trait]
impl WorkerApi for HttpWorkers {
    async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        self.client.stats(endpoint).await
    }

    async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        self.client.close_room(endpoint, room).await
    }

    async fn room_peers(&self, endpoint: &str, room: &str) -> Result<u32, ClientError> {
        match self.client.room_info(endpoint, room).await {
            Ok(info) => Ok(u32::try_from(info.peers.len()).unwrap_or(u32::MAX)),
            // Only the worker's own "no such room" means empty; any other 404 (an API without
            // this route) is an unknown answer.
            Err(e) if e.code() == Some("ROOM_NOT_FOUND") => Ok(0),
            Err(e) => Err(e),
        }
    }

    async fn start_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.client.start_recording(endpoint, room, id).await.map(WorkerRecording::from)
    }

    async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.client.recording(endpoint, room, id).await.map(WorkerRecording::from)
    }

    async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.client.stop_recording(endpoint, room, id).await.map(WorkerRecording::from)
    }
}
