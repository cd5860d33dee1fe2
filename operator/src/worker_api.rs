//! What the operator asks of workers, behind a trait so reconcilers are testable without one.
//!
//! [`HttpWorkers`] is the real thing: the worker's typed client for rooms and load, and plain
//! HTTP for the recording calls (`/v1/rooms/{room}/recordings`), which that client does not
//! offer. The recording calls answer in the worker's own error shape, read here as the typed
//! client reads it ([`ClientError`]), so callers see one kind of error for every call.

use std::time::Duration;

use async_trait::async_trait;
use fanout_worker::api::{ErrorResponse, WorkerStats};
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
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerRecordingError {
    pub code: String,
    pub message: String,
}

/// The operator's worker access over HTTP, with the workers' shared bearer token.
pub struct HttpWorkers {
    client: WorkerClient,
    http: reqwest::Client,
    token: Option<String>,
}

impl HttpWorkers {
    /// `timeout` bounds each request.
    pub fn new(token: Option<String>, timeout: Duration) -> HttpWorkers {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // Below the worker's keep-alive limit, as the worker's own client does.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            // Only a broken TLS backend makes this fail, and this client is built without TLS.
            .expect("reqwest client without TLS always builds");
        HttpWorkers { client: WorkerClient::new(token.clone(), timeout), http, token }
    }

    async fn call(&self, endpoint: &str, request: reqwest::RequestBuilder) -> Result<WorkerRecording, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unavailable { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unavailable { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Protocol { endpoint: endpoint.to_string(), reason: format!("unreadable recording: {e}") });
        }
        Err(match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(ErrorResponse { error }) => ClientError::Api { status: status.as_u16(), code: error.code, message: error.message },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "HTTP_ERROR".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        })
    }
}

/// `{endpoint}/v1/rooms/{room}/recordings[/{id}]`, the ids checked with the worker's rule first:
/// an id that is no id (`..`) would otherwise be resolved by the URL parser into another path.
fn recordings_url(endpoint: &str, room: &str, id: Option<&str>) -> Result<String, ClientError> {
    let invalid = |message: String| ClientError::Api { status: 400, code: "INVALID_ID".into(), message };
    fanout_worker::room::check_id("room", room).map_err(invalid)?;
    let base = format!("{}/v1/rooms/{room}/recordings", endpoint.trim_end_matches('/'));
    match id {
        None => Ok(base),
        Some(id) => {
            fanout_worker::room::check_id("recording", id).map_err(invalid)?;
            Ok(format!("{base}/{id}"))
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
        fanout_worker::room::check_id("recording", id)
            .map_err(|message| ClientError::Api { status: 400, code: "INVALID_ID".into(), message })?;
        let body = serde_json::json!({ "recordingId": id });
        self.call(endpoint, self.http.post(recordings_url(endpoint, room, None)?).json(&body)).await
    }

    async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.call(endpoint, self.http.get(recordings_url(endpoint, room, Some(id))?)).await
    }

    async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.call(endpoint, self.http.delete(recordings_url(endpoint, room, Some(id))?)).await
    }
}
