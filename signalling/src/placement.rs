//! Where a room lives: which worker hosts it and what its Room object allows.
//!
//! Handlers ask a [`Placement`] before they talk to a worker. Two implementations are meant
//! (docs/architecture.md, "Placing a room"):
//!
//! - [`StaticPlacement`]: workers named by URL: one for every room (embedded mode, tests), or
//!   several with rendezvous hashing and failover ([`crate::worker_pool`]).
//! - [`crate::kube_placement::KubePlacement`]: a watch cache of Room objects (the operator
//!   writes each room's worker into its status), with auto-create and `room-migrated`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fanout_operator::crd::RoomCodec;
use fanout_worker::api::{
    ConsumeDataRequest, ConsumeRequest, JoinRequest, ProduceDataRequest, ProduceRequest, RoomInfo, SetPreferredLayersRequest,
};
use fanout_worker::client::WorkerClient;
use fanout_worker::room::{
    DataConsumerCreated, DataConsumerId, DataProducerCreated, DataProducerId, SctpCapabilities,
    ConsumerCreated, ConsumerId, Direction, DtlsParameters, IceParameters, JoinResponse, PeerId,
    ProducerCreated, ProducerId, RoomEvent, TransportCreated, TransportId, TransportProtocols,
};
use fanout_worker::rtp::{RtpCapabilities, RtpCodecCapability, default_media_codecs};
use fanout_worker::video::Layers;
use futures::StreamExt as _;
use tokio::sync::{Notify, broadcast};

use crate::error::{Result, SignallingError};
use crate::worker::{MediaBackend, RoomEvents};
use crate::worker_pool::{Probe, WorkerPool};

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

/// Rooms on workers named by URL (`--worker-url`): one worker (embedded mode, tests, a small
/// deployment), or several with failover ([`crate::worker_pool`]: rendezvous hashing over the
/// healthy workers, a health watch, and [`Migration`]s for the rooms of a worker that goes
/// down). Clones share their state.
#[derive(Clone)]
pub struct StaticPlacement {
    pool: Arc<Mutex<WorkerPool>>,
    publishers: Vec<String>,
    migrations: broadcast::Sender<Migration>,
    /// One per worker: wakes its probe loop at once (a stream of it broke, a call found it
    /// unreachable). A wake-up while a probe runs is kept for right after it.
    suspicions: Arc<Vec<Notify>>,
}

impl std::fmt::Debug for StaticPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticPlacement")
            .field("workers", &self.lock().endpoints())
            .field("publishers", &self.publishers)
            .finish()
    }
}

impl StaticPlacement {
    /// All rooms on the worker at `endpoint`; everyone may publish.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self::with_workers(vec![endpoint.into()])
    }

    /// Rooms spread over `endpoints` (at least one; see [`crate::worker_pool::parse_worker_urls`]).
    /// Failover needs [`StaticPlacement::spawn_health_watch`] and the backend wrapped in
    /// [`StaticPlacement::watched`].
    pub fn with_workers(endpoints: Vec<String>) -> Self {
        let (migrations, _) = broadcast::channel(256);
        let suspicions = endpoints.iter().map(|_| Notify::new()).collect();
        StaticPlacement {
            pool: Arc::new(Mutex::new(WorkerPool::new(endpoints))),
            publishers: Vec::new(),
            migrations,
            suspicions: Arc::new(suspicions),
        }
    }

    /// Only these roles may publish, in every room (empty: everyone).
    pub fn with_publishers(mut self, publishers: Vec<String>) -> Self {
        self.publishers = publishers;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkerPool> {
        // Plain data, left consistent by every method: a panic elsewhere does not spoil it.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workers' endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.lock().endpoints().to_vec()
    }

    /// Asks for an immediate probe of the worker at `endpoint`.
    fn suspect(&self, endpoint: &str) {
        if let Some(index) = self.lock().index_of(endpoint) {
            self.suspicions[index].notify_one();
        }
    }

    /// `backend` reporting to this placement which rooms' event streams are open (a room in
    /// use stays on its worker) and which workers it found unreachable (probed at once).
    pub fn watched(&self, backend: Arc<dyn MediaBackend>) -> WatchedBackend {
        WatchedBackend { inner: backend, placement: self.clone() }
    }

    /// Probes every worker (`GET /healthz` with `client`) every `interval` and whenever it is
    /// suspected, until the process ends; a worker going down moves its rooms
    /// ([`Placement::migrations`]). `client` should time out within about `interval`.
    pub fn spawn_health_watch(&self, client: WorkerClient, interval: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let endpoints = self.endpoints();
        endpoints
            .into_iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let this = self.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    loop {
                        let suspected = tokio::select! {
                            () = tokio::time::sleep(interval) => false,
                            () = this.suspicions[index].notified() => true,
                        };
                        let probe = match client.healthz(&endpoint).await {
                            Ok(()) => Probe::Healthy,
                            Err(error) => {
                                tracing::debug!(worker = %endpoint, %error, suspected, "worker probe failed");
                                if suspected { Probe::FailedAfterBreak } else { Probe::Failed }
                            }
                        };
                        this.apply_probe(index, &endpoint, probe);
                    }
                })
            })
            .collect()
    }

    fn apply_probe(&self, index: usize, endpoint: &str, probe: Probe) {
        let now = tokio::time::Instant::now();
        let (was_up, is_up, moved) = {
            let mut pool = self.lock();
            let was_up = pool.is_up(index);
            let moved = pool.probed(index, probe, now);
            pool.forget_abandoned(now);
            (was_up, pool.is_up(index), moved)
        };
        match (was_up, is_up) {
            (true, false) => tracing::warn!(worker = endpoint, rooms = moved.len(), "worker is down; moving its rooms to healthy workers"),
            (false, true) => tracing::info!(worker = endpoint, "worker is up again; it takes new rooms"),
            _ => {}
        }
        for migration in moved {
            tracing::info!(room = %migration.room, endpoint = %migration.endpoint, "room moved to another worker");
            let _ = self.migrations.send(migration);
        }
    }
}

