//! The one error type of the signalling server.
//!
//! Every error that reaches a client carries a stable SCREAMING_SNAKE_CASE [`code`] and a
//! sentence the developer of the client app can act on. Internals (URLs of workers, raw
//! transport errors) stay in the log, not in the message.
//!
//! [`code`]: SignallingError::code

use serde::Serialize;

/// Why a connection or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignallingError {
    /// No token in the `auth` payload, the `Authorization` header or the `token` query parameter.
    #[error(
        "no token: pass a JWT as the Socket.IO auth payload {{token}}, an 'Authorization: \
         Bearer' header or a 'token' query parameter"
    )]
    TokenMissing,
    /// The token is not a readable JWT (not three base64url parts, bad JSON, ...).
    #[error("the token is not a well-formed JWT: {0}")]
    TokenMalformed(String),
    /// The token's `exp` has passed.
    #[error("the token has expired; get a new one from your application and reconnect")]
    TokenExpired,
    /// The token's `nbf` (not before) is still in the future, beyond the tolerated clock skew.
    #[error(
        "the token is not valid yet (its nbf claim is in the future); check the clocks of your \
         token issuer and of this device, or wait until it becomes valid"
    )]
    TokenNotYetValid,
    /// The signature does not match the configured key.
    #[error("the token's signature is not valid for this server's key")]
    TokenInvalidSignature,
    /// Signed correctly but unusable: wrong algorithm, a required claim missing, not yet valid.
    #[error("the token is not acceptable: {0}")]
    TokenInvalid(String),
    /// The token's `rooms` allow-list does not name this room.
    #[error("your token does not allow joining room {0}")]
    RoomNotAllowed(String),
    /// The peer's role is not among the room's publishers.
    #[error(
        "role {role:?} may not publish in room {room}; the room allows publishing to: {allowed}"
    )]
    PublishNotAllowed {
        room: String,
        role: String,
        allowed: String,
    },
    /// A request for a room this socket has not joined; the field names it ("room x", or
    /// "a room" when the request named none).
    #[error("you have not joined {0}; emit join-room first")]
    NotInRoom(String),
    /// A join while already in a room: one socket is one participant of one room.
    #[error(
        "this connection is already in room {0}; emit leave-room first or open another connection"
    )]
    AlreadyInRoom(String),
    /// The payload is missing a field, has a wrong type, or is not a JSON object.
    #[error("invalid payload for {event}: {reason}")]
    InvalidPayload { event: String, reason: String },
    /// The payload is larger than the configured limit.
    #[error("the payload is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    /// This socket sent events faster than the configured rate.
    #[error("too many events: at most {per_second} per second (bursts of {burst}); slow down")]
    RateLimited { per_second: u32, burst: u32 },
    /// A relay target that is not in the sender's room (or not connected).
    #[error("participant {0} is not in your room")]
    TargetNotFound(String),
    /// A transport id that is not one of this participant's, or none that fits the request.
    #[error("{0}")]
    TransportNotFound(String),
    /// A producer id that is not one of this participant's.
    #[error("producer {0} is not one of yours (or has been closed)")]
    ProducerNotFound(String),
    /// A consumer id that is not one of this participant's.
    #[error("consumer {0} is not one of yours (or has been closed)")]
    ConsumerNotFound(String),
    /// A data producer id that is not one of this participant's.
    #[error("data producer {0} is not one of yours (or has been closed)")]
    DataProducerNotFound(String),
    /// A data consumer id that is not one of this participant's.
    #[error("data consumer {0} is not one of yours (or has been closed)")]
    DataConsumerNotFound(String),
    /// The room has no placement (unknown room, or not placed yet).
    #[error("room {0} does not exist or has not been placed on a media worker yet")]
    RoomNotFound(String),
    /// The room exists but no worker could take it yet (all full, none ready...).
    #[error("room {room} is waiting for a media worker: {reason}")]
    RoomPending { room: String, reason: String },
    /// A room id outside the one rule of every placement mode (a DNS label, see
    /// [`crate::ids`]); `room` is an excerpt of what the client sent.
    #[error(
        "room id {room:?} is not valid ({reason}): use 1-63 lowercase letters a-z, digits and \
         '-', beginning and ending with a letter or digit"
    )]
    InvalidRoomId { room: String, reason: &'static str },
    /// The room's worker cannot be reached or is shutting down.
    #[error("the media worker for this room is unavailable; try again shortly")]
    WorkerUnavailable,
    /// The worker refused the request; its code and message are passed on unchanged, because
    /// they describe the client's mistake (e.g. `UNSUPPORTED_CODEC`).
    #[error("{message}")]
    Worker { code: String, message: String },
    /// A chat message with nothing in it but spaces.
    #[error("the chat message is empty; type something to send")]
    ChatMessageEmpty,
    /// A chat message over `--chat-max-bytes`.
    #[error(
        "the chat message is {bytes} bytes long (UTF-8); the limit is {limit} bytes: shorten it \
         or send it in several messages"
    )]
    ChatMessageTooLong { bytes: usize, limit: usize },
    /// More chat messages than `--chat-burst` at once, or faster than
    /// `--chat-messages-per-second` after that.
    #[error(
        "too many chat messages: at most {burst} in a row, then {per_second} per second; wait a \
         moment and send it again"
    )]
    ChatRateLimited { burst: u32, per_second: u32 },
    /// A message id that is not in the room's history.
    #[error(
        "message {message_id} is not in this room's chat history: it was deleted already, is \
         older than the last {kept} messages kept, or belongs to another room"
    )]
    ChatMessageNotFound { message_id: String, kept: usize },
    /// A delete by neither the author nor a moderator.
    #[error("only the message's author or a moderator (role {moderators}) may delete it")]
    ChatDeleteNotAllowed { moderators: String },
    /// The shared chat history (Redis) cannot be reached.
    #[error("the chat history cannot be reached right now; try again shortly")]
    ChatUnavailable,
    /// Something inside signalling or between signalling and a worker broke; the log says what.
    #[error("internal error; the server log has the details")]
    Internal,
}

