//! The reconcilers: thin I/O around the pure decisions in [`crate::scheduler`],
//! [`crate::pool`], [`crate::placement`], [`crate::status`] and [`crate::recording`].
//!
//! Both read the cluster through watch caches ([`Store`]s) and write through the API. Room
//! scheduling goes through one lock ([`Context::ledger`]) so concurrent reconciles can never
//! commit the same free capacity twice.

pub mod recording;
pub mod room;
pub mod sfuworker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::{labels, Recording, Room, SfuWorker};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::scheduler::Policy;
use crate::worker_api::WorkerApi;

/// Operator settings that shape decisions.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: Policy,
    /// How long a room waits on a NotReady pod before it is moved.
    pub reschedule_grace: Duration,
    /// How long to wait for a worker's `/v1/stats`.
    pub stats_timeout: Duration,
    /// Watch and act in this namespace only (`None`: every namespace).
    pub namespace: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: Policy::Spread,
            reschedule_grace: Duration::from_secs(30),
            stats_timeout: Duration::from_secs(2),
            namespace: None,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub rooms: Store<Room>,
    pub pools: Store<SfuWorker>,
    pub pods: Store<Pod>,
    pub workers: Arc<dyn WorkerApi>,
    pub ledger: Mutex<Ledger>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
}

impl Context {
    /// Publishes an Event about `obj`. Events are for people; failing to write one never fails
    /// a reconcile.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, note: String) {
        self.event_about(obj, None, type_, reason, note).await
    }

    /// An Event about `obj` that concerns `related` too (a pool's pod, say). Events with the
    /// same object, reason and related object fold into one series.
    pub async fn event_about<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    /// Locks the ledger; a panic elsewhere while holding it leaves consistent data (every
    /// mutation is a single map operation), so a poisoned lock is still usable.
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Watch caches for the objects reconciles read, and the tasks that keep them filled.
pub struct Caches {
    pub rooms: Store<Room>,
    pub pools: Store<SfuWorker>,
    pub pods: Store<Pod>,
}

impl Caches {
    /// Starts the reflectors (they run until the process ends) and waits for their first list.
    /// `namespace` limits them to one namespace.
    pub async fn start(client: &Client, namespace: Option<&str>) -> Caches {
        fn spawn<K>(api: Api<K>, config: watcher::Config) -> Store<K>
        where
            K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
        {
            let (reader, writer) = reflector::store();
            let stream = reflector(writer, watcher(api, config)).default_backoff().applied_objects();
            tokio::spawn(stream.for_each(|_| futures::future::ready(())));
            reader
        }
        let rooms = spawn(scoped::<Room>(client, namespace), watcher::Config::default());
        let pools = spawn(scoped::<SfuWorker>(client, namespace), watcher::Config::default());
        let pods = spawn(scoped::<Pod>(client, namespace), watcher::Config::default().labels(labels::SFU_WORKER));
        let (r, w, p) = futures::join!(rooms.wait_until_ready(), pools.wait_until_ready(), pods.wait_until_ready());
        if r.is_err() || w.is_err() || p.is_err() {
            tracing::error!("a watch cache stopped before its first list");
        }
        Caches { rooms, pools, pods }
    }
}

/// An API for every namespace, or for one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers (Rooms, SfuWorkers, Recordings) until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    let ns = ns.as_deref();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let (shutdown_recordings, ctx_recordings) = (shutdown.clone(), ctx.clone());
    let rooms_for_pods = ctx.rooms.clone();
    let rooms_for_pools = ctx.rooms.clone();
    let room_controller = Controller::new(scoped::<Room>(&client, ns), watcher::Config::default())
        // A pod changing (ready, gone) concerns the rooms on it, and any pending room.
        .watches(
            scoped::<Pod>(&client, ns),
            watcher::Config::default().labels(labels::SFU_WORKER),
            move |pod: Pod| rooms_affected_by_pod(&rooms_for_pods, &pod),
        )
        // A pool changing (capacity, labels) may let pending rooms fit.
        .watches(scoped::<SfuWorker>(&client, ns), watcher::Config::default(), move |pool: SfuWorker| {
            pending_rooms(&rooms_for_pools, pool.namespace().as_deref())
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(room::reconcile, room::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "room reconcile failed");
            }
        });

    let pool_controller = Controller::new(scoped::<SfuWorker>(&client, ns), watcher::Config::default())
        .owns(scoped::<Pod>(&client, ns), watcher::Config::default().labels(labels::SFU_WORKER))
        // Room placements change a pool's room counts and let draining pods finish.
        .watches(scoped::<Room>(&client, ns), watcher::Config::default(), |room: Room| {
            room.status
                .and_then(|s| s.placement)
                .map(|p| ObjectRef::<SfuWorker>::new(&p.sfu_worker).within(room.metadata.namespace.as_deref().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(sfuworker::reconcile, sfuworker::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "sfuworker reconcile failed");
            }
        });

    let recordings = Controller::new(scoped::<Recording>(&client, ns), watcher::Config::default());
    let recordings_by_room = recordings.store();
    let recording_controller = recordings
        // A Room appearing, being placed or moving concerns the Recordings that name it.
        .watches(scoped::<Room>(&client, ns), watcher::Config::default(), move |room: Room| {
            recordings_of_room(&recordings_by_room, &room)
        })
        .graceful_shutdown_on(shutdown_recordings)
        .run(recording::reconcile, recording::error_policy, ctx_recordings)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "recording reconcile failed");
            }
        });

    futures::join!(room_controller, pool_controller, recording_controller);
}

/// Rooms placed on `pod`, plus every pending room of its namespace.
fn rooms_affected_by_pod(rooms: &Store<Room>, pod: &Pod) -> Vec<ObjectRef<Room>> {
    let ns = pod.namespace();
    let name = pod.name_any();
    rooms
        .state()
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter(|r| match r.status.as_ref().and_then(|s| s.placement.as_ref()) {
            Some(p) => p.pod == name,
            None => true,
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Recordings of `room` (by name, in its namespace).
fn recordings_of_room(recordings: &Store<Recording>, room: &Room) -> Vec<ObjectRef<Recording>> {
    let ns = room.namespace();
    let name = room.name_any();
    recordings
        .state()
        .iter()
        .filter(|r| r.namespace() == ns && r.spec.room_name == name)
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Unplaced rooms of a namespace.
fn pending_rooms(rooms: &Store<Room>, ns: Option<&str>) -> Vec<ObjectRef<Room>> {
    rooms
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == ns)
        .filter(|r| r.status.as_ref().and_then(|s| s.placement.as_ref()).is_none())
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Backoff for failed reconciles.
fn retry_after(_err: &crate::Error) -> Action {
    Action::requeue(Duration::from_secs(5))
}
