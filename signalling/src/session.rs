//! What one connection is doing, as plain data: the room it joined, the transports,
//! producers and consumers it created there, and its event budget.
//!
//! Signalling keeps this per socket because the worker's API takes object ids without asking
//! who owns them: before forwarding `close-producer` or `connect-transport`, signalling checks
//! that the id is this participant's own, so nobody can close another participant's media.

use std::time::Instant;

use fanout_worker::room::{ConsumerId, DataConsumerId, DataProducerId, Direction, PeerId, ProducerId, TransportId};
use socketioxide::socket::Sid;

use crate::error::{Result, SignallingError};
use crate::placement::RoomLocation;

/// The peer id of a socket's `join`-th join: every join is a new peer on the worker, so that a
/// room event about an earlier one (its `peerLeft`, still on its way after a quick leave and
/// join) never touches a later one. Clients see it as `participantId`.
pub fn peer_id(socket: Sid, join: u32) -> PeerId {
    PeerId(format!("{socket}-{join}"))
}

/// The socket a [`peer_id`] belongs to (socket ids may contain `-` themselves, join numbers
/// do not).
pub fn socket_of(peer: &PeerId) -> Option<Sid> {
    peer.as_str().rsplit_once('-')?.0.parse().ok()
}

/// Where a connection stands with respect to rooms. One connection is at most one
/// participant of one room.
#[derive(Debug, Clone, Default)]
pub enum Membership {
    /// In no room.
    #[default]
    Idle,
    /// A `join-room` for this room is in flight; a second join must wait for its outcome.
    Joining(String),
    /// A participant of a room.
    Joined(Session),
}

/// A participant's state in its room.
#[derive(Debug, Clone)]
pub struct Session {
    /// The room's name.
    pub room: String,
    /// The participant's peer id on the worker ([`peer_id`]).
    pub peer: PeerId,
    /// The room's worker and rules, as placement said at join time.
    pub location: RoomLocation,
    transports: Vec<(TransportId, Direction)>,
    producers: Vec<ProducerId>,
    consumers: Vec<ConsumerId>,
    data_producers: Vec<DataProducerId>,
    data_consumers: Vec<DataConsumerId>,
}

impl Session {
    /// A participant that has just joined: nothing created yet.
    pub fn new(room: impl Into<String>, peer: PeerId, location: RoomLocation) -> Self {
        Session {
            room: room.into(),
            peer,
            location,
            transports: Vec::new(),
            producers: Vec::new(),
            consumers: Vec::new(),
            data_producers: Vec::new(),
            data_consumers: Vec::new(),
        }
    }

    /// `PUBLISH_NOT_ALLOWED` unless the room lets `role` publish.
    pub fn check_publish(&self, role: &str) -> Result<()> {
        if self.location.may_publish(role) {
            Ok(())
        } else {
            Err(SignallingError::PublishNotAllowed {
                room: self.room.clone(),
                role: role.to_owned(),
                allowed: self.location.publishers.join(", "),
            })
        }
    }

    /// Records a transport the worker created for this participant.
    pub fn add_transport(&mut self, id: TransportId, direction: Direction) {
        self.transports.push((id, direction));
    }

    /// Forgets a transport the worker closed; its direction, if it was this participant's.
    pub fn remove_transport(&mut self, id: &TransportId) -> Option<Direction> {
        let index = self.transports.iter().position(|(own, _)| own == id)?;
        Some(self.transports.remove(index).1)
    }

    /// `TRANSPORT_NOT_FOUND` unless `id` is one of this participant's transports.
    pub fn check_transport(&self, id: &TransportId) -> Result<Direction> {
        self.transports
            .iter()
            .find(|(own, _)| own == id)
            .map(|(_, direction)| *direction)
            .ok_or_else(|| {
                SignallingError::TransportNotFound(format!(
                    "transport {id} is not one of yours (or has been closed)"
                ))
            })
    }

