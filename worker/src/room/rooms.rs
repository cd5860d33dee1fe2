//! The room graph itself: [`Rooms`] > [`Room`] > [`Peer`] > [`Transport`] > [`Producer`] /
//! [`Consumer`], and every request on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::WorkerStats;
use crate::video::{Layers, ScalabilityMode};
use crate::rtp::{
    ConsumerOptions, MediaKind, RtpCapabilities, RtpCodecCapability, RtpError, RtpMapping,
    RtpParameters, Ssrc, can_consume, consumable_parameters, consumer_parameters,
    default_media_codecs, producer_mapping, router_capabilities,
};

use super::data::{
    ConsumeDataOptions, DataConsumer, DataConsumerCreated, DataProducer, DataProducerCreated,
    DataProducerSummary, ProduceDataOptions, SctpCapabilities, SctpParameters, SctpStreamParameters,
    next_sctp_stream_id,
};
use super::error::RoomError;
use super::event::{ConsumerCloseReason, RoomEvent, TransportCloseCode};
use super::forwarding::ForwardingTable;
use super::ids::{ConsumerId, DataConsumerId, DataProducerId, IdGenerator, PeerId, ProducerId, RoomId, TransportId, check_id};
use super::quotas::{Quotas, json_size};
use super::transport::{
    Direction, DtlsConnection, DtlsParameters, DtlsRole, IceCandidate, IceParameters, Transport,
    TransportCreated, TransportNetwork,
};

/// The longest label or protocol a data producer may have, in bytes (a browser's own limit is
/// 65 535; these are shown to every peer of the room).
pub const MAX_DATA_LABEL_BYTES: usize = 1024;

/// Application data attached to a peer or producer: a JSON object the worker stores and hands
/// back but never reads (mediasoup's `appData`).
pub type AppData = serde_json::Map<String, serde_json::Value>;

/// Who a peer is, as signalling tells it from the peer's token (never from the peer itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// The user id from the token.
    #[serde(default)]
    pub user_id: String,
    /// The name to show to other participants.
    #[serde(default)]
    pub display_name: String,
    /// The user's role in the room (e.g. `teacher`); signalling enforces what it may do.
    #[serde(default)]
    pub role: String,
    /// Anything else the application wants other peers to see.
    #[serde(default)]
    pub app_data: AppData,
}

/// A peer as other peers see it: `{"peerId", "userId", "displayName", "role", "appData"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSummary {
    /// The peer's id in the room.
    pub peer_id: PeerId,
    /// Who it is.
    #[serde(flatten)]
    pub info: PeerInfo,
}

/// A producer as other peers see it, enough to decide whether and how to consume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProducerSummary {
    /// The producer's id, to pass to `consume`.
    pub producer_id: ProducerId,
    /// The producing peer.
    pub peer_id: PeerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The producer's application data (e.g. `{"source": "screen"}`).
    pub app_data: AppData,
    /// Whether the producer is paused right now.
    pub paused: bool,
}

/// The answer to `join`: what a mediasoup-client app needs to load its device and catch up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The room's router capabilities, for `device.load({routerRtpCapabilities})`.
    pub rtp_capabilities: RtpCapabilities,
    /// The other peers already in the room, in join order.
    pub peers: Vec<PeerSummary>,
    /// The other peers' producers, in creation order.
    pub producers: Vec<ProducerSummary>,
    /// The other peers' data producers, in creation order (for `consume-data`).
    #[serde(default)]
    pub data_producers: Vec<DataProducerSummary>,
}

/// A `produce` request: the body of `POST /v1/rooms/{room}/producers` minus the peer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceOptions {
    /// A send transport of the producing peer.
    pub transport_id: TransportId,
    /// Audio or video; every codec of `rtp_parameters` must be of this kind.
    pub kind: MediaKind,
    /// The parameters from mediasoup-client's `produce` event, unchanged.
    pub rtp_parameters: RtpParameters,
    /// Application data, shown to other peers.
    #[serde(default)]
    pub app_data: AppData,
    /// Start paused (mediasoup's `paused` option).
    #[serde(default)]
    pub paused: bool,
}

/// The answer to `produce`: `{"id": ...}`, what mediasoup-client's `produce` callback takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerCreated {
    /// The new producer's id.
    pub id: ProducerId,
}

/// A `consume` request: the body of `POST /v1/rooms/{room}/consumers` minus the peer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeOptions {
    /// A recv transport of the consuming peer.
    pub transport_id: TransportId,
    /// The producer to consume.
    pub producer_id: ProducerId,
    /// The consuming device's `device.rtpCapabilities`.
    pub rtp_capabilities: RtpCapabilities,
    /// Create the consumer paused; the usual pattern is paused, then resume once the client
    /// has set up its consumer, so that the first packet it gets is a keyframe.
    #[serde(default)]
    pub paused: bool,
}

/// mediasoup's consumer type, which follows the producer's encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerType {
    /// One encoding without spatial layers: every current browser's camera and microphone.
    Simple,
    /// Several encodings (simulcast).
    Simulcast,
    /// One encoding with several spatial layers (`L3T3`, ...).
    Svc,
}

impl ConsumerType {
    /// The type mediasoup gives consumers of a producer with these parameters
    /// (`RtpParameters::GetType`): several encodings are simulcast; one encoding with several
    /// spatial or temporal layers is SVC for VP9 and simulcast (of one stream, whose temporal
    /// layers can still be chosen) for VP8 and H264; anything else is simple.
    pub fn of_producer(parameters: &RtpParameters) -> ConsumerType {
        match parameters.encodings.as_slice() {
            [single] => {
                let mode = ScalabilityMode::parse(single.scalability_mode.as_deref());
                if mode.spatial_layers <= 1 && mode.temporal_layers <= 1 {
                    return ConsumerType::Simple;
                }
                let codec = parameters
                    .codecs
                    .iter()
                    .find(|c| single.codec_payload_type.is_none_or(|pt| pt == c.payload_type) && !c.mime_type.eq_ignore_ascii_case("video/rtx"))
                    .map(|c| c.mime_type.to_ascii_lowercase());
                match codec.as_deref() {
                    Some("video/vp9") => ConsumerType::Svc,
                    Some("video/vp8" | "video/h264") => ConsumerType::Simulcast,
                    _ => ConsumerType::Simple,
                }
            }
            [] => ConsumerType::Simple,
            _ => ConsumerType::Simulcast,
        }
    }
}

/// The spatial and temporal layer counts of a producer: its encodings (simulcast) or its one
/// encoding's spatial layers (SVC), and the temporal layers of its scalability mode.
pub fn producer_layers(parameters: &RtpParameters) -> (u8, u8) {
    let mode = ScalabilityMode::parse(parameters.encodings.first().and_then(|e| e.scalability_mode.as_deref()));
    let spatial = if parameters.encodings.len() > 1 {
        u8::try_from(parameters.encodings.len()).unwrap_or(u8::MAX)
    } else {
        mode.spatial_layers
    };
    (spatial.max(1), mode.temporal_layers.max(1))
}

/// The answer to `consume`: what mediasoup-client's `recvTransport.consume` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerCreated {
    /// The new consumer's id.
    pub id: ConsumerId,
    /// The consumed producer.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The consumer's parameters: one encoding with the worker's SSRC for it.
    pub rtp_parameters: RtpParameters,
    /// `simple` for ordinary producers.
    pub r#type: ConsumerType,
    /// Whether the producer is paused right now.
    pub producer_paused: bool,
}

