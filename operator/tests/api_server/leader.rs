//! Two real `fanout-operator` processes on one Lease: one leads; when it is SIGKILLed the
//! other takes the Lease and placements go on, with no room placed twice and no worker
//! committed beyond its capacity.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_operator::crd::{Room, RoomPhase};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::cluster::{cluster, eventually};
use crate::kit::say;
use crate::kubelet::Kubelet;
use crate::operator::{Operator, OperatorArgs};
use crate::pools::{pool_spec, ready_pool, worker_token_secret};

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_the_other_operator_takes_the_lease_and_placements_go_on() {
    let Some(c) = cluster("leader-takeover").await else { return };
    let nodes = c.nodes(2).await;
    worker_token_secret(&c).await;
    // Room for 8 rooms in all: 2 replicas of 4.
    c.create_pool("sfu", pool_spec(&c, &nodes, 2, json!({"capacity": {"maxPeers": 100, "maxRooms": 4}}))).await;
    let _kubelet = Kubelet::start(&c, nodes.clone());

    // Every placement each room ever had, in order, as the watch delivers them.
    let history: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let watch = tokio::spawn({
        let (api, history) = (c.api::<Room>(), history.clone());
        async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(Ok(event)) = events.next().await {
                let (watcher::Event::Apply(room) | watcher::Event::InitApply(room)) = event else { continue };
                let Some(p) = room.status.as_ref().and_then(|s| s.placement.as_ref()) else { continue };
                let mut h = history.lock().unwrap();
                let seen = h.entry(room.name_any()).or_default();
                if seen.last() != Some(&p.pod_uid) {
                    seen.push(p.pod_uid.clone());
                }
            }
        }
    });

    let lease_seconds = 4;
    let args = || OperatorArgs { lease_duration_seconds: lease_seconds, ..Default::default() };
    let mut a = Operator::start(&c, "operator-a", args());
    let mut b = Operator::start(&c, "operator-b", args());
    let leases: kube::Api<Lease> = c.api();
    let holder = |lease: &Lease| lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
    let first = eventually("a leader", WAIT, || async { holder(&leases.get_opt("fanout-operator").await.ok()??) }).await;
    let (leader, follower) = if first == a.identity { (&mut a, &mut b) } else { (&mut b, &mut a) };
    ready_pool(&c, "sfu", 2).await;
    for i in 0..4 {
        c.create_room(&format!("r{i}"), json!({"maxPeers": 10})).await;
    }
    for i in 0..4 {
        c.placed(&format!("r{i}"), WAIT).await;
    }
    assert!(!follower.log().contains("became leader"), "the follower acted while the leader was alive");
    let transitions_before = leases.get("fanout-operator").await.unwrap().spec.unwrap().lease_transitions.unwrap_or(0);

    // SIGKILL: no chance to release the Lease. Rooms keep arriving meanwhile.
    leader.kill();
    let killed = Instant::now();
    for i in 4..9 {
        c.create_room(&format!("r{i}"), json!({"maxPeers": 10})).await;
    }
    let new_holder = eventually("the Lease taken over", WAIT, || async {
        let h = holder(&leases.get("fanout-operator").await.ok()?)?;
        (h != leader.identity).then_some(h)
    })
    .await;
    let takeover = killed.elapsed();
    assert_eq!(new_holder, follower.identity);
    let new_rooms: Vec<String> = (4..9).map(|i| format!("r{i}")).collect();
    eventually("a new room placed by the new leader", WAIT, || async {
        let rooms = c.api::<Room>().list(&Default::default()).await.ok()?.items;
        rooms
            .iter()
            .any(|r| new_rooms.contains(&r.name_any()) && r.status.as_ref().is_some_and(|s| s.placement.is_some()))
            .then_some(())
    })
    .await;
    let placing_again = killed.elapsed();
    say(format!(
        "figure: leader SIGKILLed: Lease taken over after {:.1} s, first new placement after {:.1} s (lease duration {lease_seconds} s, renewed every {:.1} s)",
        takeover.as_secs_f64(),
        placing_again.as_secs_f64(),
        lease_seconds as f64 / 3.0
    ));

    // Of the five new rooms, four fit; the fifth waits with the reason.
    let rooms: kube::Api<Room> = c.api();
    let all = eventually("r4..r8 decided", WAIT, || async {
        let all = rooms.list(&Default::default()).await.ok()?.items;
        let decided = all.iter().filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_some())).count();
        (decided == 9).then_some(all)
    })
    .await;
    let pending: Vec<&Room> = all.iter().filter(|r| r.status.as_ref().unwrap().phase == Some(RoomPhase::Pending)).collect();
    assert_eq!(pending.len(), 1, "exactly one room finds no capacity");
    let condition = &pending[0].status.as_ref().unwrap().conditions[0];
    assert_eq!(condition.reason, "InsufficientCapacity", "{condition:?}");

    // No worker is committed beyond its capacity.
    let mut per_pod: BTreeMap<String, (i32, i32)> = BTreeMap::new();
    for r in &all {
        if let Some(p) = r.status.as_ref().unwrap().placement.as_ref() {
            let load = per_pod.entry(p.pod_uid.clone()).or_default();
            *load = (load.0 + 1, load.1 + p.reserved_peers);
        }
    }
    assert_eq!(per_pod.len(), 2);
    for (pod, (rooms, peers)) in &per_pod {
        assert!(*rooms <= 4 && *peers <= 100, "pod {pod} holds {rooms} rooms, {peers} peers: beyond its capacity of 4 and 100");
    }

    // No room was placed twice: every room ever had one placement.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();
    let history = history.lock().unwrap().clone();
    for r in all.iter().filter(|r| r.status.as_ref().unwrap().placement.is_some()) {
        let seen = history.get(&r.name_any()).cloned().unwrap_or_default();
        assert_eq!(seen.len(), 1, "room {} was placed {} times: {seen:?}", r.name_any(), seen.len());
    }
    let lease = leases.get("fanout-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(transitions_before + 1));
    assert!(follower.running(), "the new leader keeps running");
}
