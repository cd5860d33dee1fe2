//! What the media plane does with an RTP packet a producer sends: a flat table built from a
//! room, and the pure decision made with it.
//!
//! The table is keyed by the transport a packet arrives on and its SSRC. Each entry names the
//! producer stream and the consumers that receive it, each with the rewrite its packets need:
//! the consumer's SSRC (its RTX SSRC for the producer's RTX stream), payload types from the
//! producer's to the consumer's, header extension ids from the producer's to the consumer's
//! (extensions without a mapping are removed) and the consumer's `mid` for the MID extension.
//!
//! Rebuild the table with [`ForwardingTable::for_room`] after every change to the room; the
//! same room always gives the same table, so rebuilding is idempotent and there is no
//! incremental state to get wrong.
//!
//! Kept simple on purpose, and the limits are these:
//! - Streams are known by their signalled SSRCs. An encoding signalled without one (simulcast
//!   named by RIDs, or a single encoding known only by its producer's `mid`) is listed as an
//!   [`UnboundEncoding`]: the media plane recognises its first packets by their RID or MID
//!   header extension and [`ForwardingTable::bind`]s the SSRC they carry, for itself (the
//!   control plane never learns it; the next table it gets is unbound again, and the media
//!   plane binds it anew from what it learned).
//! - A consumer receives one stream. Every encoding of a simulcast producer lists all the
//!   producer's consumers; which encoding (and which temporal or SVC layers) each one gets
//!   is the media plane's choice, packet by packet (`video::selector`), from the preferred
//!   layers and priority given here.
//! - Sequence numbers and timestamps are the media plane's business: it rewrites them per
//!   consumer (gap-free across pause and keyframe waits), unwraps producer RTX and builds
//!   consumer RTX itself (see `media::router`), using the codec and RTX details kept here.

use std::collections::BTreeMap;

use crate::rtp::header_extension_uri as uri;
use crate::rtp::{MediaKind, PayloadType, RtpParameters, Ssrc};

use super::ids::{ConsumerId, DataConsumerId, DataProducerId, PeerId, ProducerId, TransportId};
use super::rooms::{Consumer, ConsumerType, Producer, Room, producer_layers};
use crate::video::{Layers, ScalabilityMode};

/// A room's routing: `(transport, SSRC)` of an incoming producer stream to its receivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingTable {
    streams: BTreeMap<(TransportId, Ssrc), InboundStream>,
    unbound: Vec<UnboundEncoding>,
    data: BTreeMap<(TransportId, u16), DataRoute>,
}

/// Where a DataProducer's messages go; keyed in the table by the send transport and SCTP
/// stream they arrive on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoute {
    pub data_producer_id: DataProducerId,
    /// The producing peer, whose message rate is limited.
    pub peer_id: PeerId,
    pub targets: Vec<DataTarget>,
}

/// One DataConsumer of a [`DataRoute`]: the stream of its recv transport its copies go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTarget {
    pub data_consumer_id: DataConsumerId,
    pub transport_id: TransportId,
    pub stream_id: u16,
    pub ordered: bool,
    pub max_packet_life_time: Option<u16>,
    pub max_retransmits: Option<u16>,
}

/// A producer encoding whose SSRC was not signalled, and the streams its packets make once
/// the media plane has recognised them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnboundEncoding {
    /// The send transport its packets arrive on.
    pub transport_id: TransportId,
    /// The encoding's RID; `None` for the single encoding of a producer known by its `mid`.
    pub rid: Option<String>,
    /// The producer's `mid`, which its packets carry in the MID extension.
    pub mid: Option<String>,
    /// The producer's ids for the MID, RID and repaired-RID header extensions.
    pub mid_extension_id: Option<u8>,
    pub rid_extension_id: Option<u8>,
    pub repaired_rid_extension_id: Option<u8>,
    /// The media stream, as it is entered into the table once bound.
    pub media: InboundStream,
    /// The RTX stream, when the producer has an RTX codec (its `repairs` is set on binding).
    pub rtx: Option<InboundStream>,
}

/// An SSRC the media plane recognised as a producer encoding's media or RTX stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The transport the packets arrive on.
    pub transport_id: TransportId,
    /// The producer and its encoding.
    pub producer_id: ProducerId,
    pub encoding_index: usize,
    /// True for the encoding's RTX stream.
    pub rtx: bool,
    /// The SSRC its packets carry.
    pub ssrc: Ssrc,
}

