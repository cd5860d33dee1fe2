//! What the path has delivered lately: the acknowledged bitrate (libwebrtc's
//! `BitrateEstimator` behind `AcknowledgedBitrateEstimator`).
//!
//! Bytes acknowledged by feedback are summed over windows of the receiver's clock (500 ms for
//! the first sample, 150 ms after) and each window's rate is folded into a Bayesian estimate
//! whose trust in a sample falls with the sample's distance from the estimate: one short
//! window with a late frame does not halve it, a lasting change moves it within a few
//! windows.

const INITIAL_WINDOW_US: i64 = 500_000;
const WINDOW_US: i64 = 150_000;
const UNCERTAINTY_SCALE: f64 = 10.0;
/// Never below this: a silent moment is not a collapsed path.
const FLOOR_KBPS: f64 = 40.0;

#[derive(Debug, Clone, Default)]
pub struct AckedBitrate {
    sum_bytes: usize,
    window_us: i64,
    previous_us: Option<i64>,
    estimate_kbps: Option<f64>,
    variance: f64,
}

impl AckedBitrate {
    pub fn new() -> Self {
        AckedBitrate { variance: 50.0, ..AckedBitrate::default() }
    }

    /// The estimate in bits per second, once there is one.
    pub fn bitrate(&self) -> Option<f64> {
        self.estimate_kbps.map(|kbps| kbps * 1000.0)
    }

    /// One acknowledged packet of `size` bytes that arrived at `arrived_us` (receiver clock,
    /// arrival order).
    pub fn on_packet(&mut self, arrived_us: i64, size: usize) {
        let window = if self.estimate_kbps.is_none() { INITIAL_WINDOW_US } else { WINDOW_US };
        let Some(sample_kbps) = self.update_window(arrived_us, size, window) else { return };
        let Some(estimate) = self.estimate_kbps else {
            self.estimate_kbps = Some(sample_kbps);
            return;
        };
        let uncertainty = UNCERTAINTY_SCALE * (estimate - sample_kbps).abs() / estimate.max(1.0);
        let sample_variance = uncertainty * uncertainty;
        // The estimate's own uncertainty grows a little with each sample: the rate drifts.
        let predicted_variance = self.variance + 5.0;
        let updated = (sample_variance * estimate + predicted_variance * sample_kbps) / (sample_variance + predicted_variance);
        self.estimate_kbps = Some(updated.max(FLOOR_KBPS));
        self.variance = sample_variance * predicted_variance / (sample_variance + predicted_variance);
    }

    fn update_window(&mut self, now_us: i64, size: usize, window_us: i64) -> Option<f64> {
        if self.previous_us.is_some_and(|previous| now_us < previous) {
            // The receiver's clock went back.
            self.previous_us = None;
            self.sum_bytes = 0;
            self.window_us = 0;
        }
        if let Some(previous) = self.previous_us {
            self.window_us += now_us - previous;
            if now_us - previous > window_us {
                // Nothing for a whole window: start over.
                self.sum_bytes = 0;
                self.window_us %= window_us;
            }
        }
        self.previous_us = Some(now_us);
        let mut sample = None;
        if self.window_us >= window_us {
            sample = Some(8.0 * self.sum_bytes as f64 / (window_us as f64 / 1000.0));
            self.window_us -= window_us;
            self.sum_bytes = 0;
        }
        self.sum_bytes += size;
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rate_bps` of 1000-byte packets for `duration_ms`, from `start_us`.
    fn feed(acked: &mut AckedBitrate, start_us: &mut i64, rate_bps: f64, duration_ms: i64) {
        let interval_us = (8000.0 / rate_bps * 1e6) as i64;
        let end = *start_us + duration_ms * 1000;
        while *start_us < end {
            acked.on_packet(*start_us, 1000);
            *start_us += interval_us;
        }
    }

    #[test]
    fn a_steady_rate_is_measured() {
        let mut acked = AckedBitrate::new();
        let mut at = 0;
        assert_eq!(acked.bitrate(), None);
        feed(&mut acked, &mut at, 800_000.0, 2000);
        let bps = acked.bitrate().unwrap();
        assert!((760_000.0..840_000.0).contains(&bps), "{bps}");
    }

    #[test]
    fn a_lasting_drop_is_followed_within_seconds_a_blip_barely_moves_it() {
        let mut acked = AckedBitrate::new();
        let mut at = 0;
        feed(&mut acked, &mut at, 1_500_000.0, 2000);
        feed(&mut acked, &mut at, 300_000.0, 150);
        let blip = acked.bitrate().unwrap();
        assert!(blip > 1_200_000.0, "{blip}");
        feed(&mut acked, &mut at, 300_000.0, 2000);
        let bps = acked.bitrate().unwrap();
        assert!(bps < 450_000.0, "{bps}");
    }
}
