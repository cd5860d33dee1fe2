//! Types of the worker's internal REST API (`/v1`, documented in `docs/worker-api.md`).
//!
//! They are the wire contract between the worker and its callers (signalling, the operator),
//! so they live here with their owner and are shared through this crate.
//!
//! Bodies the room graph already defines are used as they are
//! ([`JoinResponse`](crate::room::JoinResponse), [`TransportCreated`](crate::room::TransportCreated),
//! [`ProducerCreated`](crate::room::ProducerCreated), [`ConsumerCreated`](crate::room::ConsumerCreated),
//! [`RoomEvent`](crate::room::RoomEvent)); the others are here.

use serde::{Deserialize, Serialize};

use crate::room::{
    AppData, ConsumeOptions, ConsumerId, Direction, DtlsParameters, IceParameters, PeerId,
    PeerInfo, PeerSummary, ProduceOptions, ProducerId, ProducerSummary, RoomId, TransportId,
};
use crate::engine::{ConsumerLayerState, ConsumerScore, EncodingStats};
use crate::room::{ConsumeDataOptions, ConsumerType, ProduceDataOptions, SctpCapabilities, TransportProtocols};
use crate::rtp::{MediaKind, RtpCapabilities, RtpCodecCapability, RtpParameters};
use crate::video::Layers;

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

impl ErrorResponse {
    /// An error body with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// A stable machine-readable `code` (SCREAMING_SNAKE_CASE) and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `ROOM_NOT_FOUND`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// `PUT /v1/rooms/{room}`: the router's media codecs. The body may be empty or `{}`, which
/// means the worker's default codecs (Opus, VP8, VP9, H264).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnsureRoomRequest {
    /// mediasoup's `mediaCodecs`; empty for the defaults. Ignored when the room is open
    /// already: a router's codecs never change under peers that loaded them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media_codecs: Vec<RtpCodecCapability>,
    /// Seconds the room stays open without peers before the worker closes it (the Room
    /// object's `spec.emptyTimeoutSeconds`); absent: the worker's
    /// `--empty-room-timeout-seconds`. Given for an open room, it replaces the room's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_timeout_seconds: Option<u64>,
}

/// The answer to `PUT /v1/rooms/{room}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCapabilities {
    /// The router's capabilities, for mediasoup-client's `device.load`.
    pub rtp_capabilities: RtpCapabilities,
}

/// `GET /v1/rooms/{room}`: everything open in a room, each list in creation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    /// The room.
    pub room_id: RoomId,
    /// Its router capabilities.
    pub rtp_capabilities: RtpCapabilities,
    /// Joined peers, in join order.
    pub peers: Vec<PeerSummary>,
    /// Open transports.
    pub transports: Vec<TransportSummary>,
    /// Open producers.
    pub producers: Vec<ProducerSummary>,
    /// Open consumers.
    pub consumers: Vec<ConsumerSummary>,
}

/// A transport as `GET /v1/rooms/{room}` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportSummary {
    /// Its id.
    pub transport_id: TransportId,
    /// The peer that created it.
    pub peer_id: PeerId,
    /// `send` or `recv`.
    pub direction: Direction,
    /// Whether the client has sent its DTLS parameters (`connect`).
    pub connected: bool,
}

/// A consumer as `GET /v1/rooms/{room}` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerSummary {
    /// Its id.
    pub consumer_id: ConsumerId,
    /// The consuming peer.
    pub peer_id: PeerId,
    /// The recv transport it sends on.
    pub transport_id: TransportId,
    /// The consumed producer.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Paused by its peer.
    pub paused: bool,
    /// Its producer is paused.
    pub producer_paused: bool,
}

/// `POST /v1/rooms/{room}/peers`: join. Identity comes from signalling (the peer's token),
/// never from the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// The peer's id in the room, chosen by signalling.
    pub peer_id: PeerId,
    /// Who the peer is (user id, name, role from the token; app data), as the room keeps it.
    #[serde(flatten)]
    pub info: PeerInfo,
}

