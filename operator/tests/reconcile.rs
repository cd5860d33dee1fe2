//! The reconcilers against a fake API server (kube's tower-test mock pattern, with state),
//! one scenario per test.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fanout_operator::controller::Config;
use fanout_operator::crd::{labels, RoomPhase};
use fanout_operator::scheduler::Policy;
use kube::ResourceExt;
use support::{Harness, NS};

fn config() -> Config {
    Config { policy: Policy::Spread, reschedule_grace: Duration::from_secs(30), stats_timeout: Duration::from_millis(200), namespace: None }
}

#[tokio::test]
async fn a_new_sfuworker_gets_one_host_network_pod_per_replica() {
    let mut h = Harness::new(config());
    h.apply_pool("sfu", 3, 500, 50);
    h.sync();
    h.reconcile_pool("sfu").await;

    let mut pods = h.pods();
    pods.sort_by_key(|p| p.name_any());
    assert_eq!(pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["sfu-0", "sfu-1", "sfu-2"]);
    let pool_uid = h.pool("sfu").uid().unwrap();
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true), "{} must use the host network", pod.name_any());
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("SfuWorker", pool_uid.as_str(), Some(true)));
        assert_eq!(spec.containers[0].ports.as_ref().unwrap()[0].host_port, Some(3000));
    }
    assert_eq!(h.event_reasons().iter().filter(|r| *r == "CreatedPod").count(), 3);

    // The kubelet starts them; the next pass reports them ready, with endpoints and load.
    h.kubelet_starts_all();
    h.workers.stats.lock().unwrap().insert(
        "http://10.0.0.1:3000".into(),
        fanout_worker::api::WorkerStats { rooms: 0, peers: 4, ..Default::default() },
    );
    h.sync();
    h.reconcile_pool("sfu").await;
    let status = h.pool("sfu").status.unwrap();
    assert_eq!((status.replicas, status.ready_replicas, status.peers), (3, 3, 4));
    assert_eq!(status.workers[0].endpoint.as_deref(), Some("http://10.0.0.1:3000"));
    assert_eq!(status.workers[0].announced_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(status.selector, "fanout.dev/sfuworker=sfu");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllReplicasReady"));
    assert_eq!(status.observed_generation, Some(1));
}

#[tokio::test]
async fn a_deleted_worker_pod_is_recreated() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 2, 500, 50).await;
    h.api.remove("pods", NS, "sfu-1");
    h.sync();
    h.reconcile_pool("sfu").await;
    assert!(h.pod("sfu-1").is_some(), "sfu-1 was recreated");
}

#[tokio::test]
async fn scale_down_drains_pods_and_deletes_each_once_it_has_no_rooms() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 3, 100, 10).await;
    // Pack puts the room on the first pod by name; place it explicitly on sfu-2 instead by
    // making the others unfit: fill sfu-0 and sfu-1 through their readiness.
    h.kubelet_not_ready_since("sfu-0", jiff::Timestamp::now());
    h.kubelet_not_ready_since("sfu-1", jiff::Timestamp::now());
    h.apply_room("lecture", 20);
    h.settle_room("lecture").await;
    assert_eq!(h.room("lecture").unwrap().status.unwrap().placement.unwrap().pod, "sfu-2");
    h.kubelet_starts("sfu-0", "10.0.0.1");
    h.kubelet_starts("sfu-1", "10.0.0.2");

    // Scale to one replica: sfu-1 and sfu-2 drain.
    h.api.update("sfuworkers", NS, "sfu", |p| p["spec"]["replicas"] = 1.into());
    h.sync();
    h.reconcile_pool("sfu").await;
    for name in ["sfu-1", "sfu-2"] {
        let pod = h.pod(name).unwrap();
        assert!(pod.annotations().contains_key(labels::DRAINING_SINCE), "{name} drains");
        assert_eq!(pod.annotations()[labels::DRAIN_REASON], "ScaleDown");
    }
    // A draining pod takes no new rooms.
    h.sync();
    h.apply_room("seminar", 5);
    h.settle_room("seminar").await;
    assert_eq!(h.room("seminar").unwrap().status.unwrap().placement.unwrap().pod, "sfu-0");

    // Next pass: the empty sfu-1 goes, sfu-2 keeps its room.
    h.reconcile_pool("sfu").await;
    assert!(h.pod("sfu-1").is_none(), "empty draining pod deleted");
    assert!(h.pod("sfu-2").is_some(), "pod with a room keeps draining");
    let status = h.pool("sfu").status.unwrap();
    assert!(status.workers.iter().any(|w| w.pod == "sfu-2" && w.draining && w.rooms == 1));

    // The room ends: sfu-2 is deleted.
    h.api.update("rooms", NS, "lecture", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
    h.sync();
    h.reconcile_room("lecture").await;
    assert!(h.room("lecture").is_none());
    h.sync();
    h.reconcile_pool("sfu").await;
    assert!(h.pod("sfu-2").is_none(), "drained pod deleted once empty");
    assert!(h.pod("sfu-0").is_some());
}