    /// The transport to produce or consume on: the requested one when it is this
    /// participant's and of the right direction, otherwise its only transport of that
    /// direction (mediasoup-client apps name it; the seed's clients do not).
    pub fn transport_for(
        &self,
        direction: Direction,
        requested: Option<&TransportId>,
    ) -> Result<TransportId> {
        if let Some(id) = requested {
            let actual = self.check_transport(id)?;
            if actual != direction {
                return Err(SignallingError::TransportNotFound(format!(
                    "transport {id} is a {actual} transport; this needs a {direction} transport"
                )));
            }
            return Ok(id.clone());
        }
        let mut matching = self.transports.iter().filter(|(_, d)| *d == direction);
        match (matching.next(), matching.next()) {
            (Some((id, _)), None) => Ok(id.clone()),
            (None, _) => Err(SignallingError::TransportNotFound(format!(
                "you have no {direction} transport; emit create-transport with direction \
                 \"{direction}\" first"
            ))),
            (Some(_), Some(_)) => Err(SignallingError::TransportNotFound(format!(
                "you have several {direction} transports; say which one with transportId"
            ))),
        }
    }

    /// Records a producer the worker created for this participant.
    pub fn add_producer(&mut self, id: ProducerId) {
        self.producers.push(id);
    }

    /// `PRODUCER_NOT_FOUND` unless `id` is one of this participant's producers.
    pub fn check_producer(&self, id: &ProducerId) -> Result<()> {
        if self.producers.contains(id) {
            Ok(())
        } else {
            Err(SignallingError::ProducerNotFound(id.to_string()))
        }
    }

    /// Forgets a closed producer.
    pub fn remove_producer(&mut self, id: &ProducerId) {
        self.producers.retain(|own| own != id);
    }

    /// Records a consumer the worker created for this participant.
    pub fn add_consumer(&mut self, id: ConsumerId) {
        self.consumers.push(id);
    }

    /// `CONSUMER_NOT_FOUND` unless `id` is one of this participant's consumers.
    pub fn check_consumer(&self, id: &ConsumerId) -> Result<()> {
        if self.consumers.contains(id) {
            Ok(())
        } else {
            Err(SignallingError::ConsumerNotFound(id.to_string()))
        }
    }

    /// Forgets a closed consumer.
    pub fn remove_consumer(&mut self, id: &ConsumerId) {
        self.consumers.retain(|own| own != id);
    }

    /// Records a data producer the worker created for this participant.
    pub fn add_data_producer(&mut self, id: DataProducerId) {
        self.data_producers.push(id);
    }

    /// `DATA_PRODUCER_NOT_FOUND` unless `id` is one of this participant's data producers.
    pub fn check_data_producer(&self, id: &DataProducerId) -> Result<()> {
        if self.data_producers.contains(id) {
            Ok(())
        } else {
            Err(SignallingError::DataProducerNotFound(id.to_string()))
        }
    }

    /// Forgets a closed data producer.
    pub fn remove_data_producer(&mut self, id: &DataProducerId) {
        self.data_producers.retain(|own| own != id);
    }

    /// Records a data consumer the worker created for this participant.
    pub fn add_data_consumer(&mut self, id: DataConsumerId) {
        self.data_consumers.push(id);
    }

    /// `DATA_CONSUMER_NOT_FOUND` unless `id` is one of this participant's data consumers.
    pub fn check_data_consumer(&self, id: &DataConsumerId) -> Result<()> {
        if self.data_consumers.contains(id) {
            Ok(())
        } else {
            Err(SignallingError::DataConsumerNotFound(id.to_string()))
        }
    }

    /// Forgets a closed data consumer.
    pub fn remove_data_consumer(&mut self, id: &DataConsumerId) {
        self.data_consumers.retain(|own| own != id);
    }
}

