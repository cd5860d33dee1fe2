//! The boundary between the control plane (REST requests applied to [`Rooms`](crate::room::Rooms)
//! under a lock, at request rate) and the media engine (UDP sockets, ICE-lite, DTLS, SRTP and
//! packet forwarding on media threads, at packet rate).
//!
//! The control plane owns every decision about objects and their lifetimes; the engine owns
//! sockets and crypto. The control plane tells the engine what changed (a transport opened,
//! connected, closed; a room's forwarding table) and the engine tells the control plane what
//! happened on the wire that closes objects (ICE consent lost, DTLS failed) through
//! [`EngineNotice`]s. The packet path never takes the control plane's lock: each media thread
//! holds its own copy of its rooms' [`ForwardingTable`]s.

use crate::room::{DtlsParameters, DtlsRole, ForwardingTable, RoomId, TransportCloseCode, TransportId, TransportNetwork};

/// Why the engine refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Every UDP port of the configured range is in use.
    #[error("no free UDP port in the worker's range {min}-{max}; close transports or widen the range")]
    PortsExhausted { min: u16, max: u16 },
    /// The transport is not known to the engine.
    #[error("transport {0} is not open in the media engine")]
    UnknownTransport(String),
    /// The engine is shutting down and takes no new transports.
    #[error("the worker is shutting down and accepts no new transports")]
    ShuttingDown,
    /// Anything else the operating system refused (socket errors).
    #[error("media engine error: {0}")]
    Io(String),
}

impl EngineError {
    /// Stable code for the REST error body.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::PortsExhausted { .. } => "PORTS_EXHAUSTED",
            EngineError::UnknownTransport(_) => "TRANSPORT_NOT_FOUND",
            EngineError::ShuttingDown => "SHUTTING_DOWN",
            EngineError::Io(_) => "MEDIA_ENGINE_ERROR",
        }
    }

    /// Seconds after which the request may succeed here: ports free up as transports close
    /// (an unused transport times out within the ICE timeout).
    pub fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            EngineError::PortsExhausted { .. } => Some(5),
            _ => None,
        }
    }

    /// HTTP status for the REST layer: capacity problems are 503 (try another worker).
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::PortsExhausted { .. } | EngineError::ShuttingDown => 503,
            EngineError::UnknownTransport(_) => 404,
            EngineError::Io(_) => 500,
        }
    }
}

/// Something on the wire that the control plane must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineNotice {
    /// The engine closed a transport by itself (ICE timeout or consent lost, DTLS failure or
    /// close alert). The control plane closes it in [`Rooms`](crate::room::Rooms), which
    /// cascades to its producers and consumers and emits the events with this code and
    /// reason (a sentence for people).
    TransportClosed { room: RoomId, transport: TransportId, code: TransportCloseCode, reason: String },
}

/// The engine's counters since it started, and current bitrates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineSnapshot {
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// RTP copies routed to consumers.
    pub packets_forwarded: u64,
    /// Datagrams dropped, by reason (`stun_bad_integrity`, `srtp_failed`, ...).
    pub drops_by_reason: Vec<(&'static str, u64)>,
    /// Bits per second received and sent, over the last few seconds.
    pub recv_bitrate: u64,
    pub send_bitrate: u64,
}

/// What the control plane asks of the media engine. Calls are cheap and never block on the
/// network: they hand work to the media threads.
pub trait MediaEngine: Send + Sync + 'static {
    /// Reserves a UDP port and an ICE/DTLS identity for a new transport; the returned network
    /// parameters go into the transport's `iceParameters`, `iceCandidates` and `dtlsParameters`.
    fn open_transport(&self, room: &RoomId, transport: &TransportId) -> Result<TransportNetwork, EngineError>;

    /// The client sent its DTLS parameters: start (or wait for) the handshake in `local_role`,
    /// and accept only a peer certificate matching `remote`'s fingerprints.
    fn connect_transport(
        &self,
        room: &RoomId,
        transport: &TransportId,
        remote: &DtlsParameters,
        local_role: DtlsRole,
    ) -> Result<(), EngineError>;

    /// New ICE credentials for the transport: `(usernameFragment, password)`.
    fn restart_ice(&self, room: &RoomId, transport: &TransportId) -> Result<(String, String), EngineError>;

    /// Releases the transport's socket and state (its port returns to the pool).
    fn close_transport(&self, room: &RoomId, transport: &TransportId);

    /// The room's routing changed (producer or consumer created, paused, resumed or closed):
    /// this is the complete new table for the room.
    fn update_routes(&self, room: &RoomId, table: ForwardingTable);

    /// The room is gone: release everything it held.
    fn close_room(&self, room: &RoomId);

    /// Counters and bitrates for `/v1/stats` and `/metrics`.
    fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot::default()
    }
}
