//! What the operator asks of workers, behind a trait so reconcilers are testable without one.
//!
//! [`HttpWorkers`] is the real thing: the worker's typed client and its API types.

use std::time::Duration;

use async_trait::async_trait;
use fanout_worker::api::WorkerStats;
use fanout_worker::client::{ClientError, WorkerClient};

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

/// A recording as the worker reports it: the worker's own API types, under the names the
/// reconcilers use.
pub use fanout_worker::api::{
    ErrorBody as WorkerRecordingError, Recording as WorkerRecording, RecordingFile as WorkerRecordingFile,
    RecordingState as WorkerRecordingState,
};

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
        self.client.start_recording(endpoint, room, id).await
    }

    async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.client.recording(endpoint, room, id).await
    }

    async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.client.stop_recording(endpoint, room, id).await
    }
}
