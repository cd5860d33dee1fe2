//! Data channels in the room graph, as mediasoup has them: a transport with SCTP enabled
//! (`sctpCapabilities` on create) answers with its `sctpParameters`; a DataProducer is an SCTP
//! stream the client sends on, a DataConsumer one the worker sends a DataProducer's messages
//! on. The stream parameters follow mediasoup's rules ([`SctpStreamParameters::validated`]),
//! and the worker picks each DataConsumer's stream id on its transport
//! ([`next_sctp_stream_id`], mediasoup's `getNextSctpStreamId`).

use serde::{Deserialize, Serialize};

use super::ids::{DataConsumerId, DataProducerId, PeerId, TransportId};
use super::AppData;

/// The SCTP port, stream counts and message size limit a transport with SCTP answers with
/// (mediasoup's `SctpParameters`), what mediasoup-client's `createSendTransport` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpParameters {
    /// Always 5000.
    pub port: u16,
    /// Outgoing streams the worker asks for.
    #[serde(rename = "OS")]
    pub os: u16,
    /// Incoming streams the worker takes.
    #[serde(rename = "MIS")]
    pub mis: u16,
    /// The largest message, in bytes, either way; larger ones are dropped.
    pub max_message_size: u32,
}

impl Default for SctpParameters {
    fn default() -> Self {
        SctpParameters {
            port: 5000,
            os: 1024,
            mis: 1024,
            max_message_size: 262_144,
        }
    }
}

/// mediasoup-client's `device.sctpCapabilities`: `{"numStreams": {"OS", "MIS"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpCapabilities {
    pub num_streams: NumSctpStreams,
}

impl SctpCapabilities {
    /// What a client that asks for SCTP without saying its stream counts gets: mediasoup's
    /// default `numSctpStreams`. mediasoup-client 3.24 has no `device.sctpCapabilities` any
    /// more; its apps send mediasoup's `enableSctp: true` alone.
    pub const DEFAULT: SctpCapabilities = SctpCapabilities { num_streams: NumSctpStreams { os: 1024, mis: 1024 } };

    /// The capabilities a create-transport asks SCTP with: the ones given, else the default
    /// when `enable_sctp` is set, else none (a transport without data channels).
    pub fn requested(given: Option<SctpCapabilities>, enable_sctp: bool) -> Option<SctpCapabilities> {
        given.or(enable_sctp.then_some(SctpCapabilities::DEFAULT))
    }
}

/// Stream counts: outgoing (`OS`) and most incoming (`MIS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumSctpStreams {
    #[serde(rename = "OS")]
    pub os: u16,
    #[serde(rename = "MIS")]
    pub mis: u16,
}

/// A stream id and how it delivers (mediasoup's `SctpStreamParameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SctpStreamParameters {
    /// The SCTP stream.
    pub stream_id: u16,
    /// In order, or as they arrive. Left out: ordered unless a retransmission limit is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    /// Give up on a message after this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    /// Give up on a message after this many retransmissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
}

impl SctpStreamParameters {
    /// The parameters by mediasoup's rules, `ordered` filled in: at most one of
    /// `maxPacketLifeTime` and `maxRetransmits`, and neither on an ordered stream; the stream
    /// id below the transport's `MIS`.
    pub fn validated(self, streams: u16) -> Result<SctpStreamParameters, String> {
        if self.stream_id >= streams {
            return Err(format!(
                "streamId {} is out of range: this transport takes streams 0 to {}",
                self.stream_id,
                streams.saturating_sub(1)
            ));
        }
        let limited = self.max_packet_life_time.is_some() || self.max_retransmits.is_some();
        if self.max_packet_life_time.is_some() && self.max_retransmits.is_some() {
            return Err("give at most one of maxPacketLifeTime and maxRetransmits".into());
        }
        let ordered = self.ordered.unwrap_or(!limited);
        if ordered && limited {
            return Err(
                "an ordered stream cannot have maxPacketLifeTime or maxRetransmits; set ordered: false".into(),
            );
        }
        Ok(SctpStreamParameters { ordered: Some(ordered), ..self })
    }

    /// Whether the stream delivers in order (as validated: `ordered` is set).
    pub fn is_ordered(&self) -> bool {
        self.ordered.unwrap_or(true)
    }
}

/// The stream id for a new DataConsumer on a transport taking `streams` streams: the first
/// free one from `next` on, wrapping around (mediasoup's `getNextSctpStreamId`, so a closed
/// consumer's id is reused only after the others). `None` when every id is taken.
pub fn next_sctp_stream_id(streams: u16, next: u16, taken: impl Fn(u16) -> bool) -> Option<u16> {
    (0..streams)
        .map(|offset| ((u32::from(next) + u32::from(offset)) % u32::from(streams)) as u16)
        .find(|id| !taken(*id))
}

/// A `produce-data` request: the body of `POST /v1/rooms/{room}/data-producers` minus the
/// peer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProduceDataOptions {
    /// A send transport of the peer, created with `sctpCapabilities`.
    pub transport_id: TransportId,
    /// From mediasoup-client's `producedata` event, unchanged.
    pub sctp_stream_parameters: SctpStreamParameters,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub app_data: AppData,
}

/// The answer to `produce-data`: `{"id"}`, what mediasoup-client's `producedata` callback takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataProducerCreated {
    pub id: DataProducerId,
}