/// What the media plane needs to know of a producer payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// `video/VP8`, `audio/opus`, `video/rtx`...
    pub mime_type: String,
    pub clock_rate: u32,
    /// For RTX: the payload type it repairs.
    pub apt: Option<PayloadType>,
}

/// The bandwidth estimation a producer's or consumer's packets take part in, by mediasoup's
/// rule: transport-cc when the transport-wide sequence number extension and `transport-cc`
/// feedback are negotiated, else REMB when abs-send-time and `goog-remb` are, else none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimation {
    /// Packets carry a transport-wide sequence number as extension `extension_id`.
    TransportCc { extension_id: u8 },
    /// Packets carry abs-send-time as extension `abs_send_time_id`; the estimate travels in REMBs.
    Remb { abs_send_time_id: u8 },
}

impl Estimation {
    /// The estimation negotiated in `parameters`.
    pub fn of(parameters: &RtpParameters) -> Option<Estimation> {
        let extension = |uri: &str| parameters.header_extensions.iter().find(|e| e.uri == uri).map(|e| e.id);
        let feedback = |kind: &str| parameters.codecs.iter().any(|c| c.rtcp_feedback.iter().any(|fb| fb.r#type == kind));
        use crate::rtp::header_extension_uri::{ABS_SEND_TIME, TRANSPORT_WIDE_CC};
        match (extension(TRANSPORT_WIDE_CC), extension(ABS_SEND_TIME)) {
            (Some(extension_id), _) if feedback("transport-cc") => Some(Estimation::TransportCc { extension_id }),
            (_, Some(abs_send_time_id)) if feedback("goog-remb") => Some(Estimation::Remb { abs_send_time_id }),
            _ => None,
        }
    }
}

/// One incoming producer stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundStream {
    /// The producer it belongs to.
    pub producer_id: ProducerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The producer encoding (simulcast layer) it carries.
    pub encoding_index: usize,
    /// How many encodings the producer sends.
    pub encodings: usize,
    /// How its consumers take its layers (mediasoup's consumer type).
    pub consumer_type: ConsumerType,
    /// Spatial layers of the producer (its encodings, or its SVC layers) and temporal layers
    /// of each, from its scalability mode; K-SVC for `..._KEY` modes.
    pub spatial_layers: u8,
    pub temporal_layers: u8,
    pub k_svc: bool,
    /// True for the encoding's RTX (retransmission) stream.
    pub rtx: bool,
    /// The producer is paused: nothing is forwarded.
    pub producer_paused: bool,
    /// The producer's payload types.
    pub codecs: BTreeMap<PayloadType, CodecInfo>,
    /// For an RTX stream: the SSRC of the media stream it repairs.
    pub repairs: Option<Ssrc>,
    /// The consumers of this stream, in creation order.
    pub targets: Vec<ForwardTarget>,
    /// The feedback its producer's browser expects for it.
    pub estimation: Option<Estimation>,
    /// The producer's id for the dependency descriptor extension, when it negotiated it:
    /// where an H264 packet's temporal layer is.
    pub dependency_descriptor_id: Option<u8>,
}

/// A consumer of a stream and how to rewrite the stream's packets for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    /// The consumer.
    pub consumer_id: ConsumerId,
    /// The recv transport to send on.
    pub transport_id: TransportId,
    /// The SSRC the consumer knows this stream by.
    pub ssrc: Ssrc,
    /// Producer payload type to consumer payload type; a packet whose payload type is not a
    /// key is not for this consumer (its device cannot decode that codec).
    pub payload_types: BTreeMap<PayloadType, PayloadType>,
    /// Producer header extension id to consumer id; other extensions are removed.
    pub header_extension_ids: BTreeMap<u8, u8>,
    /// The consumer's `mid`, the value of the MID header extension towards it.
    pub mid: Option<String>,
    /// The consumer's id for the MID extension: browsers route packets to a transceiver by it,
    /// so it must carry the consumer's mid, not the producer's.
    pub mid_extension_id: Option<u8>,
    /// The consumer's RTX stream `(SSRC, payload type)`, when it negotiated RTX: NACKed
    /// packets are resent on it.
    pub rtx: Option<(Ssrc, PayloadType)>,
    /// The consumer is paused: it gets nothing.
    pub paused: bool,
    /// The layers its app prefers; `None` for the highest.
    pub preferred_layers: Option<Layers>,
    /// Its claim on its transport's bandwidth (1-255).
    pub priority: u8,
    /// What the worker stamps on its packets for the subscriber's feedback, in the consumer's
    /// extension ids.
    pub estimation: Option<Estimation>,
}

