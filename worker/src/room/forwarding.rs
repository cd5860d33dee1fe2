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
//! - Streams are known by their signalled SSRCs. A producer that signals only RIDs (simulcast
//!   without SSRCs) has no entry until the media plane learns its SSRCs from the RID header
//!   extension.
//! - A consumer receives one stream. For a simulcast producer only encoding 0 (the lowest
//!   layer, always sent) is forwarded; the other encodings have entries with no targets until
//!   the media plane selects layers.
//! - Sequence numbers and timestamps are the media plane's business: it rewrites them per
//!   consumer (gap-free across pause and keyframe waits), unwraps producer RTX and builds
//!   consumer RTX itself (see `media::router`), using the codec and RTX details kept here.

use std::collections::BTreeMap;

use crate::rtp::{MediaKind, PayloadType, RtpParameters, Ssrc};

use super::ids::{ConsumerId, ProducerId, TransportId};
use super::rooms::{Consumer, Producer, Room};

/// A room's routing: `(transport, SSRC)` of an incoming producer stream to its receivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingTable {
    streams: BTreeMap<(TransportId, Ssrc), InboundStream>,
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
            for (index, encoding) in producer.rtp_parameters.encodings.iter().enumerate() {
                let forwarded = index == 0;
                let media_ssrc = encoding.ssrc;
                let mut add = |ssrc: Ssrc, rtx: bool| {
                    let targets = if forwarded {
                        consumers
                            .iter()
                            .filter_map(|consumer| target(producer, consumer, rtx))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    streams.insert(
                        (producer.transport_id.clone(), ssrc),
                        InboundStream {
                            producer_id: producer.id.clone(),
                            kind: producer.kind,
                            encoding_index: index,
                            rtx,
                            producer_paused: producer.paused,
                            codecs: codecs.clone(),
                            repairs: if rtx { media_ssrc } else { None },
                            targets,
                            estimation: Estimation::of(&producer.rtp_parameters),
                        },
                    );
                };
                if let Some(ssrc) = encoding.ssrc {
                    add(ssrc, false);
                }
                if let Some(rtx) = encoding.rtx {
                    add(rtx.ssrc, true);
                }
            }
        }
        ForwardingTable { streams }
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
    })
}