#[tokio::test]
async fn a_room_is_placed_on_a_ready_worker_with_an_event() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 2, 500, 50).await;
    h.apply_room("maths-101", 40);
    h.settle_room("maths-101").await;

    let room = h.room("maths-101").unwrap();
    assert_eq!(room.finalizers(), ["fanout.dev/close-on-worker"]);
    let status = room.status.unwrap();
    assert_eq!(status.phase, Some(RoomPhase::Scheduled));
    let placement = status.placement.unwrap();
    assert_eq!(placement.sfu_worker, "sfu");
    assert_eq!(placement.reserved_peers, 40);
    let pod = h.pod(&placement.pod).unwrap();
    assert_eq!(Some(placement.pod_uid.clone()), pod.uid());
    assert_eq!(placement.endpoint, format!("http://{}:3000", pod.status.as_ref().unwrap().pod_ip.as_ref().unwrap()));
    assert_eq!(placement.node, pod.spec.unwrap().node_name);
    let cond = status.conditions.iter().find(|c| c.type_ == "Scheduled").unwrap();
    assert_eq!(cond.status, "True");
    assert!(h.event_reasons().contains(&"Scheduled".to_string()));
}

#[tokio::test]
async fn a_room_that_fits_nowhere_is_pending_with_the_reason() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 1, 50, 10).await;
    h.apply_room("huge", 80);
    let action = h.settle_room("huge").await;
    let status = h.room("huge").unwrap().status.unwrap();
    assert_eq!(status.phase, Some(RoomPhase::Pending));
    assert!(status.placement.is_none());
    let cond = &status.conditions[0];
    assert_eq!((cond.status.as_str(), cond.reason.as_str()), ("False", "InsufficientCapacity"));
    assert!(cond.message.contains("1 full"), "{}", cond.message);
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(30)));
    assert!(h.event_reasons().contains(&"InsufficientCapacity".to_string()));

    // More capacity arrives: the room is placed on the next try.
    h.api.update("sfuworkers", NS, "sfu", |p| p["spec"]["capacity"]["maxPeers"] = 100.into());
    h.sync();
    h.reconcile_room("huge").await;
    assert_eq!(h.room("huge").unwrap().status.unwrap().phase, Some(RoomPhase::Scheduled));
}

#[tokio::test]
async fn a_room_is_moved_when_its_pod_is_lost() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 2, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let first = h.room("r").unwrap().status.unwrap().placement.unwrap();

    h.api.remove("pods", NS, &first.pod);
    h.sync();
    h.reconcile_room("r").await;
    let moved = h.room("r").unwrap().status.unwrap().placement.unwrap();
    assert_ne!(moved.pod, first.pod);
    let reasons = h.event_reasons();
    assert!(reasons.contains(&"PlacementLost".to_string()) && reasons.contains(&"Rescheduled".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn a_room_waits_out_the_grace_period_on_a_not_ready_pod_then_moves() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 2, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let first = h.room("r").unwrap().status.unwrap().placement.unwrap();

    // NotReady for 10 s: stays, looks again when the grace period ends.
    h.kubelet_not_ready_since(&first.pod, jiff::Timestamp::now() - jiff::SignedDuration::from_secs(10));
    h.sync();
    let action = h.reconcile_room("r").await;
    assert_eq!(h.room("r").unwrap().status.unwrap().placement.unwrap().pod, first.pod);
    assert!(action != kube::runtime::controller::Action::await_change(), "a recheck is scheduled");

    // NotReady for 40 s: moved.
    h.kubelet_not_ready_since(&first.pod, jiff::Timestamp::now() - jiff::SignedDuration::from_secs(40));
    h.sync();
    h.reconcile_room("r").await;
    assert_ne!(h.room("r").unwrap().status.unwrap().placement.unwrap().pod, first.pod);
}

#[tokio::test]
async fn a_recreated_pod_with_the_same_name_does_not_keep_the_room() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 1, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    // The pod is replaced under the same name (new UID): the room must be placed again.
    h.api.remove("pods", NS, "sfu-0");
    h.sync();
    h.reconcile_pool("sfu").await;
    h.kubelet_starts("sfu-0", "10.0.0.9");
    h.sync();
    h.reconcile_room("r").await;
    let placement = h.room("r").unwrap().status.unwrap().placement.unwrap();
    assert_eq!(placement.pod, "sfu-0");
    assert_eq!(Some(placement.pod_uid), h.pod("sfu-0").unwrap().uid());
    assert_eq!(placement.endpoint, "http://10.0.0.9:3000");
}

