//! Static placement over several workers (`--worker-url A,B,...`): which worker takes a room,
//! and which rooms move when a worker goes down. Pure decisions in [`WorkerPool`], with time
//! passed in; the probing and the bookkeeping of event streams are the thin shell in
//! [`crate::placement::StaticPlacement`] and [`crate::placement::WatchedBackend`].
//!
//! - A new room goes to the healthy worker that ranks first for it by rendezvous (highest
//!   random weight) hashing: the same room always gets the same worker while health is the
//!   same, on every signalling process, and a worker going down moves only its own rooms
//!   (every other room's first choice is unchanged).
//! - A room in use here (this process follows its event stream) stays on the worker it is on,
//!   so a worker that comes back takes new rooms only: its former rooms are not moved back
//!   in the middle of their calls.
//! - A worker is down after [`FAILED_PROBES_TO_MARK_DOWN`] failed probes in a row, or at once
//!   when a probe made because its room event stream broke fails too (two signals agree). Its
//!   rooms move to the first healthy worker by rendezvous, and each move is a [`Migration`].
//! - A worker is up again after one good probe.
//! - With no healthy worker at all, rooms are placed over every worker as if all were up (one
//!   worker behaves as before the pool existed) and nothing moves: there is nowhere to go.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::placement::Migration;

/// Failed probes in a row that mark a worker down (about two probe intervals: one lost probe
/// on a busy network does not move calls).
pub const FAILED_PROBES_TO_MARK_DOWN: u32 = 2;

/// How long a room without a stream is remembered (moved, not rejoined yet; or its stream broke):
/// clients rejoin and streams resubscribe within seconds, and a room that never sees either
/// must not be remembered forever.
pub const MOVED_ROOM_MEMORY: Duration = Duration::from_secs(60);

/// A worker URL that cannot be used, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--worker-url entry {entry:?}: {reason}")]
pub struct BadWorkerUrl {
    pub entry: String,
    pub reason: String,
}