/// A `consume-data` request: the body of `POST /v1/rooms/{room}/data-consumers` minus the
/// peer id. The reliability options, when given, replace the DataProducer's (as mediasoup's
/// `consumeData` options do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeDataOptions {
    /// A recv transport of the peer, created with `sctpCapabilities`.
    pub transport_id: TransportId,
    pub data_producer_id: DataProducerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_packet_life_time: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retransmits: Option<u16>,
}

/// The answer to `consume-data`: what mediasoup-client's `recvTransport.consumeData` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataConsumerCreated {
    pub id: DataConsumerId,
    pub data_producer_id: DataProducerId,
    /// The stream the worker picked on the consumer's transport.
    pub sctp_stream_parameters: SctpStreamParameters,
    pub label: String,
    pub protocol: String,
    /// The DataProducer's application data.
    pub app_data: AppData,
}

/// A DataProducer as other peers see it (in `join`'s answer and `newDataProducer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProducerSummary {
    pub data_producer_id: DataProducerId,
    pub peer_id: PeerId,
    pub label: String,
    pub protocol: String,
    pub app_data: AppData,
}

/// Messages a peer sends on an SCTP stream of its send transport.
#[derive(Debug, Clone, PartialEq)]
pub struct DataProducer {
    pub id: DataProducerId,
    pub peer_id: PeerId,
    pub transport_id: TransportId,
    /// Validated (`ordered` set).
    pub sctp_stream_parameters: SctpStreamParameters,
    pub label: String,
    pub protocol: String,
    pub app_data: AppData,
    pub(super) seq: u64,
}

impl DataProducer {
    pub fn summary(&self) -> DataProducerSummary {
        DataProducerSummary {
            data_producer_id: self.id.clone(),
            peer_id: self.peer_id.clone(),
            label: self.label.clone(),
            protocol: self.protocol.clone(),
            app_data: self.app_data.clone(),
        }
    }
}

/// One DataProducer's messages sent to one peer on an SCTP stream of its recv transport.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConsumer {
    pub id: DataConsumerId,
    pub peer_id: PeerId,
    pub transport_id: TransportId,
    pub data_producer_id: DataProducerId,
    /// Validated, with the stream id the worker picked.
    pub sctp_stream_parameters: SctpStreamParameters,
    pub(super) seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(ordered: Option<bool>, life: Option<u16>, rexmit: Option<u16>) -> SctpStreamParameters {
        SctpStreamParameters { stream_id: 3, ordered, max_packet_life_time: life, max_retransmits: rexmit }
    }

    #[test]
    fn ordered_is_inferred_as_mediasoup_does() {
        assert_eq!(stream(None, None, None).validated(1024).unwrap().ordered, Some(true));
        assert_eq!(stream(None, None, Some(0)).validated(1024).unwrap().ordered, Some(false));
        assert_eq!(stream(None, Some(500), None).validated(1024).unwrap().ordered, Some(false));
        assert_eq!(stream(Some(false), None, None).validated(1024).unwrap().ordered, Some(false));
    }

    #[test]
    fn contradictory_reliability_is_refused_with_a_reason() {
        let both = stream(Some(false), Some(500), Some(3)).validated(1024).unwrap_err();
        assert!(both.contains("at most one"), "{both}");
        let ordered = stream(Some(true), None, Some(3)).validated(1024).unwrap_err();
        assert!(ordered.contains("ordered: false"), "{ordered}");
        let range = SctpStreamParameters { stream_id: 1024, ..stream(None, None, None) }.validated(1024).unwrap_err();
        assert!(range.contains("0 to 1023"), "{range}");
    }

    #[test]
    fn stream_ids_are_handed_out_round_the_ring_skipping_taken_ones() {
        let taken = [0u16, 1, 3];
        assert_eq!(next_sctp_stream_id(8, 0, |id| taken.contains(&id)), Some(2));
        assert_eq!(next_sctp_stream_id(8, 3, |id| taken.contains(&id)), Some(4));
        // From the end it wraps to the first free id.
        assert_eq!(next_sctp_stream_id(4, 3, |id| taken.contains(&id)), Some(2));
        assert_eq!(next_sctp_stream_id(4, 0, |_| true), None);
        assert_eq!(next_sctp_stream_id(0, 0, |_| false), None);
        assert_eq!(next_sctp_stream_id(u16::MAX, u16::MAX - 1, |_| false), Some(u16::MAX - 1));
    }

    #[test]
    fn sctp_parameters_read_and_write_mediasoups_field_names() {
        let json = serde_json::to_value(SctpParameters::default()).unwrap();
        assert_eq!(json, serde_json::json!({"port": 5000, "OS": 1024, "MIS": 1024, "maxMessageSize": 262144}));
        let caps: SctpCapabilities = serde_json::from_value(serde_json::json!({"numStreams": {"OS": 1024, "MIS": 1024}})).unwrap();
        assert_eq!(caps.num_streams, NumSctpStreams { os: 1024, mis: 1024 });
    }

    #[test]
    fn enable_sctp_alone_asks_for_the_default_streams_and_given_capabilities_win() {
        let small = SctpCapabilities { num_streams: NumSctpStreams { os: 16, mis: 16 } };
        assert_eq!(SctpCapabilities::requested(None, true), Some(SctpCapabilities::DEFAULT));
        assert_eq!(SctpCapabilities::requested(Some(small), true), Some(small));
        assert_eq!(SctpCapabilities::requested(Some(small), false), Some(small));
        assert_eq!(SctpCapabilities::requested(None, false), None);
    }
}