impl JoinRequest {
    /// A request with only a peer id.
    pub fn new(peer_id: impl Into<PeerId>) -> Self {
        JoinRequest { peer_id: peer_id.into(), info: PeerInfo::default() }
    }

    /// The peer id and who the peer is, as the room graph takes them.
    pub fn into_parts(self) -> (PeerId, PeerInfo) {
        (self.peer_id, self.info)
    }
}

/// `POST /v1/rooms/{room}/transports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransportRequest {
    /// The peer the transport is for.
    pub peer_id: PeerId,
    /// `send` (its producers) or `recv` (its consumers).
    pub direction: Direction,
    /// `enableUdp`, `enableTcp`, `preferUdp`, `preferTcp`, as in mediasoup's
    /// `WebRtcTransportOptions`; each one left out is the worker's default.
    #[serde(flatten)]
    pub protocols: TransportProtocols,
    /// mediasoup-client's `device.sctpCapabilities`: enables SCTP (data channels) on the
    /// transport, whose answer then carries `sctpParameters` (mediasoup's `enableSctp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_capabilities: Option<SctpCapabilities>,
    /// mediasoup's `enableSctp`: SCTP with the default stream counts when no
    /// `sctpCapabilities` are given (mediasoup-client 3.24 has none to give).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_sctp: bool,
}

/// `POST /v1/rooms/{room}/data-producers`: the peer and its [`ProduceDataOptions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceDataRequest {
    /// The producing peer.
    pub peer_id: PeerId,
    #[serde(flatten)]
    pub options: ProduceDataOptions,
}

/// `POST /v1/rooms/{room}/data-consumers`: the peer and its [`ConsumeDataOptions`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeDataRequest {
    /// The consuming peer.
    pub peer_id: PeerId,
    #[serde(flatten)]
    pub options: ConsumeDataOptions,
}

/// `POST /v1/rooms/{room}/transports/{id}/connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTransportRequest {
    /// The client transport's `connect` event's `dtlsParameters`, unchanged.
    pub dtls_parameters: DtlsParameters,
}

/// The answer to `POST /v1/rooms/{room}/transports/{id}/restart-ice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartIceResponse {
    /// The new ICE parameters, for mediasoup-client's `transport.restartIce`.
    pub ice_parameters: IceParameters,
}

/// `POST /v1/rooms/{room}/producers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceRequest {
    /// The producing peer.
    pub peer_id: PeerId,
    /// One of its send transports.
    pub transport_id: TransportId,
    /// Audio or video.
    pub kind: MediaKind,
    /// mediasoup-client's `produce` event's `rtpParameters`, unchanged.
    pub rtp_parameters: RtpParameters,
    /// Application data shown to other peers.
    #[serde(default)]
    pub app_data: AppData,
    /// Start paused.
    #[serde(default)]
    pub paused: bool,
}

impl ProduceRequest {
    /// The peer id and the request as the room graph takes it.
    pub fn into_parts(self) -> (PeerId, ProduceOptions) {
        (
            self.peer_id,
            ProduceOptions {
                transport_id: self.transport_id,
                kind: self.kind,
                rtp_parameters: self.rtp_parameters,
                app_data: self.app_data,
                paused: self.paused,
            },
        )
    }
}

/// `POST /v1/rooms/{room}/consumers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeRequest {
    /// The consuming peer.
    pub peer_id: PeerId,
    /// One of its recv transports.
    pub transport_id: TransportId,
    /// The producer to consume.
    pub producer_id: ProducerId,
    /// The consuming device's `device.rtpCapabilities`.
    pub rtp_capabilities: RtpCapabilities,
    /// Create it paused (then resume once the client-side consumer exists).
    #[serde(default)]
    pub paused: bool,
}

impl ConsumeRequest {
    /// The peer id and the request as the room graph takes it.
    pub fn into_parts(self) -> (PeerId, ConsumeOptions) {
        (
            self.peer_id,
            ConsumeOptions {
                transport_id: self.transport_id,
                producer_id: self.producer_id,
                rtp_capabilities: self.rtp_capabilities,
                paused: self.paused,
            },
        )
    }
}