impl InboundStream {
    /// The decision for a packet of this stream with `payload_type`: the targets that get it,
    /// each with its index in [`InboundStream::targets`] and the payload type it gets. None
    /// while the producer is paused. [`ForwardingTable::forward`] and the media plane's
    /// forwarding path both go by it.
    pub fn receivers(&self, payload_type: PayloadType) -> impl Iterator<Item = (usize, &ForwardTarget, PayloadType)> + '_ {
        self.targets.iter().enumerate().filter_map(move |(index, target)| Some((index, target, self.receives(target, payload_type)?)))
    }

    /// The same decision for one of its targets: the payload type `target` gets a packet with
    /// `payload_type` under, or `None`.
    pub fn receives(&self, target: &ForwardTarget, payload_type: PayloadType) -> Option<PayloadType> {
        if self.producer_paused {
            return None;
        }
        target.receives(payload_type)
    }
}

impl ForwardTarget {
    /// The payload type a packet of the (unpaused) stream with `payload_type` gets for this
    /// consumer, or `None` when the consumer does not receive it: it is paused, or its
    /// device cannot decode that codec.
    pub fn receives(&self, payload_type: PayloadType) -> Option<PayloadType> {
        if self.paused {
            return None;
        }
        self.payload_types.get(&payload_type).copied()
    }
}

/// One copy of an incoming packet to send: where, and with which SSRC and payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The consumer it is for.
    pub consumer_id: ConsumerId,
    /// The transport to send it on.
    pub transport_id: TransportId,
    /// The SSRC to write.
    pub ssrc: Ssrc,
    /// The payload type to write.
    pub payload_type: PayloadType,
}

impl ForwardingTable {
    /// The table for a room as it is now.
    pub fn for_room(room: &Room) -> Self {
        let mut streams = BTreeMap::new();
        let mut unbound = Vec::new();
        for producer in room.producers() {
            let consumers = room.consumers_of(&producer.id);
            let codecs: BTreeMap<PayloadType, CodecInfo> = producer
                .rtp_parameters
                .codecs
                .iter()
                .map(|c| {
                    let apt = c.parameters.get("apt").and_then(|v| v.as_integer()).and_then(|v| u8::try_from(v).ok()).map(PayloadType);
                    (c.payload_type, CodecInfo { mime_type: c.mime_type.clone(), clock_rate: c.clock_rate, apt })
                })
                .collect();
            let encodings = producer.rtp_parameters.encodings.len();
            let consumer_type = ConsumerType::of_producer(&producer.consumable_parameters);
            let (spatial_layers, temporal_layers) = producer_layers(&producer.consumable_parameters);
            let k_svc = ScalabilityMode::parse(producer.rtp_parameters.encodings.first().and_then(|e| e.scalability_mode.as_deref())).k_svc;
            let has_rtx = codecs.values().any(|codec| codec.apt.is_some());
            let extension_id = |wanted: &str| {
                producer.rtp_parameters.header_extensions.iter().find(|e| e.uri == wanted).map(|e| e.id)
            };
            for (index, encoding) in producer.rtp_parameters.encodings.iter().enumerate() {
                let stream = |rtx: bool, repairs: Option<Ssrc>| {
                    let targets = consumers.iter().filter_map(|consumer| target(producer, consumer, rtx)).collect();
                    InboundStream {
                        producer_id: producer.id.clone(),
                        kind: producer.kind,
                        encoding_index: index,
                        encodings,
                        consumer_type,
                        spatial_layers,
                        temporal_layers,
                        k_svc,
                        rtx,
                        producer_paused: producer.paused,
                        codecs: codecs.clone(),
                        repairs,
                        targets,
                        estimation: Estimation::of(&producer.rtp_parameters),
                        dependency_descriptor_id: extension_id(uri::DEPENDENCY_DESCRIPTOR),
                    }
                };
                let Some(ssrc) = encoding.ssrc else {
                    unbound.push(UnboundEncoding {
                        transport_id: producer.transport_id.clone(),
                        rid: encoding.rid.clone(),
                        mid: producer.rtp_parameters.mid.clone(),
                        mid_extension_id: extension_id(uri::MID),
                        rid_extension_id: extension_id(uri::RID),
                        repaired_rid_extension_id: extension_id(uri::REPAIRED_RID),
                        media: stream(false, None),
                        rtx: has_rtx.then(|| stream(true, None)),
                    });
                    continue;
                };
                streams.insert((producer.transport_id.clone(), ssrc), stream(false, None));
                if let Some(rtx) = encoding.rtx {
                    streams.insert((producer.transport_id.clone(), rtx.ssrc), stream(true, Some(ssrc)));
                }
            }
        }
        let mut data = BTreeMap::new();
        for producer in room.data_producers() {
            let targets = room
                .data_consumers()
                .into_iter()
                .filter(|c| c.data_producer_id == producer.id)
                .map(|c| DataTarget {
                    data_consumer_id: c.id.clone(),
                    transport_id: c.transport_id.clone(),
                    stream_id: c.sctp_stream_parameters.stream_id,
                    ordered: c.sctp_stream_parameters.is_ordered(),
                    max_packet_life_time: c.sctp_stream_parameters.max_packet_life_time,
                    max_retransmits: c.sctp_stream_parameters.max_retransmits,
                })
                .collect();
            let route = DataRoute { data_producer_id: producer.id.clone(), peer_id: producer.peer_id.clone(), targets };
            data.insert((producer.transport_id.clone(), producer.sctp_stream_parameters.stream_id), route);
        }
        ForwardingTable { streams, unbound, data }
    }

