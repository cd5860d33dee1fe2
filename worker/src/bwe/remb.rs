//! The receive-side estimate for publishers that negotiated REMB instead of transport-cc
//! (libwebrtc's `RemoteBitrateEstimatorAbsSendTime`, which mediasoup runs for them): the
//! abs-send-time extension gives each packet's send time on the publisher's clock, our
//! arrival time the other side, and the same delay-based estimator as the send side
//! ([`DelayBasedBwe`]) turns them into an estimate, which goes back as a REMB.
//!
//! A REMB caps the publisher's encoder, so none is sent before the estimate is established
//! (after five seconds of throughput or an overuse): an early guess would hold a publisher
//! below what its link carries. Then a REMB goes out every second, and within 200 ms of a
//! drop of more than 3%.

use std::time::Instant;

use super::acked::AckedBitrate;
use super::delay::DelayBasedBwe;
use super::inter_arrival::PacketTiming;

/// abs-send-time: 6.18 fixed-point seconds in 24 bits, wrapping every 64 s.
const ABS_SEND_TIME_WRAP: i64 = 1 << 24;
const REMB_INTERVAL_US: i64 = 1_000_000;
const REMB_DECREASE_INTERVAL_US: i64 = 200_000;
/// Packets grouped before the estimator runs (it runs on a batch, like feedback).
const BATCH: usize = 16;

#[derive(Debug, Clone)]
pub struct RembEstimator {
    epoch: Instant,
    delay: DelayBasedBwe,
    acked: AckedBitrate,
    /// The last abs-send-time seen (24 bits) and its unwrapped value.
    last_abs: Option<(u32, i64)>,
    pending: Vec<PacketTiming>,
    last_remb: Option<(i64, f64)>,
}

impl RembEstimator {
    pub fn new(now: Instant) -> Self {
        RembEstimator {
            epoch: now,
            delay: DelayBasedBwe::new(super::send_side::START_BITRATE_BPS, super::send_side::MIN_BITRATE_BPS, super::send_side::MAX_BITRATE_BPS),
            acked: AckedBitrate::new(),
            last_abs: None,
            pending: Vec::with_capacity(BATCH),
            last_remb: None,
        }
    }

    fn micros(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch).as_micros() as i64
    }

    pub fn estimate(&self) -> f64 {
        self.delay.estimate()
    }

    /// A packet of `size` bytes with the 24-bit `abs_send_time` arrived at `at`.
    pub fn on_packet(&mut self, abs_send_time: u32, size: usize, at: Instant) {
        let arrived_us = self.micros(at);
        let abs = abs_send_time & 0xff_ffff;
        let unwrapped = match self.last_abs {
            None => i64::from(abs),
            Some((last, last_unwrapped)) => {
                let mut delta = (i64::from(abs) - i64::from(last)).rem_euclid(ABS_SEND_TIME_WRAP);
                if delta > ABS_SEND_TIME_WRAP / 2 {
                    delta -= ABS_SEND_TIME_WRAP;
                }
                // The publisher picks every value: one that jumps half the wrap ahead each
                // packet grows the count by 2^23 per packet, so the arithmetic saturates.
                last_unwrapped.saturating_add(delta)
            }
        };
        if self.last_abs.is_none_or(|(_, last)| unwrapped > last) {
            self.last_abs = Some((abs, unwrapped));
        }
        let sent_us = i64::try_from(i128::from(unwrapped) * 1_000_000 / (1 << 18)).unwrap_or(i64::MAX);
        self.acked.on_packet(arrived_us, size);
        self.pending.push(PacketTiming { sent_us, arrived_us, size });
        if self.pending.len() >= BATCH {
            self.run(arrived_us);
        }
    }

    fn run(&mut self, now_us: i64) {
        let pending = std::mem::take(&mut self.pending);
        self.delay.on_feedback(&pending, self.acked.bitrate(), None, now_us);
        self.pending = pending;
        self.pending.clear();
    }

    /// The REMB bitrate to send now, if one is due.
    pub fn poll_remb(&mut self, now: Instant) -> Option<u64> {
        let now_us = self.micros(now);
        if !self.pending.is_empty() {
            self.run(now_us);
        }
        if !self.delay.is_initialized() {
            return None;
        }
        let estimate = self.delay.estimate();
        let due = match self.last_remb {
            None => true,
            Some((at, sent)) => now_us - at >= REMB_INTERVAL_US || (estimate < 0.97 * sent && now_us - at >= REMB_DECREASE_INTERVAL_US),
        };
        if !due {
            return None;
        }
        self.last_remb = Some((now_us, estimate));
        Some(estimate as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// abs-send-time of `ms` after the publisher's clock origin.
    fn abs(ms: u64) -> u32 {
        ((ms << 18) / 1000) as u32 & 0xff_ffff
    }

    #[test]
    fn abs_send_times_that_always_jump_half_the_wrap_ahead_saturate_instead_of_overflowing() {
        let t0 = Instant::now();
        let mut remb = RembEstimator::new(t0);
        // Where ~1.1 million such packets (20 minutes at 1000 a second) would have taken the
        // unwrapped count: its microseconds no longer fit an i64.
        remb.last_abs = Some((0, i64::MAX / 1_000_000 * 4));
        for i in 0..200u32 {
            let abs = i.wrapping_mul((1 << 23) - 1) & 0xff_ffff;
            remb.on_packet(abs, 1000, t0 + Duration::from_millis(u64::from(i)));
        }
        remb.last_abs = Some((0, i64::MAX - 1));
        remb.on_packet((1 << 23) - 1, 1000, t0 + Duration::from_millis(300));
        assert_eq!(remb.last_abs.map(|(_, unwrapped)| unwrapped), Some(i64::MAX));
        let _ = remb.poll_remb(t0 + Duration::from_secs(1));
    }

    #[test]
    fn no_remb_until_the_estimate_is_established_then_one_a_second() {
        let t0 = Instant::now();
        let mut remb = RembEstimator::new(t0);
        let mut sent = Vec::new();
        // 800 kbps for 8 s: a 1000-byte packet every 10 ms, arriving 30 ms after it was sent,
        // across the 64 s wrap of abs-send-time.
        for i in 0..800u64 {
            let at = t0 + Duration::from_millis(i * 10);
            remb.on_packet(abs(63_000 + i * 10), 1000, at);
            if let Some(bps) = remb.poll_remb(at) {
                sent.push((i * 10, bps));
            }
        }
        assert!(sent.first().is_some_and(|(ms, _)| *ms > 5000), "{sent:?}");
        assert!((2..=4).contains(&sent.len()), "{sent:?}");
        let (_, last) = sent.last().unwrap();
        assert!((700_000..1_400_000).contains(last), "{sent:?}");
    }

    #[test]
    fn a_queue_building_on_the_way_lowers_the_remb() {
        let t0 = Instant::now();
        let mut remb = RembEstimator::new(t0);
        let mut last = None;
        // 1.2 Mbps sent through a 600 kbps bottleneck: each 1000-byte packet leaves the
        // queue 13.3 ms after the previous one.
        let mut link_free = 0.0f64;
        for i in 0..600u64 {
            let sent_ms = i as f64 * 6.67;
            link_free = link_free.max(sent_ms) + 13.33;
            let at = t0 + Duration::from_micros(((link_free + 20.0) * 1000.0) as u64);
            remb.on_packet(abs(sent_ms as u64), 1000, at);
            if let Some(bps) = remb.poll_remb(at) {
                last = Some(bps);
            }
        }
        let bps = last.expect("an overuse establishes the estimate");
        assert!(bps < 600_000, "{bps}");
    }
}
