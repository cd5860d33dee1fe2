//! Placement from Kubernetes: a watch cache of the namespace's Room objects, where the
//! operator writes each room's worker (`status.placement`). A lookup is a memory read.
//!
//! - A placed room: its worker endpoint, its `publishers` and `maxPeers`.
//! - A Room that is not placed yet (just created, or no worker fits): wait, bounded, for the
//!   operator; then `ROOM_PENDING` with the operator's reason.
//! - No Room: with auto-create on, create one and wait as above; otherwise `ROOM_NOT_FOUND`.
//! - A placement that changes (the operator moved the room off a lost worker) is reported as a
//!   [`Migration`], and the room's sockets get `room-migrated` so that clients rejoin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fanout_operator::crd::{Room, RoomPhase, RoomSpec};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast;

use crate::error::{Result, SignallingError};
use crate::placement::{Migration, Placement, RoomLocation, RoomSetup};

/// Creates Room objects for auto-create (behind a trait so tests need no API server).
#[async_trait]
pub trait RoomCreator: Send + Sync + 'static {
    async fn create(&self, namespace: &str, name: &str) -> std::result::Result<(), String>;
}

/// Creates Rooms through the API server, with the defaults of the CRD and an empty-room
/// timeout, since nobody asked for this room explicitly.
pub struct ApiRoomCreator {
    pub client: kube::Client,
    pub empty_timeout_seconds: i64,
}