/// A participant of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id in the room.
    pub id: PeerId,
    /// Who it is.
    pub info: PeerInfo,
    seq: u64,
    /// Its summary's size in a room listing (bytes of JSON).
    listed_bytes: usize,
}

impl Peer {
    /// The peer as other peers see it.
    pub fn summary(&self) -> PeerSummary {
        PeerSummary {
            peer_id: self.id.clone(),
            info: self.info.clone(),
        }
    }
}

/// Media a peer sends into the room over one of its send transports.
#[derive(Debug, Clone, PartialEq)]
pub struct Producer {
    /// Its id.
    pub id: ProducerId,
    /// The producing peer.
    pub peer_id: PeerId,
    /// The send transport its packets arrive on.
    pub transport_id: TransportId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The parameters as the client sent them (its payload types and SSRCs).
    pub rtp_parameters: RtpParameters,
    /// How its payload types and SSRCs map onto the router's.
    pub rtp_mapping: RtpMapping,
    /// The producer in router terms; every consumer's parameters derive from it.
    pub consumable_parameters: RtpParameters,
    /// Whether it is paused (its consumers then receive nothing).
    pub paused: bool,
    /// Application data.
    pub app_data: AppData,
    seq: u64,
    /// Its summary's size in a room listing (bytes of JSON), as if unpaused (the longer).
    listed_bytes: usize,
}

impl Producer {
    /// The producer as other peers see it.
    pub fn summary(&self) -> ProducerSummary {
        ProducerSummary {
            producer_id: self.id.clone(),
            peer_id: self.peer_id.clone(),
            kind: self.kind,
            app_data: self.app_data.clone(),
            paused: self.paused,
        }
    }
}

/// One producer's media sent to one peer over one of its recv transports.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// Its id.
    pub id: ConsumerId,
    /// The consuming peer.
    pub peer_id: PeerId,
    /// The recv transport its packets leave on.
    pub transport_id: TransportId,
    /// The consumed producer.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// Its parameters: router payload types, one encoding with its own SSRC.
    pub rtp_parameters: RtpParameters,
    /// mediasoup's consumer type.
    pub r#type: ConsumerType,
    /// Paused by its peer (stays so until resumed, also when created paused).
    pub paused: bool,
    /// Its producer is paused.
    pub producer_paused: bool,
    /// The layers its app prefers (`setPreferredLayers`); `None` for the highest. Only
    /// simulcast and SVC consumers have layers to choose from.
    pub preferred_layers: Option<Layers>,
    /// Its claim on its transport's bandwidth next to the transport's other consumers: 1 (the
    /// default, as in mediasoup) to 255.
    pub priority: u8,
    seq: u64,
}

impl Consumer {
    /// True when media flows to it: neither it nor its producer is paused.
    pub fn is_active(&self) -> bool {
        !self.paused && !self.producer_paused
    }
}

/// One room: mediasoup's Router plus the peers that joined it.
///
/// All objects live in flat maps keyed by id, with the relations as ids (mediasoup's Router
/// keeps its routing graph the same way), so a cascade is a few filtered removals and no
/// object can outlive its owner by a dangling pointer.
#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    /// Its id.
    pub id: RoomId,
    /// Its router capabilities, fixed at creation.
    pub rtp_capabilities: RtpCapabilities,
    peers: BTreeMap<PeerId, Peer>,
    transports: BTreeMap<TransportId, Transport>,
    producers: BTreeMap<ProducerId, Producer>,
    consumers: BTreeMap<ConsumerId, Consumer>,
    data_producers: BTreeMap<DataProducerId, DataProducer>,
    data_consumers: BTreeMap<DataConsumerId, DataConsumer>,
    /// Creation counter: lists come out in creation order whatever ids the generator gives.
    next_seq: u64,
    /// How long the room stays open without peers, when it says so itself (the Room
    /// object's `spec.emptyTimeoutSeconds`); otherwise the worker's default.
    empty_timeout: Option<Duration>,
    /// Since when [`Rooms::close_empty_rooms`] has seen it without peers; `None` while it
    /// has peers, and again after every join and every `ensure_room`.
    empty_since: Option<Instant>,
}

/// Collects the ids of the selected objects in creation order.
fn ids_in_order<'a, K: Clone + 'a, V: 'a>(
    objects: impl Iterator<Item = (&'a K, &'a V)>,
    seq: impl Fn(&V) -> u64,
) -> Vec<K> {
    let mut selected: Vec<(u64, K)> = objects
        .map(|(id, object)| (seq(object), id.clone()))
        .collect();
    selected.sort_by_key(|(seq, _)| *seq);
    selected.into_iter().map(|(_, id)| id).collect()
}

fn in_order<'a, V>(objects: impl Iterator<Item = &'a V>, seq: impl Fn(&V) -> u64) -> Vec<&'a V> {
    let mut selected: Vec<&V> = objects.collect();
    selected.sort_by_key(|object| seq(object));
    selected
}

impl Room {
    fn new(id: RoomId, rtp_capabilities: RtpCapabilities) -> Self {
        Room {
            id,
            rtp_capabilities,
            peers: BTreeMap::new(),
            transports: BTreeMap::new(),
            producers: BTreeMap::new(),
            consumers: BTreeMap::new(),
            data_producers: BTreeMap::new(),
            data_consumers: BTreeMap::new(),
            next_seq: 0,
            empty_timeout: None,
            empty_since: None,
        }
    }

    /// The bytes of JSON its listing (peers and producers, what a joiner receives) takes.
    fn listing_bytes(&self) -> usize {
        let peers = self.peers.values().map(|peer| peer.listed_bytes);
        let producers = self.producers.values().map(|producer| producer.listed_bytes);
        peers.chain(producers).fold(0, usize::saturating_add)
    }

