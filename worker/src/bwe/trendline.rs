//! The delay-based overuse detector: a trend line through the accumulated delay variation,
//! compared with an adaptive threshold (libwebrtc's `TrendlineEstimator`, the one GoogCC has
//! used since 2017; str0m's `delay/trendline.rs` follows it too).
//!
//! Each group delta adds `arrival - send` to an accumulated delay, smoothed exponentially; the
//! slope of a least-squares line through the last [`WINDOW`] smoothed points, against arrival
//! time, estimates `(send rate - capacity) / capacity`. That slope, scaled by the number of
//! deltas seen (up to 60) and a gain of 4, is compared with a threshold that adapts to the
//! path's normal jitter: quickly towards small values, slowly towards large ones, so a jittery
//! path does not read as congested forever and a sudden queue is still noticed.

use std::collections::VecDeque;

/// Points in the regression.
pub const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
const MIN_NUM_DELTAS: u32 = 60;
const DELTA_COUNTER_MAX: u32 = 1000;
/// The threshold's starting point and bounds, in ms.
const INITIAL_THRESHOLD_MS: f64 = 12.5;
const MIN_THRESHOLD_MS: f64 = 6.0;
const MAX_THRESHOLD_MS: f64 = 600.0;
/// How fast the threshold moves towards the trend when the trend is outside it, and inside.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend this far beyond the threshold is a spike, not the path's jitter: the threshold
/// does not follow it.
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
/// How long the trend must stay above the threshold before it is overuse.
const OVERUSING_TIME_THRESHOLD_MS: f64 = 10.0;

/// What the delay signal says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    #[default]
    Normal,
    /// The queue grows: more is sent than the path carries.
    Overusing,
    /// The queue drains.
    Underusing,
}

/// Trend line over the smoothed delay variation, with the detector that reads it.
#[derive(Debug, Clone)]
pub struct Trendline {
    /// (arrival time since the first delta in ms, smoothed accumulated delay in ms).
    history: VecDeque<(f64, f64)>,
    first_arrival_ms: Option<f64>,
    num_deltas: u32,
    accumulated_delay: f64,
    smoothed_delay: f64,
    previous_trend: f64,
    modified_trend: f64,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    /// Time spent above the threshold in the current run, in ms; `None` outside one.
    time_over_using: Option<f64>,
    overuse_counter: u32,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            history: VecDeque::with_capacity(WINDOW + 1),
            first_arrival_ms: None,
            num_deltas: 0,
            accumulated_delay: 0.0,
            smoothed_delay: 0.0,
            previous_trend: 0.0,
            modified_trend: 0.0,
            threshold: INITIAL_THRESHOLD_MS,
            last_threshold_update_ms: None,
            time_over_using: None,
            overuse_counter: 0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    pub fn new() -> Self {
        Trendline::default()
    }

    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The scaled trend last compared with the threshold, and the threshold (ms), for stats.
    pub fn trend_and_threshold(&self) -> (f64, f64) {
        (self.modified_trend, self.threshold)
    }

    /// Adds one group delta (see [`super::inter_arrival`]); `arrival_ms` is the later group's
    /// arrival on the receiver's clock.
    pub fn update(&mut self, arrival_delta_ms: f64, send_delta_ms: f64, arrival_ms: f64) -> Usage {
        let delta_ms = arrival_delta_ms - send_delta_ms;
        self.num_deltas = (self.num_deltas + 1).min(DELTA_COUNTER_MAX);
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_delay += delta_ms;
        self.smoothed_delay = SMOOTHING * self.smoothed_delay + (1.0 - SMOOTHING) * self.accumulated_delay;
        self.history.push_back((arrival_ms - first, self.smoothed_delay));
        if self.history.len() > WINDOW {
            self.history.pop_front();
        }
        let mut trend = self.previous_trend;
        if self.history.len() == WINDOW
            && let Some(slope) = linear_fit_slope(&self.history)
        {
            trend = slope;
        }
        self.detect(trend, send_delta_ms, arrival_ms);
        self.usage
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.num_deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.num_deltas.min(MIN_NUM_DELTAS)) * trend * THRESHOLD_GAIN;
        self.modified_trend = modified;
        if modified > self.threshold {
            // Over-using for half the time since the previous sample, when this run starts.
            let over = match self.time_over_using {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using = Some(over);
            self.overuse_counter += 1;
            if over > OVERUSING_TIME_THRESHOLD_MS && self.overuse_counter > 1 && trend >= self.previous_trend {
                self.time_over_using = Some(0.0);
                self.overuse_counter = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using = None;
            self.overuse_counter = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_using = None;
            self.overuse_counter = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.update_threshold(modified, now_ms);
    }

    fn update_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET_MS {
            self.last_threshold_update_ms = Some(now_ms);
            return;
        }
        let k = if modified.abs() < self.threshold { K_DOWN } else { K_UP };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * elapsed).clamp(MIN_THRESHOLD_MS, MAX_THRESHOLD_MS);
        self.last_threshold_update_ms = Some(now_ms);
    }
}

fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sum_x, sum_y) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (x_avg, y_avg) = (sum_x / n, sum_y / n);
    let (mut numerator, mut denominator) = (0.0, 0.0);
    for (x, y) in points {
        numerator += (x - x_avg) * (y - y_avg);
        denominator += (x - x_avg) * (x - x_avg);
    }
    (denominator != 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds groups 20 ms apart whose arrivals spread by `extra_ms` more than their sends.
    fn feed(trendline: &mut Trendline, groups: usize, extra_ms: f64, start_ms: &mut f64) -> Vec<Usage> {
        (0..groups)
            .map(|_| {
                *start_ms += 20.0 + extra_ms;
                trendline.update(20.0 + extra_ms, 20.0, *start_ms)
            })
            .collect()
    }

    #[test]
    fn a_path_without_queueing_is_normal() {
        let mut trendline = Trendline::new();
        let mut at = 0.0;
        // Jitter of ±1 ms around a steady path.
        let usages: Vec<Usage> = (0..200)
            .map(|i| {
                let jitter = if i % 2 == 0 { 1.0 } else { -1.0 };
                at += 20.0 + jitter;
                trendline.update(20.0 + jitter, 20.0, at)
            })
            .collect();
        assert!(usages.iter().all(|u| *u != Usage::Overusing), "{usages:?}");
    }

    #[test]
    fn a_steadily_growing_queue_is_overuse_within_a_window() {
        let mut trendline = Trendline::new();
        let mut at = 0.0;
        feed(&mut trendline, 40, 0.0, &mut at);
        // 10% more sent than the path carries: 2 ms more queue per 20 ms group.
        let usages = feed(&mut trendline, 30, 2.0, &mut at);
        let first = usages.iter().position(|u| *u == Usage::Overusing).expect("overuse detected");
        assert!(first < 20, "detected after {first} groups");
    }

    #[test]
    fn a_draining_queue_is_underuse_then_normal_again() {
        let mut trendline = Trendline::new();
        let mut at = 0.0;
        feed(&mut trendline, 30, 5.0, &mut at);
        assert_eq!(trendline.usage(), Usage::Overusing);
        let draining = feed(&mut trendline, 20, -5.0, &mut at);
        assert!(draining.contains(&Usage::Underusing), "{draining:?}");
        let steady = feed(&mut trendline, 40, 0.0, &mut at);
        assert_eq!(steady.last(), Some(&Usage::Normal));
    }

    #[test]
    fn the_threshold_adapts_to_a_jittery_path() {
        let mut trendline = Trendline::new();
        let mut at = 0.0;
        let mut overuses = 0;
        // ±8 ms of jitter with no trend: early false alarms at most, then the threshold has
        // grown and the path reads as normal.
        for i in 0..2000 {
            let jitter = [8.0, -8.0, 6.0, -6.0][i % 4];
            at += 20.0 + jitter;
            if trendline.update(20.0 + jitter, 20.0, at) == Usage::Overusing && i > 1000 {
                overuses += 1;
            }
        }
        assert_eq!(overuses, 0);
    }
}
