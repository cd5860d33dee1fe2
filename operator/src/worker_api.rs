//! What the operator asks of workers, behind a trait so reconcilers are testable without one.

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
}

#[async_trait]
impl WorkerApi for WorkerClient {
    async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        WorkerClient::stats(self, endpoint).await
    }

    async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        WorkerClient::close_room(self, endpoint, room).await
    }

    async fn room_peers(&self, endpoint: &str, room: &str) -> Result<u32, ClientError> {
        match WorkerClient::room_info(self, endpoint, room).await {
            Ok(info) => Ok(u32::try_from(info.peers.len()).unwrap_or(u32::MAX)),
            // Only the worker's own "no such room" means empty; any other 404 (an API without
            // this route) is an unknown answer.
            Err(e) if e.code() == Some("ROOM_NOT_FOUND") => Ok(0),
            Err(e) => Err(e),
        }
    }
}
