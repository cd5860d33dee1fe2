//! The one error type of the room graph.

use crate::rtp::RtpError;

use super::ids::{ConsumerId, DataConsumerId, DataProducerId, PeerId, ProducerId, RoomId, TransportId, shown};
use super::transport::Direction;

/// Why a request on the room graph was refused.
///
/// A refused request changes nothing: every method checks everything before it mutates.
/// [`RoomError::code`] is the stable code for `{"error": {"code": ...}}`,
/// [`RoomError::http_status`] the status the REST layer answers with, and the message a
/// sentence the developer of the client app can act on. Messages quote at most the first 64
/// characters of an id ([`shown`]): a caller's huge id is never echoed whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room is not open on this worker.
    #[error(
        "room {} is not open on this worker; create it first (PUT /v1/rooms/{{room}}) or check \
         the room's placement",
        shown(.0.as_str())
    )]
    RoomNotFound(RoomId),
    /// The peer has not joined the room (or has left it).
    #[error("peer {} is not in room {}; join the room first", shown(peer.as_str()), shown(room.as_str()))]
    PeerNotFound { room: RoomId, peer: PeerId },
    /// The peer id is already joined to the room.
    #[error(
        "peer {} has already joined room {}; leave first, or keep using the existing session",
        shown(peer.as_str()),
        shown(room.as_str())
    )]
    PeerAlreadyJoined { room: RoomId, peer: PeerId },
    /// No such transport in the room, or it belongs to another peer.
    #[error(
        "transport {} does not exist in room {} or belongs to another peer; use a transport \
         this peer created",
        shown(transport.as_str()),
        shown(room.as_str())
    )]
    TransportNotFound {
        room: RoomId,
        transport: TransportId,
    },
    /// `connect` was already called on this transport.
    #[error(
        "transport {} is already connected; DTLS parameters are given once per transport \
         (create a new transport to start over)",
        shown(.0.as_str())
    )]
    TransportAlreadyConnected(TransportId),
    /// Producing on a receive transport, or consuming on a send transport.
    #[error(
        "transport {} is a {actual} transport; {action} needs a {needed} transport (create one \
         with direction \"{needed}\")",
        shown(transport.as_str())
    )]
    TransportDirectionMismatch {
        transport: TransportId,
        actual: Direction,
        needed: Direction,
        action: &'static str,
    },
    /// No such producer in the room.
    #[error(
        "producer {} does not exist in room {} (it may have been closed)",
        shown(producer.as_str()),
        shown(room.as_str())
    )]
    ProducerNotFound { room: RoomId, producer: ProducerId },
    /// No such consumer in the room.
    #[error(
        "consumer {} does not exist in room {} (it may have been closed)",
        shown(consumer.as_str()),
        shown(room.as_str())
    )]
    ConsumerNotFound { room: RoomId, consumer: ConsumerId },
    /// The DTLS parameters of `connect` are unusable.
    #[error("invalid DTLS parameters: {0}")]
    InvalidDtlsParameters(String),
    /// A room or peer id that is not a safe path segment ([`check_id`](super::check_id)).
    #[error("{0}")]
    InvalidId(String),
    /// The peer holds as many transports as one peer may ([`Quotas`](super::Quotas)).
    #[error(
        "peer {} already has {limit} transports open, the most one peer may have on this \
         worker; close one (close-transport) before creating another",
        shown(peer.as_str())
    )]
    TooManyTransports { peer: PeerId, limit: usize },
    /// The peer holds as many producers as one peer may.
    #[error(
        "peer {} already has {limit} producers open, the most one peer may have on this \
         worker; close one (close-producer) before producing another",
        shown(peer.as_str())
    )]
    TooManyProducers { peer: PeerId, limit: usize },
    /// The peer holds as many consumers as one peer may.
    #[error(
        "peer {} already has {limit} consumers open, the most one peer may have on this \
         worker; close consumers it no longer shows (close-consumer) before consuming more",
        shown(peer.as_str())
    )]
    TooManyConsumers { peer: PeerId, limit: usize },
    /// A producer's appData is larger than allowed.
    #[error(
        "the producer's appData is {size} bytes of JSON, more than the {limit} allowed; keep \
         large data in the application and put only a key or a short label in appData"
    )]
    AppDataTooLarge { size: usize, limit: usize },
    /// A peer's info (user id, display name, role, appData) is larger than allowed.
    #[error(
        "the peer's info (userId, displayName, role and appData) is {size} bytes of JSON, more \
         than the {limit} allowed; shorten the display name or the appData"
    )]
    PeerInfoTooLarge { size: usize, limit: usize },
    /// The room's listing (what every joiner is sent) would grow past its bound.
    #[error(
        "room {} is full: its peers and producers would take more than {limit} bytes to list \
         to a joiner; use another room, or ask participants to close producers they do not need",
        shown(room.as_str())
    )]
    RoomFull { room: RoomId, limit: usize },
    /// A consumer priority outside 1-255.
    #[error("priority {0} is out of range; give a value from 1 (the default, lowest) to 255")]
    InvalidPriority(u32),
    /// RTP parameters or capabilities refused by the ORTC rules; the code is the RTP one.
    /// Data channels on a transport created without `sctpCapabilities`.
    #[error(
        "transport {} was created without SCTP; create it with sctpCapabilities \
         (device.sctpCapabilities) to produce or consume data",
        shown(.0.as_str())
    )]
    SctpNotEnabled(TransportId),
    /// `sctpStreamParameters` (or `consume-data`'s reliability options) break mediasoup's rules.
    #[error("invalid sctpStreamParameters: {0}")]
    InvalidSctpStreamParameters(String),
    /// Another DataProducer of the transport sends on this stream.
    #[error(
        "SCTP stream {stream_id} of transport {} is already used by data producer {}; each \
         data producer needs its own stream",
        shown(transport.as_str()),
        shown(data_producer.as_str())
    )]
    SctpStreamIdInUse { transport: TransportId, stream_id: u16, data_producer: DataProducerId },
    /// Every stream id of the transport has a DataConsumer.
    #[error(
        "transport {} has a data consumer on each of its {streams} SCTP streams; close data \
         consumers it no longer needs (close-data-consumer) or use another transport",
        shown(transport.as_str())
    )]
    NoSctpStreamIdAvailable { transport: TransportId, streams: u16 },
    #[error(
        "data producer {} does not exist in room {} (it may have been closed)",
        shown(data_producer.as_str()),
        shown(room.as_str())
    )]
    DataProducerNotFound { room: RoomId, data_producer: DataProducerId },
    #[error(
        "data consumer {} does not exist in room {} (it may have been closed)",
        shown(data_consumer.as_str()),
        shown(room.as_str())
    )]
    DataConsumerNotFound { room: RoomId, data_consumer: DataConsumerId },
    /// A data producer's label or protocol is longer than allowed.
    #[error("the data producer's {field} is {size} bytes, more than the {limit} allowed; use a shorter one")]
    DataLabelTooLong { field: &'static str, size: usize, limit: usize },
    #[error(transparent)]
    Rtp(#[from] RtpError),
}

impl RoomError {
    /// The stable SCREAMING_SNAKE_CASE code of this error; RTP errors keep their own code.
    pub fn code(&self) -> &'static str {
        match self {
            RoomError::RoomNotFound(_) => "ROOM_NOT_FOUND",
            RoomError::PeerNotFound { .. } => "PEER_NOT_FOUND",
            RoomError::PeerAlreadyJoined { .. } => "PEER_ALREADY_JOINED",
            RoomError::TransportNotFound { .. } => "TRANSPORT_NOT_FOUND",
            RoomError::TransportAlreadyConnected(_) => "TRANSPORT_ALREADY_CONNECTED",
            RoomError::TransportDirectionMismatch { .. } => "TRANSPORT_DIRECTION_MISMATCH",
            RoomError::ProducerNotFound { .. } => "PRODUCER_NOT_FOUND",
            RoomError::ConsumerNotFound { .. } => "CONSUMER_NOT_FOUND",
            RoomError::InvalidDtlsParameters(_) => "INVALID_DTLS_PARAMETERS",
            RoomError::InvalidId(_) => "INVALID_ID",
            RoomError::TooManyTransports { .. } => "TOO_MANY_TRANSPORTS",
            RoomError::TooManyProducers { .. } => "TOO_MANY_PRODUCERS",
            RoomError::TooManyConsumers { .. } => "TOO_MANY_CONSUMERS",
            RoomError::AppDataTooLarge { .. } => "APP_DATA_TOO_LARGE",
            RoomError::PeerInfoTooLarge { .. } => "PEER_INFO_TOO_LARGE",
            RoomError::RoomFull { .. } => "ROOM_FULL",
            RoomError::InvalidPriority(_) => "INVALID_PRIORITY",
            RoomError::SctpNotEnabled(_) => "SCTP_NOT_ENABLED",
            RoomError::InvalidSctpStreamParameters(_) => "INVALID_SCTP_STREAM_PARAMETERS",
            RoomError::SctpStreamIdInUse { .. } => "SCTP_STREAM_ID_IN_USE",
            RoomError::NoSctpStreamIdAvailable { .. } => "NO_SCTP_STREAM_ID_AVAILABLE",
            RoomError::DataProducerNotFound { .. } => "DATA_PRODUCER_NOT_FOUND",
            RoomError::DataConsumerNotFound { .. } => "DATA_CONSUMER_NOT_FOUND",
            RoomError::DataLabelTooLong { .. } => "DATA_LABEL_TOO_LONG",
            RoomError::Rtp(error) => error.code(),
        }
    }

    /// The HTTP status for this error: 404 for an unknown object, 409 for a request that
    /// conflicts with the object's state (a quota reached: closing something makes room),
    /// 413 for data larger than allowed, 400 for bad input.
    pub fn http_status(&self) -> u16 {
        match self {
            RoomError::RoomNotFound(_)
            | RoomError::PeerNotFound { .. }
            | RoomError::TransportNotFound { .. }
            | RoomError::ProducerNotFound { .. }
            | RoomError::ConsumerNotFound { .. }
            | RoomError::DataProducerNotFound { .. }
            | RoomError::DataConsumerNotFound { .. } => 404,
            RoomError::PeerAlreadyJoined { .. }
            | RoomError::TransportAlreadyConnected(_)
            | RoomError::TooManyTransports { .. }
            | RoomError::TooManyProducers { .. }
            | RoomError::TooManyConsumers { .. }
            | RoomError::RoomFull { .. }
            | RoomError::SctpStreamIdInUse { .. }
            | RoomError::NoSctpStreamIdAvailable { .. } => 409,
            RoomError::AppDataTooLarge { .. }
            | RoomError::PeerInfoTooLarge { .. }
            | RoomError::DataLabelTooLong { .. } => 413,
            RoomError::TransportDirectionMismatch { .. }
            | RoomError::InvalidDtlsParameters(_)
            | RoomError::InvalidId(_)
            | RoomError::InvalidPriority(_)
            | RoomError::SctpNotEnabled(_)
            | RoomError::InvalidSctpStreamParameters(_)
            | RoomError::Rtp(_) => 400,
        }
    }

    /// The REST error body for this error.
    pub fn to_response(&self) -> crate::api::ErrorResponse {
        crate::api::ErrorResponse {
            error: crate::api::ErrorBody {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
    }
}
