//! Where a room lives: which worker hosts it and what its Room object allows.
//!
//! Handlers ask a [`Placement`] before they talk to a worker. Two implementations are meant
//! (docs/architecture.md, "Placing a room"):
//!
//! - [`StaticPlacement`]: one worker for every room. Embedded mode and tests.
//! - [`crate::kube_placement::KubePlacement`]: a watch cache of Room objects (the operator
//!   writes each room's worker into its status), with auto-create and `room-migrated`.

use async_trait::async_trait;

use crate::error::Result;

/// Where a room is hosted and the rules its Room object sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLocation {
    /// Base URL of the worker's REST API, e.g. `http://10.0.0.7:3000`.
    pub endpoint: String,
    /// Roles allowed to publish (send transports, producers); empty means everyone.
    pub publishers: Vec<String>,
    /// Most participants the room takes, when limited.
    pub max_peers: Option<u32>,
}

impl RoomLocation {
    /// Whether a participant with `role` may publish in this room.
    pub fn may_publish(&self, role: &str) -> bool {
        self.publishers.is_empty() || self.publishers.iter().any(|allowed| allowed == role)
    }
}

/// A room that moved to another worker: its sockets are told `room-migrated` and rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub room: String,
    pub endpoint: String,
}

/// Finds a room's worker. Implementations must be cheap to call on every join.
#[async_trait]
pub trait Placement: Send + Sync + 'static {
    /// The room's location, or `ROOM_NOT_FOUND` when it has none (and cannot be given one).
    async fn locate(&self, room: &str) -> Result<RoomLocation>;

    /// Rooms moving between workers, for placements where that happens.
    fn migrations(&self) -> Option<tokio::sync::broadcast::Receiver<Migration>> {
        None
    }
}

/// Every room on one worker: embedded mode and tests.
#[derive(Debug, Clone)]
pub struct StaticPlacement {
    location: RoomLocation,
}

impl StaticPlacement {
    /// All rooms on the worker at `endpoint`; everyone may publish.
    pub fn new(endpoint: impl Into<String>) -> Self {
        StaticPlacement {
            location: RoomLocation {
                endpoint: endpoint.into(),
                publishers: Vec::new(),
                max_peers: None,
            },
        }
    }

    /// Only these roles may publish, in every room (empty: everyone).
    pub fn with_publishers(mut self, publishers: Vec<String>) -> Self {
        self.location.publishers = publishers;
        self
    }
}

#[async_trait]
impl Placement for StaticPlacement {
    async fn locate(&self, _room: &str) -> Result<RoomLocation> {
        Ok(self.location.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_placement_puts_every_room_on_its_worker() {
        let placement = StaticPlacement::new("http://127.0.0.1:3000");
        let a = placement.locate("a").await.unwrap();
        let b = placement.locate("b").await.unwrap();
        assert_eq!(a.endpoint, "http://127.0.0.1:3000");
        assert_eq!(a, b);
    }

    #[test]
    fn empty_publishers_lets_everyone_publish() {
        let location = StaticPlacement::new("w").location;
        assert!(location.may_publish("student"));
        assert!(location.may_publish(""));
    }

    #[test]
    fn publishers_limit_publishing_to_their_roles() {
        let location = StaticPlacement::new("w")
            .with_publishers(vec!["teacher".to_owned()])
            .location;
        assert!(location.may_publish("teacher"));
        assert!(!location.may_publish("student"));
    }
}