    /// Refuses what would take the room's listing past `quotas.room_listing_bytes`.
    fn check_listing_room(&self, more: usize, quotas: &Quotas) -> Result<(), RoomError> {
        if self.listing_bytes().saturating_add(more) > quotas.room_listing_bytes {
            return Err(RoomError::RoomFull {
                room: self.id.clone(),
                limit: quotas.room_listing_bytes,
            });
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A peer by id.
    pub fn peer(&self, id: &PeerId) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// A transport by id.
    pub fn transport(&self, id: &TransportId) -> Option<&Transport> {
        self.transports.get(id)
    }

    /// A producer by id.
    pub fn producer(&self, id: &ProducerId) -> Option<&Producer> {
        self.producers.get(id)
    }

    /// A consumer by id.
    pub fn consumer(&self, id: &ConsumerId) -> Option<&Consumer> {
        self.consumers.get(id)
    }

    /// The peers, in join order.
    pub fn peers(&self) -> Vec<&Peer> {
        in_order(self.peers.values(), |peer| peer.seq)
    }

    /// The transports, in creation order.
    pub fn transports(&self) -> Vec<&Transport> {
        in_order(self.transports.values(), |transport| transport.seq)
    }

    /// The producers, in creation order.
    pub fn producers(&self) -> Vec<&Producer> {
        in_order(self.producers.values(), |producer| producer.seq)
    }

    /// The consumers, in creation order.
    pub fn consumers(&self) -> Vec<&Consumer> {
        in_order(self.consumers.values(), |consumer| consumer.seq)
    }

    /// The data producers, in creation order.
    pub fn data_producers(&self) -> Vec<&DataProducer> {
        in_order(self.data_producers.values(), |p| p.seq)
    }

    /// The data consumers, in creation order.
    pub fn data_consumers(&self) -> Vec<&DataConsumer> {
        in_order(self.data_consumers.values(), |c| c.seq)
    }

    /// A data producer by id.
    pub fn data_producer(&self, id: &DataProducerId) -> Option<&DataProducer> {
        self.data_producers.get(id)
    }

    /// A data consumer by id.
    pub fn data_consumer(&self, id: &DataConsumerId) -> Option<&DataConsumer> {
        self.data_consumers.get(id)
    }

    fn close_data_consumer(&mut self, id: &DataConsumerId, reason: ConsumerCloseReason, events: &mut Vec<RoomEvent>) {
        if let Some(consumer) = self.data_consumers.remove(id) {
            events.push(RoomEvent::DataConsumerClosed {
                data_consumer_id: consumer.id,
                peer_id: consumer.peer_id,
                data_producer_id: consumer.data_producer_id,
                reason,
            });
        }
    }

    fn close_data_producer(&mut self, id: &DataProducerId, events: &mut Vec<RoomEvent>) {
        let consumers = ids_in_order(self.data_consumers.iter().filter(|(_, c)| c.data_producer_id == *id), |c| c.seq);
        for consumer_id in consumers {
            self.close_data_consumer(&consumer_id, ConsumerCloseReason::ProducerClosed, events);
        }
        if let Some(producer) = self.data_producers.remove(id) {
            events.push(RoomEvent::DataProducerClosed { data_producer_id: producer.id, peer_id: producer.peer_id });
        }
    }

    /// The consumers of one producer, in creation order.
    pub fn consumers_of(&self, producer_id: &ProducerId) -> Vec<&Consumer> {
        in_order(
            self.consumers
                .values()
                .filter(|consumer| consumer.producer_id == *producer_id),
            |consumer| consumer.seq,
        )
    }

    fn require_peer(&self, peer_id: &PeerId) -> Result<&Peer, RoomError> {
        self.peers
            .get(peer_id)
            .ok_or_else(|| RoomError::PeerNotFound {
                room: self.id.clone(),
                peer: peer_id.clone(),
            })
    }

    fn transport_not_found(&self, transport_id: &TransportId) -> RoomError {
        RoomError::TransportNotFound {
            room: self.id.clone(),
            transport: transport_id.clone(),
        }
    }

    /// A transport that must belong to `peer_id` and go the `needed` way for `action`.
    fn require_transport_for(
        &self,
        peer_id: &PeerId,
        transport_id: &TransportId,
        needed: Direction,
        action: &'static str,
    ) -> Result<&Transport, RoomError> {
        self.require_peer(peer_id)?;
        // Another peer's transport is reported as unknown: its existence is none of this
        // peer's business.
        let transport = self
            .transports
            .get(transport_id)
            .filter(|transport| transport.peer_id == *peer_id)
            .ok_or_else(|| self.transport_not_found(transport_id))?;
        if transport.direction != needed {
            return Err(RoomError::TransportDirectionMismatch {
                transport: transport_id.clone(),
                actual: transport.direction,
                needed,
                action,
            });
        }
        Ok(transport)
    }

    fn require_producer(&self, producer_id: &ProducerId) -> Result<&Producer, RoomError> {
        self.producers
            .get(producer_id)
            .ok_or_else(|| RoomError::ProducerNotFound {
                room: self.id.clone(),
                producer: producer_id.clone(),
            })
    }

    fn consumer_not_found(&self, consumer_id: &ConsumerId) -> RoomError {
        RoomError::ConsumerNotFound {
            room: self.id.clone(),
            consumer: consumer_id.clone(),
        }
    }

    /// Refuses a producer whose SSRCs or `mid` another producer on the same transport already
    /// uses: the media plane tells a transport's incoming streams apart by them (mediasoup's
    /// `RtpListener` refuses the same).
    fn check_streams_free(
        &self,
        transport_id: &TransportId,
        parameters: &RtpParameters,
    ) -> Result<(), RoomError> {
        for other in self
            .producers
            .values()
            .filter(|producer| producer.transport_id == *transport_id)
        {
            if parameters.mid.is_some() && parameters.mid == other.rtp_parameters.mid {
                return Err(RtpError::InvalidRtpParameters(format!(
                    "mid {:?} is already used by producer {} on this transport; each producer \
                     needs its own m-section",
                    parameters.mid.as_deref().unwrap_or_default(),
                    other.id
                ))
                .into());
            }
            let taken = stream_ssrcs(&other.rtp_parameters);
            if let Some(ssrc) = stream_ssrcs(parameters)
                .into_iter()
                .find(|ssrc| taken.contains(ssrc))
            {
                return Err(RtpError::InvalidRtpParameters(format!(
                    "SSRC {ssrc} is already used by producer {} on this transport",
                    other.id
                ))
                .into());
            }
        }
        Ok(())
    }

    fn close_consumer(
        &mut self,
        consumer_id: &ConsumerId,
        reason: ConsumerCloseReason,
        events: &mut Vec<RoomEvent>,
    ) {
        if let Some(consumer) = self.consumers.remove(consumer_id) {
            events.push(RoomEvent::ConsumerClosed {
                consumer_id: consumer.id,
                peer_id: consumer.peer_id,
                producer_id: consumer.producer_id,
                reason,
            });
        }
    }

    fn close_producer(&mut self, producer_id: &ProducerId, events: &mut Vec<RoomEvent>) {
        let consumers = ids_in_order(
            self.consumers
                .iter()
                .filter(|(_, consumer)| consumer.producer_id == *producer_id),
            |consumer| consumer.seq,
        );
        for consumer_id in consumers {
            self.close_consumer(&consumer_id, ConsumerCloseReason::ProducerClosed, events);
        }
        if let Some(producer) = self.producers.remove(producer_id) {
            events.push(RoomEvent::ProducerClosed {
                producer_id: producer.id,
                peer_id: producer.peer_id,
            });
        }
    }

    fn close_transport(
        &mut self,
        transport_id: &TransportId,
        code: TransportCloseCode,
        reason: &str,
        events: &mut Vec<RoomEvent>,
    ) {
        // Consumers first, so that one consuming a producer of this same transport closes for
        // the transport (as mediasoup's `transportclose` comes before `producerclose`).
        let consumers = ids_in_order(
            self.consumers
                .iter()
                .filter(|(_, consumer)| consumer.transport_id == *transport_id),
            |consumer| consumer.seq,
        );
        for consumer_id in consumers {
            self.close_consumer(&consumer_id, ConsumerCloseReason::TransportClosed, events);
        }
        let data_consumers =
            ids_in_order(self.data_consumers.iter().filter(|(_, c)| c.transport_id == *transport_id), |c| c.seq);
        for consumer_id in data_consumers {
            self.close_data_consumer(&consumer_id, ConsumerCloseReason::TransportClosed, events);
        }
        let data_producers =
            ids_in_order(self.data_producers.iter().filter(|(_, p)| p.transport_id == *transport_id), |p| p.seq);
        for producer_id in data_producers {
            self.close_data_producer(&producer_id, events);
        }
        let producers = ids_in_order(
            self.producers
                .iter()
                .filter(|(_, producer)| producer.transport_id == *transport_id),
            |producer| producer.seq,
        );
        for producer_id in producers {
            self.close_producer(&producer_id, events);
        }
        if let Some(transport) = self.transports.remove(transport_id) {
            events.push(RoomEvent::TransportClosed {
                transport_id: transport.id,
                peer_id: transport.peer_id,
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Removes a peer; its transports close with `code` (its leaving, or its room closing).
    fn remove_peer(
        &mut self,
        peer_id: &PeerId,
        code: TransportCloseCode,
        events: &mut Vec<RoomEvent>,
    ) {
        let transports = ids_in_order(
            self.transports
                .iter()
                .filter(|(_, transport)| transport.peer_id == *peer_id),
            |transport| transport.seq,
        );
        for transport_id in transports {
            self.close_transport(&transport_id, code, code.describe(), events);
        }
        if self.peers.remove(peer_id).is_some() {
            events.push(RoomEvent::PeerLeft {
                peer_id: peer_id.clone(),
            });
        }
    }

    /// Closes the room: every peer leaves, its transports closing with `code` (the room
    /// closing, or the worker shutting down).
    fn close(&mut self, code: TransportCloseCode, events: &mut Vec<RoomEvent>) {
        let peers = ids_in_order(self.peers.iter(), |peer| peer.seq);
        for peer_id in peers {
            self.remove_peer(&peer_id, code, events);
        }
        events.push(RoomEvent::RoomClosed {
            room_id: self.id.clone(),
        });
    }
}

/// Every SSRC a producer's parameters announce: media and RTX of each encoding.
fn stream_ssrcs(parameters: &RtpParameters) -> Vec<Ssrc> {
    parameters
        .encodings
        .iter()
        .flat_map(|encoding| [encoding.ssrc, encoding.rtx.map(|rtx| rtx.ssrc)])
        .flatten()
        .collect()
}

fn room_mut<'a>(
    rooms: &'a mut BTreeMap<RoomId, Room>,
    room_id: &RoomId,
) -> Result<&'a mut Room, RoomError> {
    rooms
        .get_mut(room_id)
        .ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))
}

/// Every room of one worker, and the only way to change them.
///
/// Each method checks the whole request before it changes anything, so an error leaves every
/// object as it was. Changes other parties must hear about go into an outbox the caller empties
/// with [`Rooms::drain_events`] after each call.
pub struct Rooms {
    rooms: BTreeMap<RoomId, Room>,
    ids: Box<dyn IdGenerator + Send>,
    events: Vec<(RoomId, RoomEvent)>,
    quotas: Quotas,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("rooms", &self.rooms)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Rooms {
    /// No rooms yet; new ids and SSRCs come from `ids`; the default [`Quotas`].
    pub fn new(ids: impl IdGenerator + Send + 'static) -> Self {
        Rooms::with_quotas(ids, Quotas::default())
    }

    /// [`Rooms::new`] with these quotas.
    pub fn with_quotas(ids: impl IdGenerator + Send + 'static, quotas: Quotas) -> Self {
        Rooms {
            rooms: BTreeMap::new(),
            ids: Box::new(ids),
            events: Vec::new(),
            quotas,
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Takes the events of the calls since the last drain, oldest first, each with its room.
    pub fn drain_events(&mut self) -> Vec<(RoomId, RoomEvent)> {
        std::mem::take(&mut self.events)
    }

    fn emit(&mut self, room_id: &RoomId, events: Vec<RoomEvent>) {
        self.events
            .extend(events.into_iter().map(|event| (room_id.clone(), event)));
    }

    /// A room by id.
    pub fn room(&self, room_id: &RoomId) -> Option<&Room> {
        self.rooms.get(room_id)
    }

    /// All rooms, by id.
    pub fn rooms(&self) -> impl Iterator<Item = &Room> {
        self.rooms.values()
    }

    /// Opens a room (`PUT /v1/rooms/{room}`) and returns its router capabilities.
    ///
    /// Idempotent: for an open room it returns the capabilities the room was created with and
    /// ignores `media_codecs`, since a router's codecs cannot change under peers that loaded
    /// them. An empty `media_codecs` means [`default_media_codecs`].
    pub fn ensure_room(
        &mut self,
        room_id: &RoomId,
        media_codecs: &[RtpCodecCapability],
    ) -> Result<RtpCapabilities, RoomError> {
        self.ensure_room_with(room_id, media_codecs, None)
    }

    /// [`Rooms::ensure_room`] that also sets how long the room stays open without peers
    /// (`Some`: this room's own timeout, kept until the next `Some`; `None`: unchanged, the
    /// worker's default for a new room). Either way the room's empty time starts afresh, so
    /// a room opened for a join that is about to follow is not closed under it.
    pub fn ensure_room_with(
        &mut self,
        room_id: &RoomId,
        media_codecs: &[RtpCodecCapability],
        empty_timeout: Option<Duration>,
    ) -> Result<RtpCapabilities, RoomError> {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.empty_since = None;
            if empty_timeout.is_some() {
                room.empty_timeout = empty_timeout;
            }
            return Ok(room.rtp_capabilities.clone());
        }
        check_id("room", room_id.as_str()).map_err(RoomError::InvalidId)?;
        let capabilities = if media_codecs.is_empty() {
            router_capabilities(&default_media_codecs())?
        } else {
            router_capabilities(media_codecs)?
        };
        let mut room = Room::new(room_id.clone(), capabilities.clone());
        room.empty_timeout = empty_timeout;
        self.rooms.insert(room_id.clone(), room);
        Ok(capabilities)
    }

    /// Closes every room that has been without peers for its empty timeout (its own, else
    /// [`Quotas::empty_room_timeout`]) as [`Rooms::close_room`] does, and returns their ids.
    ///
    /// The caller calls this every so often with the current time. A room's empty time
    /// starts at the first call that finds it without peers (so it is closed between one
    /// timeout and one timeout plus the calling interval after its last peer left), and
    /// starts afresh after a join or an `ensure_room`, so a peer that came and went between
    /// two calls does not shorten it.
    pub fn close_empty_rooms(&mut self, now: Instant) -> Vec<RoomId> {
        let default = self.quotas.empty_room_timeout;
        let mut expired = Vec::new();
        for room in self.rooms.values_mut() {
            if !room.peers.is_empty() {
                room.empty_since = None;
                continue;
            }
            let since = *room.empty_since.get_or_insert(now);
            let timeout = room.empty_timeout.unwrap_or(default);
            if now.saturating_duration_since(since) >= timeout {
                expired.push(room.id.clone());
            }
        }
        for room_id in &expired {
            // Listed just above, so it is open.
            let _ = self.close_room(room_id);
        }
        expired
    }

    /// Closes a room (`DELETE /v1/rooms/{room}`): every peer leaves as in [`Rooms::leave`],
    /// then `roomClosed`. Its transports close with code `ROOM_CLOSED`.
    pub fn close_room(&mut self, room_id: &RoomId) -> Result<(), RoomError> {
        self.close_room_for(room_id, TransportCloseCode::RoomClosed)
    }

    /// [`Rooms::close_room`] with the code its transports close with (`WORKER_SHUTDOWN` when
    /// the worker stops).
    pub fn close_room_for(
        &mut self,
        room_id: &RoomId,
        code: TransportCloseCode,
    ) -> Result<(), RoomError> {
        let mut room = self
            .rooms
            .remove(room_id)
            .ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))?;
        let mut events = Vec::new();
        room.close(code, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Adds a peer to a room and tells it what is already there: the router capabilities, the
    /// other peers and their producers. Emits `peerJoined`.
    ///
    /// Joining again with a joined peer id is refused (`PEER_ALREADY_JOINED`) rather than
    /// treated as a no-op: a second session under the same id (a second tab, a reconnect that
    /// skipped `leave`) would otherwise share and silently take over the first one's
    /// transports. A client that reconnects leaves first.
    pub fn join(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        info: PeerInfo,
    ) -> Result<JoinResponse, RoomError> {
        let quotas = self.quotas;
        let room = room_mut(&mut self.rooms, room_id)?;
        check_id("peer", peer_id.as_str()).map_err(RoomError::InvalidId)?;
        if room.peers.contains_key(peer_id) {
            return Err(RoomError::PeerAlreadyJoined {
                room: room_id.clone(),
                peer: peer_id.clone(),
            });
        }
        let info_size = json_size(&info);
        if info_size > quotas.peer_info_bytes {
            return Err(RoomError::PeerInfoTooLarge {
                size: info_size,
                limit: quotas.peer_info_bytes,
            });
        }
        let summary = PeerSummary {
            peer_id: peer_id.clone(),
            info,
        };
        // + 1: the comma between entries.
        let listed_bytes = json_size(&summary) + 1;
        room.check_listing_room(listed_bytes, &quotas)?;
        // The new peer is not in the maps yet, so everything listed belongs to others.
        let response = JoinResponse {
            rtp_capabilities: room.rtp_capabilities.clone(),
            peers: room.peers().into_iter().map(Peer::summary).collect(),
            producers: room
                .producers()
                .into_iter()
                .map(Producer::summary)
                .collect(),
            data_producers: room.data_producers().into_iter().map(DataProducer::summary).collect(),
        };
        let seq = room.next_seq();
        room.empty_since = None;
        let peer = Peer {
            id: peer_id.clone(),
            info: summary.info,
            seq,
            listed_bytes,
        };
        let joined = RoomEvent::PeerJoined(peer.summary());
        room.peers.insert(peer_id.clone(), peer);
        self.emit(room_id, vec![joined]);
        Ok(response)
    }

    /// Removes a peer (`DELETE /v1/rooms/{room}/peers/{peer}`): closes its transports, with
    /// their producers and consumers, then emits `peerLeft`.
    pub fn leave(&mut self, room_id: &RoomId, peer_id: &PeerId) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        room.require_peer(peer_id)?;
        let mut events = Vec::new();
        room.remove_peer(peer_id, TransportCloseCode::PeerLeft, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Records a new transport of a peer, with the ICE credentials, addresses and certificate
    /// fingerprints the media plane chose for it, and returns what mediasoup-client needs.
    ///
    /// A peer may have several transports of each direction (mediasoup-client apps sometimes
    /// do); `produce` and `consume` check the direction.
    pub fn create_transport(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        direction: Direction,
        network: TransportNetwork,
    ) -> Result<TransportCreated, RoomError> {
        self.create_transport_with(room_id, peer_id, direction, |_| Ok(network))
    }

    /// [`Rooms::create_transport`] for a media plane that needs the transport's id before it
    /// can open it: checks the request, draws the id, then asks `open` for the network
    /// parameters of that id.
    ///
    /// Every check comes before the id is drawn, so a refused request never reaches `open`.
    /// When `open` fails (no free port, the engine is shutting down) nothing is created and
    /// its error is returned; the drawn id is simply never used.
    pub fn create_transport_with<E: From<RoomError>>(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        direction: Direction,
        open: impl FnOnce(&TransportId) -> Result<TransportNetwork, E>,
    ) -> Result<TransportCreated, E> {
        let room = room_mut(&mut self.rooms, room_id)?;
        room.require_peer(peer_id)?;
        let limit = self.quotas.transports_per_peer;
        let held = room.transports.values().filter(|t| t.peer_id == *peer_id).count();
        if held >= limit {
            return Err(RoomError::TooManyTransports {
                peer: peer_id.clone(),
                limit,
            }
            .into());
        }
        let id = self.ids.transport_id();
        let network = open(&id)?;
        let seq = room.next_seq();
        let transport = Transport {
            id: id.clone(),
            peer_id: peer_id.clone(),
            direction,
            ice_parameters: IceParameters {
                username_fragment: network.ice_username_fragment,
                password: network.ice_password,
                ice_lite: true,
            },
            ice_candidates: network
                .addresses
                .iter()
                .enumerate()
                .map(|(index, address)| IceCandidate::host(address, index))
                .collect(),
            local_dtls: DtlsParameters {
                role: DtlsRole::Auto,
                fingerprints: network.fingerprints,
            },
            dtls: None,
            next_consumer_mid: 0,
            sctp: None,
            next_sctp_stream_id: 0,
            producer_cname: None,
            seq,
        };
        let created = transport.created();
        room.transports.insert(id, transport);
        Ok(created)
    }

    /// Takes the client's DTLS parameters (`connect`), once per transport, and returns the
    /// role the worker must play in the handshake (see [`DtlsRole::local_role_for`]).
    pub fn connect_transport(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<DtlsRole, RoomError> {
        self.connect_transport_with(room_id, transport_id, dtls_parameters, |_, _| Ok(()))
    }

    /// [`Rooms::connect_transport`] that hands the checked parameters and the worker's role to
    /// `connect` (the media plane starting its handshake) before recording them; when
    /// `connect` fails the transport stays unconnected and its error is returned.
    pub fn connect_transport_with<E: From<RoomError>>(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        dtls_parameters: &DtlsParameters,
        connect: impl FnOnce(&DtlsParameters, DtlsRole) -> Result<(), E>,
    ) -> Result<DtlsRole, E> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.transport_not_found(transport_id);
        let transport = room.transports.get_mut(transport_id).ok_or(not_found)?;
        if transport.dtls.is_some() {
            return Err(RoomError::TransportAlreadyConnected(transport_id.clone()).into());
        }
        let remote = dtls_parameters.validated()?;
        let local_role = DtlsRole::local_role_for(remote.role);
        connect(&remote, local_role)?;
        transport.dtls = Some(DtlsConnection { remote, local_role });
        Ok(local_role)
    }

    /// Replaces a transport's ICE credentials with new ones from the media plane
    /// (`restart-ice`) and returns the parameters for mediasoup-client's `restartIce`.
    pub fn restart_ice(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        username_fragment: String,
        password: String,
    ) -> Result<IceParameters, RoomError> {
        self.restart_ice_with(room_id, transport_id, || Ok((username_fragment, password)))
    }

    /// [`Rooms::restart_ice`] for a media plane that draws the new credentials itself:
    /// `fresh` is asked for `(usernameFragment, password)` only once the transport is known
    /// to exist, and when it fails the old credentials stay.
    pub fn restart_ice_with<E: From<RoomError>>(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        fresh: impl FnOnce() -> Result<(String, String), E>,
    ) -> Result<IceParameters, E> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.transport_not_found(transport_id);
        let transport = room.transports.get_mut(transport_id).ok_or(not_found)?;
        let (username_fragment, password) = fresh()?;
        transport.ice_parameters = IceParameters {
            username_fragment,
            password,
            ice_lite: true,
        };
        Ok(transport.ice_parameters.clone())
    }

    /// Closes a transport with its producers and consumers (see the module's cascade table),
    /// on request: its event has code `REQUESTED`.
    pub fn close_transport(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
    ) -> Result<(), RoomError> {
        let code = TransportCloseCode::Requested;
        self.close_transport_for(room_id, transport_id, code, code.describe())
    }

    /// [`Rooms::close_transport`] for a close that was not requested (the media plane's: ICE
    /// or DTLS), with the code and sentence its event carries.
    pub fn close_transport_for(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        code: TransportCloseCode,
        reason: &str,
    ) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        if !room.transports.contains_key(transport_id) {
            return Err(room.transport_not_found(transport_id));
        }
        let mut events = Vec::new();
        room.close_transport(transport_id, code, reason, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Creates a producer on a send transport of the peer. Emits `newProducer`.
    ///
    /// The parameters go through mediasoup's rules ([`producer_mapping`], which validates
    /// them first, then [`consumable_parameters`]); the mapped SSRCs start at a fresh SSRC
    /// from the id generator. Whether the peer's role may publish is signalling's decision,
    /// not checked here.
    pub fn produce(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ProduceOptions,
    ) -> Result<ProducerCreated, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        room.require_transport_for(peer_id, &options.transport_id, Direction::Send, "producing")?;
        let kind = options.kind;
        // A first mapping with a placeholder SSRC refuses bad parameters before anything is
        // drawn from the generator, so a refused request leaves no trace at all.
        producer_mapping(
            kind,
            &options.rtp_parameters,
            &room.rtp_capabilities,
            Ssrc(1),
        )?;
        room.check_streams_free(&options.transport_id, &options.rtp_parameters)?;
        let quotas = self.quotas;
        let held = room.producers.values().filter(|p| p.peer_id == *peer_id).count();
        if held >= quotas.producers_per_peer {
            return Err(RoomError::TooManyProducers {
                peer: peer_id.clone(),
                limit: quotas.producers_per_peer,
            });
        }
        let app_data_size = json_size(&options.app_data);
        if app_data_size > quotas.app_data_bytes {
            return Err(RoomError::AppDataTooLarge {
                size: app_data_size,
                limit: quotas.app_data_bytes,
            });
        }
        // Ids are drawn below, so the listed size counts a producer id of the longest kind.
        let listed_bytes = json_size(&ProducerSummary {
            producer_id: ProducerId("x".repeat(super::ids::MAX_ID_LEN)),
            peer_id: peer_id.clone(),
            kind,
            app_data: options.app_data.clone(),
            paused: false,
        }) + 1;
        room.check_listing_room(listed_bytes, &quotas)?;

        // One CNAME for all of the transport's producers, as mediasoup has it: Chrome's
        // simulcast parameters carry none (its offer has no SSRC lines to read one from), and
        // a consumer without one cannot be set up (mediasoup-client's `a=msid` needs it).
        let mut options = options;
        if let Some(transport) = room.transports.get_mut(&options.transport_id) {
            let given = options.rtp_parameters.rtcp.cname.clone().filter(|cname| !cname.is_empty());
            let cname = transport
                .producer_cname
                .get_or_insert_with(|| given.unwrap_or_else(|| transport.id.as_str().chars().filter(char::is_ascii_alphanumeric).take(16).collect()))
                .clone();
            options.rtp_parameters.rtcp.cname = Some(cname);
        }
        let first_mapped_ssrc = self.ids.ssrc();
        let rtp_mapping = producer_mapping(
            kind,
            &options.rtp_parameters,
            &room.rtp_capabilities,
            first_mapped_ssrc,
        )?;
        let consumable = consumable_parameters(
            kind,
            &options.rtp_parameters,
            &room.rtp_capabilities,
            &rtp_mapping,
        );
        let id = self.ids.producer_id();
        let seq = room.next_seq();
        let producer = Producer {
            id: id.clone(),
            peer_id: peer_id.clone(),
            transport_id: options.transport_id,
            kind,
            rtp_parameters: options.rtp_parameters,
            rtp_mapping,
            consumable_parameters: consumable,
            paused: options.paused,
            app_data: options.app_data,
            seq,
            listed_bytes,
        };
        let announced = RoomEvent::NewProducer {
            producer_id: id.clone(),
            peer_id: peer_id.clone(),
            kind,
            app_data: producer.app_data.clone(),
        };
        room.producers.insert(id.clone(), producer);
        self.emit(room_id, vec![announced]);
        Ok(ProducerCreated { id })
    }

    /// Creates a consumer of a producer on a recv transport of the peer.
    ///
    /// The device must be able to decode the producer ([`can_consume`], else `CANNOT_CONSUME`).
    /// The consumer gets one encoding with a fresh SSRC from the id generator (RTX, for video,
    /// on the next one), and the transport's next `mid`, as mediasoup does. A peer may consume
    /// its own producer, as in mediasoup. Created paused, it stays paused until resumed.
    pub fn consume(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ConsumeOptions,
    ) -> Result<ConsumerCreated, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let transport = room.require_transport_for(
            peer_id,
            &options.transport_id,
            Direction::Recv,
            "consuming",
        )?;
        let mid = transport.next_consumer_mid;
        let producer = room.require_producer(&options.producer_id)?;
        let limit = self.quotas.consumers_per_peer;
        let held = room.consumers.values().filter(|c| c.peer_id == *peer_id).count();
        if held >= limit {
            return Err(RoomError::TooManyConsumers {
                peer: peer_id.clone(),
                limit,
            });
        }
        let kind = producer.kind;
        let consumer_options = |ssrc| ConsumerOptions {
            mid: Some(mid.to_string()),
            ..ConsumerOptions::new(kind, ssrc)
        };
        // As in `produce`: refuse before drawing from the generator. This also reports
        // malformed capabilities as such rather than as "cannot consume".
        consumer_parameters(
            &producer.consumable_parameters,
            &options.rtp_capabilities,
            &consumer_options(Ssrc(1)),
        )?;
        if !can_consume(&producer.consumable_parameters, &options.rtp_capabilities) {
            return Err(RtpError::CannotConsume(format!(
                "the consuming device cannot decode producer {}; load the device with this \
                 room's router capabilities and pass device.rtpCapabilities",
                producer.id
            ))
            .into());
        }

        let ssrc = self.ids.ssrc();
        let rtp_parameters = consumer_parameters(
            &producer.consumable_parameters,
            &options.rtp_capabilities,
            &consumer_options(ssrc),
        )?;
        let consumer_type = ConsumerType::of_producer(&producer.consumable_parameters);
        let producer_paused = producer.paused;
        let id = self.ids.consumer_id();
        let seq = room.next_seq();
        let created = ConsumerCreated {
            id: id.clone(),
            producer_id: options.producer_id.clone(),
            kind,
            rtp_parameters: rtp_parameters.clone(),
            r#type: consumer_type,
            producer_paused,
        };
        room.consumers.insert(
            id.clone(),
            Consumer {
                id,
                peer_id: peer_id.clone(),
                transport_id: options.transport_id.clone(),
                producer_id: options.producer_id,
                kind,
                rtp_parameters,
                r#type: consumer_type,
                paused: options.paused,
                producer_paused,
                preferred_layers: None,
                priority: 1,
                seq,
            },
        );
        if let Some(transport) = room.transports.get_mut(&options.transport_id) {
            // mediasoup wraps its mid counter at 100 000 000 too.
            transport.next_consumer_mid = (mid + 1) % 100_000_000;
        }
        Ok(created)
    }

    /// Pauses a producer; its consumers receive nothing until it resumes. Emits
    /// `producerPaused`, unless it was paused already (then nothing changes).
    pub fn pause_producer(
        &mut self,
        room_id: &RoomId,
        producer_id: &ProducerId,
    ) -> Result<(), RoomError> {
        self.set_producer_paused(room_id, producer_id, true)
    }

    /// Resumes a producer. Emits `producerResumed`, unless it was not paused.
    pub fn resume_producer(
        &mut self,
        room_id: &RoomId,
        producer_id: &ProducerId,
    ) -> Result<(), RoomError> {
        self.set_producer_paused(room_id, producer_id, false)
    }

    fn set_producer_paused(
        &mut self,
        room_id: &RoomId,
        producer_id: &ProducerId,
        paused: bool,
    ) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let producer = room.require_producer(producer_id)?;
        if producer.paused == paused {
            return Ok(());
        }
        let peer_id = producer.peer_id.clone();
        if let Some(producer) = room.producers.get_mut(producer_id) {
            producer.paused = paused;
        }
        for consumer in room
            .consumers
            .values_mut()
            .filter(|consumer| consumer.producer_id == *producer_id)
        {
            consumer.producer_paused = paused;
        }
        let producer_id = producer_id.clone();
        let event = if paused {
            RoomEvent::ProducerPaused {
                producer_id,
                peer_id,
            }
        } else {
            RoomEvent::ProducerResumed {
                producer_id,
                peer_id,
            }
        };
        self.emit(room_id, vec![event]);
        Ok(())
    }

    /// Closes a producer and every consumer of it (each with a `consumerClosed` event, reason
    /// `producerClosed`), then emits `producerClosed`.
    pub fn close_producer(
        &mut self,
        room_id: &RoomId,
        producer_id: &ProducerId,
    ) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        room.require_producer(producer_id)?;
        let mut events = Vec::new();
        room.close_producer(producer_id, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Pauses a consumer: it receives nothing until resumed. No event (its own peer asked).
    pub fn pause_consumer(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
    ) -> Result<(), RoomError> {
        self.set_consumer_paused(room_id, consumer_id, true)
    }

    /// Resumes a consumer. The media plane should ask the producer for a keyframe.
    pub fn resume_consumer(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
    ) -> Result<(), RoomError> {
        self.set_consumer_paused(room_id, consumer_id, false)
    }

    fn set_consumer_paused(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
        paused: bool,
    ) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.consumer_not_found(consumer_id);
        let consumer = room.consumers.get_mut(consumer_id).ok_or(not_found)?;
        consumer.paused = paused;
        Ok(())
    }

    /// Sets the layers a simulcast or SVC consumer's app prefers (mediasoup's
    /// `setPreferredLayers`) and returns them as kept: clamped to the layers the producer has
    /// (a temporal layer of `None` means its highest). The media plane moves the consumer to
    /// them if the producer sends them and the downlink allows; a consumer of a producer
    /// without layers keeps them but has nothing to choose. No event: its own peer asked.
    pub fn set_consumer_preferred_layers(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
        spatial_layer: u8,
        temporal_layer: Option<u8>,
    ) -> Result<Layers, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.consumer_not_found(consumer_id);
        let consumer = room.consumers.get(consumer_id).ok_or(not_found)?;
        let (spatial_layers, temporal_layers) = room
            .producers
            .get(&consumer.producer_id)
            .map(|producer| producer_layers(&producer.consumable_parameters))
            .unwrap_or((1, 1));
        let layers = Layers::new(
            spatial_layer.min(spatial_layers - 1),
            temporal_layer.unwrap_or(u8::MAX).min(temporal_layers - 1),
        );
        if let Some(consumer) = room.consumers.get_mut(consumer_id) {
            consumer.preferred_layers = Some(layers);
        }
        Ok(layers)
    }

    /// Sets a consumer's priority (1-255, else `INVALID_PRIORITY`): the share of its
    /// transport's estimated bandwidth it gets against the transport's other consumers.
    pub fn set_consumer_priority(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
        priority: u32,
    ) -> Result<u8, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.consumer_not_found(consumer_id);
        let consumer = room.consumers.get_mut(consumer_id).ok_or(not_found)?;
        let priority = u8::try_from(priority)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or(RoomError::InvalidPriority(priority))?;
        consumer.priority = priority;
        Ok(priority)
    }