/// A token bucket: `burst` events at once, refilled at `per_second`. One per connection, so
/// a flooding client is refused without slowing anybody else down.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            per_second,
            burst,
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes one token at `now`; `RATE_LIMITED` when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> Result<()> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * f64::from(self.per_second)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(SignallingError::RateLimited {
                per_second: self.per_second,
                burst: self.burst,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn session(publishers: &[&str]) -> Session {
        Session::new(
            "maths",
            PeerId::from("p1"),
            RoomLocation {
                endpoint: "http://w".into(),
                publishers: publishers.iter().map(|s| s.to_string()).collect(),
                max_peers: None,
                setup: Default::default(),
            },
        )
    }

    #[test]
    fn only_listed_roles_may_publish_when_the_room_lists_publishers() {
        let s = session(&["teacher"]);
        assert!(s.check_publish("teacher").is_ok());
        let error = s.check_publish("student").unwrap_err();
        assert_eq!(error.code(), "PUBLISH_NOT_ALLOWED");
        assert!(error.to_string().contains("teacher"), "{error}");
    }

    #[test]
    fn the_only_transport_of_a_direction_is_used_when_none_is_named() {
        let mut s = session(&[]);
        s.add_transport("t-send".into(), Direction::Send);
        s.add_transport("t-recv".into(), Direction::Recv);
        assert_eq!(
            s.transport_for(Direction::Send, None).unwrap(),
            TransportId::from("t-send")
        );
        assert_eq!(
            s.transport_for(Direction::Recv, None).unwrap(),
            TransportId::from("t-recv")
        );
    }

    #[test]
    fn no_or_several_transports_of_a_direction_need_a_clear_error() {
        let mut s = session(&[]);
        let none = s.transport_for(Direction::Send, None).unwrap_err();
        assert!(none.to_string().contains("create-transport"), "{none}");
        s.add_transport("a".into(), Direction::Send);
        s.add_transport("b".into(), Direction::Send);
        let several = s.transport_for(Direction::Send, None).unwrap_err();
        assert!(several.to_string().contains("transportId"), "{several}");
        assert_eq!(
            s.transport_for(Direction::Send, Some(&"b".into())).unwrap(),
            "b".into()
        );
    }

    #[test]
    fn a_named_transport_must_be_own_and_of_the_right_direction() {
        let mut s = session(&[]);
        s.add_transport("r".into(), Direction::Recv);
        assert_eq!(
            s.transport_for(Direction::Send, Some(&"r".into()))
                .unwrap_err()
                .code(),
            "TRANSPORT_NOT_FOUND"
        );
        assert_eq!(
            s.transport_for(Direction::Send, Some(&"someone-elses".into()))
                .unwrap_err()
                .code(),
            "TRANSPORT_NOT_FOUND"
        );
    }

    #[test]
    fn producers_and_consumers_of_others_are_refused() {
        let mut s = session(&[]);
        s.add_producer("mine".into());
        s.add_consumer("c-mine".into());
        assert!(s.check_producer(&"mine".into()).is_ok());
        assert_eq!(
            s.check_producer(&"theirs".into()).unwrap_err().code(),
            "PRODUCER_NOT_FOUND"
        );
        assert_eq!(
            s.check_consumer(&"theirs".into()).unwrap_err().code(),
            "CONSUMER_NOT_FOUND"
        );
        s.remove_producer(&"mine".into());
        assert!(s.check_producer(&"mine".into()).is_err());
    }

    #[test]
    fn a_peer_id_names_its_socket_and_differs_per_join() {
        for _ in 0..100 {
            let socket = Sid::new();
            let (first, second) = (peer_id(socket, 1), peer_id(socket, 2));
            assert_ne!(first, second);
            assert_eq!(socket_of(&first), Some(socket));
            assert_eq!(socket_of(&second), Some(socket));
        }
        assert_eq!(socket_of(&PeerId::from("no-socket-here")), None);
        assert_eq!(socket_of(&PeerId::from("")), None);
    }

    #[test]
    fn a_transport_the_worker_closed_is_forgotten() {
        let mut s = session(&[]);
        s.add_transport("t".into(), Direction::Recv);
        assert_eq!(s.remove_transport(&"t".into()), Some(Direction::Recv));
        assert_eq!(s.remove_transport(&"t".into()), None);
        assert_eq!(s.check_transport(&"t".into()).unwrap_err().code(), "TRANSPORT_NOT_FOUND");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills_with_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        assert_eq!(bucket.take(start).unwrap_err().code(), "RATE_LIMITED");
        // 10 per second: one token back after 100 ms.
        bucket.take(start + Duration::from_millis(100)).unwrap();
        assert!(bucket.take(start + Duration::from_millis(100)).is_err());
    }
}