impl SignallingError {
    /// The stable code of this error; worker refusals keep the worker's own code.
    pub fn code(&self) -> &str {
        match self {
            SignallingError::TokenMissing => "TOKEN_MISSING",
            SignallingError::TokenMalformed(_) => "TOKEN_MALFORMED",
            SignallingError::TokenExpired => "TOKEN_EXPIRED",
            SignallingError::TokenNotYetValid => "TOKEN_NOT_YET_VALID",
            SignallingError::TokenInvalidSignature => "TOKEN_INVALID_SIGNATURE",
            SignallingError::TokenInvalid(_) => "TOKEN_INVALID",
            SignallingError::RoomNotAllowed(_) => "ROOM_NOT_ALLOWED",
            SignallingError::PublishNotAllowed { .. } => "PUBLISH_NOT_ALLOWED",
            SignallingError::NotInRoom(_) => "NOT_IN_ROOM",
            SignallingError::AlreadyInRoom(_) => "ALREADY_IN_ROOM",
            SignallingError::InvalidPayload { .. } => "INVALID_PAYLOAD",
            SignallingError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            SignallingError::RateLimited { .. } => "RATE_LIMITED",
            SignallingError::TargetNotFound(_) => "TARGET_NOT_FOUND",
            SignallingError::TransportNotFound(_) => "TRANSPORT_NOT_FOUND",
            SignallingError::ProducerNotFound(_) => "PRODUCER_NOT_FOUND",
            SignallingError::ConsumerNotFound(_) => "CONSUMER_NOT_FOUND",
            SignallingError::DataProducerNotFound(_) => "DATA_PRODUCER_NOT_FOUND",
            SignallingError::DataConsumerNotFound(_) => "DATA_CONSUMER_NOT_FOUND",
            SignallingError::RoomNotFound(_) => "ROOM_NOT_FOUND",
            SignallingError::RoomPending { .. } => "ROOM_PENDING",
            SignallingError::InvalidRoomId { .. } => "INVALID_ROOM_ID",
            SignallingError::WorkerUnavailable => "WORKER_UNAVAILABLE",
            SignallingError::Worker { code, .. } => code,
            SignallingError::ChatMessageEmpty => "CHAT_MESSAGE_EMPTY",
            SignallingError::ChatMessageTooLong { .. } => "CHAT_MESSAGE_TOO_LONG",
            SignallingError::ChatRateLimited { .. } => "RATE_LIMITED",
            SignallingError::ChatMessageNotFound { .. } => "CHAT_MESSAGE_NOT_FOUND",
            SignallingError::ChatDeleteNotAllowed { .. } => "CHAT_DELETE_NOT_ALLOWED",
            SignallingError::ChatUnavailable => "CHAT_UNAVAILABLE",
            SignallingError::Internal => "INTERNAL",
        }
    }

    /// The acknowledgement body of a refused request: `{"error": {"code", "message"}}`.
    pub fn to_ack(&self) -> ErrorAck {
        ErrorAck {
            error: ErrorBody {
                code: self.code().to_owned(),
                message: self.message(),
            },
        }
    }

    /// The `error` event sent to the socket when `event` was refused: `{event, code, message}`.
    pub fn to_event(&self, event: &str) -> ErrorEvent {
        ErrorEvent {
            event: crate::ids::excerpt(event),
            code: self.code().to_owned(),
            message: self.message(),
        }
    }

    /// The sentence for the client. Whatever it quotes is bounded where it is made; this
    /// bound is the last line, for messages passed on from elsewhere (a worker's).
    fn message(&self) -> String {
        let message = self.to_string();
        if message.len() <= MAX_MESSAGE_BYTES {
            return message;
        }
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &message[..end])
    }
}

/// Longest message an error carries to a client.
const MAX_MESSAGE_BYTES: usize = 1024;

/// `{"error": {"code", "message"}}`, what an acknowledgement carries when a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorAck {
    /// The refusal.
    pub error: ErrorBody,
}

/// A stable code and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `PUBLISH_NOT_ALLOWED`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// The payload of the `error` event: which request failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorEvent {
    /// The event that was refused (e.g. `produce`), or `connection` for the session itself.
    pub event: String,
    /// Stable code.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// Shorthand for results of this crate.
pub type Result<T, E = SignallingError> = std::result::Result<T, E>;
