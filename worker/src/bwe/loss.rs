//! The loss-based cap (libwebrtc's `SendSideBandwidthEstimation`, the classic rule GoogCC
//! used before its loss-based v2): loss above 10% lowers the target by half the loss
//! fraction, at most once per 300 ms plus a round trip; loss below 2% lets it grow again by
//! 8% a second (over the lowest target of the last second, so increases do not compound);
//! in between it holds. A path that drops without queueing (a shallow buffer, a radio link)
//! is seen here when the delay detector sees nothing.
//!
//! The cap exists only after loss has lowered it: until then, and once it has grown back past
//! the delay-based estimate, the delay-based estimate alone decides.

use std::collections::VecDeque;

const LOW_LOSS: f64 = 0.02;
const HIGH_LOSS: f64 = 0.10;
/// Loss is judged over at least this many packets.
const MIN_PACKETS: u32 = 20;
const DECREASE_INTERVAL_US: i64 = 300_000;
const INCREASE_INTERVAL_US: i64 = 1_000_000;

#[derive(Debug, Clone, Default)]
pub struct LossBasedCap {
    lost: u32,
    expected: u32,
    /// The loss fraction of the last full sample, and whether it has lowered the cap yet.
    fraction: Option<f64>,
    acted_on_fraction: bool,
    last_decrease_us: Option<i64>,
    cap_bps: Option<f64>,
    /// (time, cap) pairs of the last second, increasing: the front is the lowest.
    history: VecDeque<(i64, f64)>,
}

impl LossBasedCap {
    pub fn new() -> Self {
        LossBasedCap::default()
    }

    /// The cap, when loss has set one.
    pub fn cap(&self) -> Option<f64> {
        self.cap_bps
    }

    /// The loss fraction of the last full sample.
    pub fn loss_fraction(&self) -> Option<f64> {
        self.fraction
    }

    /// A probe showed the path carries `bps`: the cap starts from there.
    pub fn on_probe(&mut self, bps: f64) {
        if self.cap_bps.is_some_and(|cap| cap < bps) {
            self.cap_bps = Some(bps);
            self.history.clear();
        }
    }

    /// One feedback: `lost` of `expected` packets did not arrive. `current_bps` is the target
    /// in force, `delay_bps` the delay-based estimate. Returns the cap.
    pub fn on_feedback(&mut self, lost: u32, expected: u32, current_bps: f64, delay_bps: f64, rtt_us: i64, now_us: i64) -> Option<f64> {
        self.lost += lost;
        self.expected += expected;
        if self.expected >= MIN_PACKETS {
            self.fraction = Some(f64::from(self.lost) / f64::from(self.expected));
            self.acted_on_fraction = false;
            self.lost = 0;
            self.expected = 0;
        }
        let fraction = self.fraction?;
        if fraction > HIGH_LOSS {
            if !self.acted_on_fraction && self.last_decrease_us.is_none_or(|last| now_us - last >= DECREASE_INTERVAL_US + rtt_us) {
                let from = self.cap_bps.unwrap_or(current_bps).min(current_bps);
                self.cap_bps = Some(from * (1.0 - fraction / 2.0));
                self.acted_on_fraction = true;
                self.last_decrease_us = Some(now_us);
            }
        } else if fraction < LOW_LOSS
            && let Some(cap) = self.cap_bps
        {
            let lowest = self.history.front().map_or(cap, |(_, c)| *c);
            let grown = (lowest * 1.08 + 1000.0).max(cap);
            // Grown past the delay-based estimate: no longer a cap.
            self.cap_bps = (grown < delay_bps).then_some(grown);
        }
        if let Some(cap) = self.cap_bps {
            while self.history.front().is_some_and(|(at, _)| now_us - at + 1000 > INCREASE_INTERVAL_US) {
                self.history.pop_front();
            }
            while self.history.back().is_some_and(|(_, c)| cap <= *c) {
                self.history.pop_back();
            }
            self.history.push_back((now_us, cap));
        } else {
            self.history.clear();
        }
        self.cap_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    #[test]
    fn heavy_loss_lowers_the_cap_once_per_interval_light_loss_leaves_none() {
        let mut loss = LossBasedCap::new();
        assert_eq!(loss.on_feedback(1, 50, 1e6, 1e6, 100 * MS, 0), None, "2% is tolerated");
        // 30% loss: down by 15%, not again within 300 ms + the round trip.
        assert_eq!(loss.on_feedback(15, 50, 1e6, 1e6, 100 * MS, 100 * MS), Some(850_000.0));
        assert_eq!(loss.on_feedback(15, 50, 850_000.0, 1e6, 100 * MS, 200 * MS), Some(850_000.0));
        assert_eq!(loss.on_feedback(15, 50, 850_000.0, 1e6, 100 * MS, 600 * MS), Some(722_500.0));
    }

    #[test]
    fn without_loss_the_cap_grows_8_percent_a_second_until_it_stops_mattering() {
        let mut loss = LossBasedCap::new();
        loss.on_feedback(25, 50, 1e6, 2e6, 0, 0);
        let start = loss.cap().unwrap();
        let mut at = 0;
        let mut after_a_second = None;
        for step in 1..=200 {
            at += 100 * MS;
            loss.on_feedback(0, 50, start, 2e6, 0, at);
            if step == 10 {
                after_a_second = loss.cap();
            }
        }
        let grown = after_a_second.unwrap() / start;
        assert!((1.07..1.25).contains(&grown), "{grown}");
        assert_eq!(loss.cap(), None, "past the delay-based estimate the cap is gone");
    }
}
