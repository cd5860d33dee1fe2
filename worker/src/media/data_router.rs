//! Where a room's data channel messages go (sans-IO): the DataProducer routes of the room's
//! [`ForwardingTable`](crate::room::ForwardingTable), each producing peer's message rate,
//! and which SCTP streams to reset when routes go away.
//!
//! A message arriving on `(transport, stream)` of a DataProducer is copied to each of its
//! DataConsumers' `(transport, stream)`, unless its peer is over its rate
//! ([`MessageRate`]). When a table drops a DataConsumer, the worker resets its outgoing
//! stream, which closes the browser's data channel on it; when it drops a DataProducer, the
//! worker resets that stream on the producer's transport too (mediasoup does both).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::media::sctp::{MessageRate, StreamReliability};
use crate::room::{DataRoute, DataTarget, PeerId, TransportId};

/// Why a message was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDrop {
    /// No DataProducer sends on this stream of this transport.
    NoRoute,
    /// The producing peer is over its message rate.
    RateLimited,
}

impl DataDrop {
    pub fn as_str(self) -> &'static str {
        match self {
            DataDrop::NoRoute => "data_no_route",
            DataDrop::RateLimited => "data_rate_limited",
        }
    }
}

/// One room's data routes.
#[derive(Debug, Default)]
pub struct DataRouter {
    routes: BTreeMap<(TransportId, u16), DataRoute>,
    rates: HashMap<PeerId, MessageRate>,
    make_rate: Option<fn() -> MessageRate>,
}

impl DataTarget {
    /// How the consumer's stream delivers.
    pub fn reliability(&self) -> StreamReliability {
        StreamReliability {
            ordered: self.ordered,
            max_packet_life_time: self.max_packet_life_time,
            max_retransmits: self.max_retransmits,
        }
    }
}

impl DataRouter {
    /// A router whose peers get `rate()` as their limit (tests use a small one).
    pub fn with_rate(rate: fn() -> MessageRate) -> Self {
        DataRouter { make_rate: Some(rate), ..DataRouter::default() }
    }

    /// Installs the room's new routes; returns the `(transport, stream)`s to reset: the
    /// streams of DataConsumers and DataProducers that are gone.
    pub fn update(&mut self, routes: BTreeMap<(TransportId, u16), DataRoute>) -> Vec<(TransportId, u16)> {
        let mut reset = Vec::new();
        for (key, old) in &self.routes {
            match routes.get(key) {
                Some(new) if new.data_producer_id == old.data_producer_id => {
                    for target in &old.targets {
                        let kept = new.targets.iter().any(|t| t.data_consumer_id == target.data_consumer_id);
                        if !kept {
                            reset.push((target.transport_id.clone(), target.stream_id));
                        }
                    }
                }
                _ => {
                    reset.push(key.clone());
                    reset.extend(old.targets.iter().map(|t| (t.transport_id.clone(), t.stream_id)));
                }
            }
        }
        // A peer's rate stays while it produces data (a new table must not refill it).
        self.rates.retain(|peer, _| routes.values().any(|r| r.peer_id == *peer));
        self.routes = routes;
        reset
    }

    /// Where a message on `stream_id` of `from` goes, counting it against its peer's rate.
    pub fn route(&mut self, from: &TransportId, stream_id: u16, now: Instant) -> Result<&[DataTarget], DataDrop> {
        let route = self.routes.get(&(from.clone(), stream_id)).ok_or(DataDrop::NoRoute)?;
        let make_rate = self.make_rate.unwrap_or(MessageRate::default);
        let rate = self.rates.entry(route.peer_id.clone()).or_insert_with(make_rate);
        if !rate.admit(now) {
            return Err(DataDrop::RateLimited);
        }
        Ok(&route.targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{DataConsumerId, DataProducerId};

    fn target(consumer: &str, transport: &str, stream_id: u16) -> DataTarget {
        DataTarget {
            data_consumer_id: DataConsumerId::from(consumer),
            transport_id: TransportId::from(transport),
            stream_id,
            ordered: true,
            max_packet_life_time: None,
            max_retransmits: None,
        }
    }

    fn routes(producer: &str, peer: &str, targets: Vec<DataTarget>) -> BTreeMap<(TransportId, u16), DataRoute> {
        let route = DataRoute { data_producer_id: DataProducerId::from(producer), peer_id: PeerId::from(peer), targets };
        BTreeMap::from([((TransportId::from("send"), 4), route)])
    }

    #[test]
    fn a_message_goes_to_every_consumer_of_its_stream_and_nowhere_else() {
        let mut router = DataRouter::default();
        router.update(routes("dp", "alice", vec![target("c1", "bob-recv", 0), target("c2", "carol-recv", 7)]));
        let now = Instant::now();
        let targets = router.route(&TransportId::from("send"), 4, now).unwrap();
        assert_eq!(targets.iter().map(|t| (t.transport_id.as_str(), t.stream_id)).collect::<Vec<_>>(), [("bob-recv", 0), ("carol-recv", 7)]);
        assert_eq!(router.route(&TransportId::from("send"), 5, now), Err(DataDrop::NoRoute));
        assert_eq!(router.route(&TransportId::from("other"), 4, now), Err(DataDrop::NoRoute));
    }

    #[test]
    fn closed_consumers_and_producers_have_their_streams_reset() {
        let mut router = DataRouter::default();
        assert!(router.update(routes("dp", "alice", vec![target("c1", "bob-recv", 0), target("c2", "carol-recv", 7)])).is_empty());
        let reset = router.update(routes("dp", "alice", vec![target("c2", "carol-recv", 7)]));
        assert_eq!(reset, vec![(TransportId::from("bob-recv"), 0)], "only the closed consumer's stream");
        let reset = router.update(BTreeMap::new());
        assert_eq!(reset, vec![(TransportId::from("send"), 4), (TransportId::from("carol-recv"), 7)]);
        // A new producer on the same stream is a different one: the old one's streams reset.
        router.update(routes("dp", "alice", vec![target("c1", "bob-recv", 0)]));
        let reset = router.update(routes("dp2", "alice", vec![]));
        assert_eq!(reset, vec![(TransportId::from("send"), 4), (TransportId::from("bob-recv"), 0)]);
    }

    #[test]
    fn a_peer_over_its_rate_is_dropped_and_a_new_table_does_not_refill_it() {
        let mut router = DataRouter::with_rate(|| MessageRate::new(1, 3));
        router.update(routes("dp", "alice", vec![target("c1", "bob-recv", 0)]));
        let now = Instant::now();
        let send = TransportId::from("send");
        let passed = (0..5).filter(|_| router.route(&send, 4, now).is_ok()).count();
        assert_eq!(passed, 3);
        assert_eq!(router.route(&send, 4, now), Err(DataDrop::RateLimited));
        router.update(routes("dp", "alice", vec![target("c1", "bob-recv", 0), target("c3", "dan-recv", 1)]));
        assert_eq!(router.route(&send, 4, now), Err(DataDrop::RateLimited));
    }
}
