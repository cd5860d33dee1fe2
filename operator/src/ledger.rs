//! Committed load per worker pod, for the scheduler.
//!
//! The source of truth is `Room.status.placement` (with its `reservedPeers`): after an operator
//! restart the commitments are rebuilt from the Rooms alone. But the watch cache lags our own
//! writes: a placement just written is not yet visible when the next room is scheduled a few
//! milliseconds later. So, like kube-scheduler's "assumed pods", the ledger remembers placements
//! it has made until the cache shows them, and counts those in place of what the cache says.
//! Rooms are scheduled one at a time under the ledger's lock, so no two decisions can both
//! claim the last free slot of a worker.
//!
//! Cost: a decision adjusts the load in O(1); reading the whole Room cache ([`Ledger::refresh`])
//! is O(rooms) and is done only when the last read is older than the caller's bound. Between
//! reads, the only new commitments are our own (the leader is the only scheduler), which the
//! ledger already holds; what it can miss is rooms deleted since, which only makes it
//! conservative for that short while.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::crd::{Placement, Room};
use crate::scheduler::Load;

#[derive(Debug, Default)]
pub struct Ledger {
    /// Placements as the Room cache showed them at the last refresh, by room UID.
    cached: HashMap<String, Placement>,
    /// Our own decisions the cache did not show yet (`None`: we unplaced the room).
    assumed: HashMap<String, Option<Placement>>,
    /// Sum of effective placements (assumed, else cached) per pod UID.
    load: HashMap<String, Load>,
    refreshed_at: Option<Instant>,
}

impl Ledger {
    /// The placement that counts for a room: ours if we made one since, else the cache's.
    fn effective(&self, room_uid: &str) -> Option<&Placement> {
        match self.assumed.get(room_uid) {
            Some(assumed) => assumed.as_ref(),
            None => self.cached.get(room_uid),
        }
    }

    fn add(&mut self, placement: Option<&Placement>) {
        if let Some(p) = placement {
            self.load.entry(p.pod_uid.clone()).or_default().add(p.reserved_peers.max(0) as u32);
        }
    }

    fn remove(&mut self, placement: Option<Placement>) {
        if let Some(p) = placement
            && let Some(l) = self.load.get_mut(&p.pod_uid)
        {
            l.rooms = l.rooms.saturating_sub(1);
            l.peers = l.peers.saturating_sub(p.reserved_peers.max(0) as u32);
        }
    }

    /// Records that `room_uid` was just placed (or, with `None`, unplaced) by us.
    pub fn assume(&mut self, room_uid: &str, placement: Option<Placement>) {
        let before = self.effective(room_uid).cloned();
        self.remove(before);
        self.add(placement.as_ref());
        self.assumed.insert(room_uid.to_string(), placement);
    }

    /// Drops what we assumed for a room (its status write failed, or the room is gone).
    pub fn forget(&mut self, room_uid: &str) {
        if let Some(assumed) = self.assumed.remove(room_uid) {
            self.remove(assumed);
            let cached = self.cached.get(room_uid).cloned();
            self.add(cached.as_ref());
        }
    }

    /// Placements we made that the cache does not show yet.
    pub fn pending(&self) -> usize {
        self.assumed.len()
    }

    /// Committed load per pod UID, as of the last refresh plus our decisions since.
    pub fn load(&self) -> &HashMap<String, Load> {
        &self.load
    }

    /// Re-reads the Room cache: rebuilds the cached placements and the load, and forgets
    /// assumptions the cache now confirms.
    pub fn refresh<R: Borrow<Room>>(&mut self, rooms: impl IntoIterator<Item = R>, now: Instant) {
        self.cached.clear();
        let mut present = std::collections::HashSet::new();
        for room in rooms {
            let room: &Room = room.borrow();
            let uid = room.metadata.uid.as_deref().unwrap_or_default();
            present.insert(uid.to_string());
            let cached = room.status.as_ref().and_then(|s| s.placement.as_ref());
            if self.assumed.get(uid).is_some_and(|a| a.as_ref() == cached) {
                self.assumed.remove(uid);
            }
            if let Some(p) = cached {
                self.cached.insert(uid.to_string(), p.clone());
            }
        }
        // An unplacement of a room that has since disappeared from the cache is moot; a
        // placement of a room not in the cache yet (just created) still holds its reservation.
        self.assumed.retain(|uid, p| p.is_some() || present.contains(uid));
        self.load.clear();
        let effective: Vec<Placement> = self
            .cached
            .keys()
            .chain(self.assumed.keys())
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .filter_map(|uid| self.effective(uid).cloned())
            .collect();
        for p in &effective {
            self.add(Some(p));
        }
        self.refreshed_at = Some(now);
    }

    /// Refreshes from `rooms()` when the last refresh is older than `max_age` (or never was).
    pub fn refresh_if_older_than<R, I>(&mut self, max_age: Duration, now: Instant, rooms: impl FnOnce() -> I)
    where
        R: Borrow<Room>,
        I: IntoIterator<Item = R>,
    {
        if self.refreshed_at.is_none_or(|at| now.saturating_duration_since(at) >= max_age) {
            self.refresh(rooms(), now);
        }
    }

