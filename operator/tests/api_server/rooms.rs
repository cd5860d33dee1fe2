//! Rooms: placement onto real workers, Pending with the reason, moving off lost pods, and the
//! finalizer that closes a deleted room on its worker.

use std::time::{Duration, Instant};

use fanout_operator::crd::{Room, RoomPhase, SfuWorker};
use fanout_worker::api::JoinRequest;
use fanout_worker::client::WorkerClient;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{cluster, eventually, WORKER_TOKEN};
use crate::kit::say;
use crate::kubelet::Kubelet;
use crate::operator::{Operator, OperatorArgs};
use crate::pools::{pool_spec, ready_pool, worker_token_secret};

const WAIT: Duration = Duration::from_secs(30);

fn worker_client() -> WorkerClient {
    WorkerClient::new(Some(WORKER_TOKEN.into()), Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_placed_on_ready_workers_and_one_that_fits_nowhere_is_pending_with_the_reason() {
    let Some(c) = cluster("room-placement").await else { return };
    let nodes = c.nodes(2).await;
    worker_token_secret(&c).await;
    let spec = pool_spec(&c, &nodes, 2, json!({}));
    let port = spec["httpPort"].as_i64().unwrap();
    c.create_pool("sfu", spec).await;
    let _kubelet = Kubelet::start(&c, nodes.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 2).await;

    let created = Instant::now();
    c.create_room("small", json!({"maxPeers": 10})).await;
    let placement = c.placed("small", WAIT).await;
    say(format!("figure: Room created -> Scheduled in {:.0} ms (real API server, watch and status write)", created.elapsed().as_secs_f64() * 1e3));
    let node = nodes.iter().find(|n| Some(&n.name) == placement.node.as_ref()).expect("placed on one of the test's nodes");
    assert_eq!(placement.endpoint, format!("http://{}:{port}", node.ip));
    assert_eq!(placement.announced_ip, Some(node.ip.to_string()));
    assert_eq!(placement.reserved_peers, 10);
    let pod = c.api::<Pod>().get(&placement.pod).await.unwrap();
    assert_eq!(pod.metadata.uid.as_deref(), Some(placement.pod_uid.as_str()));
    c.expect_event("small", "Scheduled").await;
    // The placement leads to a real worker: signalling would open the room there.
    worker_client().ensure_room(&placement.endpoint, "small", &[]).await.expect("the placed worker takes the room");

    // 500 peers fit on no worker of 100: Pending, and the condition says why.
    c.create_room("huge", json!({"maxPeers": 500})).await;
    let rooms: Api<Room> = c.api();
    let condition = eventually("huge pending with a reason", WAIT, || async {
        let status = rooms.get("huge").await.ok()?.status?;
        (status.phase == Some(RoomPhase::Pending)).then_some(())?;
        status.conditions.into_iter().find(|c| c.type_ == "Scheduled")
    })
    .await;
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "InsufficientCapacity"));
    assert!(condition.message.contains("no worker can host 500 more peers"), "{}", condition.message);
    assert!(condition.message.contains("2 matching replicas"), "{}", condition.message);
    c.expect_event("huge", "InsufficientCapacity").await;

    // Bigger workers: the pending room is placed without being touched.
    let pools: Api<SfuWorker> = c.api();
    pools.patch("sfu", &PatchParams::default(), &Patch::Merge(json!({"spec": {"capacity": {"maxPeers": 1000}}}))).await.unwrap();
    let placement = c.placed("huge", WAIT).await;
    assert_eq!(placement.reserved_peers, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_off_a_pod_not_ready_past_the_grace_and_off_a_deleted_pod() {
    let Some(c) = cluster("room-reschedule").await else { return };
    let nodes = c.nodes(2).await;
    worker_token_secret(&c).await;
    c.create_pool("sfu", pool_spec(&c, &nodes, 2, json!({}))).await;
    let kubelet = Kubelet::start(&c, nodes.clone());
    let grace = 3;
    let _operator = Operator::start(&c, "op", OperatorArgs { reschedule_grace_seconds: grace, ..Default::default() });
    ready_pool(&c, "sfu", 2).await;
    c.create_room("class", json!({"maxPeers": 10})).await;
    let first = c.placed("class", WAIT).await;
    let rooms: Api<Room> = c.api();

    // NotReady: the room waits out the grace period (a worker that blips still holds the call).
    kubelet.set_ready(&first.pod, false).await;
    let not_ready = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = rooms.get("class").await.unwrap().status.unwrap().placement.unwrap();
    assert_eq!(still.pod_uid, first.pod_uid, "moved before the grace period was over");
    let second = eventually("class moved off the NotReady pod", WAIT, || async {
        let p = rooms.get("class").await.ok()?.status?.placement?;
        (p.pod_uid != first.pod_uid).then_some(p)
    })
    .await;
    let waited = not_ready.elapsed();
    say(format!("figure: grace {grace} s: room moved off a NotReady pod {:.1} s after it went NotReady", waited.as_secs_f64()));
    // The server keeps lastTransitionTime in whole seconds, so the grace may start up to 1 s
    // before the test's clock says.
    assert!(waited >= Duration::from_secs(grace - 1), "moved after {waited:?}, inside the {grace} s grace");
    c.expect_event("class", "PlacementLost").await;

    // Deleted: the room moves at once (the first pod is Ready again).
    kubelet.set_ready(&first.pod, true).await;
    let pods: Api<Pod> = c.api();
    pods.delete(&second.pod, &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    let third = eventually("class moved off the deleted pod", WAIT, || async {
        let p = rooms.get("class").await.ok()?.status?.placement?;
        (p.pod_uid != second.pod_uid).then_some(p)
    })
    .await;
    say(format!("figure: room moved off a deleted pod {:.2} s after the delete request", deleted.elapsed().as_secs_f64()));
    assert_eq!(third.pod_uid, first.pod_uid, "the only other ready replica");
    // The pool recreates the deleted replica (a new pod under the old name).
    eventually("the deleted replica recreated", WAIT, || async {
        let p = pods.get_opt(&second.pod).await.ok()??;
        (p.metadata.uid.as_deref() != Some(second.pod_uid.as_str())).then_some(())
    })
    .await;
    assert!(kubelet.errors().is_empty(), "{:?}", kubelet.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_room_closes_it_on_its_worker_and_a_dead_worker_does_not_block_it() {
    let Some(c) = cluster("room-finalizer").await else { return };
    let nodes = c.nodes(2).await;
    worker_token_secret(&c).await;
    c.create_pool("sfu", pool_spec(&c, &nodes, 2, json!({}))).await;
    let kubelet = Kubelet::start(&c, nodes.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 2).await;
    let rooms: Api<Room> = c.api();
    let workers = worker_client();

    c.create_room("lesson", json!({"maxPeers": 10})).await;
    let placement = c.placed("lesson", WAIT).await;
    let finalizers = rooms.get("lesson").await.unwrap().metadata.finalizers.unwrap_or_default();
    assert_eq!(finalizers, ["fanout.dev/close-on-worker"]);
    // In use on its worker: one peer joined.
    workers.join(&placement.endpoint, "lesson", &JoinRequest::new("alice")).await.expect("join on the placed worker");
    assert_eq!(workers.room_info(&placement.endpoint, "lesson").await.unwrap().peers.len(), 1);

    rooms.delete("lesson", &DeleteParams::default()).await.unwrap();
    eventually("lesson gone from the API", WAIT, || async { rooms.get_opt("lesson").await.ok()?.is_none().then_some(()) }).await;
    let closed = workers.room_info(&placement.endpoint, "lesson").await.expect_err("the worker no longer has the room");
    assert!(closed.is_not_found(), "{closed}");

    // A room whose worker process is gone (the pod still looks fine) is deleted all the same.
    c.create_room("orphan", json!({"maxPeers": 10})).await;
    let placement = c.placed("orphan", WAIT).await;
    kubelet.stop_worker(&placement.pod).await;
    rooms.delete("orphan", &DeleteParams::default()).await.unwrap();
    eventually("orphan gone despite its dead worker", WAIT, || async { rooms.get_opt("orphan").await.ok()?.is_none().then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_with_an_empty_timeout_is_deleted_once_empty_that_long_and_one_without_stays() {
    let Some(c) = cluster("room-empty-timeout").await else { return };
    let nodes = c.nodes(1).await;
    worker_token_secret(&c).await;
    c.create_pool("sfu", pool_spec(&c, &nodes, 1, json!({}))).await;
    let _kubelet = Kubelet::start(&c, nodes.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 1).await;
    let rooms: Api<Room> = c.api();
    let workers = worker_client();
    let timeout = 2;

    // As signalling creates a room on demand, and one made by hand.
    c.create_room("on-demand", json!({"maxPeers": 10, "emptyTimeoutSeconds": timeout})).await;
    c.create_room("standing", json!({"maxPeers": 10})).await;
    let placement = c.placed("on-demand", WAIT).await;
    c.placed("standing", WAIT).await;
    for room in ["on-demand", "standing"] {
        workers.join(&placement.endpoint, room, &JoinRequest::new("alice")).await.expect("join");
    }

    // Occupied for twice the timeout: kept, and the operator has seen the peer.
    eventually("the peer seen (no emptySince)", WAIT, || async {
        rooms.get("on-demand").await.ok()?.status?.empty_since.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2 * timeout as u64)).await;
    assert!(rooms.get_opt("on-demand").await.unwrap().is_some(), "an occupied room was deleted");

    // The last peer leaves: the worker reports it empty, and after the timeout it is gone,
    // closed on its worker by the finalizer.
    for room in ["on-demand", "standing"] {
        workers.leave(&placement.endpoint, room, &"alice".into()).await.expect("leave");
    }
    let left = Instant::now();
    let since = eventually("emptySince recorded", WAIT, || async { rooms.get("on-demand").await.ok()?.status?.empty_since }).await;
    eventually("on-demand deleted", WAIT, || async { rooms.get_opt("on-demand").await.ok()?.is_none().then_some(()) }).await;
    let gone_after = left.elapsed();
    say(format!(
        "figure: emptyTimeoutSeconds {timeout}: Room deleted {:.1} s after its last peer left (checked every {} s)",
        gone_after.as_secs_f64(),
        fanout_operator::empty_room::check_interval(Duration::from_secs(timeout as u64)).as_secs()
    ));
    assert!(gone_after >= Duration::from_secs(timeout as u64), "deleted {gone_after:?} after emptying, before its timeout");
    assert!(since.0 <= jiff::Timestamp::now());
    c.expect_event("on-demand", "EmptyTimeout").await;
    let closed = workers.room_info(&placement.endpoint, "on-demand").await.expect_err("closed on the worker");
    assert!(closed.is_not_found(), "{closed}");

    // The room without the field stays, empty as it is, and nobody keeps its time.
    let standing = rooms.get("standing").await.expect("a room without emptyTimeoutSeconds is never deleted");
    assert_eq!(standing.status.unwrap().empty_since, None);
    assert_eq!(workers.room_info(&placement.endpoint, "standing").await.unwrap().peers.len(), 0);
}