#[async_trait]
impl Placement for StaticPlacement {
    async fn locate(&self, room: &str) -> Result<RoomLocation> {
        Ok(RoomLocation {
            endpoint: self.lock().locate(room).to_owned(),
            publishers: self.publishers.clone(),
            max_peers: None,
            setup: RoomSetup::default(),
        })
    }

    fn migrations(&self) -> Option<broadcast::Receiver<Migration>> {
        Some(self.migrations.subscribe())
    }
}

/// A [`MediaBackend`] that tells its [`StaticPlacement`] what it sees: event streams opening
/// and ending (which rooms are in use where), and workers that do not answer (probed at once,
/// so that a killed worker is down within a probe's round trip rather than two intervals).
pub struct WatchedBackend {
    inner: Arc<dyn MediaBackend>,
    placement: StaticPlacement,
}

impl WatchedBackend {
    fn seen<T>(&self, endpoint: &str, result: Result<T>) -> Result<T> {
        if matches!(result, Err(SignallingError::WorkerUnavailable)) {
            self.placement.suspect(endpoint);
        }
        result
    }
}

/// Counts an open event stream in the pool until dropped.
struct OpenStream {
    placement: StaticPlacement,
    room: String,
    endpoint: String,
    counted: bool,
    /// It failed or ended without `roomClosed`.
    broke: bool,
}

impl OpenStream {
    fn broke(&mut self) {
        self.broke = true;
        self.placement.suspect(&self.endpoint);
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.counted {
            let now = tokio::time::Instant::now();
            self.placement.lock().stream_closed(&self.room, &self.endpoint, self.broke, now);
        }
    }
}