    /// Closes a consumer. Emits `consumerClosed` with reason `requested`.
    pub fn close_consumer(
        &mut self,
        room_id: &RoomId,
        consumer_id: &ConsumerId,
    ) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        if !room.consumers.contains_key(consumer_id) {
            return Err(room.consumer_not_found(consumer_id));
        }
        let mut events = Vec::new();
        room.close_consumer(consumer_id, ConsumerCloseReason::Requested, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Enables SCTP on a transport just created (its `sctpCapabilities` came with the
    /// request) and returns the `sctpParameters` for its answer: the worker's stream counts
    /// and message size (as mediasoup answers with its own `numSctpStreams`, whatever the
    /// client's capabilities; those only say the client takes them).
    pub fn enable_sctp(
        &mut self,
        room_id: &RoomId,
        transport_id: &TransportId,
        _capabilities: &SctpCapabilities,
        parameters: SctpParameters,
    ) -> Result<SctpParameters, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let not_found = room.transport_not_found(transport_id);
        let transport = room.transports.get_mut(transport_id).ok_or(not_found)?;
        transport.sctp = Some(parameters);
        Ok(parameters)
    }

    /// Creates a DataProducer on a send transport of the peer with SCTP: the client sends
    /// its messages on `sctpStreamParameters.streamId`, which no other DataProducer of the
    /// transport may use. Emits `newDataProducer`.
    pub fn produce_data(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ProduceDataOptions,
    ) -> Result<DataProducerCreated, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let transport = room.require_transport_for(peer_id, &options.transport_id, Direction::Send, "producing data")?;
        let sctp = transport.sctp.ok_or_else(|| RoomError::SctpNotEnabled(options.transport_id.clone()))?;
        let parameters =
            options.sctp_stream_parameters.validated(sctp.mis).map_err(RoomError::InvalidSctpStreamParameters)?;
        if let Some(other) = room.data_producers.values().find(|p| {
            p.transport_id == options.transport_id && p.sctp_stream_parameters.stream_id == parameters.stream_id
        }) {
            return Err(RoomError::SctpStreamIdInUse {
                transport: options.transport_id.clone(),
                stream_id: parameters.stream_id,
                data_producer: other.id.clone(),
            });
        }
        let limit = self.quotas.producers_per_peer;
        if room.data_producers.values().filter(|p| p.peer_id == *peer_id).count() >= limit {
            return Err(RoomError::TooManyProducers { peer: peer_id.clone(), limit });
        }
        let label_limit = MAX_DATA_LABEL_BYTES;
        for (field, value) in [("label", &options.label), ("protocol", &options.protocol)] {
            if value.len() > label_limit {
                return Err(RoomError::DataLabelTooLong { field, size: value.len(), limit: label_limit });
            }
        }
        let size = json_size(&options.app_data);
        if size > self.quotas.app_data_bytes {
            return Err(RoomError::AppDataTooLarge { size, limit: self.quotas.app_data_bytes });
        }
        let id = self.ids.data_producer_id();
        let seq = room.next_seq();
        let producer = DataProducer {
            id: id.clone(),
            peer_id: peer_id.clone(),
            transport_id: options.transport_id,
            sctp_stream_parameters: parameters,
            label: options.label,
            protocol: options.protocol,
            app_data: options.app_data,
            seq,
        };
        let event = RoomEvent::NewDataProducer {
            data_producer_id: id.clone(),
            peer_id: peer_id.clone(),
            label: producer.label.clone(),
            protocol: producer.protocol.clone(),
            app_data: producer.app_data.clone(),
        };
        room.data_producers.insert(id.clone(), producer);
        self.emit(room_id, vec![event]);
        Ok(DataProducerCreated { id })
    }