#[tokio::test]
async fn deleting_a_room_closes_it_on_its_worker() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 1, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let placement = h.room("r").unwrap().status.unwrap().placement.unwrap();

    h.api.update("rooms", NS, "r", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
    h.sync();
    h.reconcile_room("r").await;
    assert_eq!(*h.workers.closed.lock().unwrap(), vec![(placement.endpoint, "r".to_string())]);
    assert!(h.room("r").is_none(), "finalizer removed, room gone");
}

#[tokio::test]
async fn a_worker_that_is_gone_does_not_block_room_deletion() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 1, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let placement = h.room("r").unwrap().status.unwrap().placement.unwrap();
    h.workers.down.lock().unwrap().insert(placement.endpoint.clone());
    h.api.remove("pods", NS, &placement.pod);

    h.api.update("rooms", NS, "r", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
    h.sync();
    h.reconcile_room("r").await;
    assert!(h.room("r").is_none());
    assert!(h.workers.closed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn overlapping_port_ranges_flag_both_pools_and_hold_the_newer() {
    let mut h = Harness::new(config());
    h.apply_pool("a", 1, 500, 50);
    h.api.put("sfuworkers", serde_json::json!({
        "apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker",
        "metadata": {"name": "b", "namespace": NS, "creationTimestamp": (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60)).to_string()},
        "spec": {"replicas": 1, "image": "fanout:test", "rtcPorts": {"min": 45000, "max": 50000}}
    }));
    h.sync();
    h.reconcile_pool("a").await;
    h.reconcile_pool("b").await;
    let cond = |pool: &str, t: &str| {
        h.pool(pool).status.unwrap().conditions.into_iter().find(|c| c.type_ == t).unwrap()
    };
    assert_eq!(cond("a", "PortConflict").status, "True");
    assert!(cond("a", "PortConflict").message.contains("media/b"));
    assert_eq!(cond("b", "PortConflict").status, "True");
    assert_eq!(cond("b", "Ready").reason, "PortConflict");
    let pods: Vec<String> = h.pods().iter().map(|p| p.name_any()).collect();
    assert_eq!(pods, ["a-0"], "the newer pool starts nothing");
}

#[tokio::test]
async fn an_invalid_announced_address_is_reported_and_no_pod_is_created() {
    let mut h = Harness::new(config());
    h.api.put("sfuworkers", serde_json::json!({
        "apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker",
        "metadata": {"name": "x", "namespace": NS},
        "spec": {"replicas": 1, "image": "fanout:test", "announcedAddress": {"source": "Fixed", "ip": "not-an-ip"}}
    }));
    h.sync();
    h.reconcile_pool("x").await;
    assert!(h.pods().is_empty());
    let ready = h.pool("x").status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("not an IP address"));
}