/// The endpoints of `--worker-url` (comma-separated), checked: each `http://host:port` with
/// nothing after it, and each once. Trailing slashes are dropped, so that one worker has one
/// name in the rendezvous hash.
pub fn parse_worker_urls(text: &str) -> Result<Vec<String>, BadWorkerUrl> {
    let mut endpoints: Vec<String> = Vec::new();
    for raw in text.split(',') {
        let entry = raw.trim();
        let bad = |reason: &str| BadWorkerUrl { entry: entry.to_owned(), reason: reason.to_owned() };
        if entry.is_empty() {
            return Err(bad("empty; list worker REST API URLs separated by commas, like http://10.0.0.7:3000,http://10.0.0.8:3000"));
        }
        let uri: http::Uri = entry
            .parse()
            .map_err(|_| bad("not a URL; write it as http://host:port (the worker's REST API, --http-port)"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported for the workers' internal API; use http:// on the cluster network")),
            _ => return Err(bad("needs the http:// scheme, like http://10.0.0.7:3000")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("has no host; write it as http://host:port"));
        }
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(bad("has a path or query; give the worker's base URL only, like http://10.0.0.7:3000"));
        }
        let endpoint = entry.trim_end_matches('/').to_owned();
        if endpoints.contains(&endpoint) {
            return Err(bad("is listed twice"));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// The rendezvous weight of `worker` for `room`: FNV-1a (64-bit) over the worker's endpoint,
/// a 0xff byte (in no UTF-8 text, so `("ab", "c")` and `("a", "bc")` differ) and the room id,
/// then SplitMix64's finaliser, since FNV alone mixes its last bytes poorly. Stable across
/// processes, platforms and Rust releases (std's hasher is not), so that every signalling
/// process ranks workers the same way. web/test/drills.mjs computes the same.
pub fn rendezvous_weight(worker: &str, room: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in worker.bytes().chain([0xff]).chain(room.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Index of the worker ranking first for `room` among `candidates` (indices into `endpoints`);
/// ties (never seen in practice) go to the lower index. `None` for no candidates.
pub fn first_choice(endpoints: &[String], candidates: impl IntoIterator<Item = usize>, room: &str) -> Option<usize> {
    candidates
        .into_iter()
        .map(|index| (rendezvous_weight(&endpoints[index], room), std::cmp::Reverse(index)))
        .max()
        .map(|(_, std::cmp::Reverse(index))| index)
}

#[derive(Debug, Clone)]
struct Health {
    up: bool,
    failed_probes: u32,
}

/// A room this process has placed and uses.
#[derive(Debug, Clone)]
struct PlacedRoom {
    worker: usize,
    /// Event streams of the room on `worker` open in this process (its followers): while
    /// there is one, the room stays where it is.
    streams: u32,
    /// Since when the room has no stream here though its participants have not left: it moved
    /// here and their rejoins have not opened one yet, or its stream broke (a killed worker's
    /// first sign, seen before any probe) and is being retried.
    unwatched_since: Option<Instant>,
}

/// The workers' health and the rooms in use, and the decisions on them (no I/O).
#[derive(Debug, Clone)]
pub struct WorkerPool {
    endpoints: Vec<String>,
    health: Vec<Health>,
    rooms: HashMap<String, PlacedRoom>,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `GET /healthz` answered 200.
    Healthy,
    /// It failed: unreachable, timed out, or 503 (shutting down).
    Failed,
    /// It failed, and it was made because a room event stream of the worker broke or a call
    /// to it found it unreachable: the worker is down without waiting for more probes.
    FailedAfterBreak,
}

impl WorkerPool {
    /// A pool of `endpoints` (at least one), all up.
    pub fn new(endpoints: Vec<String>) -> Self {
        assert!(!endpoints.is_empty(), "a worker pool needs a worker");
        let health = vec![Health { up: true, failed_probes: 0 }; endpoints.len()];
        WorkerPool { endpoints, health, rooms: HashMap::new() }
    }

    /// The workers' endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether the worker at `index` is up.
    pub fn is_up(&self, index: usize) -> bool {
        self.health[index].up
    }

    /// Index of `endpoint`, if it is one of the pool's.
    pub fn index_of(&self, endpoint: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e == endpoint)
    }

    /// The worker a new room goes to: first by rendezvous among the healthy workers, or among
    /// all when none is healthy. `except` is left out (a worker whose rooms are moving).
    fn choose(&self, room: &str, except: Option<usize>) -> Option<usize> {
        let healthy = (0..self.endpoints.len()).filter(|&i| self.health[i].up && Some(i) != except);
        first_choice(&self.endpoints, healthy, room).or_else(|| match except {
            // Moving off a worker with no healthy one left: nowhere to go.
            Some(_) => None,
            None => first_choice(&self.endpoints, 0..self.endpoints.len(), room),
        })
    }

    /// The endpoint of the worker hosting `room`: where it is if it is in use here, else where
    /// a new room goes.
    pub fn locate(&self, room: &str) -> &str {
        let index = match self.rooms.get(room) {
            Some(placed) => placed.worker,
            None => self.choose(room, None).expect("the pool has a worker"),
        };
        &self.endpoints[index]
    }

    /// An event stream of `room` on `endpoint` opened here. Returns whether it counts: a
    /// stream to a worker the room has moved off (opened by a join that located the room just
    /// before the move) does not keep the room anywhere.
    pub fn stream_opened(&mut self, room: &str, endpoint: &str) -> bool {
        let Some(worker) = self.index_of(endpoint) else {
            return false;
        };
        let placed = self
            .rooms
            .entry(room.to_owned())
            .or_insert(PlacedRoom { worker, streams: 0, unwatched_since: None });
        if placed.worker != worker {
            return false;
        }
        placed.streams += 1;
        placed.unwatched_since = None;
        true
    }

    /// A stream that [`WorkerPool::stream_opened`] counted has ended. One that was closed (its
    /// last local participant left) forgets the room with the last one: its next participant
    /// gets a new room's choice. One that `broke` keeps the room where it is for
    /// [`MOVED_ROOM_MEMORY`], so that the worker's rooms are known when the probe that the
    /// break asked for finds it down.
    pub fn stream_closed(&mut self, room: &str, endpoint: &str, broke: bool, now: Instant) {
        let Some(worker) = self.index_of(endpoint) else {
            return;
        };
        if let Some(placed) = self.rooms.get_mut(room).filter(|p| p.worker == worker) {
            placed.streams = placed.streams.saturating_sub(1);
            if placed.streams == 0 {
                if broke {
                    placed.unwatched_since.get_or_insert(now);
                } else if placed.unwatched_since.is_none() {
                    self.rooms.remove(room);
                }
            }
        }
    }

    /// Applies a probe of the worker at `index`; the rooms that move, if it went down.
    pub fn probed(&mut self, index: usize, probe: Probe, now: Instant) -> Vec<Migration> {
        let health = &mut self.health[index];
        match probe {
            Probe::Healthy => {
                health.failed_probes = 0;
                health.up = true;
                Vec::new()
            }
            Probe::Failed | Probe::FailedAfterBreak => {
                health.failed_probes = health.failed_probes.saturating_add(1);
                let down = probe == Probe::FailedAfterBreak || health.failed_probes >= FAILED_PROBES_TO_MARK_DOWN;
                if down && health.up {
                    health.up = false;
                    self.move_rooms_off(index, now)
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Moves the rooms in use on the worker at `index` to healthy workers.
    fn move_rooms_off(&mut self, index: usize, now: Instant) -> Vec<Migration> {
        let mut moves: Vec<(String, usize)> = self
            .rooms
            .iter()
            .filter(|(_, placed)| placed.worker == index)
            .filter_map(|(room, _)| Some((room.clone(), self.choose(room, Some(index))?)))
            .collect();
        moves.sort();
        moves
            .into_iter()
            .map(|(room, worker)| {
                // The old streams end on their own (their closes no longer match); the room is
                // kept on its new worker until its clients' rejoins open a stream there.
                self.rooms.insert(room.clone(), PlacedRoom { worker, streams: 0, unwatched_since: Some(now) });
                Migration { room, endpoint: self.endpoints[worker].clone() }
            })
            .collect()
    }

    /// Forgets rooms no stream has opened for within [`MOVED_ROOM_MEMORY`].
    pub fn forget_abandoned(&mut self, now: Instant) {
        self.rooms.retain(|_, placed| {
            placed.streams > 0 || placed.unwatched_since.is_some_and(|at| now.duration_since(at) < MOVED_ROOM_MEMORY)
        });
    }

    /// Rooms in use or recently moved (for tests and logs).
    pub fn rooms_in_use(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "http://10.0.0.1:3000";
    const B: &str = "http://10.0.0.2:3000";
    const C: &str = "http://10.0.0.3:3000";

    // Computed independently (Python) from the definition above.
    const PINNED_DEMO_WEIGHT: u64 = 1_059_426_594_359_690_681;

    fn pool(endpoints: &[&str]) -> WorkerPool {
        WorkerPool::new(endpoints.iter().map(|e| e.to_string()).collect())
    }

    /// The first room name (`room-0`, `room-1`, ...) whose first choice is `endpoint`.
    fn room_on(pool: &WorkerPool, endpoint: &str) -> String {
        (0..)
            .map(|i| format!("room-{i}"))
            .find(|room| pool.locate(room) == endpoint)
            .unwrap()
    }

    /// Opens a stream of `room` where the pool puts it, as a joining participant's follower does.
    fn join(pool: &mut WorkerPool, room: &str) -> String {
        let endpoint = pool.locate(room).to_owned();
        assert!(pool.stream_opened(room, &endpoint));
        endpoint
    }

    fn kill(pool: &mut WorkerPool, endpoint: &str, now: Instant) -> Vec<Migration> {
        let index = pool.index_of(endpoint).unwrap();
        pool.probed(index, Probe::FailedAfterBreak, now)
    }

    #[test]
    fn worker_urls_are_checked_and_normalised() {
        assert_eq!(parse_worker_urls("http://w:3000").unwrap(), ["http://w:3000"]);
        assert_eq!(
            parse_worker_urls(" http://a:3000/ , http://[::1]:3000").unwrap(),
            ["http://a:3000", "http://[::1]:3000"]
        );
        for (text, says) in [
            ("", "empty"),
            ("http://a:3000,", "empty"),
            ("a:3000", "http:// scheme"),
            ("10.0.0.7:3000", "http:// scheme"),
            ("https://a:3000", "https is not supported"),
            ("ftp://a", "http:// scheme"),
            ("http://a:3000/v1", "path or query"),
            ("http://a:3000?x=1", "path or query"),
            ("http://a b", "not a URL"),
            ("http://a:3000,http://a:3000/", "listed twice"),
        ] {
            let error = parse_worker_urls(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
            assert!(error.starts_with("--worker-url entry"), "{error}");
        }
    }

    #[test]
    fn the_weight_is_stable_and_separates_worker_from_room() {
        // Pinned values: every signalling process (and drills.mjs) must rank workers alike.
        assert_eq!(rendezvous_weight("http://127.0.0.1:3000", "demo"), rendezvous_weight("http://127.0.0.1:3000", "demo"));
        assert_eq!(rendezvous_weight("http://127.0.0.1:3000", "demo"), PINNED_DEMO_WEIGHT);
        assert_ne!(rendezvous_weight("ab", "c"), rendezvous_weight("a", "bc"));
    }

    #[test]
    fn rooms_spread_over_the_workers() {
        let pool = pool(&[A, B, C]);
        let mut counts = HashMap::new();
        for i in 0..3000 {
            *counts.entry(pool.locate(&format!("room-{i}")).to_owned()).or_insert(0) += 1;
        }
        for endpoint in [A, B, C] {
            let count = counts[endpoint];
            assert!((800..1200).contains(&count), "{endpoint} got {count} of 3000 rooms");
        }
    }

    #[test]
    fn one_worker_takes_every_room_even_when_its_probes_fail() {
        let mut pool = pool(&[A]);
        let now = Instant::now();
        join(&mut pool, "r");
        assert!(kill(&mut pool, A, now).is_empty(), "nowhere to move to");
        assert_eq!(pool.locate("r"), A);
        assert_eq!(pool.locate("new"), A);
    }

    #[test]
    fn a_downed_workers_rooms_move_and_the_others_stay() {
        let mut pool = pool(&[A, B, C]);
        let now = Instant::now();
        let on_a: Vec<String> = (0..200).map(|i| format!("r{i}")).filter(|r| pool.locate(r) == A).collect();
        let elsewhere: Vec<(String, String)> = (0..200)
            .map(|i| format!("r{i}"))
            .filter(|r| pool.locate(r) != A)
            .map(|r| {
                let endpoint = pool.locate(&r).to_owned();
                (r, endpoint)
            })
            .collect();
        for room in on_a.iter().chain(elsewhere.iter().map(|(r, _)| r)) {
            join(&mut pool, room);
        }
        let moved = kill(&mut pool, A, now);
        let mut moved_rooms: Vec<&str> = moved.iter().map(|m| m.room.as_str()).collect();
        let mut expected: Vec<&str> = on_a.iter().map(String::as_str).collect();
        moved_rooms.sort();
        expected.sort();
        assert_eq!(moved_rooms, expected, "exactly A's rooms move");
        for migration in &moved {
            assert_ne!(migration.endpoint, A);
            assert_eq!(pool.locate(&migration.room), migration.endpoint);
        }
        for (room, endpoint) in &elsewhere {
            assert_eq!(pool.locate(room), endpoint, "{room} stays");
        }
        // New rooms avoid A while it is down.
        assert!((0..100).all(|i| pool.locate(&format!("new-{i}")) != A));
    }

    #[test]
    fn a_worker_that_comes_back_takes_new_rooms_only() {
        let mut pool = pool(&[A, B]);
        let now = Instant::now();
        let room = room_on(&pool, A);
        join(&mut pool, &room);
        let moved = kill(&mut pool, A, now);
        assert_eq!(moved, [Migration { room: room.clone(), endpoint: B.to_owned() }]);
        // Its clients rejoin on B; a newcomer while A is down goes to B as well.
        assert!(pool.stream_opened(&room, B));
        let newcomer = room_on(&pool.clone().with_all_up(), A);
        assert_eq!(join(&mut pool, &newcomer), B);

        let a = pool.index_of(A).unwrap();
        assert!(pool.probed(a, Probe::Healthy, now).is_empty(), "coming back moves nothing");
        assert_eq!(pool.locate(&room), B, "the moved room stays during its call");
        assert_eq!(pool.locate(&newcomer), B, "so does the room placed while A was down");
        let fresh = (0..).map(|i| format!("fresh-{i}")).find(|r| pool.locate(r) == A);
        assert!(fresh.is_some(), "new rooms go to A again");

        // Once the call ends here, the room is new again and goes to its first choice.
        pool.stream_closed(&room, B, false, now);
        assert_eq!(pool.locate(&room), A);
    }

    #[test]
    fn one_failed_probe_is_not_enough_but_two_are() {
        let mut pool = pool(&[A, B]);
        let now = Instant::now();
        let room = room_on(&pool, A);
        join(&mut pool, &room);
        let a = pool.index_of(A).unwrap();
        assert!(pool.probed(a, Probe::Failed, now).is_empty());
        assert!(pool.is_up(a));
        // A good probe in between starts the count again.
        pool.probed(a, Probe::Healthy, now);
        assert!(pool.probed(a, Probe::Failed, now).is_empty());
        let moved = pool.probed(a, Probe::Failed, now);
        assert_eq!(moved.len(), 1);
        assert!(!pool.is_up(a));
        // Further failures move nothing more.
        assert!(pool.probed(a, Probe::Failed, now).is_empty());
    }

    #[test]
    fn a_broken_stream_with_a_failed_probe_marks_down_at_once() {
        let mut pool = pool(&[A, B]);
        let now = Instant::now();
        let room = room_on(&pool, A);
        join(&mut pool, &room);
        // The follower drops its broken stream (to resubscribe) before the probe it asked for
        // has answered: the room is still known to be on A when A is found down.
        pool.stream_closed(&room, A, true, now);
        assert_eq!(kill(&mut pool, A, now), [Migration { room: room.clone(), endpoint: B.to_owned() }]);
        assert_eq!(pool.locate(&room), B);
    }

    #[test]
    fn a_broken_stream_that_resubscribes_keeps_its_room_and_one_that_never_does_is_forgotten() {
        let mut pool = pool(&[A, B]);
        let start = Instant::now();
        let room = room_on(&pool, A);
        join(&mut pool, &room);
        pool.stream_closed(&room, A, true, start);
        // The worker was fine (the probe said so); the follower subscribes again.
        assert!(pool.stream_opened(&room, A));
        pool.forget_abandoned(start + MOVED_ROOM_MEMORY * 2);
        assert_eq!(pool.rooms_in_use(), 1);
        pool.stream_closed(&room, A, true, start + MOVED_ROOM_MEMORY * 2);
        pool.forget_abandoned(start + MOVED_ROOM_MEMORY * 3);
        assert_eq!(pool.rooms_in_use(), 0);
    }

    #[test]
    fn rooms_do_not_move_when_no_healthy_worker_is_left() {
        let mut pool = pool(&[A, B]);
        let now = Instant::now();
        let on_a = room_on(&pool, A);
        let on_b = room_on(&pool, B);
        join(&mut pool, &on_a);
        join(&mut pool, &on_b);
        assert_eq!(kill(&mut pool, B, now).len(), 1);
        assert!(kill(&mut pool, A, now).is_empty(), "B is down too: A's room stays");
        assert_eq!(pool.locate(&on_a), A);
        // With every worker down, new rooms are placed as if all were up.
        assert_eq!(pool.locate(&room_on(&pool.clone().with_all_up(), B)), B);
    }

    #[test]
    fn a_rooms_streams_keep_it_and_the_last_one_forgets_it() {
        let mut pool = pool(&[A, B]);
        join(&mut pool, "r");
        join(&mut pool, "r");
        assert_eq!(pool.rooms_in_use(), 1);
        let endpoint = pool.locate("r").to_owned();
        let now = Instant::now();
        pool.stream_closed("r", &endpoint, false, now);
        assert_eq!(pool.rooms_in_use(), 1);
        pool.stream_closed("r", &endpoint, false, now);
        assert_eq!(pool.rooms_in_use(), 0);
        // Unknown endpoints and rooms change nothing.
        assert!(!pool.stream_opened("r", "http://elsewhere:1"));
        pool.stream_closed("nobody", A, false, now);
        assert_eq!(pool.rooms_in_use(), 0);
    }

    #[test]
    fn a_stream_to_the_old_worker_after_a_move_does_not_count() {
        let mut pool = pool(&[A, B]);
        let now = Instant::now();
        let room = room_on(&pool, A);
        join(&mut pool, &room);
        kill(&mut pool, A, now);
        // A join that located the room before the move opens its stream on A afterwards.
        assert!(!pool.stream_opened(&room, A));
        // The old stream's end does not forget the moved room.
        pool.stream_closed(&room, A, true, now);
        assert_eq!(pool.locate(&room), B);
    }

    #[test]
    fn moved_rooms_nobody_rejoins_are_forgotten_after_a_while() {
        let mut pool = pool(&[A, B]);
        let start = Instant::now();
        let abandoned = room_on(&pool, A);
        let rejoined = (0..).map(|i| format!("re-{i}")).find(|r| pool.locate(r) == A).unwrap();
        join(&mut pool, &abandoned);
        join(&mut pool, &rejoined);
        kill(&mut pool, A, start);
        assert!(pool.stream_opened(&rejoined, B));
        pool.forget_abandoned(start + MOVED_ROOM_MEMORY / 2);
        assert_eq!(pool.rooms_in_use(), 2);
        pool.forget_abandoned(start + MOVED_ROOM_MEMORY);
        assert_eq!(pool.rooms_in_use(), 1, "only the rejoined room is kept");
        assert_eq!(pool.locate(&rejoined), B);
    }

    impl WorkerPool {
        fn with_all_up(mut self) -> Self {
            for health in &mut self.health {
                *health = Health { up: true, failed_probes: 0 };
            }
            self
        }
    }
}