    /// Creates a DataConsumer of a DataProducer on a recv transport of the peer with SCTP,
    /// on a stream id the worker picks ([`next_sctp_stream_id`]); it delivers as the
    /// DataProducer does unless the options say otherwise. A peer may consume its own data
    /// producer, as in mediasoup. No event: the consuming peer asked.
    pub fn consume_data(
        &mut self,
        room_id: &RoomId,
        peer_id: &PeerId,
        options: ConsumeDataOptions,
    ) -> Result<DataConsumerCreated, RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        let transport = room.require_transport_for(peer_id, &options.transport_id, Direction::Recv, "consuming data")?;
        let sctp = transport.sctp.ok_or_else(|| RoomError::SctpNotEnabled(options.transport_id.clone()))?;
        let next = transport.next_sctp_stream_id;
        let producer = room.data_producers.get(&options.data_producer_id).ok_or_else(|| RoomError::DataProducerNotFound {
            room: room_id.clone(),
            data_producer: options.data_producer_id.clone(),
        })?;
        let limit = self.quotas.consumers_per_peer;
        if room.data_consumers.values().filter(|c| c.peer_id == *peer_id).count() >= limit {
            return Err(RoomError::TooManyConsumers { peer: peer_id.clone(), limit });
        }
        let taken = |id: u16| {
            room.data_consumers
                .values()
                .any(|c| c.transport_id == options.transport_id && c.sctp_stream_parameters.stream_id == id)
        };
        let stream_id = next_sctp_stream_id(sctp.os, next, taken)
            .ok_or_else(|| RoomError::NoSctpStreamIdAvailable { transport: options.transport_id.clone(), streams: sctp.os })?;
        let inherited = producer.sctp_stream_parameters;
        let overridden = options.ordered.is_some() || options.max_packet_life_time.is_some() || options.max_retransmits.is_some();
        let wanted = if overridden {
            SctpStreamParameters {
                stream_id,
                ordered: options.ordered,
                max_packet_life_time: options.max_packet_life_time,
                max_retransmits: options.max_retransmits,
            }
        } else {
            SctpStreamParameters { stream_id, ..inherited }
        };
        let parameters = wanted.validated(sctp.os).map_err(RoomError::InvalidSctpStreamParameters)?;
        let created = DataConsumerCreated {
            id: self.ids.data_consumer_id(),
            data_producer_id: producer.id.clone(),
            sctp_stream_parameters: parameters,
            label: producer.label.clone(),
            protocol: producer.protocol.clone(),
            app_data: producer.app_data.clone(),
        };
        let seq = room.next_seq();
        room.data_consumers.insert(
            created.id.clone(),
            DataConsumer {
                id: created.id.clone(),
                peer_id: peer_id.clone(),
                transport_id: options.transport_id.clone(),
                data_producer_id: created.data_producer_id.clone(),
                sctp_stream_parameters: parameters,
                seq,
            },
        );
        if let Some(transport) = room.transports.get_mut(&options.transport_id) {
            transport.next_sctp_stream_id = ((u32::from(stream_id) + 1) % u32::from(sctp.os)) as u16;
        }
        Ok(created)
    }

    /// Closes a DataProducer and its DataConsumers (each `dataConsumerClosed`, reason
    /// `producerClosed`), then emits `dataProducerClosed`.
    pub fn close_data_producer(&mut self, room_id: &RoomId, id: &DataProducerId) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        if !room.data_producers.contains_key(id) {
            return Err(RoomError::DataProducerNotFound { room: room_id.clone(), data_producer: id.clone() });
        }
        let mut events = Vec::new();
        room.close_data_producer(id, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// Closes a DataConsumer. Emits `dataConsumerClosed` with reason `requested`.
    pub fn close_data_consumer(&mut self, room_id: &RoomId, id: &DataConsumerId) -> Result<(), RoomError> {
        let room = room_mut(&mut self.rooms, room_id)?;
        if !room.data_consumers.contains_key(id) {
            return Err(RoomError::DataConsumerNotFound { room: room_id.clone(), data_consumer: id.clone() });
        }
        let mut events = Vec::new();
        room.close_data_consumer(id, ConsumerCloseReason::Requested, &mut events);
        self.emit(room_id, events);
        Ok(())
    }

    /// The media plane's routing table for a room (see [`ForwardingTable`]).
    pub fn forwarding_table(&self, room_id: &RoomId) -> Result<ForwardingTable, RoomError> {
        self.rooms
            .get(room_id)
            .map(ForwardingTable::for_room)
            .ok_or_else(|| RoomError::RoomNotFound(room_id.clone()))
    }

    /// Counts for `GET /v1/stats`. Bitrates are the media plane's to fill in.
    pub fn stats(&self) -> WorkerStats {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut stats = WorkerStats {
            rooms: count(self.rooms.len()),
            ..WorkerStats::default()
        };
        for room in self.rooms.values() {
            stats.peers = stats.peers.saturating_add(count(room.peers.len()));
            stats.transports = stats
                .transports
                .saturating_add(count(room.transports.len()));
            stats.producers = stats.producers.saturating_add(count(room.producers.len()));
            stats.consumers = stats.consumers.saturating_add(count(room.consumers.len()));
        }
        stats
    }

    /// The graph alone (no generator, no outbox), for tests that check a refused request
    /// changed nothing.
    #[cfg(test)]
    pub(super) fn snapshot(&self) -> BTreeMap<RoomId, Room> {
        self.rooms.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_types_follow_mediasoups_rules() {
        let with = |mime: &str, modes: &[Option<&str>]| {
            let mut parameters = crate::testing::chrome_vp8_parameters();
            parameters.codecs[0].mime_type = mime.to_owned();
            parameters.encodings = modes
                .iter()
                .map(|m| crate::rtp::RtpEncodingParameters { scalability_mode: m.map(str::to_owned), ..Default::default() })
                .collect();
            ConsumerType::of_producer(&parameters)
        };
        assert_eq!(with("video/VP8", &[None]), ConsumerType::Simple);
        assert_eq!(with("video/VP8", &[Some("L1T1")]), ConsumerType::Simple);
        assert_eq!(with("video/VP8", &[Some("L1T3")]), ConsumerType::Simulcast);
        assert_eq!(with("video/H264", &[Some("L1T3")]), ConsumerType::Simulcast);
        assert_eq!(with("video/VP9", &[Some("L3T3_KEY")]), ConsumerType::Svc);
        assert_eq!(with("video/VP9", &[Some("L1T3")]), ConsumerType::Svc);
        assert_eq!(with("video/VP8", &[Some("L1T3"), Some("L1T3")]), ConsumerType::Simulcast);
        assert_eq!(with("audio/opus", &[Some("L1T3")]), ConsumerType::Simple);
    }
}
