//! The room side of scheduling, as pure functions: which replicas a room may go to, and
//! whether a placed room can stay where it is.
//!
//! A placed room stays on its pod while that pod is Ready. When the pod is gone (deleted,
//! finished, recreated under the same name) the room is moved at once; when it is NotReady the
//! room waits out a grace period first, because a worker that blips for a few seconds still
//! holds every call in the room.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{labels, Placement, Room, SfuWorker};
use crate::ledger::Ledger;
use crate::pool::is_ready;
use crate::scheduler::{schedule, Load, Policy, Replica, Unschedulable};
use crate::status::{announced_ip, endpoint};

/// Builds the scheduler's view of every worker pod of `pools`, in a stable order (pool, pod).
pub fn replicas(pools: &[&SfuWorker], pods: &[&Pod], committed: &HashMap<String, Load>) -> Vec<Replica> {
    let by_name: HashMap<(&str, String), &SfuWorker> = pools
        .iter()
        .map(|p| ((p.metadata.namespace.as_deref().unwrap_or_default(), p.name_any()), *p))
        .collect();
    let mut out: Vec<Replica> = pods
        .iter()
        .filter_map(|pod| {
            let pool_name = pod.labels().get(labels::SFU_WORKER)?;
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let pool = by_name.get(&(ns, pool_name.clone()))?;
            let uid = pod.uid()?;
            Some(Replica {
                pool: pool_name.clone(),
                pool_labels: pool.labels().clone(),
                pod: pod.name_any(),
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                endpoint: endpoint(pod, pool.spec.http_port),
                announced_ip: announced_ip(pod, &pool.spec),
                ready: is_ready(pod),
                draining: pod.annotations().contains_key(labels::DRAINING_SINCE),
                capacity: pool.spec.capacity,
                load: committed.get(&uid).copied().unwrap_or_default(),
                pod_uid: uid,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.pool, &a.pod).cmp(&(&b.pool, &b.pod)));
    out
}

/// Turns the scheduler's choice into the placement written to the Room's status.
pub fn placement_on(replica: &Replica, reserved_peers: i32) -> Placement {
    Placement {
        sfu_worker: replica.pool.clone(),
        pod: replica.pod.clone(),
        pod_uid: replica.pod_uid.clone(),
        node: replica.node.clone(),
        // The scheduler only picks replicas with an endpoint.
        endpoint: replica.endpoint.clone().unwrap_or_default(),
        announced_ip: replica.announced_ip.clone(),
        reserved_peers,
    }
}

/// The worker side of the cluster as the watch caches show it.
pub struct Cluster<'a, W, P> {
    pub namespace: &'a str,
    pub pools: &'a [W],
    pub pods: &'a [P],
}

/// Decides where `room` goes and reserves the capacity in `ledger`, in one step. The caller
/// holds the ledger's lock across this call, so decisions are serialised, and refreshes the
/// ledger from the Room cache when it is stale (see [`Ledger::refresh_if_older_than`]).
///
/// `previous` is the room's lost placement when it is being moved: that pod is excluded, and
/// when nothing fits, its reservation is released at once.
pub fn decide_and_reserve<W, P>(
    ledger: &mut Ledger,
    cluster: &Cluster<'_, W, P>,
    room: &Room,
    room_uid: &str,
    policy: Policy,
    previous: Option<&Placement>,
) -> Result<Placement, Unschedulable>
where
    W: AsRef<SfuWorker>,
    P: AsRef<Pod>,
{
    let in_ns = |ns: Option<String>| ns.as_deref() == Some(cluster.namespace);
    let pools: Vec<&SfuWorker> = cluster.pools.iter().map(|p| p.as_ref()).filter(|p| in_ns(p.namespace())).collect();
    let pods: Vec<&Pod> = cluster.pods.iter().map(|p| p.as_ref()).filter(|p| in_ns(p.namespace())).collect();
    let candidates = replicas(&pools, &pods, ledger.load());
    let peers = room.spec.max_peers.max(1) as u32;
    match schedule(peers, room.spec.worker_selector.as_ref(), &candidates, policy, previous.map(|p| p.pod_uid.as_str())) {
        Ok(chosen) => {
            let placement = placement_on(chosen, peers as i32);
            ledger.assume(room_uid, Some(placement.clone()));
            Ok(placement)
        }
        Err(why) => {
            if previous.is_some() {
                ledger.assume(room_uid, None);
            }
            Err(why)
        }
    }
}

/// Can a placed room stay where it is?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementHealth {
    /// The pod is there and Ready.
    Healthy,
    /// The pod is NotReady but within the grace period: look again after this long.
    Unready { recheck_after: Duration },
    /// The room must move; the reason is for the Event.
    Lost(String),
}