    /// Where the messages arriving on `stream_id` of `transport_id` go, if a DataProducer
    /// sends on it.
    pub fn data_route(&self, transport_id: &TransportId, stream_id: u16) -> Option<&DataRoute> {
        self.data.get(&(transport_id.clone(), stream_id))
    }

    /// Every DataProducer's route, by send transport and stream.
    pub fn data_routes(&self) -> impl Iterator<Item = (&(TransportId, u16), &DataRoute)> {
        self.data.iter()
    }

    /// Takes the data routes out (the media plane keeps them apart from the RTP router).
    pub fn take_data_routes(&mut self) -> BTreeMap<(TransportId, u16), DataRoute> {
        std::mem::take(&mut self.data)
    }

    /// The encodings whose SSRCs are not known yet (or were learned, see [`Self::bind`]).
    pub fn unbound(&self) -> &[UnboundEncoding] {
        &self.unbound
    }

    /// Enters a stream the media plane recognised: from now on its packets are routed like
    /// those of a signalled SSRC. Returns false (and changes nothing) when the binding names
    /// no unbound encoding, when its SSRC is taken by another stream, or for an RTX stream
    /// whose media stream is not bound yet (it could not be unwrapped).
    ///
    /// A second SSRC for the same encoding replaces the first (a browser that restarts its
    /// encoder starts a new SSRC under the same RID); the encoding's RTX stream then repairs
    /// the new one.
    pub fn bind(&mut self, binding: &Binding) -> bool {
        let Some(unbound) = self.unbound.iter().find(|u| {
            u.transport_id == binding.transport_id
                && u.media.producer_id == binding.producer_id
                && u.media.encoding_index == binding.encoding_index
        }) else {
            return false;
        };
        let key = (binding.transport_id.clone(), binding.ssrc);
        if let Some(holder) = self.streams.get(&key) {
            // Bound already, as this very stream: nothing to do; as another: refused.
            return holder.producer_id == binding.producer_id
                && holder.encoding_index == binding.encoding_index
                && holder.rtx == binding.rtx;
        }
        let is_this = |stream: &InboundStream, rtx: bool| {
            stream.producer_id == binding.producer_id && stream.encoding_index == binding.encoding_index && stream.rtx == rtx
        };
        let bound_media = self
            .streams
            .iter()
            .find(|((transport, _), stream)| *transport == binding.transport_id && is_this(stream, false))
            .map(|((_, ssrc), _)| *ssrc);
        let stream = if binding.rtx {
            let (Some(template), Some(media)) = (unbound.rtx.clone(), bound_media) else { return false };
            InboundStream { repairs: Some(media), ..template }
        } else {
            unbound.media.clone()
        };
        let transport = binding.transport_id.clone();
        self.streams.retain(|(t, _), s| !(*t == transport && is_this(s, binding.rtx)));
        if !binding.rtx {
            for ((t, _), s) in self.streams.iter_mut() {
                if *t == transport && is_this(s, true) {
                    s.repairs = Some(binding.ssrc);
                }
            }
        }
        self.streams.insert(key, stream);
        true
    }