/// 100 rooms applied at once onto 3 workers: every reconcile runs concurrently against caches
/// that show none of the others' placements (the worst watch lag). Capacity must hold, and
/// still hold after an operator restart.
#[tokio::test]
async fn a_hundred_rooms_onto_three_workers_never_oversubscribe() {
    let mut h = Harness::new(config());
    // 3 x 300 peers = 900 peers; 100 rooms x 12 peers = 1200: 75 fit, 25 must wait.
    h.ready_pool("sfu", 3, 300, 40).await;
    for i in 0..100 {
        h.apply_room(&format!("room-{i}"), 12);
    }
    h.sync();
    // First pass of each adds the finalizer.
    for i in 0..100 {
        h.reconcile_room(&format!("room-{i}")).await;
    }
    h.sync();
    let reconciles = (0..100).map(|i| {
        let h = &h;
        async move { h.reconcile_room(&format!("room-{i}")).await }
    });
    futures::future::join_all(reconciles).await;

    let count = |h: &Harness| {
        let mut per_pod: HashMap<String, (u32, u32)> = HashMap::new();
        let mut pending = 0;
        for i in 0..100 {
            let status = h.room(&format!("room-{i}")).unwrap().status.unwrap();
            match status.placement {
                Some(p) => {
                    let e = per_pod.entry(p.pod).or_default();
                    e.0 += 1;
                    e.1 += p.reserved_peers as u32;
                }
                None => pending += 1,
            }
        }
        (per_pod, pending)
    };
    let (per_pod, pending) = count(&h);
    for (pod, (rooms, peers)) in &per_pod {
        assert!(*peers <= 300 && *rooms <= 40, "{pod} oversubscribed: {rooms} rooms, {peers} peers");
    }
    assert_eq!(per_pod.values().map(|v| v.0).sum::<u32>(), 75, "every slot used, none twice");
    assert_eq!(pending, 25);

    // A new operator process: commitments come from the Rooms' status alone.
    let mut h = h.restart();
    h.sync();
    let retries = (0..100).map(|i| {
        let h = &h;
        async move { h.reconcile_room(&format!("room-{i}")).await }
    });
    futures::future::join_all(retries).await;
    let (after, pending_after) = count(&h);
    assert_eq!(after, per_pod, "placed rooms stay put; no pending room squeezed in");
    assert_eq!(pending_after, 25);

    // A fourth worker joins: pending rooms fill it, still within capacity.
    h.api.update("sfuworkers", NS, "sfu", |p| p["spec"]["replicas"] = 4.into());
    h.sync();
    h.reconcile_pool("sfu").await;
    h.kubelet_starts_all();
    h.sync();
    let retries = (0..100).map(|i| {
        let h = &h;
        async move { h.reconcile_room(&format!("room-{i}")).await }
    });
    futures::future::join_all(retries).await;
    let (grown, pending_grown) = count(&h);
    assert_eq!(pending_grown, 0);
    assert!(grown.values().all(|(rooms, peers)| *peers <= 300 && *rooms <= 40), "{grown:?}");
}

#[tokio::test]
async fn external_ip_pools_get_the_node_external_ip_projected_into_the_pod() {
    let mut h = Harness::new(config());
    h.api.put("sfuworkers", serde_json::json!({
        "apiVersion": "fanout.dev/v1alpha1", "kind": "SfuWorker",
        "metadata": {"name": "edge", "namespace": NS},
        "spec": {"replicas": 2, "image": "fanout:test", "announcedAddress": {"source": "NodeExternalIP"}}
    }));
    h.sync();
    h.reconcile_pool("edge").await;
    h.kubelet_starts("edge-0", "10.0.0.1");
    h.kubelet_starts("edge-1", "10.0.0.2");
    h.api.put("nodes", serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-edge-0"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "ExternalIP", "address": "203.0.113.10"}]}}));
    h.api.put("nodes", serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-edge-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}));
    h.sync();
    h.reconcile_pool("edge").await;
    assert_eq!(h.pod("edge-0").unwrap().annotations()[labels::ANNOUNCED_IP], "203.0.113.10");
    assert!(!h.pod("edge-1").unwrap().annotations().contains_key(labels::ANNOUNCED_IP));
    assert!(h.event_reasons().contains(&"NoExternalIP".to_string()));
    h.sync();
    h.reconcile_pool("edge").await;
    let status = h.pool("edge").status.unwrap();
    assert_eq!(status.workers[0].announced_ip.as_deref(), Some("203.0.113.10"));
    assert_eq!(status.workers[1].announced_ip, None);
}