/// `POST /v1/rooms/{room}/consumers/{id}/preferred-layers` (mediasoup's
/// `consumer.setPreferredLayers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPreferredLayersRequest {
    /// The spatial layer (simulcast encoding, 0 = the smallest) to prefer.
    pub spatial_layer: u8,
    /// The temporal layer; absent for the highest of that spatial layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_layer: Option<u8>,
}

/// The answer to `.../preferred-layers`: the layers as kept (clamped to what the producer has).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferredLayersResponse {
    pub preferred_layers: Layers,
}

/// `POST /v1/rooms/{room}/consumers/{id}/priority`, and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerPriority {
    /// 1 (the default) to 255: its share of its transport's bandwidth against the others'.
    pub priority: u32,
}

/// `GET /v1/rooms/{room}/producers/{id}/stats`: what arrives of each encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStats {
    pub producer_id: ProducerId,
    pub kind: MediaKind,
    /// How consumers take its layers: `simple`, `simulcast` or `svc`.
    pub r#type: ConsumerType,
    pub paused: bool,
    /// One entry per encoding, lowest first; an encoding signalled by RID that has not been
    /// seen yet has no `ssrc`.
    pub encodings: Vec<EncodingStats>,
}

/// `GET /v1/rooms/{room}/consumers/{id}/stats`: its layers and what it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStats {
    pub consumer_id: ConsumerId,
    pub producer_id: ProducerId,
    pub kind: MediaKind,
    pub r#type: ConsumerType,
    /// Paused by its app.
    pub paused: bool,
    pub producer_paused: bool,
    /// What its app prefers, what it should get now, what it gets (simulcast and SVC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_layers: Option<Layers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_layers: Option<Layers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_layers: Option<Layers>,
    /// Why it receives what it receives: `active`, `paused`, `producerPaused`,
    /// `producerInactive`, `noLayerFits` or `waitingForKeyframe`.
    pub state: ConsumerLayerState,
    pub priority: u8,
    pub score: ConsumerScore,
    pub packets_sent: u64,
    /// Bits per second over the last second.
    pub bitrate: u64,
}

/// `POST /v1/rooms/{room}/recordings`: start recording the room's producers under this id
/// (the same rules as other ids). Posting an id that exists answers its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRecordingRequest {
    pub recording_id: String,
}

/// Where a recording is: `recording` while files are written, `stopped` once every file is
/// finalised, `failed` after a write error (its files are closed as they were).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    Recording,
    Stopped,
    Failed,
}

/// One producer's file of a recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingFile {
    /// The file's name (`<producerId>.<container>`).
    pub name: String,
    /// Its path relative to the worker's recording directory: `<roomId>/<recordingId>/<name>`.
    pub path: String,
    pub producer_id: ProducerId,
    pub kind: MediaKind,
    /// The codec as RTP names it: `VP8`, `VP9`, `H264`, `opus`.
    pub codec: String,
    /// `webm`, or `mp4` (H264).
    pub container: String,
    /// Bytes written so far.
    pub bytes: u64,
    /// Media time written so far: the last frame's timestamp from the file's first.
    pub duration_ms: u64,
    /// When the file's first frame came, in ms after the recording's `startedAt` (the
    /// worker's clock): where the file's time 0 is on the recording's time line, to align
    /// the files of one recording.
    #[serde(default)]
    pub start_offset_ms: u64,
}

/// `GET /v1/rooms/{room}/recordings/{id}` and the answers of POST and DELETE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub recording_id: String,
    pub room_id: RoomId,
    pub state: RecordingState,
    /// RFC 3339.
    pub started_at: String,
    pub stopped_at: Option<String>,
    pub files: Vec<RecordingFile>,
    /// Producer packets the recorder could not take in time (its queue was full): the
    /// frames they belonged to are missing from the files; forwarding was not slowed.
    pub dropped_packets: u64,
    /// Why the recording failed, or a producer it refuses (`RECORDING_CODEC_UNSUPPORTED`)
    /// while it records the others.
    pub error: Option<ErrorBody>,
}
