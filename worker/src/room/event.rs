//! What the room graph tells the rest of the system after a change.

use serde::{Deserialize, Serialize};

use crate::engine::{ConsumerLayerState, EncodingScore};
use crate::rtp::MediaKind;

use super::ids::{ConsumerId, DataConsumerId, DataProducerId, PeerId, ProducerId, RoomId, TransportId};
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

/// Why a transport closed: the `code` of a `transportClosed` event, stable and
/// SCREAMING_SNAKE_CASE on the wire (`"ICE_TIMEOUT"`).
///
/// The first three are closes somebody asked for; the others are the worker's own, which the
/// participant should hear about (signalling tells it with `transport-closed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransportCloseCode {
    /// Closed over the API (`DELETE .../transports/{id}`).
    Requested,
    /// Its peer left the room.
    PeerLeft,
    /// Its room closed.
    RoomClosed,
    /// No valid ICE check arrived within the worker's ICE timeout after creation.
    IceTimeout,
    /// Connected, then no ICE check (consent) arrived for the consent timeout.
    IceConsentLost,
    /// The peer's DTLS certificate matches none of the fingerprints it signalled.
    DtlsFingerprintMismatch,
    /// The DTLS handshake failed (fatal alert, bad record, timeout).
    DtlsFailed,
    /// The peer ended DTLS with close_notify.
    DtlsClosed,
    /// The worker is shutting down.
    WorkerShutdown,
    /// A code this build does not know (from a newer worker), or none (an older one).
    #[default]
    #[serde(other)]
    Closed,
}

impl TransportCloseCode {
    /// The code as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportCloseCode::Requested => "REQUESTED",
            TransportCloseCode::PeerLeft => "PEER_LEFT",
            TransportCloseCode::RoomClosed => "ROOM_CLOSED",
            TransportCloseCode::IceTimeout => "ICE_TIMEOUT",
            TransportCloseCode::IceConsentLost => "ICE_CONSENT_LOST",
            TransportCloseCode::DtlsFingerprintMismatch => "DTLS_FINGERPRINT_MISMATCH",
            TransportCloseCode::DtlsFailed => "DTLS_FAILED",
            TransportCloseCode::DtlsClosed => "DTLS_CLOSED",
            TransportCloseCode::WorkerShutdown => "WORKER_SHUTDOWN",
            TransportCloseCode::Closed => "CLOSED",
        }
    }

    /// A sentence for people about a close with this code, when nothing more specific is
    /// known (the engine's closes carry their own details).
    pub fn describe(self) -> &'static str {
        match self {
            TransportCloseCode::Requested => "the transport was closed on request",
            TransportCloseCode::PeerLeft => "its participant left the room",
            TransportCloseCode::RoomClosed => "its room was closed",
            TransportCloseCode::IceTimeout => {
                "no ICE connectivity check arrived in time after the transport was created: \
                 neither UDP nor TCP from this device reaches the media worker (a firewall, or \
                 a wrong announced IP); a TURN relay gets through such networks"
            }
            TransportCloseCode::IceConsentLost => {
                "ICE consent was lost: no connectivity check arrived for the consent timeout"
            }
            TransportCloseCode::DtlsFingerprintMismatch => {
                "the peer's DTLS certificate matches none of the fingerprints sent in \
                 connect-transport"
            }
            TransportCloseCode::DtlsFailed => "the DTLS handshake failed",
            TransportCloseCode::DtlsClosed => "the peer closed DTLS (close_notify)",
            TransportCloseCode::WorkerShutdown => {
                "the worker is shutting down; join the room again to be placed on another worker"
            }
            TransportCloseCode::Closed => "the transport closed",
        }
    }

    /// True for the closes the participant did not ask for (neither a request, nor its own
    /// leaving, nor its room closing): the ones to tell it about.
    pub fn is_unrequested(self) -> bool {
        !matches!(self, TransportCloseCode::Requested | TransportCloseCode::PeerLeft | TransportCloseCode::RoomClosed)
    }

    /// True for the failures to set the transport up (it never carried media): the client's
    /// `connect-transport` failed in effect.
    pub fn is_setup_failure(self) -> bool {
        matches!(
            self,
            TransportCloseCode::DtlsFingerprintMismatch | TransportCloseCode::DtlsFailed | TransportCloseCode::IceTimeout
        )
    }
}

