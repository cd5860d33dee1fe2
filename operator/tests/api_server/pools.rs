//! SfuWorker pools: their pods as the API server stores them, their status and scale
//! subresource, and scaling down by draining.

use std::time::{Duration, Instant};

use fanout_operator::crd::{Room, SfuWorker};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::cluster::{cluster, eventually, Cluster, WORKER_TOKEN};
use crate::kit::say;
use crate::kubelet::Kubelet;
use crate::operator::{Operator, OperatorArgs};

const WAIT: Duration = Duration::from_secs(30);

pub async fn worker_token_secret(c: &Cluster) {
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "worker-token"}, "stringData": {"token": WORKER_TOKEN}})).unwrap();
    c.api::<Secret>().create(&PostParams::default(), &secret).await.expect("token secret");
}

/// A pool spec for tests: its HTTP port free on `nodes`, a small UDP range, the token Secret.
pub fn pool_spec(c: &Cluster, nodes: &[crate::cluster::NodeInfo], replicas: i32, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "replicas": replicas,
        "image": "fanout:test",
        "httpPort": c.free_port(nodes),
        "rtcPorts": {"min": 41000, "max": 41019},
        "capacity": {"maxPeers": 100, "maxRooms": 10},
        "apiTokenSecret": {"name": "worker-token", "key": "token"},
        "drainTimeoutSeconds": 600,
    });
    spec.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    spec
}

pub async fn pods_of(c: &Cluster, pool: &str) -> Vec<Pod> {
    let mut pods = c
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("fanout.dev/sfuworker={pool}")))
        .await
        .expect("pods list")
        .items;
    pods.sort_by_key(|p| p.name_any());
    pods
}

