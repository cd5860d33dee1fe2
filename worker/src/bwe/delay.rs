//! The delay-based estimate (libwebrtc's `DelayBasedBwe`): received packets are grouped
//! ([`InterArrival`]), the group deltas feed the [`Trendline`] detector, and its verdict drives
//! [`AimdRateControl`] with the acknowledged bitrate. A probe's result sets the estimate
//! directly unless the path is over-using.

use super::aimd::AimdRateControl;
use super::inter_arrival::{InterArrival, PacketTiming};
use super::trendline::{Trendline, Usage};

/// A stream silent this long starts its grouping and trend afresh.
const STREAM_TIMEOUT_US: i64 = 2_000_000;

#[derive(Debug, Clone)]
pub struct DelayBasedBwe {
    groups: InterArrival,
    trendline: Trendline,
    rate: AimdRateControl,
    last_seen_us: Option<i64>,
}

impl DelayBasedBwe {
    pub fn new(start_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        DelayBasedBwe {
            groups: InterArrival::new(),
            trendline: Trendline::new(),
            rate: AimdRateControl::new(start_bps, min_bps, max_bps),
            last_seen_us: None,
        }
    }

    pub fn estimate(&self) -> f64 {
        self.rate.estimate()
    }

    /// Whether a probe, an overuse or five seconds of throughput have established the
    /// estimate (before that it is the start value, a guess).
    pub fn is_initialized(&self) -> bool {
        self.rate.is_initialized()
    }

    pub fn usage(&self) -> Usage {
        self.trendline.usage()
    }

    pub fn trend_and_threshold(&self) -> (f64, f64) {
        self.trendline.trend_and_threshold()
    }

    pub fn set_rtt(&mut self, rtt_us: i64) {
        self.rate.set_rtt(rtt_us);
    }

    /// Sets the estimate outright (a probe result or an external cap).
    pub fn set_estimate(&mut self, bps: f64, now_us: i64) {
        self.rate.set_estimate(bps, now_us);
    }

    /// One feedback's received packets, sorted by arrival; `now_us` is our clock. Returns the
    /// estimate after it.
    pub fn on_feedback(&mut self, received: &[PacketTiming], acked_bps: Option<f64>, probe_bps: Option<f64>, now_us: i64) -> f64 {
        if received.is_empty() {
            return self.rate.estimate();
        }
        if self.last_seen_us.is_none_or(|last| now_us - last > STREAM_TIMEOUT_US) {
            self.groups = InterArrival::new();
            self.trendline = Trendline::new();
        }
        self.last_seen_us = Some(now_us);
        for packet in received {
            if let Some(delta) = self.groups.on_packet(*packet, now_us) {
                self.trendline.update(delta.arrival_ms, delta.send_ms, delta.arrived_us as f64 / 1000.0);
            }
        }
        let usage = self.trendline.usage();
        if usage == Usage::Overusing {
            match acked_bps {
                Some(acked) if self.rate.time_to_reduce_further(now_us, acked) => {
                    self.rate.update(usage, Some(acked), now_us);
                }
                None if self.rate.time_to_reduce_further(now_us, 0.0) => {
                    // Over-using before anything is acknowledged: halve, at most every 200 ms.
                    let halved = self.rate.estimate() / 2.0;
                    self.rate.set_estimate(halved, now_us);
                }
                _ => {}
            }
        } else if let Some(probe) = probe_bps {
            self.rate.set_estimate(probe, now_us);
        } else {
            self.rate.update(usage, acked_bps, now_us);
        }
        self.rate.estimate()
    }
}
