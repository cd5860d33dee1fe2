//! What an SfuWorker's pods should become: a pure plan from the pool's spec and its observed
//! pods to a list of actions, plus the checks between pools (overlapping UDP ranges, shared
//! ICE-TCP ports).
//!
//! The rules, in the order they apply:
//! 1. A pod that has finished (Failed/Succeeded) is deleted; the next pass recreates it.
//! 2. A pod whose ordinal is at or above `replicas` is drained (takes no new rooms), then deleted
//!    once it hosts no rooms or the drain timeout has passed. Scaling back up before that
//!    cancels the drain instead of creating a new pod.
//! 3. Every ordinal below `replicas` without a pod gets one (unless the pool is held because its
//!    ports conflict with an older pool's).
//! 4. Outdated pods (built from an older template) are replaced one at a time, highest ordinal
//!    first: only when every other replica is present and ready, the pod is drained, deleted
//!    when empty (or at the timeout), and rule 3 recreates it from the new template.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{labels, RtcPortRange};

/// Why a pod is draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    ScaleDown,
    Replace,
}

impl DrainReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainReason::ScaleDown => "ScaleDown",
            DrainReason::Replace => "Replace",
        }
    }
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The pod's process exited for good.
    Finished,
    /// Drained and empty.
    Drained,
    /// Drained past `drainTimeoutSeconds` with rooms still on it; they will be moved.
    DrainTimeout,
    /// Outdated and not ready: it serves nothing, replace it at once.
    OutdatedUnready,
}

/// One step toward the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAction {
    Create { ordinal: u32 },
    Drain { pod: String, reason: DrainReason },
    Undrain { pod: String },
    Delete { pod: String, reason: DeleteReason },
}

/// A worker pod as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: Option<u32>,
    pub template_hash: Option<String>,
    pub ready: bool,
    pub finished: bool,
    pub terminating: bool,
    pub draining_since: Option<Timestamp>,
    pub drain_reason: Option<DrainReason>,
    /// Rooms placed on this pod (from Rooms' status, or the worker's own count if larger).
    pub rooms: u32,
}

impl ObservedPod {
    /// Reads what the planner needs from a Pod object.
    pub fn from_pod(pod: &Pod, rooms: u32) -> ObservedPod {
        let labels_ = pod.labels();
        let annotations = pod.annotations();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        ObservedPod {
            name: pod.name_any(),
            ordinal: labels_.get(labels::ORDINAL).and_then(|o| o.parse().ok()),
            template_hash: annotations.get(labels::TEMPLATE_HASH).cloned(),
            ready: is_ready(pod),
            finished: matches!(phase, Some("Failed") | Some("Succeeded")),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            draining_since: annotations.get(labels::DRAINING_SINCE).and_then(|t| t.parse().ok()),
            drain_reason: annotations.get(labels::DRAIN_REASON).map(|r| match r.as_str() {
                "Replace" => DrainReason::Replace,
                _ => DrainReason::ScaleDown,
            }),
            rooms,
        }
    }

    fn outdated(&self, current_hash: &str) -> bool {
        self.template_hash.as_deref() != Some(current_hash)
    }
}

/// True when the pod's Ready condition is True (and it is not being deleted).
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The actions to take now, and when to look again even if nothing changes (drain deadlines).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolPlan {
    pub actions: Vec<PoolAction>,
    pub recheck_after: Option<Duration>,
}

