//! RTP timestamps to a file's media time: nanoseconds from the file's first frame.
//!
//! RTP timestamps are 32-bit and wrap (at 90 kHz, every 13 hours; and they start anywhere),
//! so each one is unwrapped against the previous into a 64-bit count. A producer whose SSRC
//! changes (its encoder restarted) or whose clock jumps far from the wall clock starts a new
//! base: its media time goes on from the last frame's by the wall time that passed, so a file
//! never goes back in time nor jumps by hours. A pause keeps the RTP clock running (browsers
//! send on from where the clock is), so the file's time just jumps over it.

use std::time::{Duration, Instant};

/// A jump between the RTP clock and the wall clock larger than this starts a new base.
pub const MAX_CLOCK_DRIFT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Base {
    ssrc: u32,
    /// The unwrapped timestamp at `origin_ns`.
    ticks: i64,
    origin_ns: u64,
}

/// One file's clock.
#[derive(Debug, Clone)]
pub struct MediaClock {
    clock_rate: u32,
    base: Option<Base>,
    /// The last timestamp seen, raw and unwrapped.
    last_raw: u32,
    last_ticks: i64,
    last_ns: u64,
    last_arrival: Option<Instant>,
}

impl MediaClock {
    pub fn new(clock_rate: u32) -> Self {
        MediaClock { clock_rate: clock_rate.max(1), base: None, last_raw: 0, last_ticks: 0, last_ns: 0, last_arrival: None }
    }

    /// The media time of a frame of `ssrc` with RTP `timestamp` that arrived at `arrival`:
    /// 0 for the first, never less than the previous one.
    pub fn media_ns(&mut self, ssrc: u32, timestamp: u32, arrival: Instant) -> u64 {
        let wall = self.last_arrival.map_or(Duration::ZERO, |last| arrival.saturating_duration_since(last));
        let ticks = match self.base {
            Some(base) if base.ssrc == ssrc => self.last_ticks + i64::from(timestamp.wrapping_sub(self.last_raw) as i32),
            _ => 0,
        };
        let mut ns = match self.base {
            Some(base) if base.ssrc == ssrc => {
                let elapsed = (ticks - base.ticks) as i128 * 1_000_000_000 / i128::from(self.clock_rate);
                (base.origin_ns as i128 + elapsed).max(0) as u64
            }
            _ => u64::MAX,
        };
        let expected = self.last_ns.saturating_add(wall.as_nanos() as u64);
        if ns == u64::MAX || ns.abs_diff(expected) > MAX_CLOCK_DRIFT.as_nanos() as u64 {
            // First frame, new SSRC or a clock that jumped: a new base at the wall clock's
            // time (1 ms after the last frame at least, so frames stay apart).
            let origin_ns = if self.base.is_none() { 0 } else { expected.max(self.last_ns + 1_000_000) };
            self.base = Some(Base { ssrc, ticks, origin_ns });
            ns = origin_ns;
        }
        self.last_raw = timestamp;
        self.last_ticks = ticks;
        self.last_arrival = Some(arrival);
        self.last_ns = self.last_ns.max(ns);
        self.last_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn timestamps_map_to_milliseconds_from_the_first_frame_across_wraparound() {
        let t0 = Instant::now();
        let mut clock = MediaClock::new(90_000);
        let start = u32::MAX - 4_500; // 50 ms before the wrap
        assert_eq!(clock.media_ns(1, start, t0), 0);
        assert_eq!(clock.media_ns(1, start.wrapping_add(3_000), t0 + Duration::from_millis(33)) / MS, 33);
        // Past the wrap: the raw timestamp is small, the media time goes on.
        assert_eq!(clock.media_ns(1, start.wrapping_add(9_000), t0 + Duration::from_millis(100)) / MS, 100);
        assert_eq!(clock.media_ns(1, start.wrapping_add(90_000 * 5), t0 + Duration::from_secs(5)) / MS, 5_000);
    }

    #[test]
    fn a_pause_jumps_and_a_reordered_timestamp_does_not_go_back() {
        let t0 = Instant::now();
        let mut clock = MediaClock::new(48_000);
        clock.media_ns(7, 1_000, t0);
        // 10 s of pause: the RTP clock ran on.
        assert_eq!(clock.media_ns(7, 1_000 + 480_000, t0 + Duration::from_secs(10)) / MS, 10_000);
        // An older timestamp (a late frame) is written at the newest time, not before it.
        assert_eq!(clock.media_ns(7, 1_000 + 479_040, t0 + Duration::from_secs(10)) / MS, 10_000);
    }

    #[test]
    fn a_new_ssrc_or_a_clock_jump_continues_from_the_wall_clock() {
        let t0 = Instant::now();
        let mut clock = MediaClock::new(90_000);
        clock.media_ns(1, 500, t0);
        assert_eq!(clock.media_ns(1, 500 + 90_000, t0 + Duration::from_secs(1)) / MS, 1_000);
        // The encoder restarted under a new SSRC with a random timestamp.
        assert_eq!(clock.media_ns(2, 123_456_789, t0 + Duration::from_millis(1_500)) / MS, 1_500);
        assert_eq!(clock.media_ns(2, 123_456_789 + 9_000, t0 + Duration::from_millis(1_600)) / MS, 1_600);
        // The same SSRC jumps by an hour of RTP clock in a tenth of a second.
        assert_eq!(clock.media_ns(2, 123_456_789 + 9_000 + 90_000 * 3_600, t0 + Duration::from_millis(1_700)) / MS, 1_700);
    }
}
