//! Where a room is scheduled: a pure function from a room's demand and the worker replicas
//! (with their committed load) to a choice, or to a reason a person can act on.
//!
//! Only ready, non-draining replicas with a known endpoint, of a pool matching the room's
//! `workerSelector`, with room left for the room's `maxPeers` and one more room, are candidates.
//! Load here is *committed* load (reservations summed from Rooms' status, see [`crate::ledger`]),
//! never live peer counts alone: a room may fill up after it is placed, so its reservation must
//! hold from the start.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::WorkerCapacity;
use crate::selector::{self, SelectorError};

/// How to choose among replicas that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Policy {
    /// Least loaded relative to capacity: spreads rooms, limits the blast radius of a lost node.
    #[default]
    Spread,
    /// Most loaded that still fits: fills workers one by one, so idle ones can be scaled down.
    Pack,
}

/// Committed load on one replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub rooms: u32,
    pub peers: u32,
}

impl Load {
    pub fn add(&mut self, peers: u32) {
        self.rooms += 1;
        self.peers += peers;
    }
}

/// One worker replica as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub pool: String,
    pub pool_labels: BTreeMap<String, String>,
    pub pod: String,
    pub pod_uid: String,
    pub node: Option<String>,
    pub endpoint: Option<String>,
    pub announced_ip: Option<String>,
    pub ready: bool,
    pub draining: bool,
    pub capacity: WorkerCapacity,
    pub load: Load,
}

impl Replica {
    /// Utilisation after adding a room of `peers`, as the larger of the peer and room ratios,
    /// in parts per million so comparisons are exact.
    fn utilisation_after(&self, peers: u32) -> u64 {
        let max_peers = self.capacity.max_peers.max(1) as u64;
        let max_rooms = self.capacity.max_rooms.max(1) as u64;
        let by_peers = (self.load.peers as u64 + peers as u64) * 1_000_000 / max_peers;
        let by_rooms = (self.load.rooms as u64 + 1) * 1_000_000 / max_rooms;
        by_peers.max(by_rooms)
    }

    fn fits(&self, peers: u32) -> bool {
        self.load.peers as u64 + peers as u64 <= self.capacity.max_peers.max(0) as u64
            && self.load.rooms < self.capacity.max_rooms.max(0) as u32
    }
}

/// Why no replica can take the room. The counts make the message actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unschedulable {
    #[error("no SfuWorker exists in this namespace; create one (see crds/examples/sfuworker.yaml)")]
    NoWorkers,
    #[error("no SfuWorker matches the room's workerSelector ({pools} pools in this namespace)")]
    NoMatchingPool { pools: usize },
    #[error("{0}")]
    InvalidSelector(#[from] SelectorError),
    #[error(
        "no worker can host {peers} more peers: of {matching} matching replicas, {not_ready} not ready, \
         {draining} draining, {full} full (most free: {most_free_peers} peers); add replicas or lower maxPeers"
    )]
    NoCapacity {
        peers: u32,
        matching: usize,
        not_ready: usize,
        draining: usize,
        full: usize,
        most_free_peers: u32,
    },
}

impl Unschedulable {
    /// Stable reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Unschedulable::NoWorkers => "NoWorkers",
            Unschedulable::NoMatchingPool { .. } => "NoMatchingWorkers",
            Unschedulable::InvalidSelector(_) => "InvalidWorkerSelector",
            Unschedulable::NoCapacity { .. } => "InsufficientCapacity",
        }
    }
}

