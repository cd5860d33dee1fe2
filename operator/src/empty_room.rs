//! When a room that nobody asked for explicitly goes away: a pure decision on what its worker
//! reports.
//!
//! Signalling creates a Room on the first join of an unknown room id, with
//! `spec.emptyTimeoutSeconds`. The operator asks the room's worker how many peers it holds and
//! deletes the Room once the worker has reported it empty for that long (the finalizer then
//! closes it on the worker). Rooms without the field are never deleted by the operator.
//!
//! - The clock starts at the first report of an empty room (a room the worker does not know
//!   counts as empty: nobody is in it) and is kept in `status.emptySince`, so it survives
//!   operator restarts and leader changes.
//! - Any report of a peer stops the clock.
//! - No answer from the worker neither starts, advances nor ends anything: the operator only
//!   deletes a room that its worker has just reported empty. (A worker that stays unreachable
//!   is the placement's business: its rooms move.)

use std::time::Duration;

use jiff::Timestamp;

/// What the room's worker said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// This many peers are joined (0 also when the worker does not know the room).
    Peers(u32),
    /// The worker could not be asked.
    Unknown,
}

/// What to do with the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: record `empty_since` in the status and ask again after `recheck_after`.
    Keep { empty_since: Option<Timestamp>, recheck_after: Duration },
    /// Delete it: it has been empty for `empty_for`, at least its timeout.
    Delete { empty_for: Duration },
}

/// How often the worker is asked: often enough that a room outlives its timeout by at most a
/// quarter of it, and at most every 30 s (a room of 300 s is asked ten times meanwhile).
pub fn check_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Judges a room whose `emptyTimeoutSeconds` is `timeout`, empty since `empty_since` as far as
/// the operator knew, from what its worker reports `now`.
pub fn judge(timeout: Duration, empty_since: Option<Timestamp>, occupancy: Occupancy, now: Timestamp) -> Verdict {
    let interval = check_interval(timeout);
    match occupancy {
        Occupancy::Unknown => Verdict::Keep { empty_since, recheck_after: interval },
        Occupancy::Peers(n) if n > 0 => Verdict::Keep { empty_since: None, recheck_after: interval },
        Occupancy::Peers(_) => {
            // A start in the future (another replica's clock ahead of ours) counts from now.
            let since = empty_since.filter(|s| *s <= now).unwrap_or(now);
            let empty_for = now.duration_since(since).unsigned_abs();
            if empty_for >= timeout {
                Verdict::Delete { empty_for }
            } else {
                Verdict::Keep { empty_since: Some(since), recheck_after: (timeout - empty_for).min(interval) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(300);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// Steps a room through reports at the given times, as the reconciler would, and returns
    /// the time of deletion if any.
    fn run(reports: &[(i64, Occupancy)]) -> Option<i64> {
        let mut since = None;
        for &(at, occupancy) in reports {
            match judge(TIMEOUT, since, occupancy, t(at)) {
                Verdict::Keep { empty_since, .. } => since = empty_since,
                Verdict::Delete { .. } => return Some(at),
            }
        }
        None
    }

    #[test]
    fn an_empty_room_is_deleted_once_empty_for_its_timeout() {
        assert_eq!(judge(TIMEOUT, None, Occupancy::Peers(0), t(0)), Verdict::Keep { empty_since: Some(t(0)), recheck_after: Duration::from_secs(30) });
        assert_eq!(
            judge(TIMEOUT, Some(t(0)), Occupancy::Peers(0), t(299)),
            Verdict::Keep { empty_since: Some(t(0)), recheck_after: Duration::from_secs(1) }
        );
        assert_eq!(judge(TIMEOUT, Some(t(0)), Occupancy::Peers(0), t(300)), Verdict::Delete { empty_for: TIMEOUT });
    }

    #[test]
    fn a_peer_stops_the_clock_and_the_next_emptiness_starts_it_again() {
        let reports = [
            (0, Occupancy::Peers(0)),
            (200, Occupancy::Peers(3)),
            (290, Occupancy::Peers(0)),
            (400, Occupancy::Peers(0)),
            (589, Occupancy::Peers(0)),
            (590, Occupancy::Peers(0)),
        ];
        assert_eq!(run(&reports), Some(590), "300 s after the room emptied again at 290");
        assert_eq!(judge(TIMEOUT, Some(t(0)), Occupancy::Peers(1), t(1000)), Verdict::Keep { empty_since: None, recheck_after: Duration::from_secs(30) });
    }

    #[test]
    fn no_answer_never_deletes_and_keeps_the_clock_as_it_was() {
        assert_eq!(run(&[(0, Occupancy::Unknown), (1000, Occupancy::Unknown)]), None);
        assert_eq!(
            judge(TIMEOUT, Some(t(0)), Occupancy::Unknown, t(1000)),
            Verdict::Keep { empty_since: Some(t(0)), recheck_after: Duration::from_secs(30) }
        );
        // The first answer after a long silence still needs the worker to say "empty".
        assert_eq!(run(&[(0, Occupancy::Peers(0)), (100, Occupancy::Unknown), (400, Occupancy::Peers(0))]), Some(400));
        assert_eq!(run(&[(0, Occupancy::Peers(0)), (100, Occupancy::Unknown), (400, Occupancy::Peers(2))]), None);
    }

    #[test]
    fn a_start_in_the_future_counts_from_now() {
        assert_eq!(
            judge(TIMEOUT, Some(t(50)), Occupancy::Peers(0), t(0)),
            Verdict::Keep { empty_since: Some(t(0)), recheck_after: Duration::from_secs(30) }
        );
    }

    #[test]
    fn short_timeouts_are_checked_every_second_and_long_ones_every_30() {
        assert_eq!(check_interval(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(check_interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(check_interval(Duration::from_secs(3600)), Duration::from_secs(30));
        // The last check lands on the deadline, not an interval after it.
        assert_eq!(
            judge(Duration::from_secs(2), Some(t(0)), Occupancy::Peers(0), t(1)),
            Verdict::Keep { empty_since: Some(t(0)), recheck_after: Duration::from_secs(1) }
        );
    }
}
