//! AIMD rate control: the delay detector's verdict and the acknowledged bitrate in, a
//! delay-based estimate out (libwebrtc's `AimdRateControl` and `LinkCapacityEstimator`).
//!
//! - Overuse: back off to 85% of what the path delivered (the acknowledged bitrate), at most
//!   once per round trip, then hold until the queue has drained.
//! - Normal: increase, multiplicatively (8% a second) while the link's capacity is unknown,
//!   additively (about one packet per response time) once a backoff has shown where it is.
//!   Never above 1.5 times what the path has been seen to deliver, plus 10 kbps: without that
//!   an application-limited sender's estimate would climb without evidence. Only a probe
//!   ([`AimdRateControl::set_estimate`]) raises it past that.
//! - Underuse: hold.

use super::trendline::Usage;

/// Backoff factor on overuse.
const BETA: f64 = 0.85;
/// Multiplicative increase per second.
const MULTIPLICATIVE_INCREASE: f64 = 1.08;
/// The round trip assumed until one is measured.
pub const DEFAULT_RTT_US: i64 = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// What the path carried when it last congested (kbps), with its spread: additive increase
/// near it, multiplicative far from it.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    deviation_kbps: f64,
}

impl LinkCapacity {
    fn upper_bound(&self) -> f64 {
        self.estimate_kbps.map_or(f64::INFINITY, |e| (e + 3.0 * self.deviation_kbps()) * 1000.0)
    }

    fn lower_bound(&self) -> f64 {
        self.estimate_kbps.map_or(0.0, |e| (e - 3.0 * self.deviation_kbps()).max(0.0) * 1000.0)
    }

    fn deviation_kbps(&self) -> f64 {
        self.estimate_kbps.map_or(0.0, |e| (self.deviation_kbps * e).sqrt())
    }

    fn on_overuse(&mut self, acked_bps: f64) {
        let sample_kbps = acked_bps / 1000.0;
        let alpha = 0.05;
        let estimate = match self.estimate_kbps {
            None => sample_kbps,
            Some(e) => (1.0 - alpha) * e + alpha * sample_kbps,
        };
        // The variance is normalised by the estimate so it is comparable across rates.
        let norm = estimate.max(1.0);
        let error = estimate - sample_kbps;
        self.deviation_kbps = ((1.0 - alpha) * self.deviation_kbps + alpha * error * error / norm).clamp(0.4, 2.5);
        self.estimate_kbps = Some(estimate);
    }

    fn reset(&mut self) {
        self.estimate_kbps = None;
    }
}

/// The delay-based estimate, in bits per second.
#[derive(Debug, Clone)]
pub struct AimdRateControl {
    state: State,
    current_bps: f64,
    min_bps: f64,
    max_bps: f64,
    /// A probe or an overuse has set the estimate; before that it stays at the start value.
    initialized: bool,
    first_throughput_at_us: Option<i64>,
    latest_throughput_bps: Option<f64>,
    link: LinkCapacity,
    last_change_us: Option<i64>,
    rtt_us: i64,
}

