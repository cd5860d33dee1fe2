//! The SFU's control plane: rooms, peers, transports, producers and consumers as plain data,
//! mediasoup style (Worker > Router > Transport > Producer/Consumer, with the peer between
//! router and transports).
//!
//! Everything here is pure: no I/O, no clocks, no randomness. The REST server calls
//! [`Rooms`]' methods and forwards [`Rooms::drain_events`] to signalling; the media plane
//! supplies each transport's ICE credentials, addresses and fingerprints
//! ([`TransportNetwork`]) and routes packets with a [`ForwardingTable`]. Ids and SSRCs come
//! from an [`IdGenerator`] the caller passes in ([`SequentialIds`] in tests).
//!
//! The RTP decisions are the [`rtp`](crate::rtp) module's (mediasoup's ORTC rules); this module
//! owns the objects, their lifetimes and who may do what to them.
//!
//! # Requests
//!
//! | request | checks | result | events |
//! |---|---|---|---|
//! | [`Rooms::ensure_room`] | codecs supported | router capabilities (idempotent) | — |
//! | [`Rooms::join`] | room open, peer id new | capabilities, other peers, their producers | `peerJoined` |
//! | [`Rooms::create_transport`] | peer joined | `{id, iceParameters, iceCandidates, dtlsParameters}` | — |
//! | [`Rooms::connect_transport`] | not yet connected, DTLS parameters valid | the worker's DTLS role | — |
//! | [`Rooms::produce`] | own send transport, parameters valid and mappable, SSRCs and mid free on the transport | `{id}` | `newProducer` |
//! | [`Rooms::consume`] | own recv transport, producer exists, device can decode it | consumer parameters | — |
//! | pause / resume producer | producer exists | — | `producerPaused` / `producerResumed` when it changes |
//! | pause / resume consumer | consumer exists | — | — |
//! | [`Rooms::enable_sctp`] | transport exists | its `sctpParameters` | — |
//! | [`Rooms::produce_data`] | own send transport with SCTP, stream parameters valid, stream free on the transport | `{id}` | `newDataProducer` |
//! | [`Rooms::consume_data`] | own recv transport with SCTP, data producer exists, a stream id free | data consumer parameters | — |
//!
//! # Closures
//!
//! What closing each object closes, in this order, and the events emitted (like mediasoup's
//! `doc/closures.md`). Every closed object yields exactly one closed event, and an object's
//! event comes after those of everything its closing closed.
//!
//! | closing | closes first | then emits |
//! |---|---|---|
//! | room ([`Rooms::close_room`]) | every peer, in join order, as `leave` does | `roomClosed` |
//! | peer ([`Rooms::leave`]) | its transports, in creation order | `peerLeft` |
//! | transport ([`Rooms::close_transport`]) | its consumers (reason `transportClosed`), its data consumers (the same), its data producers as `close_data_producer` does, then its producers as `close_producer` does | `transportClosed` |
//! | producer ([`Rooms::close_producer`]) | every consumer of it, on any transport (reason `producerClosed`) | `producerClosed` |
//! | data producer ([`Rooms::close_data_producer`]) | every data consumer of it (reason `producerClosed`) | `dataProducerClosed` |
//! | data consumer ([`Rooms::close_data_consumer`]) | nothing | `dataConsumerClosed` (reason `requested`) |
//! | consumer ([`Rooms::close_consumer`]) | nothing | `consumerClosed` (reason `requested`) |
//!
//! Two consequences worth knowing, both as in mediasoup: a consumer whose producer sits on the
//! same closing transport closes for the transport, not for the producer; and when a peer
//! leaves, consumers of its producers held by other peers close with reason `producerClosed`.
//!
//! A paused producer keeps its consumers; they stay open with `producerPaused` set and receive
//! nothing. A refused request changes nothing and emits nothing.

mod data;
mod error;
mod event;
mod forwarding;
mod ids;
mod quotas;
mod rooms;
mod transport;

pub use data::{
    ConsumeDataOptions, DataConsumer, DataConsumerCreated, DataProducer, DataProducerCreated,
    DataProducerSummary, NumSctpStreams, ProduceDataOptions, SctpCapabilities, SctpParameters,
    SctpStreamParameters, next_sctp_stream_id,
};
pub use error::RoomError;
pub use event::{ConsumerCloseReason, RoomEvent, TransportCloseCode};
pub use forwarding::{
    Binding, CodecInfo, DataRoute, DataTarget, Estimation, Forward, ForwardTarget, ForwardingTable,
    InboundStream, UnboundEncoding,
};
pub use ids::{
    ConsumerId, DataConsumerId, DataProducerId, IdGenerator, MAX_ID_LEN, MAX_ROOM_ID_LEN, PeerId, ProducerId, RoomId,
    SequentialIds, TransportId, check_id, shown,
};
pub use quotas::Quotas;
pub use rooms::{
    AppData, ConsumeOptions, Consumer, ConsumerCreated, ConsumerType, JoinResponse, Peer, PeerInfo,
    PeerSummary, ProduceOptions, Producer, ProducerCreated, ProducerSummary, Room, Rooms, producer_layers,
};
pub use transport::{
    Direction, DtlsConnection, DtlsFingerprint, DtlsParameters, DtlsRole, IceCandidate,
    IceCandidateType, IceParameters, IceProtocol, ListenAddress, SUPPORTED_FINGERPRINT_ALGORITHMS,
    ProtocolDefaults, ProtocolError, TcpType, Transport, TransportCreated, TransportNetwork,
    TransportProtocols,
};

#[cfg(test)]
mod tests;