#[async_trait]
impl RoomCreator for ApiRoomCreator {
    async fn create(&self, namespace: &str, name: &str) -> std::result::Result<(), String> {
        let api: Api<Room> = Api::namespaced(self.client.clone(), namespace);
        let room = Room::new(name, RoomSpec {
            display_name: None,
            max_peers: 50,
            worker_selector: None,
            publishers: vec![],
            codecs: vec![],
            empty_timeout_seconds: Some(self.empty_timeout_seconds),
        });
        match api.create(&PostParams::default(), &room).await {
            Ok(_) => Ok(()),
            // Someone (another signalling replica) created it first: fine.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Where a Room object says the room lives, if the operator placed it.
pub fn location_of(room: &Room) -> Option<RoomLocation> {
    let status = room.status.as_ref()?;
    if status.phase != Some(RoomPhase::Scheduled) {
        return None;
    }
    let placement = status.placement.as_ref()?;
    Some(RoomLocation {
        endpoint: placement.endpoint.clone(),
        publishers: room.spec.publishers.clone(),
        max_peers: u32::try_from(room.spec.max_peers).ok(),
        setup: RoomSetup {
            codecs: room.spec.codecs.clone(),
            empty_timeout: room
                .spec
                .empty_timeout_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .filter(|seconds| *seconds > 0)
                .map(Duration::from_secs),
        },
    })
}

/// Why a Room is not placed, in the operator's words.
pub fn pending_reason(room: &Room) -> String {
    room.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Scheduled"))
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "the operator has not placed it yet".to_string())
}

/// Rooms whose endpoint changed between two snapshots (`room -> endpoint` of placed rooms).
/// Rooms that appear or disappear are not migrations.
pub fn migrations(before: &HashMap<String, String>, after: &HashMap<String, String>) -> Vec<Migration> {
    let mut out: Vec<Migration> = after
        .iter()
        .filter_map(|(room, endpoint)| match before.get(room) {
            Some(old) if old != endpoint => Some(Migration { room: room.clone(), endpoint: endpoint.clone() }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| a.room.cmp(&b.room));
    out
}

/// Starts a watch cache of the namespace's Room objects (it runs until the process ends) and
/// waits for its first list.
pub async fn watch_rooms(client: kube::Client, namespace: &str) -> Store<Room> {
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (reader, writer) = reflector::store();
    let api: Api<Room> = Api::namespaced(client, namespace);
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff().applied_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    if reader.wait_until_ready().await.is_err() {
        tracing::error!("the Room watch stopped before its first list");
    }
    reader
}

pub struct KubePlacement {
    rooms: Store<Room>,
    namespace: String,
    creator: Option<Arc<dyn RoomCreator>>,
    wait: Duration,
    migrations: broadcast::Sender<Migration>,
}

impl KubePlacement {
    /// `creator` set means auto-create; `wait` bounds how long a join waits for the operator.
    pub fn new(rooms: Store<Room>, namespace: impl Into<String>, creator: Option<Arc<dyn RoomCreator>>, wait: Duration) -> Arc<Self> {
        let (migrations, _) = broadcast::channel(256);
        Arc::new(KubePlacement { rooms, namespace: namespace.into(), creator, wait, migrations })
    }

    fn placed(&self) -> HashMap<String, String> {
        self.rooms
            .state()
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(self.namespace.as_str()))
            .filter_map(|r| Some((r.metadata.name.clone()?, location_of(r)?.endpoint)))
            .collect()
    }

    /// Watches the cache for moved rooms until the process ends (checks twice a second).
    pub fn spawn_migration_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut before = this.placed();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let after = this.placed();
                for migration in migrations(&before, &after) {
                    tracing::info!(room = %migration.room, endpoint = %migration.endpoint, "room moved to another worker");
                    let _ = this.migrations.send(migration);
                }
                before = after;
            }
        })
    }

    fn get(&self, room: &str) -> Option<Arc<Room>> {
        self.rooms.get(&ObjectRef::new(room).within(&self.namespace))
    }

    /// Waits (bounded) for the cache to show `room` placed.
    async fn await_placement(&self, room: &str) -> Result<RoomLocation> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let current = self.get(room);
            if let Some(location) = current.as_deref().and_then(location_of) {
                return Ok(location);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match current {
                    Some(r) => SignallingError::RoomPending { room: room.to_string(), reason: pending_reason(&r) },
                    None => SignallingError::RoomNotFound(room.to_string()),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl Placement for KubePlacement {
    async fn locate(&self, room: &str) -> Result<RoomLocation> {
        // Room ids become object names; the rule is checked at join already, and again here
        // because this is where it matters.
        crate::ids::check_room_id(room)?;
        if let Some(location) = self.get(room).as_deref().and_then(location_of) {
            return Ok(location);
        }
        if self.get(room).is_none() {
            let Some(creator) = &self.creator else {
                return Err(SignallingError::RoomNotFound(room.to_string()));
            };
            creator.create(&self.namespace, room).await.map_err(|e| {
                tracing::warn!(room, error = %e, "could not create the Room");
                SignallingError::Internal
            })?;
        }
        self.await_placement(room).await
    }

    fn migrations(&self) -> Option<broadcast::Receiver<Migration>> {
        Some(self.migrations.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_operator::crd::{Placement as RoomPlacement, RoomStatus};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use std::sync::Mutex;

    fn room(name: &str, placed_on: Option<&str>) -> Room {
        let mut r = Room::new(name, RoomSpec {
            display_name: None,
            max_peers: 30,
            worker_selector: None,
            publishers: vec!["teacher".into()],
            codecs: vec![],
            empty_timeout_seconds: None,
        });
        r.metadata.namespace = Some("media".into());
        r.status = Some(match placed_on {
            Some(endpoint) => RoomStatus {
                phase: Some(RoomPhase::Scheduled),
                placement: Some(RoomPlacement {
                    sfu_worker: "sfu".into(),
                    pod: "sfu-0".into(),
                    pod_uid: "u".into(),
                    node: None,
                    endpoint: endpoint.into(),
                    announced_ip: None,
                    reserved_peers: 30,
                }),
                ..Default::default()
            },
            None => RoomStatus {
                phase: Some(RoomPhase::Pending),
                conditions: vec![fanout_operator::crd::condition(&[], "Scheduled", false, "InsufficientCapacity", "no worker can host 30 more peers", None, jiff::Timestamp::now())],
                ..Default::default()
            },
        });
        r
    }

    fn store(rooms: Vec<Room>) -> (Store<Room>, Writer<Room>) {
        let mut writer = Writer::<Room>::new(());
        writer.apply_watcher_event(&watcher::Event::Init);
        for r in rooms {
            writer.apply_watcher_event(&watcher::Event::InitApply(r));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (writer.as_reader(), writer)
    }

    /// Auto-create as the operator would answer it: the Room appears placed a little later.
    struct OperatorLike {
        writer: Mutex<Option<Writer<Room>>>,
        created: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl RoomCreator for OperatorLike {
        async fn create(&self, _namespace: &str, name: &str) -> std::result::Result<(), String> {
            self.created.lock().unwrap().push(name.to_string());
            let mut writer = self.writer.lock().unwrap().take().expect("one creation");
            let placed = room(name, Some("http://10.0.0.9:3000"));
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                writer.apply_watcher_event(&watcher::Event::Apply(placed));
                // Keep the writer alive so the store stays readable.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_placed_room_is_located_from_the_watch_cache() {
        let (rooms, _w) = store(vec![room("maths", Some("http://10.0.0.7:3000"))]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(100));
        let location = placement.locate("maths").await.unwrap();
        assert_eq!(location.endpoint, "http://10.0.0.7:3000");
        assert_eq!(location.publishers, vec!["teacher".to_string()]);
        assert_eq!(location.max_peers, Some(30));
        assert_eq!(location.setup, RoomSetup::default(), "no codecs and no empty timeout: the worker's defaults");
    }

    #[tokio::test]
    async fn a_rooms_codecs_and_empty_timeout_are_what_its_worker_opens_it_with() {
        let mut maths = room("maths", Some("http://10.0.0.7:3000"));
        maths.spec.codecs = vec![fanout_operator::crd::RoomCodec::VP8, fanout_operator::crd::RoomCodec::Opus];
        maths.spec.empty_timeout_seconds = Some(300);
        let (rooms, _w) = store(vec![maths]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(100));
        let setup = placement.locate("maths").await.unwrap().setup;
        assert_eq!(setup.codecs, [fanout_operator::crd::RoomCodec::VP8, fanout_operator::crd::RoomCodec::Opus]);
        assert_eq!(setup.empty_timeout, Some(Duration::from_secs(300)));
    }

    #[tokio::test]
    async fn an_unknown_room_without_auto_create_is_room_not_found() {
        let (rooms, _w) = store(vec![]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(100));
        let err = placement.locate("nope").await.unwrap_err();
        assert_eq!(err.code(), "ROOM_NOT_FOUND");
    }

    #[tokio::test]
    async fn an_unplaced_room_waits_then_reports_the_operators_reason() {
        let (rooms, _w) = store(vec![room("big", None)]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(150));
        let err = placement.locate("big").await.unwrap_err();
        assert_eq!(err.code(), "ROOM_PENDING");
        assert!(err.to_string().contains("no worker can host 30 more peers"), "{err}");
    }

    #[tokio::test]
    async fn auto_create_creates_the_room_and_waits_for_its_placement() {
        let (rooms, writer) = store(vec![]);
        let creator = Arc::new(OperatorLike { writer: Mutex::new(Some(writer)), created: Mutex::new(vec![]) });
        let placement = KubePlacement::new(rooms, "media", Some(creator.clone()), Duration::from_secs(2));
        let location = placement.locate("new-room").await.unwrap();
        assert_eq!(location.endpoint, "http://10.0.0.9:3000");
        assert_eq!(*creator.created.lock().unwrap(), vec!["new-room".to_string()]);
    }

    #[tokio::test]
    async fn room_ids_that_cannot_name_a_room_are_refused() {
        let (rooms, _w) = store(vec![]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(10));
        for bad in ["Maths", "a_b", "-x", "x-", "", &"a".repeat(64)] {
            assert_eq!(placement.locate(bad).await.unwrap_err().code(), "INVALID_ROOM_ID", "{bad:?}");
        }
    }

    #[test]
    fn a_changed_endpoint_is_a_migration_but_new_and_gone_rooms_are_not() {
        let before = HashMap::from([("a".to_string(), "w1".to_string()), ("b".to_string(), "w1".to_string())]);
        let after = HashMap::from([("a".to_string(), "w2".to_string()), ("c".to_string(), "w1".to_string())]);
        assert_eq!(migrations(&before, &after), vec![Migration { room: "a".into(), endpoint: "w2".into() }]);
    }

    #[tokio::test]
    async fn the_migration_watch_reports_a_moved_room() {
        let (rooms, mut writer) = store(vec![room("maths", Some("http://w1:3000"))]);
        let placement = KubePlacement::new(rooms, "media", None, Duration::from_millis(10));
        let mut moved = placement.migrations().unwrap();
        placement.spawn_migration_watch();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Apply(room("maths", Some("http://w2:3000"))));
        let migration = tokio::time::timeout(Duration::from_secs(3), moved.recv()).await.unwrap().unwrap();
        assert_eq!(migration, Migration { room: "maths".into(), endpoint: "http://w2:3000".into() });
    }
}