/// Judges `placement` against the pod currently known under its name.
pub fn placement_health(placement: &Placement, pod: Option<&Pod>, now: Timestamp, grace: Duration) -> PlacementHealth {
    let Some(pod) = pod else {
        return PlacementHealth::Lost(format!("worker pod {} no longer exists", placement.pod));
    };
    if pod.uid().as_deref() != Some(placement.pod_uid.as_str()) {
        return PlacementHealth::Lost(format!("worker pod {} was recreated and no longer holds the room", placement.pod));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return PlacementHealth::Lost(format!("worker pod {} is being deleted", placement.pod));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed") | Some("Succeeded")) {
        return PlacementHealth::Lost(format!("worker pod {} has stopped", placement.pod));
    }
    if is_ready(pod) {
        return PlacementHealth::Healthy;
    }
    // NotReady since the Ready condition last changed (or since we cannot tell: now).
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let elapsed = now.duration_since(since).unsigned_abs();
    if elapsed >= grace {
        PlacementHealth::Lost(format!(
            "worker pod {} has been NotReady for {}s (grace period {}s)",
            placement.pod,
            elapsed.as_secs(),
            grace.as_secs()
        ))
    } else {
        PlacementHealth::Unready { recheck_after: grace - elapsed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::tests::pool;
    use crate::status::tests::running;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const GRACE: Duration = Duration::from_secs(30);

    fn now() -> Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    fn placed_on(pod: &Pod) -> Placement {
        Placement {
            sfu_worker: "sfu".into(),
            pod: pod.name_any(),
            pod_uid: pod.uid().unwrap(),
            node: None,
            endpoint: "http://10.0.0.1:3000".into(),
            announced_ip: None,
            reserved_peers: 10,
        }
    }

    fn not_ready_since(mut pod: Pod, at: &str) -> Pod {
        let c = &mut pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
        c.status = "False".into();
        c.last_transition_time = Some(Time(at.parse().unwrap()));
        pod
    }

    #[test]
    fn a_room_on_a_ready_pod_stays() {
        let pod = running(&pool("sfu", 1), 0, true);
        assert_eq!(placement_health(&placed_on(&pod), Some(&pod), now(), GRACE), PlacementHealth::Healthy);
    }

    #[test]
    fn a_room_whose_pod_is_gone_moves() {
        let pod = running(&pool("sfu", 1), 0, true);
        assert!(matches!(placement_health(&placed_on(&pod), None, now(), GRACE), PlacementHealth::Lost(_)));
    }

    #[test]
    fn a_pod_recreated_under_the_same_name_does_not_hold_the_room() {
        let pod = running(&pool("sfu", 1), 0, true);
        let placement = placed_on(&pod);
        let mut recreated = pod.clone();
        recreated.metadata.uid = Some("another-uid".into());
        let health = placement_health(&placement, Some(&recreated), now(), GRACE);
        assert!(matches!(health, PlacementHealth::Lost(ref why) if why.contains("recreated")), "{health:?}");
    }

    #[test]
    fn a_not_ready_pod_keeps_the_room_for_the_grace_period() {
        let pod = not_ready_since(running(&pool("sfu", 1), 0, true), "2026-01-01T00:00:50Z");
        assert_eq!(
            placement_health(&placed_on(&pod), Some(&pod), now(), GRACE),
            PlacementHealth::Unready { recheck_after: Duration::from_secs(20) }
        );
        let long_gone = not_ready_since(pod, "2026-01-01T00:00:20Z");
        assert!(matches!(placement_health(&placed_on(&long_gone), Some(&long_gone), now(), GRACE), PlacementHealth::Lost(_)));
    }

    #[test]
    fn replicas_carry_pool_capacity_labels_and_committed_load() {
        let mut p = pool("sfu", 2);
        p.metadata.labels = Some([("tier".to_string(), "gold".to_string())].into());
        let pods = [running(&p, 1, true), running(&p, 0, false)];
        let committed = HashMap::from([("pod-uid-1".to_string(), Load { rooms: 2, peers: 20 })]);
        let r = replicas(&[&p], &pods.iter().collect::<Vec<_>>(), &committed);
        assert_eq!(r.iter().map(|x| x.pod.as_str()).collect::<Vec<_>>(), ["sfu-0", "sfu-1"]);
        assert!(!r[0].ready && r[1].ready);
        assert_eq!(r[1].load, Load { rooms: 2, peers: 20 });
        assert_eq!(r[1].pool_labels["tier"], "gold");
        assert_eq!(r[1].capacity, p.spec.capacity);
        assert_eq!(r[1].endpoint.as_deref(), Some("http://10.0.0.2:3000"));
    }

    #[test]
    fn pods_of_unknown_pools_are_not_candidates() {
        let p = pool("sfu", 1);
        let stray = running(&pool("other", 1), 0, true);
        assert!(replicas(&[&p], &[&stray], &HashMap::new()).is_empty());
    }
}
