//! The public Socket.IO protocol (docs/protocol.md) as types: what clients emit, what they
//! get back, and how the worker's room events become notifications. Pure: no sockets here.
//!
//! Payloads are camelCase JSON. Fields a client may send but that signalling takes from the
//! token instead (`userId`, `email`, `fullName`, `role`) are not in these types, so serde
//! drops them: a payload cannot change who its sender is.

use fanout_worker::room::{
    AppData, ConsumerCloseReason, ConsumerId, DataConsumerId, DataProducerId, Direction, DtlsParameters, PeerId,
    PeerSummary, ProducerId, RoomEvent, SctpCapabilities, SctpStreamParameters, TransportId, TransportProtocols,
};
use fanout_worker::rtp::{MediaKind, RtpCapabilities, RtpParameters};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::SignallingError;

/// Request events and the named event each one answers with. Relay events answer only by
/// acknowledgement: their effect is the event the target receives.
pub const REQUESTS: &[(&str, Option<&str>)] = &[
    ("join-room", Some("joined-room")),
    ("leave-room", Some("left-room")),
    ("get-participants", Some("participants")),
    ("webrtc-offer", None),
    ("webrtc-answer", None),
    ("ice-candidate", None),
    ("create-transport", Some("transport-created")),
    ("connect-transport", Some("transport-connected")),
    ("restart-ice", Some("ice-restarted")),
    ("produce", Some("producer-created")),
    ("consume", Some("consumer-created")),
    ("pause-producer", Some("producer-paused")),
    ("resume-producer", Some("producer-resumed")),
    ("close-producer", Some("producer-closed")),
    ("pause-consumer", Some("consumer-paused")),
    ("resume-consumer", Some("consumer-resumed")),
    ("close-consumer", Some("consumer-closed")),
    ("set-consumer-preferred-layers", Some("consumer-preferred-layers-set")),
    ("set-consumer-priority", Some("consumer-priority-set")),
    ("get-room-info", Some("room-info")),
    ("produce-data", Some("data-producer-created")),
    ("consume-data", Some("data-consumer-created")),
    ("close-data-producer", Some("data-producer-closed")),
    ("close-data-consumer", Some("data-consumer-closed")),
    // The sender's answer is the room's own `chat-message` event (crate::chat).
    ("chat-message", Some("chat-message")),
    ("delete-chat-message", Some("chat-message-deleted")),
];

/// Reads a request's payload from the data of its Socket.IO event packet, `["event", payload,
/// ...]`, and the packet's binary attachments. `Ok(None)` when there is no payload (or
/// `null`, which is how socket.io-client sends `undefined`); later arguments are ignored.
///
/// Binary attachments replace their placeholders (`{"_placeholder": true, "num": n}`) as
/// arrays of byte values, so the JSON fields around them stay readable; nothing in the
/// protocol is binary. Attachments larger in all than `max_bytes` are refused before they are
/// converted.
///
/// Parsing is serde_json's, with its nesting limit (128 levels): JSON nested deeper is
/// unreadable, not an empty payload.
pub fn read_payload(
    event: &str,
    packet: &str,
    attachments: &[&[u8]],
    max_bytes: usize,
) -> Result<Option<Value>, SignallingError> {
    let unreadable = |reason: String| SignallingError::InvalidPayload {
        event: event.to_owned(),
        reason: format!(
            "the payload is not readable JSON ({}); send one JSON object",
            crate::ids::shorten_quotes(&reason)
        ),
    };
    let size: usize = attachments.iter().map(|a| a.len()).sum();
    if size > max_bytes {
        return Err(SignallingError::PayloadTooLarge {
            size,
            limit: max_bytes,
        });
    }
    let arguments: Vec<Value> =
        serde_json::from_str(packet).map_err(|e| unreadable(e.to_string()))?;
    let mut payload = match arguments.into_iter().nth(1) {
        None | Some(Value::Null) => return Ok(None),
        Some(payload) => payload,
    };
    if !attachments.is_empty() {
        attach(&mut payload, attachments).map_err(unreadable)?;
    }
    Ok(Some(payload))
}