/// Plans one reconcile pass of a pool. `hold_creation` is set while the pool's ports conflict
/// with an older pool's: nothing new starts until the conflict is resolved.
pub fn plan(
    replicas: u32,
    current_hash: &str,
    pods: &[ObservedPod],
    drain_timeout: Duration,
    now: Timestamp,
    hold_creation: bool,
) -> PoolPlan {
    let mut out = PoolPlan::default();
    let recheck = |d: Duration, out: &mut PoolPlan| {
        out.recheck_after = Some(out.recheck_after.map_or(d, |r| r.min(d)));
    };
    // A drained pod is deleted when empty or at its deadline; in between, look again at the
    // deadline (room counts arrive through watches, but a periodic look costs little).
    let drain_step = |pod: &ObservedPod, since: Timestamp, out: &mut PoolPlan| -> Option<Duration> {
        let elapsed = now.duration_since(since).unsigned_abs();
        if pod.rooms == 0 {
            out.actions.push(PoolAction::Delete { pod: pod.name.clone(), reason: DeleteReason::Drained });
            None
        } else if elapsed >= drain_timeout {
            out.actions.push(PoolAction::Delete { pod: pod.name.clone(), reason: DeleteReason::DrainTimeout });
            None
        } else {
            Some((drain_timeout - elapsed).min(Duration::from_secs(30)))
        }
    };

    let mut occupied = BTreeSet::new();
    let mut replacing = false;
    for pod in pods {
        if let Some(o) = pod.ordinal {
            occupied.insert(o);
        }
        if pod.terminating {
            continue;
        }
        if pod.finished {
            out.actions.push(PoolAction::Delete { pod: pod.name.clone(), reason: DeleteReason::Finished });
            continue;
        }
        let wanted = pod.ordinal.is_some_and(|o| o < replicas);
        match (wanted, pod.draining_since) {
            (false, None) => out.actions.push(PoolAction::Drain { pod: pod.name.clone(), reason: DrainReason::ScaleDown }),
            (false, Some(since)) => {
                if let Some(d) = drain_step(pod, since, &mut out) {
                    recheck(d, &mut out);
                }
            }
            (true, Some(since)) => {
                if pod.outdated(current_hash) && pod.drain_reason == Some(DrainReason::Replace) {
                    replacing = true;
                    if let Some(d) = drain_step(pod, since, &mut out) {
                        recheck(d, &mut out);
                    }
                } else {
                    // Scaled back up while draining: keep the pod and its rooms.
                    out.actions.push(PoolAction::Undrain { pod: pod.name.clone() });
                }
            }
            (true, None) => {}
        }
    }

    if !hold_creation {
        for ordinal in 0..replicas {
            if !occupied.contains(&ordinal) {
                out.actions.push(PoolAction::Create { ordinal });
            }
        }
    }

    // Rolling replacement, one pod at a time.
    if !replacing {
        let wanted: Vec<&ObservedPod> = pods
            .iter()
            .filter(|p| p.ordinal.is_some_and(|o| o < replicas) && !p.terminating && !p.finished)
            .collect();
        let all_present = (0..replicas).all(|o| wanted.iter().any(|p| p.ordinal == Some(o)));
        let outdated_unready = wanted.iter().find(|p| p.outdated(current_hash) && !p.ready);
        if let Some(pod) = outdated_unready {
            out.actions.push(PoolAction::Delete { pod: pod.name.clone(), reason: DeleteReason::OutdatedUnready });
        } else if all_present
            && wanted.iter().all(|p| p.ready)
            && let Some(pod) = wanted.iter().filter(|p| p.outdated(current_hash)).max_by_key(|p| p.ordinal)
        {
            if pod.rooms == 0 {
                out.actions.push(PoolAction::Delete { pod: pod.name.clone(), reason: DeleteReason::Drained });
            } else {
                out.actions.push(PoolAction::Drain { pod: pod.name.clone(), reason: DrainReason::Replace });
                recheck(Duration::from_secs(5), &mut out);
            }
        }
    }
    out
}

/// The parts of a pool that matter for port conflicts.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPorts {
    pub name: String,
    pub created: Option<Timestamp>,
    pub rtc_ports: RtcPortRange,
    /// The ICE-TCP port, when the pool offers ICE-TCP.
    pub tcp_port: Option<i32>,
    /// The REST API's TCP port.
    pub http_port: i32,
    pub node_selector: BTreeMap<String, String>,
}

impl PoolPorts {
    /// The ports of `self` that `other` claims too on a shared node, said from `self`'s side
    /// ("rtcPorts 40000-44999 overlap", "tcpPort 50000 is also its tcpPort"). HTTP ports
    /// alike are left out: both are hostPorts, which the scheduler keeps apart by itself, and
    /// pools usually share the default.
    fn clashes_with(&self, other: &PoolPorts) -> Vec<String> {
        let mut clashes = Vec::new();
        if self.rtc_ports.overlaps(&other.rtc_ports) {
            clashes.push(format!("rtcPorts {}-{} overlap its {}-{}", self.rtc_ports.min, self.rtc_ports.max, other.rtc_ports.min, other.rtc_ports.max));
        }
        if let Some(port) = self.tcp_port {
            if other.tcp_port == Some(port) {
                clashes.push(format!("tcpPort {port} is its tcpPort too"));
            }
            if other.http_port == port {
                clashes.push(format!("tcpPort {port} is its httpPort"));
            }
        }
        if let Some(port) = other.tcp_port
            && self.http_port == port
        {
            clashes.push(format!("httpPort {port} is its tcpPort"));
        }
        clashes
    }
}

