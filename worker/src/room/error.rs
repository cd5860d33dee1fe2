//! The one error type of the room graph.

use crate::rtp::RtpError;

use super::ids::{ConsumerId, PeerId, ProducerId, RoomId, TransportId};
use super::transport::Direction;

/// Why a request on the room graph was refused.
///
/// A refused request changes nothing: every method checks everything before it mutates.
/// [`RoomError::code`] is the stable code for `{"error": {"code": ...}}`,
/// [`RoomError::http_status`] the status the REST layer answers with, and the message a
/// sentence the developer of the client app can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// The room is not open on this worker.
    #[error(
        "room {0} is not open on this worker; create it first (PUT /v1/rooms/{0}) or check the \
         room's placement"
    )]
    RoomNotFound(RoomId),
    /// The peer has not joined the room (or has left it).
    #[error("peer {peer} is not in room {room}; join the room first")]
    PeerNotFound { room: RoomId, peer: PeerId },
    /// The peer id is already joined to the room.
    #[error(
        "peer {peer} has already joined room {room}; leave first, or keep using the existing \
         session"
    )]
    PeerAlreadyJoined { room: RoomId, peer: PeerId },
    /// No such transport in the room, or it belongs to another peer.
    #[error(
        "transport {transport} does not exist in room {room} or belongs to another peer; use a \
         transport this peer created"
    )]
    TransportNotFound {
        room: RoomId,
        transport: TransportId,
    },
    /// `connect` was already called on this transport.
    #[error(
        "transport {0} is already connected; DTLS parameters are given once per transport (create \
         a new transport to start over)"
    )]
    TransportAlreadyConnected(TransportId),
    /// Producing on a receive transport, or consuming on a send transport.
    #[error(
        "transport {transport} is a {actual} transport; {action} needs a {needed} transport \
         (create one with direction \"{needed}\")"
    )]
    TransportDirectionMismatch {
        transport: TransportId,
        actual: Direction,
        needed: Direction,
        action: &'static str,
    },
    /// No such producer in the room.
    #[error("producer {producer} does not exist in room {room} (it may have been closed)")]
    ProducerNotFound { room: RoomId, producer: ProducerId },
    /// No such consumer in the room.
    #[error("consumer {consumer} does not exist in room {room} (it may have been closed)")]
    ConsumerNotFound { room: RoomId, consumer: ConsumerId },
    /// The DTLS parameters of `connect` are unusable.
    #[error("invalid DTLS parameters: {0}")]
    InvalidDtlsParameters(String),
    /// An empty room or peer id.
    #[error("invalid id: {0}")]
    InvalidId(String),
    /// RTP parameters or capabilities refused by the ORTC rules; the code is the RTP one.
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
            RoomError::Rtp(error) => error.code(),
        }
    }

    /// The HTTP status for this error: 404 for an unknown object, 409 for a request that
    /// conflicts with the object's state, 400 for bad input.
    pub fn http_status(&self) -> u16 {
        match self {
            RoomError::RoomNotFound(_)
            | RoomError::PeerNotFound { .. }
            | RoomError::TransportNotFound { .. }
            | RoomError::ProducerNotFound { .. }
            | RoomError::ConsumerNotFound { .. } => 404,
            RoomError::PeerAlreadyJoined { .. } | RoomError::TransportAlreadyConnected(_) => 409,
            RoomError::TransportDirectionMismatch { .. }
            | RoomError::InvalidDtlsParameters(_)
            | RoomError::InvalidId(_)
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