/// Puts attachments in place of their placeholders. Recursion is bounded by serde_json's
/// nesting limit, which the value went through.
fn attach(value: &mut Value, attachments: &[&[u8]]) -> Result<(), String> {
    match value {
        Value::Object(map) if map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)) => {
            let index = map.get("num").and_then(Value::as_u64);
            let bytes = index
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| attachments.get(i))
                .ok_or_else(|| format!("binary attachment {index:?} was not sent"))?;
            *value = Value::Array(bytes.iter().map(|&b| Value::from(b)).collect());
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                attach(item, attachments)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                attach(item, attachments)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `join-room`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRoom {
    /// The room to join.
    pub room_id: String,
    /// The seed's hint that the client means to publish; kept for compatibility, never
    /// trusted (publishing is decided by role).
    #[serde(default)]
    pub is_producer: Option<bool>,
    /// A display name for a room created on demand.
    #[serde(default)]
    pub room_name: Option<String>,
}

/// Requests that name only the room (`leave-room`, `get-participants`, `get-room-info`).
/// `roomId` may be omitted: a connection is in one room at most.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomRequest {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
}

/// `webrtc-offer`, `webrtc-answer`, `ice-candidate`: passed to `targetId` with `from` added.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relay {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The participant id to deliver to.
    pub target_id: String,
    /// Everything else (`sdp`, `candidate`, ...), relayed unchanged.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// `create-transport`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTransport {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// `send` or `recv`.
    pub direction: Direction,
    /// `enableUdp`, `enableTcp`, `preferUdp`, `preferTcp` (mediasoup's
    /// `WebRtcTransportOptions`), passed to the worker; each one left out is its default.
    #[serde(flatten)]
    pub protocols: TransportProtocols,
    /// mediasoup-client's `device.sctpCapabilities`, for a transport that carries data
    /// channels (`produce-data`, `consume-data`); its answer then has `sctpParameters`.
    #[serde(default)]
    pub sctp_capabilities: Option<SctpCapabilities>,
    /// mediasoup's `enableSctp`: data channels with the default stream counts, for clients
    /// with no `sctpCapabilities` to send (mediasoup-client 3.24 dropped them).
    #[serde(default)]
    pub enable_sctp: bool,
}

/// `produce-data` (mediasoup-client's `producedata` event).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceData {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The send transport; optional when the sender has exactly one.
    #[serde(default)]
    pub transport_id: Option<TransportId>,
    /// The event's `sctpStreamParameters`, unchanged.
    pub sctp_stream_parameters: SctpStreamParameters,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    /// Shown to other participants.
    #[serde(default)]
    pub app_data: AppData,
}

/// `consume-data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeData {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The data producer to receive.
    pub data_producer_id: DataProducerId,
    /// The recv transport; optional when the sender has exactly one.
    #[serde(default)]
    pub transport_id: Option<TransportId>,
    /// Delivery other than the data producer's (mediasoup's `consumeData` options).
    #[serde(default)]
    pub ordered: Option<bool>,
    #[serde(default)]
    pub max_packet_life_time: Option<u16>,
    #[serde(default)]
    pub max_retransmits: Option<u16>,
}

/// `close-data-producer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerRequest {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's data producers.
    pub data_producer_id: DataProducerId,
}

/// `close-data-consumer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerRequest {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's data consumers.
    pub data_consumer_id: DataConsumerId,
}

/// `connect-transport`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectTransport {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's transports.
    pub transport_id: TransportId,
    /// The client transport's `connect` event's parameters, unchanged.
    pub dtls_parameters: DtlsParameters,
}

/// `restart-ice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartIce {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's transports.
    pub transport_id: TransportId,
}

/// `produce`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Produce {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The send transport; optional when the sender has exactly one.
    #[serde(default)]
    pub transport_id: Option<TransportId>,
    /// Audio or video.
    pub kind: MediaKind,
    /// mediasoup-client's `produce` event's parameters, unchanged.
    pub rtp_parameters: RtpParameters,
    /// Shown to other participants (e.g. `{"source": "screen"}`).
    #[serde(default)]
    pub app_data: AppData,
    /// Start paused.
    #[serde(default)]
    pub paused: bool,
}