#[tokio::test]
async fn an_image_change_replaces_pods_one_at_a_time() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 2, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let hosting = h.room("r").unwrap().status.unwrap().placement.unwrap().pod;
    let empty = if hosting == "sfu-0" { "sfu-1" } else { "sfu-0" };

    h.api.update("sfuworkers", NS, "sfu", |p| p["spec"]["image"] = "fanout:next".into());
    h.sync();
    h.reconcile_pool("sfu").await;
    // Exactly one pod is acted on: the highest ordinal, deleted if empty or drained if not.
    let touched: Vec<String> = ["sfu-0", "sfu-1"]
        .iter()
        .filter(|n| h.pod(n).is_none_or(|p| p.annotations().contains_key(labels::DRAINING_SINCE)))
        .map(|n| n.to_string())
        .collect();
    assert_eq!(touched, ["sfu-1"]);
    if hosting == "sfu-1" {
        assert_eq!(h.pod("sfu-1").unwrap().annotations()[labels::DRAIN_REASON], "Replace");
    } else {
        assert!(h.pod(empty).is_none());
    }
    let _ = empty;
}

#[tokio::test]
async fn reconciles_and_scheduling_show_in_metrics() {
    let mut h = Harness::new(config());
    h.ready_pool("sfu", 1, 500, 50).await;
    h.apply_room("r", 10);
    h.settle_room("r").await;
    let text = h.ctx.metrics.render();
    assert!(text.contains("fanout_operator_reconciles_total{controller=\"room\"} 2"), "{text}");
    assert!(text.contains("fanout_operator_scheduling_decisions_total{outcome=\"scheduled\"} 1"), "{text}");
    assert!(text.contains("fanout_operator_scheduling_latency_seconds_count 1"), "{text}");
}

// --- Recordings ------------------------------------------------------------------------------

mod recordings {
    use super::*;
    use fanout_operator::crd::{Recording, RecordingPhase};
    use fanout_operator::recording::{POLL_INTERVAL, PENDING_RETRY};
    use fanout_operator::worker_api::{WorkerRecordingError, WorkerRecordingFile, WorkerRecordingState};
    use kube::runtime::controller::Action;

    fn reason(rec: &Recording) -> (Option<RecordingPhase>, String) {
        let status = rec.status.clone().unwrap();
        let c = status.conditions.iter().find(|c| c.type_ == "Recording").expect("a Recording condition");
        (status.phase, c.reason.clone())
    }

    fn file(name: &str, bytes: u64, duration_ms: u64) -> WorkerRecordingFile {
        crate::support::recording_fixtures::audio_file("rec", name, bytes, duration_ms)
    }

    /// A pool of `replicas`, room `r` placed, Recording `rec` of it with its finalizer.
    async fn recording_of_a_placed_room(replicas: i32) -> (Harness, String, String) {
        let mut h = Harness::new(config());
        h.ready_pool("sfu", replicas, 500, 50).await;
        h.apply_room("r", 10);
        h.settle_room("r").await;
        h.apply_recording("rec", "r");
        let endpoint = h.room("r").unwrap().status.unwrap().placement.unwrap().endpoint;
        let uid = h.recording("rec").unwrap().uid().unwrap();
        (h, endpoint, uid)
    }

