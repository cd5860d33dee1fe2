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
}

#[async_trait]
impl WorkerApi for WorkerClient {
    async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        WorkerClient::stats(self, endpoint).await
    }

    async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        WorkerClient::close_room(self, endpoint, room).await
    }
}