/// `consume`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consume {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The producer to receive.
    pub producer_id: ProducerId,
    /// The receiving device's `device.rtpCapabilities`.
    pub rtp_capabilities: RtpCapabilities,
    /// The recv transport; optional when the sender has exactly one.
    #[serde(default)]
    pub transport_id: Option<TransportId>,
    /// Create paused, then `resume-consumer` once the client-side consumer exists
    /// (mediasoup's recommended pattern, so the first packet is a keyframe).
    #[serde(default)]
    pub paused: bool,
}

/// `pause-producer`, `resume-producer`, `close-producer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRequest {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's producers.
    pub producer_id: ProducerId,
}

/// `pause-consumer`, `resume-consumer`, `close-consumer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRequest {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's consumers.
    pub consumer_id: ConsumerId,
}

/// `set-consumer-preferred-layers` (mediasoup's `consumer.setPreferredLayers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPreferredLayers {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's consumers.
    pub consumer_id: ConsumerId,
    /// The spatial layer to prefer (simulcast encoding or SVC layer, 0 = the smallest).
    pub spatial_layer: u8,
    /// The temporal layer; absent for the highest.
    #[serde(default)]
    pub temporal_layer: Option<u8>,
}

/// `set-consumer-priority`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPriority {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// One of the sender's consumers.
    pub consumer_id: ConsumerId,
    /// 1 (the default) to 255: its share of its transport's bandwidth.
    pub priority: u32,
}

/// A participant as other participants see it: `{participantId, userId, fullName, role,
/// appData}`. The email stays private to the token's holder.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// The participant's id in the room (also its peer id on the worker).
    pub participant_id: PeerId,
    /// The `sub` of its token.
    pub user_id: String,
    /// The `name` of its token.
    pub full_name: String,
    /// The `role` of its token.
    pub role: String,
    /// Application data.
    pub app_data: AppData,
}

impl From<&PeerSummary> for Participant {
    fn from(peer: &PeerSummary) -> Self {
        Participant {
            participant_id: peer.peer_id.clone(),
            user_id: peer.info.user_id.clone(),
            full_name: peer.info.display_name.clone(),
            role: peer.info.role.clone(),
            app_data: peer.info.app_data.clone(),
        }
    }
}

/// Who a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Everybody in the room.
    Room,
    /// Everybody in the room but this participant (the one it is about).
    RoomExcept(PeerId),
    /// Only this participant.
    Peer(PeerId),
}

/// A Socket.IO event for some of a room's participants.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The event name, e.g. `new-producer`.
    pub event: &'static str,
    /// Its payload.
    pub payload: Value,
    /// Its recipients.
    pub audience: Audience,
}

