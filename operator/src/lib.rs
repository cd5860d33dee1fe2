//! Fanout's Kubernetes operator.
//!
//! Where things are:
//! - [`crd`]: the `Room`, `SfuWorker` and `Recording` resources.
//! - [`scheduler`]: where a room is placed (pure). [`ledger`]: committed load per worker.
//! - [`pool`]: what an SfuWorker's pods should become (pure), [`pod`]: the worker Pod.
//! - [`placement`]: whether a placed room can stay (pure). [`status`]: SfuWorker status (pure).
//! - [`empty_room`]: when an on-demand room has been empty long enough to delete (pure).
//! - [`recording`]: what a Recording asks of its room's worker next (pure).
//! - [`controller`]: the three reconcilers, the thin I/O around the pure parts.
//! - [`leader`]: Lease-based leader election. [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod crd;
pub mod empty_room;
pub mod error;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod placement;
pub mod pod;
pub mod recording;
pub mod pool;
pub mod scheduler;
pub mod selector;
pub mod status;
pub mod worker_api;

pub use error::{Error, Result};