/// A conflict seen from one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConflict {
    /// The pools whose ports clash with this one's on a node both may use.
    pub with: Vec<String>,
    /// What clashes, one sentence per pool: "pool b: tcpPort 50000 is its tcpPort too".
    pub clashes: Vec<String>,
    /// This pool is the newer one: it must not start pods until the conflict is resolved.
    pub held: bool,
}

/// Two pools may share a node unless their node selectors demand different values for a key.
fn may_share_node(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k).is_none_or(|w| w == v))
}

/// Finds pools (of one namespace, or of the whole cluster: ports are per node) that could land
/// on the same node and claim the same ports there: overlapping UDP ranges, or an ICE-TCP
/// port that the other pool uses for ICE-TCP or its API. The older pool keeps running; the
/// newer one is held.
pub fn port_conflicts(pools: &[PoolPorts]) -> BTreeMap<String, PortConflict> {
    let mut out: BTreeMap<String, PortConflict> = BTreeMap::new();
    let older = |a: &PoolPorts, b: &PoolPorts| (a.created, &a.name) < (b.created, &b.name);
    let empty = || PortConflict { with: vec![], clashes: vec![], held: false };
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if !may_share_node(&a.node_selector, &b.node_selector) {
                continue;
            }
            let (first, second) = if older(a, b) { (a, b) } else { (b, a) };
            let clashes = first.clashes_with(second);
            if clashes.is_empty() {
                continue;
            }
            let e = out.entry(first.name.clone()).or_insert_with(empty);
            e.with.push(second.name.clone());
            e.clashes.push(format!("pool {}: {}", second.name, clashes.join(", ")));
            let e = out.entry(second.name.clone()).or_insert_with(empty);
            e.with.push(first.name.clone());
            e.clashes.push(format!("pool {}: {}", first.name, second.clashes_with(first).join(", ")));
            e.held = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "current";
    const TIMEOUT: Duration = Duration::from_secs(600);

    fn t(s: &str) -> Timestamp {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    fn pod(ordinal: u32) -> ObservedPod {
        ObservedPod {
            name: format!("sfu-{ordinal}"),
            ordinal: Some(ordinal),
            template_hash: Some(HASH.into()),
            ready: true,
            finished: false,
            terminating: false,
            draining_since: None,
            drain_reason: None,
            rooms: 0,
        }
    }

    fn draining(mut p: ObservedPod, since: &str, reason: DrainReason, rooms: u32) -> ObservedPod {
        p.draining_since = Some(t(since));
        p.drain_reason = Some(reason);
        p.rooms = rooms;
        p
    }

    fn actions(replicas: u32, pods: &[ObservedPod], now: &str) -> Vec<PoolAction> {
        plan(replicas, HASH, pods, TIMEOUT, t(now), false).actions
    }

    #[test]
    fn a_new_pool_creates_one_pod_per_replica() {
        assert_eq!(
            actions(3, &[], "00:00:00"),
            vec![PoolAction::Create { ordinal: 0 }, PoolAction::Create { ordinal: 1 }, PoolAction::Create { ordinal: 2 }]
        );
    }

    #[test]
    fn a_pool_at_its_size_does_nothing() {
        assert!(actions(2, &[pod(0), pod(1)], "00:00:00").is_empty());
    }

    #[test]
    fn a_deleted_pod_is_recreated_under_its_ordinal() {
        assert_eq!(actions(3, &[pod(0), pod(2)], "00:00:00"), vec![PoolAction::Create { ordinal: 1 }]);
    }

    #[test]
    fn a_terminating_pod_holds_its_ordinal_until_gone() {
        let mut p1 = pod(1);
        p1.terminating = true;
        assert!(actions(2, &[pod(0), p1], "00:00:00").is_empty());
    }

    #[test]
    fn scale_down_drains_the_highest_ordinals_first() {
        assert_eq!(
            actions(1, &[pod(0), pod(1), pod(2)], "00:00:00"),
            vec![
                PoolAction::Drain { pod: "sfu-1".into(), reason: DrainReason::ScaleDown },
                PoolAction::Drain { pod: "sfu-2".into(), reason: DrainReason::ScaleDown },
            ]
        );
    }

    #[test]
    fn a_draining_pod_is_deleted_once_empty() {
        let p = draining(pod(1), "00:00:00", DrainReason::ScaleDown, 0);
        assert_eq!(
            actions(1, &[pod(0), p], "00:00:10"),
            vec![PoolAction::Delete { pod: "sfu-1".into(), reason: DeleteReason::Drained }]
        );
    }

    #[test]
    fn a_draining_pod_with_rooms_waits_until_the_timeout() {
        let p = draining(pod(1), "00:00:00", DrainReason::ScaleDown, 2);
        let early = plan(1, HASH, &[pod(0), p.clone()], TIMEOUT, t("00:09:50"), false);
        assert!(early.actions.is_empty());
        assert_eq!(early.recheck_after, Some(Duration::from_secs(10)));
        assert_eq!(
            actions(1, &[pod(0), p], "00:10:00"),
            vec![PoolAction::Delete { pod: "sfu-1".into(), reason: DeleteReason::DrainTimeout }]
        );
    }

    #[test]
    fn scaling_back_up_cancels_a_drain() {
        let p = draining(pod(1), "00:00:00", DrainReason::ScaleDown, 3);
        assert_eq!(actions(2, &[pod(0), p], "00:00:10"), vec![PoolAction::Undrain { pod: "sfu-1".into() }]);
    }

    #[test]
    fn a_finished_pod_is_deleted_and_later_recreated() {
        let mut p = pod(0);
        p.finished = true;
        p.ready = false;
        assert_eq!(
            actions(1, &[p], "00:00:00"),
            vec![PoolAction::Delete { pod: "sfu-0".into(), reason: DeleteReason::Finished }]
        );
    }

    #[test]
    fn a_spec_change_replaces_pods_one_at_a_time_draining_first() {
        let mut old = [pod(0), pod(1), pod(2)];
        for p in &mut old {
            p.template_hash = Some("old".into());
            p.rooms = 1;
        }
        // Highest ordinal first, and only one.
        assert_eq!(
            actions(3, &old, "00:00:00"),
            vec![PoolAction::Drain { pod: "sfu-2".into(), reason: DrainReason::Replace }]
        );
        // While sfu-2 drains, nothing else is touched.
        let mut step = old.clone();
        step[2] = draining(old[2].clone(), "00:00:00", DrainReason::Replace, 1);
        assert!(actions(3, &step, "00:00:30").is_empty());
        // Empty: delete it; it is recreated with the new template once gone.
        step[2].rooms = 0;
        assert_eq!(
            actions(3, &step, "00:00:40"),
            vec![PoolAction::Delete { pod: "sfu-2".into(), reason: DeleteReason::Drained }]
        );
        assert_eq!(actions(3, &step[..2], "00:00:41"), vec![PoolAction::Create { ordinal: 2 }]);
        // The new sfu-2 is not ready yet: the next replacement waits.
        let mut fresh = pod(2);
        fresh.ready = false;
        assert!(actions(3, &[old[0].clone(), old[1].clone(), fresh.clone()], "00:00:50").is_empty());
        // Ready: the next one (sfu-1) starts draining.
        fresh.ready = true;
        assert_eq!(
            actions(3, &[old[0].clone(), old[1].clone(), fresh], "00:01:00"),
            vec![PoolAction::Drain { pod: "sfu-1".into(), reason: DrainReason::Replace }]
        );
    }

    #[test]
    fn an_empty_outdated_pod_is_replaced_without_draining() {
        let mut p = pod(0);
        p.template_hash = Some("old".into());
        assert_eq!(
            actions(1, &[p], "00:00:00"),
            vec![PoolAction::Delete { pod: "sfu-0".into(), reason: DeleteReason::Drained }]
        );
    }

    #[test]
    fn an_outdated_pod_that_is_not_ready_is_replaced_at_once() {
        // A bad image was fixed: the crash-looping pods must not block the rollout.
        let mut p = pod(1);
        p.template_hash = Some("bad".into());
        p.ready = false;
        assert_eq!(
            actions(2, &[pod(0), p], "00:00:00"),
            vec![PoolAction::Delete { pod: "sfu-1".into(), reason: DeleteReason::OutdatedUnready }]
        );
    }

    #[test]
    fn a_held_pool_creates_nothing() {
        assert!(plan(2, HASH, &[], TIMEOUT, t("00:00:00"), true).actions.is_empty());
    }

    /// A pool with these UDP ports and its own ICE-TCP port (60000 + its creation minute).
    fn ports(name: &str, created: &str, min: i32, max: i32) -> PoolPorts {
        PoolPorts {
            name: name.into(),
            created: Some(t(created)),
            rtc_ports: RtcPortRange { min, max },
            tcp_port: Some(60000 + created[3..5].parse::<i32>().unwrap()),
            http_port: 3000,
            node_selector: BTreeMap::new(),
        }
    }

    #[test]
    fn overlapping_ranges_flag_both_pools_and_hold_the_newer() {
        let pools = [ports("a", "00:00:00", 40000, 44999), ports("b", "00:01:00", 44000, 49999), ports("c", "00:02:00", 50000, 50999)];
        let c = port_conflicts(&pools);
        assert_eq!(c["a"].with, ["b"]);
        assert!(!c["a"].held);
        assert_eq!(c["a"].clashes, ["pool b: rtcPorts 40000-44999 overlap its 44000-49999"]);
        assert_eq!(c["b"].with, ["a"]);
        assert!(c["b"].held);
        assert!(!c.contains_key("c"));
    }

    #[test]
    fn a_shared_ice_tcp_port_flags_both_pools_and_holds_the_newer() {
        let a = ports("a", "00:00:00", 40000, 44999);
        let mut b = ports("b", "00:01:00", 45000, 49999);
        assert!(port_conflicts(&[a.clone(), b.clone()]).is_empty(), "disjoint UDP, own TCP ports");
        b.tcp_port = a.tcp_port;
        let c = port_conflicts(&[b.clone(), a.clone()]);
        assert_eq!(c["a"].clashes, ["pool b: tcpPort 60000 is its tcpPort too"]);
        assert!(!c["a"].held && c["b"].held, "the newer pool is held: {c:?}");
        // Without ICE-TCP the port is not opened: nothing to share.
        b.tcp_port = None;
        assert!(port_conflicts(&[a.clone(), b.clone()]).is_empty());
        // One pool's ICE-TCP port is the other's API port, either way round.
        b.http_port = 60000;
        let c = port_conflicts(&[a.clone(), b.clone()]);
        assert_eq!(c["a"].clashes, ["pool b: tcpPort 60000 is its httpPort"]);
        assert_eq!(c["b"].clashes, ["pool a: httpPort 60000 is its tcpPort"]);
        assert!(c["b"].held);
        // API ports alike are the scheduler's business (hostPorts): no conflict.
        b.http_port = 3000;
        assert!(port_conflicts(&[a.clone(), b.clone()]).is_empty());
        // Pools that never share a node may share ports.
        let mut b = ports("b", "00:01:00", 40000, 44999);
        b.tcp_port = a.tcp_port;
        b.node_selector.insert("zone".into(), "us".into());
        let mut a = a;
        a.node_selector.insert("zone".into(), "eu".into());
        assert!(port_conflicts(&[a, b]).is_empty());
    }

    #[test]
    fn pools_on_disjoint_nodes_do_not_conflict() {
        let mut a = ports("a", "00:00:00", 40000, 49999);
        let mut b = ports("b", "00:01:00", 40000, 49999);
        a.node_selector.insert("zone".into(), "eu".into());
        b.node_selector.insert("zone".into(), "us".into());
        assert!(port_conflicts(&[a.clone(), b.clone()]).is_empty());
        // A selector on another key does not separate them.
        b.node_selector = BTreeMap::from([("gpu".into(), "yes".into())]);
        assert_eq!(port_conflicts(&[a, b]).len(), 2);
    }

    #[test]
    fn adjacent_ranges_do_not_overlap() {
        let pools = [ports("a", "00:00:00", 40000, 44999), ports("b", "00:01:00", 45000, 49999)];
        assert!(port_conflicts(&pools).is_empty());
    }
}