impl std::fmt::Display for TransportCloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for TransportCloseCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TransportCloseCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
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
    /// A peer started a DataProducer; the others may consume it (`consume-data`).
    NewDataProducer {
        data_producer_id: DataProducerId,
        peer_id: PeerId,
        label: String,
        protocol: String,
        app_data: AppData,
    },
    /// A DataProducer closed; its DataConsumers are already closed.
    DataProducerClosed {
        data_producer_id: DataProducerId,
        peer_id: PeerId,
    },
    /// A DataConsumer closed. `peer_id` is the consuming peer, the one to tell.
    DataConsumerClosed {
        data_consumer_id: DataConsumerId,
        peer_id: PeerId,
        data_producer_id: DataProducerId,
        reason: ConsumerCloseReason,
    },
    /// A transport closed; its producers and consumers are already closed. `code` says why
    /// ([`TransportCloseCode`]) and `reason` says it for people; both read as `CLOSED` and
    /// empty when absent (an older worker).
    TransportClosed {
        transport_id: TransportId,
        peer_id: PeerId,
        #[serde(default)]
        code: TransportCloseCode,
        #[serde(default)]
        reason: String,
    },
    /// The room closed; every peer has already left.
    RoomClosed { room_id: RoomId },
    /// The scores of a producer's encodings changed (mediasoup's producer `score`);
    /// `peer_id` is the producing peer, the one to tell.
    ProducerScore {
        producer_id: ProducerId,
        peer_id: PeerId,
        scores: Vec<EncodingScore>,
    },
    /// The layers a simulcast or SVC consumer receives changed (mediasoup's `layerschange`):
    /// no layers while it receives nothing, for the reason `state` says. `peer_id` is the
    /// consuming peer.
    ConsumerLayersChanged {
        consumer_id: ConsumerId,
        peer_id: PeerId,
        producer_id: ProducerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        spatial_layer: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temporal_layer: Option<u8>,
        state: ConsumerLayerState,
    },
    /// A consumer's scores changed (mediasoup's consumer `score`): its own stream's, the
    /// producer stream it receives and every encoding of the producer, 0-10.
    ConsumerScore {
        consumer_id: ConsumerId,
        peer_id: PeerId,
        producer_id: ProducerId,
        score: u8,
        producer_score: u8,
        producer_scores: Vec<u8>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_closed_carries_its_code_and_reason_on_the_wire() {
        let event = RoomEvent::TransportClosed {
            transport_id: TransportId::from("t"),
            peer_id: PeerId::from("p"),
            code: TransportCloseCode::DtlsFingerprintMismatch,
            reason: "the certificate matches no fingerprint".into(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "transportClosed", "transportId": "t", "peerId": "p",
                "code": "DTLS_FINGERPRINT_MISMATCH", "reason": "the certificate matches no fingerprint"
            })
        );
        assert_eq!(serde_json::from_value::<RoomEvent>(json).unwrap(), event);
    }

    #[test]
    fn an_old_or_newer_workers_transport_closed_still_reads() {
        let old: RoomEvent = serde_json::from_value(serde_json::json!({"type": "transportClosed", "transportId": "t", "peerId": "p"})).unwrap();
        let RoomEvent::TransportClosed { code, reason, .. } = old else { panic!("{old:?}") };
        assert_eq!((code, reason.as_str()), (TransportCloseCode::Closed, ""));
        let newer: RoomEvent = serde_json::from_value(
            serde_json::json!({"type": "transportClosed", "transportId": "t", "peerId": "p", "code": "SOMETHING_NEW", "reason": "x"}),
        )
        .unwrap();
        assert!(matches!(newer, RoomEvent::TransportClosed { code: TransportCloseCode::Closed, .. }), "{newer:?}");
    }

    #[test]
    fn every_code_reads_back_from_its_own_name() {
        use TransportCloseCode::*;
        for code in [Requested, PeerLeft, RoomClosed, IceTimeout, IceConsentLost, DtlsFingerprintMismatch, DtlsFailed, DtlsClosed, WorkerShutdown, Closed] {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().to_owned()));
            assert_eq!(serde_json::from_value::<TransportCloseCode>(json).unwrap(), code);
            assert_eq!(code.is_unrequested(), !matches!(code, Requested | PeerLeft | RoomClosed));
        }
        assert!(IceTimeout.is_setup_failure() && DtlsFailed.is_setup_failure() && DtlsFingerprintMismatch.is_setup_failure());
        assert!(!IceConsentLost.is_setup_failure() && !DtlsClosed.is_setup_failure());
    }
}