    /// The stream a packet arriving on `transport_id` with `ssrc` belongs to, if any.
    pub fn stream(&self, transport_id: &TransportId, ssrc: Ssrc) -> Option<&InboundStream> {
        self.streams.get(&(transport_id.clone(), ssrc))
    }

    /// All known incoming streams, by transport and SSRC.
    pub fn streams(&self) -> impl Iterator<Item = (&(TransportId, Ssrc), &InboundStream)> {
        self.streams.iter()
    }

    /// Where a packet arriving on `transport_id` with `ssrc` and `payload_type` goes: one
    /// [`Forward`] per consumer that gets it. Empty means drop: an unknown stream, a paused
    /// producer, or no active consumer that can decode the payload type.
    pub fn forward(
        &self,
        transport_id: &TransportId,
        ssrc: Ssrc,
        payload_type: PayloadType,
    ) -> Vec<Forward> {
        let Some(stream) = self.stream(transport_id, ssrc) else {
            return Vec::new();
        };
        stream
            .receivers(payload_type)
            .map(|(_, target, mapped)| Forward {
                consumer_id: target.consumer_id.clone(),
                transport_id: target.transport_id.clone(),
                ssrc: target.ssrc,
                payload_type: mapped,
            })
            .collect()
    }
}

fn is_rtx_codec(parameters: &RtpParameters, payload_type: PayloadType) -> bool {
    parameters.codecs.iter().any(|codec| {
        codec.payload_type == payload_type && codec.mime_type.eq_ignore_ascii_case("video/rtx")
    })
}

/// The rewrite of a producer's media (or RTX) stream for one consumer; `None` when the
/// consumer has no such stream (an RTX stream towards a consumer without RTX).
fn target(producer: &Producer, consumer: &Consumer, rtx: bool) -> Option<ForwardTarget> {
    let encoding = consumer.rtp_parameters.encodings.first()?;
    let ssrc = if rtx {
        encoding.rtx?.ssrc
    } else {
        encoding.ssrc?
    };
    let payload_types = producer
        .rtp_mapping
        .codecs
        .iter()
        .filter(|entry| is_rtx_codec(&producer.rtp_parameters, entry.payload_type) == rtx)
        .filter(|entry| {
            consumer
                .rtp_parameters
                .codecs
                .iter()
                .any(|codec| codec.payload_type == entry.mapped_payload_type)
        })
        .map(|entry| (entry.payload_type, entry.mapped_payload_type))
        .collect();
    let header_extension_ids = producer
        .rtp_parameters
        .header_extensions
        .iter()
        .filter_map(|produced| {
            consumer
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|consumed| consumed.uri == produced.uri)
                .map(|consumed| (produced.id, consumed.id))
        })
        .collect();
    let consumer_rtx = encoding.rtx.and_then(|r| {
        consumer
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.mime_type.eq_ignore_ascii_case("video/rtx"))
            .map(|c| (r.ssrc, c.payload_type))
    });
    Some(ForwardTarget {
        rtx: if rtx { None } else { consumer_rtx },
        consumer_id: consumer.id.clone(),
        transport_id: consumer.transport_id.clone(),
        ssrc,
        payload_types,
        header_extension_ids,
        mid: consumer.rtp_parameters.mid.clone(),
        mid_extension_id: consumer
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == crate::rtp::header_extension_uri::MID)
            .map(|e| e.id),
        paused: consumer.paused,
        estimation: Estimation::of(&consumer.rtp_parameters),
        preferred_layers: consumer.preferred_layers,
        priority: consumer.priority,
    })
}
