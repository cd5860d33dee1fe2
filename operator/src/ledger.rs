//! Committed load per worker pod, for the scheduler.
//!
//! The source of truth is `Room.status.placement` (with its `reservedPeers`): after an operator
//! restart the commitments are rebuilt from the Rooms alone. But the watch cache lags our own
//! writes: a placement just written is not yet visible when the next room is scheduled a few
//! milliseconds later. So, like kube-scheduler's "assumed pods", the ledger remembers placements
//! it has made until the cache shows them, and counts those in place of what the cache says.
//! Rooms are scheduled one at a time under the ledger's lock, so no two decisions can both
//! claim the last free slot of a worker.

use std::collections::HashMap;

use crate::crd::{Placement, Room};
use crate::scheduler::Load;

/// Placements made by this process that the Room cache may not show yet, keyed by room UID.
#[derive(Debug, Default)]
pub struct Ledger {
    assumed: HashMap<String, Option<Placement>>,
}

impl Ledger {
    /// Records that `room_uid` was just placed (or, with `None`, unplaced) by us.
    pub fn assume(&mut self, room_uid: &str, placement: Option<Placement>) {
        self.assumed.insert(room_uid.to_string(), placement);
    }

    /// Drops what we assumed for a room (its status write failed, or the room is gone).
    pub fn forget(&mut self, room_uid: &str) {
        self.assumed.remove(room_uid);
    }

    /// Placements we made that the cache does not show yet.
    pub fn pending(&self) -> usize {
        self.assumed.len()
    }

    /// Sums reservations per pod UID over `rooms` (the cache), preferring our own assumed
    /// placements where the cache is behind, and forgetting assumptions the cache now confirms.
    pub fn commitments<'a>(&mut self, rooms: impl IntoIterator<Item = &'a Room>) -> HashMap<String, Load> {
        let mut load: HashMap<String, Load> = HashMap::new();
        let mut add = |p: &Placement| {
            load.entry(p.pod_uid.clone()).or_default().add(p.reserved_peers.max(0) as u32)
        };
        let mut seen = Vec::new();
        for room in rooms {
            let uid = room.metadata.uid.as_deref().unwrap_or_default();
            let cached = room.status.as_ref().and_then(|s| s.placement.as_ref());
            match self.assumed.get(uid) {
                Some(assumed) => {
                    if let Some(p) = assumed {
                        add(p);
                    }
                    if assumed.as_ref() == cached {
                        self.assumed.remove(uid);
                    } else {
                        seen.push(uid.to_string());
                    }
                }
                None => {
                    if let Some(p) = cached {
                        add(p);
                    }
                }
            }
        }
        // Rooms we placed that are not even in the cache yet still hold their reservation.
        for (uid, placement) in &self.assumed {
            if !seen.contains(uid) {
                if let Some(p) = placement {
                    add(p);
                }
            }
        }
        load
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
        assert_eq!(ledger.commitments(&[])["p2"], Load { rooms: 1, peers: 5 });
    }

    #[test]
    fn a_moved_room_counts_only_on_its_new_pod() {
        let mut ledger = Ledger::default();
        ledger.assume("r1", Some(placement("p2", 10)));
        let stale = [room("r1", Some(placement("p1", 10)))];
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
}
