//! Test harness for the reconcilers: a fake API server, watch caches filled from it on demand
//! (so a test decides exactly how stale the caches are), fake workers, and a kubelet stand-in.

#![allow(dead_code)]

pub mod fake_api;

#[path = "../common/recordings.rs"]
pub mod recording_fixtures;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fanout_operator::controller::{recording, room, sfuworker, Config, Context};
use fanout_operator::crd::{Recording, Room, SfuWorker};
use fanout_operator::worker_api::{WorkerApi, WorkerRecording, WorkerRecordingState};
use fanout_worker::api::WorkerStats;
use fanout_worker::client::ClientError;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

pub use fake_api::FakeApi;

pub const NS: &str = "media";

/// Workers as the operator sees them through [`WorkerApi`].
#[derive(Default)]
pub struct FakeWorkers {
    pub stats: Mutex<HashMap<String, WorkerStats>>,
    pub down: Mutex<HashSet<String>>,
    /// `(endpoint, room)` of every close_room call that reached a live worker.
    pub closed: Mutex<Vec<(String, String)>>,
    /// Peers per `(endpoint, room)`; absent: the worker does not know the room.
    pub room_peers: Mutex<HashMap<(String, String), u32>>,
    /// Recordings per `(endpoint, room, id)`, as the worker would report them.
    pub recordings: Mutex<HashMap<(String, String, String), WorkerRecording>>,
    /// Every recording call that reached a live worker: `"POST|GET|DELETE endpoint room id"`.
    pub recording_calls: Mutex<Vec<String>>,
    /// Workers without a recording directory (they answer 503 `RECORDING_DISABLED`).
    pub recording_disabled: Mutex<HashSet<String>>,
}

impl FakeWorkers {
    fn reachable(&self, endpoint: &str) -> Result<(), ClientError> {
        if self.down.lock().unwrap().contains(endpoint) {
            return Err(ClientError::Unavailable { endpoint: endpoint.into(), reason: "connection refused".into() });
        }
        Ok(())
    }

    /// Changes a recording in place (files growing, a failure), as the worker's recorder would.
    pub fn update_recording(&self, endpoint: &str, room: &str, id: &str, f: impl FnOnce(&mut WorkerRecording)) {
        let mut all = self.recordings.lock().unwrap();
        f(all.get_mut(&(endpoint.to_string(), room.to_string(), id.to_string())).expect("the worker has the recording"));
    }

    pub fn calls(&self) -> Vec<String> {
        self.recording_calls.lock().unwrap().clone()
    }
}

fn not_found(code: &str, message: String) -> ClientError {
    ClientError::Api { status: 404, code: code.into(), message }
}

#[async_trait]
impl WorkerApi for FakeWorkers {
    async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        if self.down.lock().unwrap().contains(endpoint) {
            return Err(ClientError::Unavailable { endpoint: endpoint.into(), reason: "connection refused".into() });
        }
        Ok(self.stats.lock().unwrap().get(endpoint).cloned().unwrap_or_default())
    }

    async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        if self.down.lock().unwrap().contains(endpoint) {
            return Err(ClientError::Unavailable { endpoint: endpoint.into(), reason: "connection refused".into() });
        }
        self.closed.lock().unwrap().push((endpoint.into(), room.into()));
        Ok(())
    }

    async fn room_peers(&self, endpoint: &str, room: &str) -> Result<u32, ClientError> {
        if self.down.lock().unwrap().contains(endpoint) {
            return Err(ClientError::Unavailable { endpoint: endpoint.into(), reason: "connection refused".into() });
        }
        Ok(self.room_peers.lock().unwrap().get(&(endpoint.to_string(), room.to_string())).copied().unwrap_or(0))
    }

    async fn start_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.reachable(endpoint)?;
        self.recording_calls.lock().unwrap().push(format!("POST {endpoint} {room} {id}"));
        if self.recording_disabled.lock().unwrap().contains(endpoint) {
            return Err(ClientError::Api { status: 503, code: "RECORDING_DISABLED".into(), message: "this worker has no --recording-dir".into() });
        }
        let mut all = self.recordings.lock().unwrap();
        let entry = all.entry((endpoint.into(), room.into(), id.into())).or_insert_with(|| recording_fixtures::started(room, id));
        Ok(entry.clone())
    }

    async fn recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.reachable(endpoint)?;
        self.recording_calls.lock().unwrap().push(format!("GET {endpoint} {room} {id}"));
        let all = self.recordings.lock().unwrap();
        all.get(&(endpoint.into(), room.into(), id.into())).cloned().ok_or_else(|| not_found("RECORDING_NOT_FOUND", format!("no recording {id}")))
    }

    async fn stop_recording(&self, endpoint: &str, room: &str, id: &str) -> Result<WorkerRecording, ClientError> {
        self.reachable(endpoint)?;
        self.recording_calls.lock().unwrap().push(format!("DELETE {endpoint} {room} {id}"));
        let mut all = self.recordings.lock().unwrap();
        let r = all.get_mut(&(endpoint.into(), room.into(), id.into())).ok_or_else(|| not_found("RECORDING_NOT_FOUND", format!("no recording {id}")))?;
        if r.state == WorkerRecordingState::Recording {
            r.state = WorkerRecordingState::Stopped;
            r.stopped_at = Some(jiff::Timestamp::now().to_string());
        }
        Ok(r.clone())
    }
}