/// Waits until the pool reports `ready` ready replicas.
pub async fn ready_pool(c: &Cluster, pool: &str, ready: i32) -> SfuWorker {
    let api: Api<SfuWorker> = c.api();
    eventually(&format!("{pool} has {ready} ready replicas"), WAIT, || async {
        let p = api.get(pool).await.ok()?;
        (p.status.as_ref()?.ready_replicas == ready && p.status.as_ref()?.workers.len() == ready as usize).then_some(p)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sfuworker_becomes_host_network_pods_as_the_server_stores_them() {
    let Some(c) = cluster("pool-pods").await else { return };
    let nodes = c.nodes(2).await;
    worker_token_secret(&c).await;
    let spec = pool_spec(&c, &nodes, 2, json!({"imagePullSecrets": [{"name": "regcred"}]}));
    let port = spec["httpPort"].as_i64().unwrap() as i32;
    let pool = c.create_pool("sfu", spec).await;
    let _operator = Operator::start(&c, "op", OperatorArgs::default());

    let pods = eventually("two worker pods", WAIT, || async {
        let pods = pods_of(&c, "sfu").await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    assert_eq!(pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["sfu-0", "sfu-1"]);
    for pod in &pods {
        let name = pod.name_any();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true), "{name}");
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"), "{name}");
        let pull: Vec<&str> = spec.image_pull_secrets.iter().flatten().map(|s| s.name.as_str()).collect();
        assert_eq!(pull, ["regcred"], "{name}");
        let owner = &pod.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("SfuWorker", "sfu", Some(true)));
        assert_eq!(Some(&owner.uid), pool.metadata.uid.as_ref());

        let container = &spec.containers[0];
        let http = &container.ports.as_ref().unwrap()[0];
        assert_eq!((http.container_port, http.host_port, http.protocol.as_deref()), (port, Some(port), Some("TCP")), "{name}");
        // The server filled in what a kubelet needs and the operator left to defaults.
        assert_eq!(container.termination_message_path.as_deref(), Some("/dev/termination-log"), "{name}");
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"), "{name}");

        let anti = spec.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
        let term = &anti.required_during_scheduling_ignored_during_execution.as_ref().unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(term.label_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["fanout.dev/sfuworker"], "sfu");

        let env = container.env.as_ref().unwrap();
        let field = |var: &str| {
            env.iter().find(|e| e.name == var).and_then(|e| e.value_from.as_ref()?.field_ref.as_ref()).map(|f| f.field_path.clone())
        };
        assert_eq!(field("FANOUT_ANNOUNCED_IP").as_deref(), Some("status.hostIP"), "{name}");
        assert_eq!(field("NODE_IP").as_deref(), Some("status.hostIP"), "{name}");
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"), "{name}");
        assert_eq!(field("NODE_NAME").as_deref(), Some("spec.nodeName"), "{name}");
        let token = env.iter().find(|e| e.name == "FANOUT_API_TOKEN").and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone());
        assert_eq!(token.map(|s| (s.name, s.key)), Some(("worker-token".to_string(), "token".to_string())));
    }

    // Scheduled (by the test's scheduler, which honours the anti-affinity) and started: the
    // status lists each replica at its node's address, with the load its worker reports.
    let _kubelet = Kubelet::start(&c, nodes.clone());
    let pool = ready_pool(&c, "sfu", 2).await;
    let status = pool.status.unwrap();
    assert_eq!(status.replicas, 2);
    for (w, node) in status.workers.iter().zip(&nodes) {
        assert_eq!(w.endpoint.as_deref(), Some(format!("http://{}:{port}", node.ip).as_str()), "{w:?}");
        assert_eq!(w.announced_ip.as_deref(), Some(node.ip.to_string().as_str()));
        assert_eq!(w.node.as_deref(), Some(node.name.as_str()));
    }
    // The peers figure comes from the real workers' /v1/stats, asked every resync or change.
    let api: Api<SfuWorker> = c.api();
    eventually("the workers' own reports in the status", WAIT, || async {
        let s = api.get("sfu").await.ok()?.status?;
        s.workers.iter().all(|w| w.peers == Some(0)).then_some(())
    })
    .await;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllReplicasReady"));

    // The scale subresource, as `kubectl scale` and autoscalers use it.
    let scale = api.get_scale("sfu").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let scale_status = scale.status.unwrap();
    assert_eq!((scale_status.replicas, scale_status.selector.as_deref()), (2, Some("fanout.dev/sfuworker=sfu")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_drains_the_highest_ordinals_and_deletes_each_when_empty_or_at_the_timeout() {
    let Some(c) = cluster("pool-scale-down").await else { return };
    let nodes = c.nodes(3).await;
    worker_token_secret(&c).await;
    let drain_timeout = 4;
    c.create_pool("sfu", pool_spec(&c, &nodes, 3, json!({"drainTimeoutSeconds": drain_timeout}))).await;
    let _kubelet = Kubelet::start(&c, nodes.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 3).await;

    // Spread puts one room on each replica.
    let mut on = std::collections::BTreeMap::new();
    for room in ["r0", "r1", "r2"] {
        c.create_room(room, json!({"maxPeers": 10})).await;
        on.insert(c.placed(room, WAIT).await.pod, room);
    }
    assert_eq!(on.keys().collect::<Vec<_>>(), ["sfu-0", "sfu-1", "sfu-2"], "one room per replica");

    let pools: Api<SfuWorker> = c.api();
    let pods: Api<Pod> = c.api();
    pools.patch_scale("sfu", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    let drain_started = Instant::now();
    for pod in ["sfu-1", "sfu-2"] {
        eventually(&format!("{pod} draining"), WAIT, || async {
            pods.get(pod).await.ok()?.annotations().contains_key("fanout.dev/draining-since").then_some(())
        })
        .await;
    }
    // A draining replica takes no new rooms.
    c.create_room("late", json!({"maxPeers": 10})).await;
    assert_eq!(c.placed("late", WAIT).await.pod, "sfu-0");

    // Empty: deleted at once. The room on sfu-2 goes; sfu-2 follows.
    let rooms: Api<Room> = c.api();
    rooms.delete(on["sfu-2"], &Default::default()).await.unwrap();
    let room_deleted = Instant::now();
    eventually("sfu-2 deleted once empty", WAIT, || async { pods.get_opt("sfu-2").await.ok()?.is_none().then_some(()) }).await;
    say(format!("figure: an emptied draining replica was deleted {:.1} s after its last room was", room_deleted.elapsed().as_secs_f64()));
    assert!(drain_started.elapsed() < Duration::from_secs(drain_timeout), "sfu-2 went before the drain timeout");
    assert!(pods.get_opt("sfu-1").await.unwrap().is_some(), "sfu-1 still holds a room and is inside its drain timeout");

    // Not empty: deleted at the drain timeout, and its room moves to the remaining replica.
    eventually("sfu-1 deleted at the drain timeout", WAIT, || async { pods.get_opt("sfu-1").await.ok()?.is_none().then_some(()) }).await;
    let deleted_after = drain_started.elapsed();
    eventually("the room of sfu-1 moved to sfu-0", WAIT, || async {
        let p = rooms.get(on["sfu-1"]).await.ok()?.status?.placement?;
        (p.pod == "sfu-0").then_some(())
    })
    .await;
    say(format!(
        "figure: drain timeout {drain_timeout} s: replica deleted {:.1} s after the drain began, its room placed on sfu-0 {:.1} s after",
        deleted_after.as_secs_f64(),
        drain_started.elapsed().as_secs_f64()
    ));
    assert!(deleted_after >= Duration::from_secs(drain_timeout - 1), "sfu-1 was deleted before its drain timeout");
    let status = ready_pool(&c, "sfu", 1).await.status.unwrap();
    assert_eq!(status.replicas, 1);
}