#[async_trait]
impl MediaBackend for WatchedBackend {
    async fn ensure_room(&self, endpoint: &str, room: &str, setup: &RoomSetup) -> Result<RtpCapabilities> {
        self.seen(endpoint, self.inner.ensure_room(endpoint, room, setup).await)
    }
    async fn join(&self, endpoint: &str, room: &str, join: &JoinRequest) -> Result<JoinResponse> {
        self.seen(endpoint, self.inner.join(endpoint, room, join).await)
    }
    async fn leave(&self, endpoint: &str, room: &str, peer: &PeerId) -> Result<()> {
        self.seen(endpoint, self.inner.leave(endpoint, room, peer).await)
    }
    async fn create_transport(
        &self,
        endpoint: &str,
        room: &str,
        peer: &PeerId,
        direction: Direction,
        protocols: &TransportProtocols,
        sctp: Option<&SctpCapabilities>,
    ) -> Result<TransportCreated> {
        self.seen(endpoint, self.inner.create_transport(endpoint, room, peer, direction, protocols, sctp).await)
    }
    async fn produce_data(&self, endpoint: &str, room: &str, produce: &ProduceDataRequest) -> Result<DataProducerCreated> {
        self.seen(endpoint, self.inner.produce_data(endpoint, room, produce).await)
    }
    async fn consume_data(&self, endpoint: &str, room: &str, consume: &ConsumeDataRequest) -> Result<DataConsumerCreated> {
        self.seen(endpoint, self.inner.consume_data(endpoint, room, consume).await)
    }
    async fn close_data_producer(&self, endpoint: &str, room: &str, id: &DataProducerId) -> Result<()> {
        self.seen(endpoint, self.inner.close_data_producer(endpoint, room, id).await)
    }
    async fn close_data_consumer(&self, endpoint: &str, room: &str, id: &DataConsumerId) -> Result<()> {
        self.seen(endpoint, self.inner.close_data_consumer(endpoint, room, id).await)
    }
    async fn connect_transport(
        &self,
        endpoint: &str,
        room: &str,
        transport: &TransportId,
        dtls_parameters: &DtlsParameters,
    ) -> Result<()> {
        self.seen(endpoint, self.inner.connect_transport(endpoint, room, transport, dtls_parameters).await)
    }
    async fn restart_ice(&self, endpoint: &str, room: &str, transport: &TransportId) -> Result<IceParameters> {
        self.seen(endpoint, self.inner.restart_ice(endpoint, room, transport).await)
    }
    async fn produce(&self, endpoint: &str, room: &str, produce: &ProduceRequest) -> Result<ProducerCreated> {
        self.seen(endpoint, self.inner.produce(endpoint, room, produce).await)
    }
    async fn consume(&self, endpoint: &str, room: &str, consume: &ConsumeRequest) -> Result<ConsumerCreated> {
        self.seen(endpoint, self.inner.consume(endpoint, room, consume).await)
    }
    async fn pause_producer(&self, endpoint: &str, room: &str, producer: &ProducerId) -> Result<()> {
        self.seen(endpoint, self.inner.pause_producer(endpoint, room, producer).await)
    }
    async fn resume_producer(&self, endpoint: &str, room: &str, producer: &ProducerId) -> Result<()> {
        self.seen(endpoint, self.inner.resume_producer(endpoint, room, producer).await)
    }
    async fn close_producer(&self, endpoint: &str, room: &str, producer: &ProducerId) -> Result<()> {
        self.seen(endpoint, self.inner.close_producer(endpoint, room, producer).await)
    }
    async fn pause_consumer(&self, endpoint: &str, room: &str, consumer: &ConsumerId) -> Result<()> {
        self.seen(endpoint, self.inner.pause_consumer(endpoint, room, consumer).await)
    }
    async fn resume_consumer(&self, endpoint: &str, room: &str, consumer: &ConsumerId) -> Result<()> {
        self.seen(endpoint, self.inner.resume_consumer(endpoint, room, consumer).await)
    }
    async fn close_consumer(&self, endpoint: &str, room: &str, consumer: &ConsumerId) -> Result<()> {
        self.seen(endpoint, self.inner.close_consumer(endpoint, room, consumer).await)
    }
    async fn set_consumer_preferred_layers(
        &self,
        endpoint: &str,
        room: &str,
        consumer: &ConsumerId,
        request: &SetPreferredLayersRequest,
    ) -> Result<Layers> {
        self.seen(endpoint, self.inner.set_consumer_preferred_layers(endpoint, room, consumer, request).await)
    }
    async fn set_consumer_priority(&self, endpoint: &str, room: &str, consumer: &ConsumerId, priority: u32) -> Result<u32> {
        self.seen(endpoint, self.inner.set_consumer_priority(endpoint, room, consumer, priority).await)
    }
    async fn room_info(&self, endpoint: &str, room: &str) -> Result<RoomInfo> {
        self.seen(endpoint, self.inner.room_info(endpoint, room).await)
    }
    async fn events(&self, endpoint: &str, room: &str) -> Result<RoomEvents> {
        let events = self.seen(endpoint, self.inner.events(endpoint, room).await)?;
        let counted = self.placement.lock().stream_opened(room, endpoint);
        let open = OpenStream {
            placement: self.placement.clone(),
            room: room.to_owned(),
            endpoint: endpoint.to_owned(),
            counted,
            broke: false,
        };
        // A stream that fails or ends without `roomClosed` is the first sign of a killed
        // worker (its connection resets at once): have the worker probed now.
        let watched = futures::stream::unfold((events, open, false), |(mut events, mut open, closed)| async move {
            match events.next().await {
                Some(Ok(event)) => {
                    let closed = closed || matches!(event, RoomEvent::RoomClosed { .. });
                    Some((Ok(event), (events, open, closed)))
                }
                Some(Err(error)) => {
                    open.broke();
                    Some((Err(error), (events, open, closed)))
                }
                None => {
                    if !closed {
                        open.broke();
                    }
                    None
                }
            }
        });
        Ok(watched.boxed())
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

    #[tokio::test]
    async fn empty_publishers_lets_everyone_publish() {
        let location = StaticPlacement::new("w").locate("r").await.unwrap();
        assert!(location.may_publish("student"));
        assert!(location.may_publish(""));
    }

    #[tokio::test]
    async fn publishers_limit_publishing_to_their_roles() {
        let location = StaticPlacement::new("w")
            .with_publishers(vec!["teacher".to_owned()])
            .locate("r")
            .await
            .unwrap();
        assert!(location.may_publish("teacher"));
        assert!(!location.may_publish("student"));
    }
}