impl AimdRateControl {
    pub fn new(start_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        AimdRateControl {
            state: State::Hold,
            current_bps: start_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            initialized: false,
            first_throughput_at_us: None,
            latest_throughput_bps: None,
            link: LinkCapacity::default(),
            last_change_us: None,
            rtt_us: DEFAULT_RTT_US,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.current_bps
    }

    /// Whether the estimate has been established by a probe, an overuse or long enough of
    /// measured throughput.
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    pub fn set_rtt(&mut self, rtt_us: i64) {
        self.rtt_us = rtt_us.max(1);
    }

    /// Sets the estimate outright: a probe measured what the path carries.
    pub fn set_estimate(&mut self, bps: f64, now_us: i64) {
        self.initialized = true;
        self.current_bps = bps.clamp(self.min_bps, self.max_bps);
        self.last_change_us = Some(now_us);
    }

    /// Whether an overuse may lower the estimate again: once per round trip (clamped to
    /// 10-200 ms), or at once when the path delivers less than half the estimate.
    pub fn time_to_reduce_further(&self, now_us: i64, acked_bps: f64) -> bool {
        let interval = self.rtt_us.clamp(10_000, 200_000);
        if self.last_change_us.is_none_or(|last| now_us - last >= interval) {
            return true;
        }
        self.initialized && acked_bps < 0.5 * self.current_bps
    }

    /// Applies the detector's verdict with the acknowledged bitrate (`None` when unknown).
    pub fn update(&mut self, usage: Usage, acked_bps: Option<f64>, now_us: i64) -> f64 {
        if !self.initialized {
            // Five seconds of measured throughput establish the estimate without a probe.
            match (self.first_throughput_at_us, acked_bps) {
                (None, Some(_)) => self.first_throughput_at_us = Some(now_us),
                (Some(first), Some(acked)) if now_us - first > 5_000_000 => {
                    self.current_bps = acked.clamp(self.min_bps, self.max_bps);
                    self.initialized = true;
                }
                _ => {}
            }
        }
        let throughput = match acked_bps {
            Some(acked) => {
                self.latest_throughput_bps = Some(acked);
                acked
            }
            None => self.latest_throughput_bps.unwrap_or(self.current_bps),
        };
        // An overuse acts before the estimate is established: acting on it establishes one.
        if !self.initialized && usage != Usage::Overusing {
            return self.current_bps;
        }
        self.change_state(usage, now_us);
        match self.state {
            State::Hold => {}
            State::Increase => {
                if throughput > self.link.upper_bound() {
                    self.link.reset();
                }
                let limit = 1.5 * throughput + 10_000.0;
                if self.current_bps < limit {
                    let increase = if self.link.estimate_kbps.is_some() {
                        self.additive_increase(now_us)
                    } else {
                        self.multiplicative_increase(now_us)
                    };
                    self.current_bps = (self.current_bps + increase).min(limit);
                }
                self.last_change_us = Some(now_us);
            }
            State::Decrease => {
                // A little below what was delivered, to drain the queue this sender built.
                let mut decreased = throughput * BETA;
                if decreased > self.current_bps && self.link.estimate_kbps.is_some() {
                    decreased = BETA * self.link.estimate_kbps.unwrap_or_default() * 1000.0;
                }
                if decreased < self.current_bps {
                    self.current_bps = decreased;
                }
                if throughput < self.link.lower_bound() {
                    self.link.reset();
                }
                self.initialized = true;
                self.link.on_overuse(throughput);
                // Hold until the queue has drained.
                self.state = State::Hold;
                self.last_change_us = Some(now_us);
            }
        }
        self.current_bps = self.current_bps.clamp(self.min_bps, self.max_bps);
        self.current_bps
    }

    fn change_state(&mut self, usage: Usage, now_us: i64) {
        match usage {
            Usage::Normal => {
                if self.state == State::Hold {
                    self.last_change_us = Some(now_us);
                    self.state = State::Increase;
                }
            }
            Usage::Overusing => self.state = State::Decrease,
            Usage::Underusing => self.state = State::Hold,
        }
    }

    fn multiplicative_increase(&self, now_us: i64) -> f64 {
        let alpha = match self.last_change_us {
            Some(last) => MULTIPLICATIVE_INCREASE.powf(((now_us - last) as f64 / 1e6).min(1.0)),
            None => MULTIPLICATIVE_INCREASE,
        };
        (self.current_bps * (alpha - 1.0)).max(1000.0)
    }

    /// About one packet per response time (a round trip plus 100 ms), as at 30 frames a
    /// second.
    fn additive_increase(&self, now_us: i64) -> f64 {
        let elapsed_s = self.last_change_us.map_or(0.0, |last| (now_us - last) as f64 / 1e6);
        let bits_per_frame = self.current_bps / 30.0;
        let packets_per_frame = (bits_per_frame / (8.0 * 1200.0)).ceil().max(1.0);
        let packet_bits = bits_per_frame / packets_per_frame;
        let response_time_s = (self.rtt_us + 100_000) as f64 / 1e6;
        let rate_per_second = (packet_bits / response_time_s).max(4000.0);
        rate_per_second * elapsed_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    #[test]
    fn nothing_moves_until_the_estimate_is_established() {
        let mut aimd = AimdRateControl::new(600_000.0, 30_000.0, 20e6);
        for i in 0..40 {
            aimd.update(Usage::Normal, Some(500_000.0), i * 100 * MS);
        }
        assert_eq!(aimd.estimate(), 600_000.0);
        // After five seconds of throughput it starts from what was delivered.
        aimd.update(Usage::Normal, Some(500_000.0), 5_200 * MS);
        assert!(aimd.is_initialized());
    }

    #[test]
    fn overuse_backs_off_to_85_percent_of_the_delivered_rate_then_holds() {
        let mut aimd = AimdRateControl::new(1_000_000.0, 30_000.0, 20e6);
        let after = aimd.update(Usage::Overusing, Some(300_000.0), 0);
        assert_eq!(after, 255_000.0);
        // A second overuse within a round trip does not act again.
        assert!(!aimd.time_to_reduce_further(50 * MS, 300_000.0));
        assert!(aimd.time_to_reduce_further(250 * MS, 300_000.0));
    }

    #[test]
    fn increase_is_multiplicative_far_from_capacity_and_capped_by_what_is_delivered() {
        let mut aimd = AimdRateControl::new(500_000.0, 30_000.0, 20e6);
        aimd.set_estimate(500_000.0, 0);
        let mut at = 0;
        for _ in 0..10 {
            at += 100 * MS;
            aimd.update(Usage::Normal, Some(500_000.0), at);
        }
        // About 8% a second.
        let after_one_second = aimd.estimate();
        assert!((530_000.0..560_000.0).contains(&after_one_second), "{after_one_second}");
        // An application sending 200 kbps caps the increase at 1.5x + 10 kbps.
        let mut limited = AimdRateControl::new(300_000.0, 30_000.0, 20e6);
        limited.set_estimate(300_000.0, 0);
        for i in 1..200 {
            limited.update(Usage::Normal, Some(200_000.0), i * 100 * MS);
        }
        assert_eq!(limited.estimate(), 310_000.0);
    }

    #[test]
    fn near_a_known_capacity_the_increase_is_additive() {
        let mut aimd = AimdRateControl::new(1_000_000.0, 30_000.0, 20e6);
        aimd.update(Usage::Overusing, Some(1_000_000.0), 0);
        aimd.update(Usage::Normal, Some(850_000.0), 100 * MS);
        let start = aimd.estimate();
        for i in 2..12 {
            aimd.update(Usage::Normal, Some(850_000.0), i * 100 * MS);
        }
        let gained = aimd.estimate() - start;
        // One ~1180-byte packet per 300 ms response time (200 ms round trip): about 31 kbps
        // in the second, half of what 8% multiplicative would give.
        assert!((20_000.0..45_000.0).contains(&gained), "{gained}");
    }
}