    #[tokio::test]
    async fn a_recording_starts_on_the_rooms_worker_and_copies_its_files() {
        let (h, endpoint, uid) = recording_of_a_placed_room(1).await;
        h.reconcile_recording("rec").await;
        assert_eq!(h.recording("rec").unwrap().finalizers(), ["fanout.dev/stop-recording"]);
        let action = h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls(), [format!("POST {endpoint} r {uid}")], "the recording id is the object's UID");
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Recording), "Recording".to_string()));
        let status = rec.status.unwrap();
        assert!(status.started_at.is_some());
        let worker = status.worker.unwrap();
        assert_eq!((worker.pod.as_str(), worker.sfu_worker.as_str(), worker.endpoint.as_str()), ("sfu-0", "sfu", endpoint.as_str()));
        assert_eq!(action, Action::requeue(POLL_INTERVAL), "polled while recording");
        assert!(h.event_reasons().contains(&"Recording".to_string()));

        // The worker writes; the next poll copies sizes and durations.
        h.workers.update_recording(&endpoint, "r", &uid, |r| r.files = vec![file("mic.webm", 48_000, 3_000), file("cam.webm", 900_000, 3_100)]);
        h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls().last().unwrap(), &format!("GET {endpoint} r {uid}"));
        let files = h.recording("rec").unwrap().status.unwrap().files;
        let got: Vec<(&str, &str, i64, i64)> = files.iter().map(|f| (f.pod.as_str(), f.name.as_str(), f.bytes, f.duration_ms)).collect();
        assert_eq!(got, [("sfu-0", "mic.webm", 48_000, 3_000), ("sfu-0", "cam.webm", 900_000, 3_100)]);
        assert_eq!(files[0].path, "rec/mic.webm");
        assert_eq!((files[1].codec.as_str(), files[1].container.as_str()), ("opus", "webm"));
    }

    #[tokio::test]
    async fn a_recording_waits_for_a_missing_room_and_starts_once_it_is_placed() {
        let mut h = Harness::new(config());
        h.ready_pool("sfu", 1, 500, 50).await;
        h.apply_recording("rec", "later");
        h.reconcile_recording("rec").await;
        let action = h.reconcile_recording("rec").await;
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Pending), "RoomNotFound".to_string()));
        assert_eq!(action, Action::requeue(PENDING_RETRY));
        assert!(h.workers.calls().is_empty());

        // The Room appears, not yet placed.
        h.apply_room("later", 10);
        h.sync();
        h.reconcile_recording("rec").await;
        assert_eq!(reason(&h.recording("rec").unwrap()), (Some(RecordingPhase::Pending), "RoomNotPlaced".to_string()));

        // Placed: the recording starts there.
        h.settle_room("later").await;
        h.reconcile_recording("rec").await;
        assert_eq!(reason(&h.recording("rec").unwrap()).0, Some(RecordingPhase::Recording));
        assert_eq!(h.workers.calls().len(), 1);
    }

    #[tokio::test]
    async fn spec_stop_stops_the_recording_on_the_worker_with_the_final_files() {
        let (h, endpoint, uid) = recording_of_a_placed_room(1).await;
        h.reconcile_recording("rec").await;
        h.reconcile_recording("rec").await;
        h.workers.update_recording(&endpoint, "r", &uid, |r| r.files = vec![file("mic.webm", 10, 1)]);
        h.reconcile_recording("rec").await;

        h.workers.update_recording(&endpoint, "r", &uid, |r| r.files = vec![file("mic.webm", 96_000, 6_000)]);
        h.api.update("recordings", NS, "rec", |r| r["spec"]["stop"] = true.into());
        let action = h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls().last().unwrap(), &format!("DELETE {endpoint} r {uid}"));
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Stopped), "Stopped".to_string()));
        let status = rec.status.unwrap();
        assert!(status.stopped_at.is_some());
        assert_eq!(status.files[0].bytes, 96_000, "the final size");
        assert_eq!(action, Action::await_change());

        // Stopped is final: no more calls.
        let calls = h.workers.calls().len();
        h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls().len(), calls);
    }

    #[tokio::test]
    async fn deleting_a_recording_stops_it_on_the_worker_before_it_goes() {
        let (h, endpoint, uid) = recording_of_a_placed_room(1).await;
        h.reconcile_recording("rec").await;
        h.reconcile_recording("rec").await;
        h.api.update("recordings", NS, "rec", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
        h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls().last().unwrap(), &format!("DELETE {endpoint} r {uid}"));
        let on_worker = h.workers.recordings.lock().unwrap()[&(endpoint, "r".to_string(), uid)].state;
        assert_eq!(on_worker, WorkerRecordingState::Stopped);
        assert!(h.recording("rec").is_none(), "finalizer removed, object gone");
    }

    #[tokio::test]
    async fn an_unreachable_worker_keeps_the_recording_pending_and_does_not_block_deletion() {
        let (h, endpoint, _) = recording_of_a_placed_room(1).await;
        h.reconcile_recording("rec").await;
        h.workers.down.lock().unwrap().insert(endpoint.clone());
        let action = h.reconcile_recording("rec").await;
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Pending), "WorkerUnreachable".to_string()));
        let message = rec.status.unwrap().conditions[0].message.clone();
        assert!(message.contains("connection refused") && message.contains("sfu-0"), "{message}");
        assert_ne!(action, Action::await_change(), "tried again");

        // Back: recording. Gone again while recording: the phase stays, the condition says why.
        h.workers.down.lock().unwrap().clear();
        h.reconcile_recording("rec").await;
        assert_eq!(reason(&h.recording("rec").unwrap()).0, Some(RecordingPhase::Recording));
        h.workers.down.lock().unwrap().insert(endpoint.clone());
        h.reconcile_recording("rec").await;
        assert_eq!(reason(&h.recording("rec").unwrap()), (Some(RecordingPhase::Recording), "WorkerUnreachable".to_string()));

        // Deleted while its worker is unreachable: the finalizer goes all the same.
        h.api.update("recordings", NS, "rec", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
        h.reconcile_recording("rec").await;
        assert!(h.recording("rec").is_none());
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_recording_with_the_workers_message() {
        let (h, endpoint, uid) = recording_of_a_placed_room(1).await;
        h.reconcile_recording("rec").await;
        h.reconcile_recording("rec").await;
        h.workers.update_recording(&endpoint, "r", &uid, |r| {
            r.state = WorkerRecordingState::Failed;
            r.files = vec![file("cam.webm", 1 << 20, 60_000)];
            r.error = Some(WorkerRecordingError { code: "RECORDING_DISK_FULL".into(), message: "no space left on /var/lib/fanout/recordings".into() });
        });
        let action = h.reconcile_recording("rec").await;
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Failed), "DiskFull".to_string()));
        let status = rec.status.unwrap();
        assert!(status.conditions[0].message.contains("no space left"), "{}", status.conditions[0].message);
        assert_eq!(status.files[0].bytes, 1 << 20);
        assert!(status.stopped_at.is_some());
        assert_eq!(action, Action::await_change());
        assert!(h.event_reasons().contains(&"DiskFull".to_string()));
        // Failed is final; deleting needs no worker call.
        let calls = h.workers.calls().len();
        h.api.update("recordings", NS, "rec", |r| r["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into());
        h.reconcile_recording("rec").await;
        assert!(h.recording("rec").is_none());
        assert_eq!(h.workers.calls().len(), calls);
    }

    #[tokio::test]
    async fn a_pool_without_a_recording_volume_keeps_the_recording_pending_with_the_reason() {
        let (h, endpoint, _) = recording_of_a_placed_room(1).await;
        h.workers.recording_disabled.lock().unwrap().insert(endpoint);
        h.reconcile_recording("rec").await;
        h.reconcile_recording("rec").await;
        let rec = h.recording("rec").unwrap();
        assert_eq!(reason(&rec), (Some(RecordingPhase::Pending), "RecordingDisabled".to_string()));
        assert!(rec.status.unwrap().conditions[0].message.contains("spec.recording"));
    }

    #[tokio::test]
    async fn a_recording_follows_its_room_to_another_worker_and_keeps_the_old_files() {
        let (mut h, first, uid) = recording_of_a_placed_room(2).await;
        h.reconcile_recording("rec").await;
        h.reconcile_recording("rec").await;
        h.workers.update_recording(&first, "r", &uid, |r| r.files = vec![file("mic.webm", 5_000, 500)]);
        h.reconcile_recording("rec").await;
        let old_pod = h.room("r").unwrap().status.unwrap().placement.unwrap().pod;

        // The room's pod is lost: the room moves, and the recording starts again there.
        h.api.remove("pods", NS, &old_pod);
        h.sync();
        h.reconcile_room("r").await;
        h.sync();
        let second = h.room("r").unwrap().status.unwrap().placement.unwrap();
        assert_ne!(second.endpoint, first);
        h.reconcile_recording("rec").await;
        assert_eq!(h.workers.calls().last().unwrap(), &format!("POST {} r {uid}", second.endpoint));
        h.workers.update_recording(&second.endpoint, "r", &uid, |r| r.files = vec![file("mic.webm", 70, 7)]);
        h.reconcile_recording("rec").await;
        let status = h.recording("rec").unwrap().status.unwrap();
        assert_eq!(status.phase, Some(RecordingPhase::Recording));
        assert_eq!(status.worker.as_ref().unwrap().pod, second.pod);
        let files: Vec<(String, i64)> = status.files.iter().map(|f| (f.pod.clone(), f.bytes)).collect();
        assert_eq!(files, [(old_pod.clone(), 5_000), (second.pod.clone(), 70)]);
        let moved = status.conditions.iter().find(|c| c.type_ == "Moved").expect("a Moved condition");
        assert_eq!(moved.status, "True");
        assert!(moved.message.contains(&old_pod), "{}", moved.message);
    }
}