pub struct Harness {
    pub api: FakeApi,
    pub client: Client,
    pub workers: Arc<FakeWorkers>,
    pub ctx: Arc<Context>,
    rooms: Writer<Room>,
    pools: Writer<SfuWorker>,
    pods: Writer<Pod>,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let (api, client) = FakeApi::start();
        Self::with(api, client, Arc::new(FakeWorkers::default()), config)
    }

    fn with(api: FakeApi, client: Client, workers: Arc<FakeWorkers>, config: Config) -> Harness {
        let rooms = Writer::<Room>::new(());
        let pools = Writer::<SfuWorker>::new(());
        let pods = Writer::<Pod>::new(());
        let ctx = Arc::new(Context {
            client: client.clone(),
            rooms: rooms.as_reader(),
            pools: pools.as_reader(),
            pods: pods.as_reader(),
            workers: workers.clone(),
            ledger: Mutex::new(Default::default()),
            recorder: Recorder::new(client.clone(), Reporter { controller: "fanout-operator".into(), instance: None }),
            metrics: Default::default(),
            config,
        });
        let mut h = Harness { api, client, workers, ctx, rooms, pools, pods };
        h.sync();
        h
    }

    /// A new operator process against the same cluster: empty ledger, caches from a fresh list.
    pub fn restart(self) -> Harness {
        let config = self.ctx.config.clone();
        Self::with(self.api, self.client, self.workers, config)
    }

    /// Refills every watch cache from the API server's current state (a watch catching up).
    pub fn sync(&mut self) {
        fn refill<K>(writer: &mut Writer<K>, objects: Vec<Value>)
        where
            K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
        {
            writer.apply_watcher_event(&watcher::Event::Init);
            for v in objects {
                let obj: K = serde_json::from_value(v).expect("fake object deserialises");
                writer.apply_watcher_event(&watcher::Event::InitApply(obj));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        refill(&mut self.rooms, self.api.list("rooms"));
        refill(&mut self.pools, self.api.list("sfuworkers"));
        refill(&mut self.pods, self.api.list("pods"));
    }

    // --- objects -------------------------------------------------------------------------

    pub fn apply_pool(&self, name: &str, replicas: i32, max_peers: i32, max_rooms: i32) -> Value {
        self.api.put("sfuworkers", json!({
            "apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker",
            "metadata": {"name": name, "namespace": NS, "labels": {"pool": name}},
            "spec": {"replicas": replicas, "image": "fanout:test", "capacity": {"maxPeers": max_peers, "maxRooms": max_rooms},
                     "drainTimeoutSeconds": 600}
        }))
    }

    pub fn apply_room(&self, name: &str, max_peers: i32) -> Value {
        self.api.put("rooms", json!({
            "apiVersion": "fanout.dev/v1alpha1", "kind": "Room",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"maxPeers": max_peers}
        }))
    }

    pub fn apply_recording(&self, name: &str, room: &str) -> Value {
        self.api.put("recordings", json!({
            "apiVersion": "fanout.dev/v1alpha1", "kind": "Recording",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"roomName": room}
        }))
    }

    pub fn recording(&self, name: &str) -> Option<Recording> {
        self.api.get("recordings", NS, name).map(|v| serde_json::from_value(v).unwrap())
    }

    pub async fn reconcile_recording(&self, name: &str) -> Action {
        let rec = Arc::new(self.recording(name).expect("recording exists"));
        recording::reconcile(rec, self.ctx.clone()).await.expect("recording reconcile succeeds")
    }

    pub fn pool(&self, name: &str) -> SfuWorker {
        serde_json::from_value(self.api.get("sfuworkers", NS, name).expect("pool exists")).unwrap()
    }

    pub fn room(&self, name: &str) -> Option<Room> {
        self.api.get("rooms", NS, name).map(|v| serde_json::from_value(v).unwrap())
    }

    pub fn pods(&self) -> Vec<Pod> {
        self.api.list("pods").into_iter().map(|v| serde_json::from_value(v).unwrap()).collect()
    }

    pub fn pod(&self, name: &str) -> Option<Pod> {
        self.api.get("pods", NS, name).map(|v| serde_json::from_value(v).unwrap())
    }

    /// Event reasons recorded so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.api.list("events").iter().filter_map(|e| e["reason"].as_str().map(String::from)).collect()
    }

    // --- the kubelet ---------------------------------------------------------------------

    /// Schedules and starts a pod: node, IPs, Running, Ready.
    pub fn kubelet_starts(&self, pod: &str, ip: &str) {
        self.api.update("pods", NS, pod, |p| {
            p["spec"]["nodeName"] = json!(format!("node-{pod}"));
            p["status"] = json!({
                "phase": "Running", "podIP": ip, "hostIP": ip,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": jiff::Timestamp::now().to_string()}]
            });
        });
    }

    /// Starts every pod that is not running yet, with addresses 10.0.0.1, 10.0.0.2, ...
    pub fn kubelet_starts_all(&self) {
        for (i, pod) in self.pods().iter().enumerate() {
            let name = pod.metadata.name.clone().unwrap();
            if pod.status.is_none() {
                self.kubelet_starts(&name, &format!("10.0.{}.{}", i / 250, i % 250 + 1));
            }
        }
    }

    pub fn kubelet_not_ready_since(&self, pod: &str, since: jiff::Timestamp) {
        self.api.update("pods", NS, pod, |p| {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "lastTransitionTime": since.to_string()}]);
        });
    }

    // --- reconciles ----------------------------------------------------------------------

    pub async fn reconcile_pool(&self, name: &str) -> Action {
        let pool = Arc::new(self.pool(name));
        sfuworker::reconcile(pool, self.ctx.clone()).await.expect("sfuworker reconcile succeeds")
    }

    pub async fn try_reconcile_room(&self, name: &str) -> Result<Action, fanout_operator::Error> {
        let room = Arc::new(self.room(name).expect("room exists"));
        room::reconcile(room, self.ctx.clone()).await
    }

    pub async fn reconcile_room(&self, name: &str) -> Action {
        self.try_reconcile_room(name).await.expect("room reconcile succeeds")
    }

    /// A pool with `replicas` running, ready pods and an up-to-date status, caches in sync.
    pub async fn ready_pool(&mut self, name: &str, replicas: i32, max_peers: i32, max_rooms: i32) {
        self.apply_pool(name, replicas, max_peers, max_rooms);
        self.sync();
        self.reconcile_pool(name).await;
        self.kubelet_starts_all();
        self.sync();
        self.reconcile_pool(name).await;
        self.sync();
    }

    /// Adds the finalizer (first pass) and places the room (second pass), syncing caches.
    pub async fn settle_room(&mut self, name: &str) -> Action {
        self.sync();
        self.reconcile_room(name).await;
        self.sync();
        let action = self.reconcile_room(name).await;
        self.sync();
        action
    }
}