/// Picks the replica for a room needing `peers`, or says why none fits.
///
/// `exclude_pod_uid` keeps a room that is being moved off a lost pod from landing on it again.
/// Ties are broken by pod name, so the same inputs always give the same answer.
pub fn schedule<'a>(
    peers: u32,
    selector: Option<&LabelSelector>,
    replicas: &'a [Replica],
    policy: Policy,
    exclude_pod_uid: Option<&str>,
) -> Result<&'a Replica, Unschedulable> {
    if replicas.is_empty() {
        return Err(Unschedulable::NoWorkers);
    }
    let mut matching = 0;
    let (mut not_ready, mut draining, mut full) = (0, 0, 0);
    let mut most_free_peers = 0u32;
    let mut best: Option<(&Replica, u64)> = None;
    // Replicas of one pool are adjacent in practice; evaluating the selector once per pool keeps
    // a decision at a few hundred nanoseconds for hundreds of replicas.
    let mut last_pool: Option<(&str, bool)> = None;
    for replica in replicas {
        let pool_matches = match last_pool {
            Some((pool, m)) if pool == replica.pool => m,
            _ => {
                let m = match selector {
                    Some(s) => selector::matches(s, &replica.pool_labels)?,
                    None => true,
                };
                last_pool = Some((&replica.pool, m));
                m
            }
        };
        if !pool_matches {
            continue;
        }
        matching += 1;
        if !replica.ready || replica.endpoint.is_none() {
            not_ready += 1;
            continue;
        }
        if replica.draining || exclude_pod_uid == Some(replica.pod_uid.as_str()) {
            draining += 1;
            continue;
        }
        let free = (replica.capacity.max_peers.max(0) as u32).saturating_sub(replica.load.peers);
        if !replica.fits(peers) {
            full += 1;
            most_free_peers = most_free_peers.max(free);
            continue;
        }
        let score = replica.utilisation_after(peers);
        let better = match best {
            None => true,
            Some((current, current_score)) => {
                let by_score = match policy {
                    Policy::Spread => score.cmp(&current_score),
                    Policy::Pack => current_score.cmp(&score),
                };
                by_score.then_with(|| replica.pod.cmp(&current.pod)) == Ordering::Less
            }
        };
        if better {
            best = Some((replica, score));
        }
    }
    if matching == 0 {
        let pools = {
            let mut names: Vec<&str> = replicas.iter().map(|r| r.pool.as_str()).collect();
            names.dedup();
            names.len()
        };
        return Err(Unschedulable::NoMatchingPool { pools });
    }
    best.map(|(r, _)| r).ok_or(Unschedulable::NoCapacity {
        peers,
        matching,
        not_ready,
        draining,
        full,
        most_free_peers,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn replica(pool: &str, ordinal: u32, peers: u32, rooms: u32) -> Replica {
        Replica {
            pool: pool.into(),
            pool_labels: BTreeMap::from([("pool".to_string(), pool.to_string())]),
            pod: format!("{pool}-{ordinal}"),
            pod_uid: format!("uid-{pool}-{ordinal}"),
            node: Some(format!("node-{ordinal}")),
            endpoint: Some(format!("http://10.0.0.{ordinal}:3000")),
            announced_ip: Some(format!("10.0.0.{ordinal}")),
            ready: true,
            draining: false,
            capacity: WorkerCapacity { max_peers: 100, max_rooms: 10 },
            load: Load { rooms, peers },
        }
    }

    fn selector(key: &str, value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn spread_picks_the_least_loaded_replica() {
        let r = [replica("a", 0, 60, 3), replica("a", 1, 10, 1), replica("a", 2, 30, 2)];
        assert_eq!(schedule(10, None, &r, Policy::Spread, None).unwrap().pod, "a-1");
    }

    #[test]
    fn pack_fills_the_most_loaded_replica_that_still_fits() {
        let r = [replica("a", 0, 60, 3), replica("a", 1, 10, 1), replica("a", 2, 95, 2)];
        // a-2 is fuller but cannot take 10 more peers; a-0 is the fullest that fits.
        assert_eq!(schedule(10, None, &r, Policy::Pack, None).unwrap().pod, "a-0");
    }

    #[test]
    fn utilisation_counts_rooms_as_well_as_peers() {
        // a-0 has few peers but is at 9 of 10 rooms; a-1 has more peers but few rooms.
        let r = [replica("a", 0, 5, 9), replica("a", 1, 40, 1)];
        assert_eq!(schedule(5, None, &r, Policy::Spread, None).unwrap().pod, "a-1");
    }

    #[test]
    fn ties_break_by_pod_name_for_determinism() {
        let r = [replica("a", 2, 0, 0), replica("a", 0, 0, 0), replica("a", 1, 0, 0)];
        assert_eq!(schedule(10, None, &r, Policy::Spread, None).unwrap().pod, "a-0");
        assert_eq!(schedule(10, None, &r, Policy::Pack, None).unwrap().pod, "a-0");
    }

    #[test]
    fn never_oversubscribes_peers_or_rooms() {
        let r = [replica("a", 0, 95, 1), replica("a", 1, 0, 10)];
        let err = schedule(10, None, &r, Policy::Spread, None).unwrap_err();
        assert_eq!(
            err,
            Unschedulable::NoCapacity { peers: 10, matching: 2, not_ready: 0, draining: 0, full: 2, most_free_peers: 100 }
        );
        assert_eq!(err.reason(), "InsufficientCapacity");
        // Exactly at capacity is allowed.
        assert_eq!(schedule(5, None, &r, Policy::Spread, None).unwrap().pod, "a-0");
    }

    #[test]
    fn not_ready_draining_and_endpointless_replicas_are_skipped() {
        let mut unready = replica("a", 0, 0, 0);
        unready.ready = false;
        let mut draining = replica("a", 1, 0, 0);
        draining.draining = true;
        let mut no_endpoint = replica("a", 2, 0, 0);
        no_endpoint.endpoint = None;
        let busy = replica("a", 3, 90, 5);
        let r = [unready.clone(), draining.clone(), no_endpoint.clone(), busy];
        assert_eq!(schedule(10, None, &r, Policy::Spread, None).unwrap().pod, "a-3");
        let err = schedule(10, None, &[unready, draining, no_endpoint], Policy::Spread, None).unwrap_err();
        assert!(matches!(err, Unschedulable::NoCapacity { not_ready: 2, draining: 1, full: 0, .. }));
        assert!(err.to_string().contains("2 not ready, 1 draining"), "{err}");
    }

    #[test]
    fn worker_selector_limits_candidates_to_matching_pools() {
        let r = [replica("eu", 0, 50, 5), replica("us", 0, 0, 0)];
        let sel = selector("pool", "eu");
        assert_eq!(schedule(10, Some(&sel), &r, Policy::Spread, None).unwrap().pod, "eu-0");
        let none = selector("pool", "asia");
        assert_eq!(
            schedule(10, Some(&none), &r, Policy::Spread, None).unwrap_err(),
            Unschedulable::NoMatchingPool { pools: 2 }
        );
    }

    #[test]
    fn a_room_moved_off_a_pod_does_not_land_on_it_again() {
        let r = [replica("a", 0, 0, 0), replica("a", 1, 50, 5)];
        assert_eq!(schedule(10, None, &r, Policy::Spread, Some("uid-a-0")).unwrap().pod, "a-1");
    }

    #[test]
    fn no_workers_at_all_says_so() {
        assert_eq!(schedule(1, None, &[], Policy::Spread, None).unwrap_err(), Unschedulable::NoWorkers);
    }

    #[test]
    fn invalid_selector_is_reported() {
        let bad = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "k".into(),
                    operator: "Near".into(),
                    values: None,
                },
            ]),
            ..Default::default()
        };
        let err = schedule(1, Some(&bad), &[replica("a", 0, 0, 0)], Policy::Spread, None).unwrap_err();
        assert_eq!(err.reason(), "InvalidWorkerSelector");
    }

    #[test]
    fn repeated_spread_placement_balances_rooms_evenly() {
        let mut r = vec![replica("a", 0, 0, 0), replica("a", 1, 0, 0), replica("a", 2, 0, 0)];
        for _ in 0..30 {
            let pod = schedule(10, None, &r, Policy::Spread, None).unwrap().pod.clone();
            r.iter_mut().find(|x| x.pod == pod).unwrap().load.add(10);
        }
        assert!(r.iter().all(|x| x.load.rooms == 10 && x.load.peers == 100));
        // All full now: the next room has nowhere to go.
        assert!(schedule(1, None, &r, Policy::Spread, None).is_err());
    }
}