    /// Refreshes from `rooms` and returns the committed load per pod UID.
    pub fn commitments<R: Borrow<Room>>(&mut self, rooms: impl IntoIterator<Item = R>) -> HashMap<String, Load> {
        self.refresh(rooms, Instant::now());
        self.load.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RoomSpec, RoomStatus};

    fn placement(pod_uid: &str, peers: i32) -> Placement {
        Placement {
            sfu_worker: "pool".into(),
            pod: format!("pod-{pod_uid}"),
            pod_uid: pod_uid.into(),
            node: None,
            endpoint: "http://10.0.0.1:3000".into(),
            announced_ip: None,
            reserved_peers: peers,
        }
    }

    fn room(uid: &str, placed: Option<Placement>) -> Room {
        let mut r = Room::new(uid, RoomSpec {
            display_name: None,
            max_peers: 10,
            worker_selector: None,
            publishers: vec![],
            codecs: vec![],
            empty_timeout_seconds: None,
        });
        r.metadata.uid = Some(uid.into());
        r.status = Some(RoomStatus { placement: placed, ..Default::default() });
        r
    }

    #[test]
    fn commitments_come_from_room_status_alone_after_a_restart() {
        let rooms = [room("r1", Some(placement("p1", 10))), room("r2", Some(placement("p1", 20))), room("r3", None)];
        let load = Ledger::default().commitments(&rooms);
        assert_eq!(load["p1"], Load { rooms: 2, peers: 30 });
        assert_eq!(load.len(), 1);
    }

    #[test]
    fn assumed_placements_count_until_the_cache_confirms_them() {
        let mut ledger = Ledger::default();
        ledger.assume("r1", Some(placement("p1", 10)));
        // The cache still shows r1 unplaced: our assumption counts.
        let stale = [room("r1", None)];
        assert_eq!(ledger.commitments(&stale)["p1"], Load { rooms: 1, peers: 10 });
        assert_eq!(ledger.pending(), 1);
        // The cache catches up: counted once, assumption dropped.
        let fresh = [room("r1", Some(placement("p1", 10)))];
        assert_eq!(ledger.commitments(&fresh)["p1"], Load { rooms: 1, peers: 10 });
        assert_eq!(ledger.pending(), 0);
    }

    #[test]
    fn a_room_missing_from_the_cache_still_holds_its_assumed_reservation() {
        let mut ledger = Ledger::default();
        ledger.assume("new", Some(placement("p2", 5)));
        assert_eq!(ledger.commitments(Vec::<Room>::new())["p2"], Load { rooms: 1, peers: 5 });
    }

    #[test]
    fn a_moved_room_counts_only_on_its_new_pod() {
        let mut ledger = Ledger::default();
        let stale = [room("r1", Some(placement("p1", 10)))];
        ledger.refresh(&stale, Instant::now());
        ledger.assume("r1", Some(placement("p2", 10)));
        assert_eq!(ledger.load()["p1"], Load::default(), "moved off p1 without waiting for a refresh");
        assert_eq!(ledger.load()["p2"], Load { rooms: 1, peers: 10 });
        let load = ledger.commitments(&stale);
        assert_eq!(load.get("p1"), None);
        assert_eq!(load["p2"], Load { rooms: 1, peers: 10 });
    }

    #[test]
    fn an_unplaced_assumption_releases_the_old_reservation() {
        let mut ledger = Ledger::default();
        ledger.assume("r1", None);
        let stale = [room("r1", Some(placement("p1", 10)))];
        assert!(ledger.commitments(&stale).is_empty());
    }

    #[test]
    fn decisions_between_refreshes_update_the_load_at_once() {
        let mut ledger = Ledger::default();
        ledger.refresh(&[room("r1", Some(placement("p1", 10)))], Instant::now());
        ledger.assume("r2", Some(placement("p1", 5)));
        ledger.assume("r3", Some(placement("p1", 5)));
        assert_eq!(ledger.load()["p1"], Load { rooms: 3, peers: 20 });
        ledger.forget("r3");
        assert_eq!(ledger.load()["p1"], Load { rooms: 2, peers: 15 });
    }

    #[test]
    fn refresh_only_when_the_last_one_is_old_enough() {
        let mut ledger = Ledger::default();
        let t0 = Instant::now();
        let placed = [room("r1", Some(placement("p1", 10)))];
        ledger.refresh_if_older_than(Duration::from_millis(100), t0, || &placed);
        assert_eq!(ledger.load()["p1"].rooms, 1);
        // Within the bound the cache is not read again, even though it changed.
        ledger.refresh_if_older_than(Duration::from_millis(100), t0 + Duration::from_millis(50), Vec::<Room>::new);
        assert_eq!(ledger.load()["p1"].rooms, 1);
        ledger.refresh_if_older_than(Duration::from_millis(100), t0 + Duration::from_millis(150), Vec::<Room>::new);
        assert!(ledger.load().get("p1").is_none_or(|l| l.rooms == 0));
    }
}
