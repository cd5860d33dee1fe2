//! What the room graph tells the rest of the system after a change.

use serde::{Deserialize, Serialize};

use crate::rtp::MediaKind;

use super::ids::{ConsumerId, PeerId, ProducerId, RoomId, TransportId};
use super::{AppData, PeerSummary};

/// Why a consumer closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsumerCloseReason {
    /// Closed on request (`DELETE .../consumers/{id}`).
    Requested,
    /// Its producer closed (mediasoup's `producerclose`).
    ProducerClosed,
    /// Its transport closed, also when its peer left or the room closed (mediasoup's
    /// `transportclose`).
    TransportClosed,
}

/// A change in a room that other parties must hear about: signalling fans these out to the
/// room's clients (`GET /v1/rooms/{room}/events`), the media plane drops state of closed
/// objects.
///
/// Every object that closes yields exactly one closed event, whatever closed it, and an
/// object's event comes after the events of everything its closing closed (consumers before
/// their producer, a transport's consumers and producers before the transport, a peer's
/// transports before `peerLeft`, every peer before `roomClosed`).
///
/// JSON: `{"type": "newProducer", "producerId": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RoomEvent {
    /// A peer joined; everybody else should learn about it.
    PeerJoined(PeerSummary),
    /// A peer left (or was removed with its room); its objects are already closed.
    PeerLeft { peer_id: PeerId },
    /// A peer started producing; the others may consume it.
    NewProducer {
        producer_id: ProducerId,
        peer_id: PeerId,
        kind: MediaKind,
        app_data: AppData,
    },
    /// A producer closed; its consumers are already closed.
    ProducerClosed {
        producer_id: ProducerId,
        peer_id: PeerId,
    },
    /// A producer paused; its consumers receive nothing until it resumes.
    ProducerPaused {
        producer_id: ProducerId,
        peer_id: PeerId,
    },
    /// A paused producer resumed.
    ProducerResumed {
        producer_id: ProducerId,
        peer_id: PeerId,
    },
    /// A consumer closed. `peer_id` is the consuming peer, the one to tell.
    ConsumerClosed {
        consumer_id: ConsumerId,
        peer_id: PeerId,
        producer_id: ProducerId,
        reason: ConsumerCloseReason,
    },
    /// A transport closed; its producers and consumers are already closed.
    TransportClosed {
        transport_id: TransportId,
        peer_id: PeerId,
    },
    /// The room closed; every peer has already left.
    RoomClosed { room_id: RoomId },
}