/// What a room event from the worker tells the room's participants, if anything.
///
/// The participant an event is about is left out where it caused the event itself and got
/// the named response already (its own join, producer, pause); `consumer-closed` goes only
/// to the consumer's owner.
pub fn notification(room: &str, event: RoomEvent) -> Option<Notification> {
    let (event, payload, audience) = match event {
        RoomEvent::PeerJoined(peer) => {
            let participant = Participant::from(&peer);
            let mut payload = serde_json::to_value(&participant).ok()?;
            payload["roomId"] = json!(room);
            (
                "participant-joined",
                payload,
                Audience::RoomExcept(peer.peer_id),
            )
        }
        RoomEvent::PeerLeft { peer_id } => (
            "participant-left",
            json!({"roomId": room, "participantId": peer_id}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::NewProducer {
            producer_id,
            peer_id,
            kind,
            app_data,
        } => (
            "new-producer",
            json!({"roomId": room, "producerId": producer_id, "participantId": peer_id,
                   "kind": kind, "appData": app_data}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::ProducerClosed {
            producer_id,
            peer_id,
        } => (
            "producer-closed",
            json!({"roomId": room, "producerId": producer_id, "participantId": peer_id}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::ProducerPaused {
            producer_id,
            peer_id,
        } => (
            "producer-paused",
            json!({"roomId": room, "producerId": producer_id, "participantId": peer_id}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::ProducerResumed {
            producer_id,
            peer_id,
        } => (
            "producer-resumed",
            json!({"roomId": room, "producerId": producer_id, "participantId": peer_id}),
            Audience::RoomExcept(peer_id),
        ),
        // A consumer closed on request was answered already; the others (producer or
        // transport gone) are news to their owner.
        RoomEvent::ConsumerClosed {
            reason: ConsumerCloseReason::Requested,
            ..
        } => return None,
        RoomEvent::ConsumerClosed {
            consumer_id,
            peer_id,
            producer_id,
            reason,
        } => (
            "consumer-closed",
            json!({"roomId": room, "consumerId": consumer_id, "producerId": producer_id,
                   "reason": reason}),
            Audience::Peer(peer_id),
        ),
        RoomEvent::NewDataProducer { data_producer_id, peer_id, label, protocol, app_data } => (
            "new-data-producer",
            json!({"roomId": room, "dataProducerId": data_producer_id, "participantId": peer_id,
                   "label": label, "protocol": protocol, "appData": app_data}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::DataProducerClosed { data_producer_id, peer_id } => (
            "data-producer-closed",
            json!({"roomId": room, "dataProducerId": data_producer_id, "participantId": peer_id}),
            Audience::RoomExcept(peer_id),
        ),
        RoomEvent::DataConsumerClosed { reason: ConsumerCloseReason::Requested, .. } => return None,
        RoomEvent::DataConsumerClosed { data_consumer_id, peer_id, data_producer_id, reason } => (
            "data-consumer-closed",
            json!({"roomId": room, "dataConsumerId": data_consumer_id, "dataProducerId": data_producer_id,
                   "reason": reason}),
            Audience::Peer(peer_id),
        ),
        RoomEvent::TransportClosed { .. } => return None,
        RoomEvent::ProducerScore {
            producer_id,
            peer_id,
            scores,
        } => (
            "producer-score",
            json!({"roomId": room, "producerId": producer_id, "scores": scores}),
            Audience::Peer(peer_id),
        ),
        RoomEvent::ConsumerLayersChanged {
            consumer_id,
            peer_id,
            producer_id,
            spatial_layer,
            temporal_layer,
            state,
        } => (
            "consumer-layers-changed",
            json!({"roomId": room, "consumerId": consumer_id, "producerId": producer_id,
                   "spatialLayer": spatial_layer, "temporalLayer": temporal_layer, "state": state}),
            Audience::Peer(peer_id),
        ),
        RoomEvent::ConsumerScore {
            consumer_id,
            peer_id,
            producer_id,
            score,
            producer_score,
            producer_scores,
        } => (
            "consumer-score",
            json!({"roomId": room, "consumerId": consumer_id, "producerId": producer_id,
                   "score": score, "producerScore": producer_score, "producerScores": producer_scores}),
            Audience::Peer(peer_id),
        ),
        RoomEvent::RoomClosed { room_id } => {
            ("room-closed", json!({"roomId": room_id}), Audience::Room)
        }
    };
    Some(Notification {
        event,
        payload,
        audience,
    })
}

#[cfg(test)]
mod tests {
    use fanout_worker::room::PeerInfo;

    use super::*;

    #[test]
    fn identity_fields_in_a_join_payload_are_dropped() {
        let join: JoinRoom = serde_json::from_value(json!({
            "roomId": "maths", "userId": "someone-else", "role": "teacher", "isProducer": true
        }))
        .unwrap();
        assert_eq!(join.room_id, "maths");
        assert_eq!(join.is_producer, Some(true));
    }

    #[test]
    fn a_peer_joining_is_told_to_everybody_else() {
        let peer = PeerSummary {
            peer_id: "p1".into(),
            info: PeerInfo {
                user_id: "u1".into(),
                display_name: "Ada".into(),
                role: "teacher".into(),
                app_data: AppData::new(),
            },
        };
        let n = notification("maths", RoomEvent::PeerJoined(peer)).unwrap();
        assert_eq!(n.event, "participant-joined");
        assert_eq!(n.audience, Audience::RoomExcept("p1".into()));
        assert_eq!(n.payload["participantId"], "p1");
        assert_eq!(n.payload["fullName"], "Ada");
        assert_eq!(n.payload["roomId"], "maths");
    }

    #[test]
    fn a_new_producer_is_told_to_everybody_but_its_producer() {
        let n = notification(
            "maths",
            RoomEvent::NewProducer {
                producer_id: "pr1".into(),
                peer_id: "p1".into(),
                kind: MediaKind::Video,
                app_data: AppData::new(),
            },
        )
        .unwrap();
        assert_eq!(n.event, "new-producer");
        assert_eq!(n.audience, Audience::RoomExcept("p1".into()));
        assert_eq!(n.payload["producerId"], "pr1");
        assert_eq!(n.payload["kind"], "video");
    }

    #[test]
    fn a_consumer_closed_by_its_producer_is_told_only_to_its_owner() {
        let closed = |reason| RoomEvent::ConsumerClosed {
            consumer_id: "c1".into(),
            peer_id: "p2".into(),
            producer_id: "pr1".into(),
            reason,
        };
        let n = notification("maths", closed(ConsumerCloseReason::ProducerClosed)).unwrap();
        assert_eq!(n.event, "consumer-closed");
        assert_eq!(n.audience, Audience::Peer("p2".into()));
        assert_eq!(
            notification("maths", closed(ConsumerCloseReason::Requested)),
            None
        );
    }

    #[test]
    fn a_missing_or_null_payload_is_none_and_an_object_is_kept() {
        assert_eq!(read_payload("leave-room", r#"["leave-room"]"#, &[], 100).unwrap(), None);
        assert_eq!(read_payload("leave-room", r#"["leave-room",null]"#, &[], 100).unwrap(), None);
        assert_eq!(
            read_payload("leave-room", r#"["leave-room",{"roomId":"a"},{"x":1}]"#, &[], 100).unwrap(),
            Some(json!({"roomId": "a"}))
        );
    }

    #[test]
    fn a_payload_nested_too_deep_or_broken_is_unreadable_not_empty() {
        let deep = format!(r#"["leave-room",{}{}]"#, "[".repeat(1000), "]".repeat(1000));
        let deep_objects = format!(r#"["leave-room",{}1{}]"#, r#"{"a":"#.repeat(200), "}".repeat(200));
        for packet in [deep.as_str(), deep_objects.as_str(), r#"["leave-room",{"#, "", "[1"] {
            let error = read_payload("leave-room", packet, &[], 100).unwrap_err();
            assert_eq!(error.code(), "INVALID_PAYLOAD", "{packet:.40}");
            assert!(error.to_string().contains("not readable JSON"), "{error}");
        }
    }

    #[test]
    fn binary_attachments_keep_the_fields_around_them() {
        let packet = r#"["produce",{"kind":"video","appData":{"blob":{"_placeholder":true,"num":1},"b0":{"_placeholder":true,"num":0}}}]"#;
        let payload = read_payload("produce", packet, &[&[1, 2], &[3]], 100).unwrap().unwrap();
        assert_eq!(payload["kind"], "video");
        assert_eq!(payload["appData"]["blob"], json!([3]));
        assert_eq!(payload["appData"]["b0"], json!([1, 2]));
        // Without attachments a placeholder-looking object is plain JSON.
        let plain = read_payload("produce", packet, &[], 100).unwrap().unwrap();
        assert_eq!(plain["appData"]["blob"]["num"], 1);
    }

    #[test]
    fn a_placeholder_without_its_attachment_or_too_many_bytes_is_refused() {
        let packet = r#"["produce",{"blob":{"_placeholder":true,"num":5}}]"#;
        let error = read_payload("produce", packet, &[&[1]], 100).unwrap_err();
        assert_eq!(error.code(), "INVALID_PAYLOAD");
        let big = vec![0u8; 101];
        let error = read_payload("produce", packet, &[&big], 100).unwrap_err();
        assert_eq!(error.code(), "PAYLOAD_TOO_LARGE");
    }

    #[test]
    fn every_request_has_a_distinct_name() {
        let mut names: Vec<_> = REQUESTS.iter().map(|(name, _)| *name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REQUESTS.len());
    }
}
