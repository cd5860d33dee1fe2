//! The media load instrument behind the `fanout-load` binary (README, "Performance").
//!
//! It drives a running worker through its REST API as signalling would: publishers send a
//! synthetic VP8-like video and opus-like audio stream ([`synthetic`]), and N subscribers, each
//! on its own worker transport with real ICE-lite, DTLS and SRTP over loopback, decrypt and
//! check what they receive ([`receiver`]). The worker's cost comes from its own CPU accounting
//! ([`procfs`]); in the same run a minimal relay ([`relay`]) measures what the unavoidable
//! work costs on this machine, and the worker is reported as a ratio to it ([`report`]).
//!
//! Subscribers share a few client sockets and are told apart by the worker port a datagram
//! comes from ([`client_transport`]), so the load program's own cost stays far below the
//! worker's.

pub mod client_transport;
pub mod net;
pub mod procfs;
pub mod publisher;
pub mod receiver;
pub mod reception;
pub mod relay;
pub mod report;
pub mod synthetic;
pub mod worker_run;

use std::sync::OnceLock;
use std::time::Instant;

/// Receive buffer of the subscribers' socket: room for about 50 ms of the heaviest sweep.
pub const RECEIVE_BUFFER: usize = 64 << 20;

/// Where a run is; the threads poll it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Setting up: publishers only keep their ICE consent, so the handshakes of subscribers
    /// joining later do not compete with forwarding to the earlier ones.
    Quiet = 3,
    /// Media flows, nothing is counted (keyframes reach new consumers, queues settle).
    Warmup = 0,
    /// Everything is counted.
    Measure = 1,
    Stop = 2,
}

impl From<u8> for Phase {
    fn from(v: u8) -> Self {
        match v {
            0 => Phase::Warmup,
            1 => Phase::Measure,
            3 => Phase::Quiet,
            _ => Phase::Stop,
        }
    }
}

/// Nanoseconds since the first call in this process: publishers stamp packets with it and
/// subscribers subtract it, in the same process, so no clock sync is involved.
pub fn epoch_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("SRTP: {0}")]
    Srtp(String),
    #[error("worker API: {0}")]
    Worker(String),
    #[error("{0} of {1} transports did not connect (ICE/DTLS): {2}")]
    Handshake(usize, usize, String),
    #[error("the {0} thread panicked")]
    Thread(String),
    #[error("cannot read the worker process's CPU or memory from /proc (pid {0})")]
    Proc(u32),
}
