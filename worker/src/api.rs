//! Types of the worker's internal REST API (`/v1`, see DESIGN.md section 5).
//!
//! They are the wire contract between the worker and its callers (signalling, the operator),
//! so they live here with their owner and are shared through this crate.

use serde::{Deserialize, Serialize};

/// `GET /v1/stats`: what one worker process currently hosts.
///
/// The operator reads it to show load per replica and to know when a draining replica has
/// emptied; the scheduler never relies on it alone (see the operator's scheduler docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    /// Rooms (routers) open on this worker.
    pub rooms: u32,
    /// Peers joined across all rooms.
    pub peers: u32,
    /// Open WebRTC transports.
    #[serde(default)]
    pub transports: u32,
    /// Open producers.
    #[serde(default)]
    pub producers: u32,
    /// Open consumers.
    #[serde(default)]
    pub consumers: u32,
    /// Media received, bits per second, averaged over the last few seconds.
    #[serde(default)]
    pub recv_bitrate: u64,
    /// Media sent, bits per second, averaged over the last few seconds.
    #[serde(default)]
    pub send_bitrate: u64,
}

/// The body of every error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// A stable machine-readable `code` (SCREAMING_SNAKE_CASE) and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}
