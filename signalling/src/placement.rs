//! Where a room lives: which worker hosts it and what its Room object allows.
//!
//! Handlers ask a [`Placement`] before they talk to a worker. Two implementations are meant
//! (docs/architecture.md, "Placing a room"):
//!
//! - [`StaticPlacement`]: one worker for every room. Embedded mode and tests.
//! - [`crate::kube_placement::KubePlacement`]: a watch cache of Room objects (the operator
//!   writes each room's worker into its status), with auto-create and `room-migrated`.

use std::time::Duration;

use async_trait::async_trait;
use fanout_operator::crd::RoomCodec;
use fanout_worker::rtp::{RtpCodecCapability, default_media_codecs};

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
    /// How the worker opens the room.
    pub setup: RoomSetup,
}

/// What a room is opened with on its worker: the Room object's `codecs` and
/// `emptyTimeoutSeconds` in Kubernetes mode, the worker's defaults otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSetup {
    /// Codecs the room offers, in order of preference; empty: the worker's defaults.
    pub codecs: Vec<RoomCodec>,
    /// How long the worker keeps the room open without peers; `None`: the worker's default
    /// (`--empty-room-timeout-seconds`).
    pub empty_timeout: Option<Duration>,
}

impl RoomSetup {
    /// The worker's media codecs for [`RoomSetup::codecs`], in their order: each names every
    /// variant the worker has of it (H264 is two profiles). Empty when the room names none,
    /// which the worker reads as its defaults.
    pub fn media_codecs(&self) -> Vec<RtpCodecCapability> {
        let supported = default_media_codecs();
        let mut codecs = Vec::new();
        for codec in &self.codecs {
            let mime = match codec {
                RoomCodec::Opus => "audio/opus",
                RoomCodec::VP8 => "video/VP8",
                RoomCodec::VP9 => "video/VP9",
                RoomCodec::H264 => "video/H264",
            };
            for capability in supported.iter().filter(|c| c.mime_type.eq_ignore_ascii_case(mime)) {
                if !codecs.contains(capability) {
                    codecs.push(capability.clone());
                }
            }
        }
        codecs
    }
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
                setup: RoomSetup::default(),
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
    fn a_room_naming_no_codecs_opens_with_the_workers_defaults() {
        assert!(RoomSetup::default().media_codecs().is_empty());
    }

    #[test]
    fn a_rooms_codecs_become_the_workers_codecs_in_the_rooms_order() {
        let setup = RoomSetup {
            codecs: vec![RoomCodec::H264, RoomCodec::Opus, RoomCodec::H264],
            empty_timeout: None,
        };
        let codecs = setup.media_codecs();
        let mimes: Vec<&str> = codecs.iter().map(|c| c.mime_type.as_str()).collect();
        // Both H264 profiles the worker has, once each, then Opus.
        assert_eq!(mimes, ["video/H264", "video/H264", "audio/opus"]);
        assert_ne!(codecs[0].parameters, codecs[1].parameters);
        // And the worker takes them as a room's media codecs.
        fanout_worker::rtp::router_capabilities(&codecs).expect("the worker accepts them");
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
