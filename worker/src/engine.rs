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

use serde::{Deserialize, Serialize};

use crate::room::{
    ConsumerId, DtlsParameters, DtlsRole, ForwardingTable, ProducerId, ProtocolError, RoomId, TransportCloseCode, TransportId,
    TransportNetwork, TransportProtocols,
};
use crate::video::Layers;

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
    /// The transport's `enableUdp`/`enableTcp`/`preferUdp`/`preferTcp` cannot be met.
    #[error(transparent)]
    Protocols(#[from] ProtocolError),
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
            EngineError::Protocols(error) => error.code(),
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
            EngineError::Protocols(_) => 400,
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
    /// What changed in a room's media that its peers are told (scores, layers).
    Media { room: RoomId, events: Vec<MediaEvent> },
}

/// A change in what producers deliver and consumers get, as the media plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A producer's encodings' scores changed (mediasoup's producer `score` event).
    ProducerScore { producer_id: ProducerId, scores: Vec<EncodingScore> },
    /// The layers a simulcast or SVC consumer receives changed (mediasoup's `layerschange`);
    /// `None` while it receives nothing, for the reason `state` gives.
    ConsumerLayersChanged { consumer_id: ConsumerId, layers: Option<Layers>, state: ConsumerLayerState },
    /// A consumer's scores changed (mediasoup's consumer `score` event).
    ConsumerScore { consumer_id: ConsumerId, score: ConsumerScore },
}

/// The score of one producer encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodingScore {
    /// Its index among the producer's encodings (0 = the lowest).
    pub encoding_idx: usize,
    /// The SSRC it arrives with, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// Its RID, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// 0 (nothing arrives) to 10 (everything does), computed as mediasoup does.
    pub score: u8,
}

/// A consumer's scores: how its own stream fares (from its receiver's reports) and how the
/// producer stream it gets, and every encoding of the producer, fare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerScore {
    /// The consumer's stream, 0-10, from what its receiver reports losing.
    pub score: u8,
    /// The producer stream it currently receives.
    pub producer_score: u8,
    /// Every encoding of the producer.
    pub producer_scores: Vec<u8>,
}

/// Why a consumer receives what it receives, beyond its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsumerLayerState {
    /// Media flows.
    Active,
    /// Its app paused it (`pause-consumer`).
    Paused,
    /// Its producer is paused.
    ProducerPaused,
    /// Its producer sends none of its layers right now.
    ProducerInactive,
    /// Every layer the producer sends is above what the subscriber's downlink allows: it is
    /// paused for bandwidth, and resumes by itself when a layer fits.
    NoLayerFits,
    /// A layer is chosen and its keyframe has been asked for; nothing passes until it comes.
    WaitingForKeyframe,
}

/// One producer encoding's reception figures, for `GET .../producers/{id}/stats` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodingStats {
    /// Its index among the producer's encodings.
    pub encoding_idx: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The SSRC it arrives with; `None` while an encoding signalled by RID has not been seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<u32>,
    /// Packets arrive (within the last 1.5 s).
    pub active: bool,
    /// mediasoup's 0-10 score.
    pub score: u8,
    /// Bits per second over the last second, all its layers.
    pub bitrate: u64,
    /// Packets received, retransmissions included.
    pub packets_received: u64,
    /// Packets the sequence numbers say were sent but never arrived, repairs counted.
    pub packets_lost: i64,
    /// Packets received again in a retransmission.
    pub packets_repaired: u64,
    /// Interarrival jitter, RTP clock ticks.
    pub jitter: u32,
    /// The bitrate of each layer, per spatial and temporal layer (cumulative: what a consumer
    /// of that layer gets).
    pub layers: Vec<LayerBitrate>,
}

impl EncodingStats {
    /// An encoding the producer signalled but whose packets have not (yet) been seen.
    pub fn unseen(encoding_idx: usize, rid: Option<String>, ssrc: Option<u32>) -> Self {
        EncodingStats {
            encoding_idx,
            rid,
            ssrc,
            active: false,
            score: 0,
            bitrate: 0,
            packets_received: 0,
            packets_lost: 0,
            packets_repaired: 0,
            jitter: 0,
            layers: Vec::new(),
        }
    }
}

/// What a consumer of a layer gets, bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerBitrate {
    #[serde(flatten)]
    pub layers: Layers,
    pub bitrate: u64,
}

/// A producer's media as the media plane sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerMediaStats {
    pub producer_id: ProducerId,
    pub encodings: Vec<EncodingStats>,
}

/// A consumer's media as the media plane sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerMediaStats {
    pub consumer_id: ConsumerId,
    /// What the app prefers, what it should get, what it gets (see `video::layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_layers: Option<Layers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_layers: Option<Layers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_layers: Option<Layers>,
    pub state: ConsumerLayerState,
    pub priority: u8,
    pub score: ConsumerScore,
    pub packets_sent: u64,
    /// Bits per second sent over the last second.
    pub bitrate: u64,
}

/// A room's media as the media plane last saw it (refreshed about once a second).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMediaStats {
    pub producers: Vec<ProducerMediaStats>,
    pub consumers: Vec<ConsumerMediaStats>,
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
    /// Data channel message copies sent to DataConsumers.
    pub data_messages_forwarded: u64,
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
    ///
    /// `protocols` says which of UDP (a port of its own) and ICE-TCP (the worker's shared
    /// port) the transport listens on, in the order of its candidates' priority.
    fn open_transport(&self, room: &RoomId, transport: &TransportId, protocols: &TransportProtocols) -> Result<TransportNetwork, EngineError>;

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

    /// The media figures of a room's producers and consumers, as of the last second; `None`
    /// for a room the engine has no media of.
    fn media_stats(&self, _room: &RoomId) -> Option<RoomMediaStats> {
        None
    }

    /// Every room's media figures (for `/metrics`).
    fn all_media_stats(&self) -> Vec<(RoomId, RoomMediaStats)> {
        Vec::new()
    }

    /// From now on the room's router copies each producer packet to `tap` (`None`: stops
    /// copying). See [`crate::record`].
    #[cfg(feature = "media")]
    fn set_recording_tap(&self, _room: &RoomId, _tap: Option<crate::record::RecordTap>) {}

    /// Asks the producer for a keyframe (the recorder lost a frame or starts a file), through
    /// the same rate-limited path as consumers' requests.
    #[cfg(feature = "media")]
    fn request_keyframe(&self, _room: &RoomId, _producer: &ProducerId) {}
}
