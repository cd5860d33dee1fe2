//! The send-side estimate of one transport towards a subscriber (GoogCC's
//! `GoogCcNetworkController`, reduced): transport-wide feedback joined with the
//! [`SendHistory`] becomes per-packet results, and those feed the delay-based estimate, the
//! acknowledged bitrate, the loss-based cap and the probe estimator. The target is the lower
//! of the delay-based estimate and the loss-based cap.

use super::acked::AckedBitrate;
use super::delay::DelayBasedBwe;
use super::history::SentPacket;
use super::inter_arrival::PacketTiming;
use super::loss::LossBasedCap;
use super::probe::{ProbeCluster, ProbeController, ProbeEstimator};
use super::trendline::Usage;

/// Where a transport's estimate starts (mediasoup's `initialAvailableOutgoingBitrate`).
pub const START_BITRATE_BPS: f64 = 600_000.0;
/// Never estimated below this: audio and the lowest video layer still get through.
pub const MIN_BITRATE_BPS: f64 = 50_000.0;
pub const MAX_BITRATE_BPS: f64 = 50_000_000.0;
/// No feedback for this long while sending: the path is in trouble (or the feedback is lost).
const FEEDBACK_TIMEOUT_US: i64 = 1_500_000;
/// A probe result never takes the estimate below this share of the acknowledged bitrate.
const PROBE_DROP_THROUGHPUT_FRACTION: f64 = 0.85;

/// One packet of a feedback report: what was sent, and when it arrived (receiver's clock),
/// `None` when it was reported lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketResult {
    pub sent: SentPacket,
    pub arrived_us: Option<i64>,
}

/// The figures behind a transport's estimate, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EstimateStats {
    pub target_bps: f64,
    pub delay_based_bps: f64,
    pub loss_cap_bps: Option<f64>,
    pub acked_bps: Option<f64>,
    pub loss_fraction: Option<f64>,
    pub rtt_us: Option<i64>,
    pub overusing: bool,
    pub probes_sent: u64,
    pub last_probe_bps: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct SendSideBwe {
    delay: DelayBasedBwe,
    acked: AckedBitrate,
    loss: LossBasedCap,
    probe_estimator: ProbeEstimator,
    probes: ProbeController,
    /// A probe decided on by a result, to be sent at the next poll.
    next_probe: Option<ProbeCluster>,
    probe_cap_bps: f64,
    srtt_us: Option<i64>,
    target_bps: f64,
    last_feedback_us: Option<i64>,
    last_timeout_decrease_us: Option<i64>,
    /// Reused for each feedback's received packets.
    received: Vec<PacketTiming>,
    probes_sent: u64,
    last_probe_bps: Option<f64>,
    remb_seen: bool,
}

impl Default for SendSideBwe {
    fn default() -> Self {
        SendSideBwe::new(START_BITRATE_BPS)
    }
}

impl SendSideBwe {
    pub fn new(start_bps: f64) -> Self {
        SendSideBwe {
            delay: DelayBasedBwe::new(start_bps, MIN_BITRATE_BPS, MAX_BITRATE_BPS),
            acked: AckedBitrate::new(),
            loss: LossBasedCap::new(),
            probe_estimator: ProbeEstimator::new(),
            probes: ProbeController::new(),
            next_probe: None,
            probe_cap_bps: MAX_BITRATE_BPS,
            srtt_us: None,
            target_bps: start_bps,
            last_feedback_us: None,
            last_timeout_decrease_us: None,
            received: Vec::new(),
            probes_sent: 0,
            last_probe_bps: None,
            remb_seen: false,
        }
    }

    /// What the transport may send, in bits per second.
    pub fn target_bps(&self) -> f64 {
        self.target_bps
    }

    /// Whether the target rests on evidence (a probe result, an overuse, seconds of measured
    /// throughput, or the subscriber's REMB) rather than on the start value.
    pub fn is_established(&self) -> bool {
        self.delay.is_initialized() || self.remb_seen
    }

    pub fn stats(&self) -> EstimateStats {
        EstimateStats {
            target_bps: self.target_bps,
            delay_based_bps: self.delay.estimate(),
            loss_cap_bps: self.loss.cap(),
            acked_bps: self.acked.bitrate(),
            loss_fraction: self.loss.loss_fraction(),
            rtt_us: self.srtt_us,
            overusing: self.delay.usage() == Usage::Overusing,
            probes_sent: self.probes_sent,
            last_probe_bps: self.last_probe_bps,
        }
    }

    /// One transport-wide feedback report, its packets in sequence order, received at `now_us`
    /// (the clock send times are on).
    pub fn on_feedback(&mut self, results: &[PacketResult], now_us: i64) {
        if results.is_empty() {
            return;
        }
        self.last_feedback_us = Some(now_us);
        let mut received = std::mem::take(&mut self.received);
        received.clear();
        let mut newest_sent = None;
        let mut lost = 0;
        for result in results {
            match result.arrived_us {
                Some(arrived_us) => {
                    received.push(PacketTiming { sent_us: result.sent.sent_us, arrived_us, size: result.sent.size });
                    newest_sent = newest_sent.max(Some(result.sent.sent_us));
                    if result.sent.probe != 0 {
                        self.probe_estimator.on_packet(result.sent.probe, result.sent.sent_us, arrived_us, result.sent.size);
                    }
                }
                None => lost += 1,
            }
        }
        if let Some(sent) = newest_sent {
            // The newest packet's round trip includes the least of the receiver's hold time.
            let sample = (now_us - sent).max(1);
            let srtt = self.srtt_us.map_or(sample, |s| s + (sample - s) / 8);
            self.srtt_us = Some(srtt);
            self.delay.set_rtt(srtt);
        }
        received.sort_by_key(|p| p.arrived_us);
        for packet in &received {
            self.acked.on_packet(packet.arrived_us, packet.size);
        }
        let acked = self.acked.bitrate();
        let mut probe = self.probe_estimator.take_estimate();
        if let (Some(result), Some(acked)) = (probe.as_mut(), acked) {
            *result = result.max(self.delay.estimate().min(acked * PROBE_DROP_THROUGHPUT_FRACTION));
        }
        let delay_bps = self.delay.on_feedback(&received, acked, probe, now_us);
        if let Some(result) = probe {
            self.last_probe_bps = Some(result);
            self.loss.on_probe(result);
            if let Some(next) = self.probes.on_result(result, now_us, self.probe_cap_bps) {
                self.next_probe = Some(next);
            }
        }
        let rtt = self.srtt_us.unwrap_or(super::aimd::DEFAULT_RTT_US);
        let cap = self.loss.on_feedback(lost, results.len() as u32, self.target_bps, delay_bps, rtt, now_us);
        self.target_bps = delay_bps.min(cap.unwrap_or(f64::INFINITY)).clamp(MIN_BITRATE_BPS, MAX_BITRATE_BPS);
        self.received = received;
    }

    /// Timers: a feedback silence while packets went out lowers the target by 20% a second.
    /// `last_sent_us` is when the transport last sent a packet the feedback should cover.
    pub fn on_tick(&mut self, last_sent_us: Option<i64>, now_us: i64) {
        let Some(last_feedback) = self.last_feedback_us else { return };
        let sending = last_sent_us.is_some_and(|sent| sent > last_feedback + 200_000);
        if sending
            && now_us - last_feedback > FEEDBACK_TIMEOUT_US
            && self.last_timeout_decrease_us.is_none_or(|last| now_us - last >= 1_000_000)
        {
            self.target_bps = (self.target_bps * 0.8).max(MIN_BITRATE_BPS);
            self.delay.set_estimate(self.target_bps, now_us);
            self.last_timeout_decrease_us = Some(now_us);
        }
    }

    /// The probe to send now, if any: `wanted_bps` is what the transport's consumers would
    /// take unconstrained; probing goes no higher than `cap_bps`.
    pub fn poll_probe(&mut self, wanted_bps: f64, cap_bps: f64, now_us: i64) -> Option<ProbeCluster> {
        self.probe_cap_bps = cap_bps;
        let cluster = match self.next_probe.take() {
            Some(next) => Some(next),
            None => {
                let congested = self.delay.usage() == Usage::Overusing || self.loss.loss_fraction().is_some_and(|f| f > 0.02);
                self.probes.poll(self.target_bps, wanted_bps, cap_bps, congested, now_us)
            }
        }?;
        self.probe_estimator.expect(cluster);
        self.probes_sent += 1;
        Some(cluster)
    }

    /// A REMB from the subscriber (a transport whose consumers negotiated REMB instead of
    /// transport-cc): the browser's own receive-side estimate is the target.
    pub fn on_remb(&mut self, bps: f64) {
        self.remb_seen = true;
        self.target_bps = bps.clamp(MIN_BITRATE_BPS, MAX_BITRATE_BPS);
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::{Link, Sim};

    /// The target every 100 ms, for a failing test's message and the printed curve.
    fn curve(sim: &mut Sim, duration_ms: i64) -> Vec<(i64, f64)> {
        let mut points = Vec::new();
        sim.run(duration_ms * 1000, |at, target| points.push((at / 1000, target)));
        points
    }

    /// When the target first passes `test`, in ms since the curve's start.
    fn first_time(points: &[(i64, f64)], test: impl Fn(f64) -> bool) -> Option<i64> {
        let start = points.first().map_or(0, |(at, _)| at - 100);
        points.iter().find(|(_, t)| test(*t)).map(|(at, _)| at - start)
    }

    fn print(name: &str, points: &[(i64, f64)]) {
        let line: Vec<String> = points.iter().step_by(5).map(|(at, t)| format!("{at}ms:{:.0}k", t / 1000.0)).collect();
        println!("{name}: {}", line.join(" "));
    }

    #[test]
    fn on_a_clean_link_probes_lift_the_start_estimate_to_what_is_wanted_within_a_second() {
        let mut sim = Sim::new(Link::clean(20e6), 2_500_000.0);
        let points = curve(&mut sim, 3000);
        print("clean 20 Mbps, 2.5 Mbps wanted", &points);
        let reached = first_time(&points, |t| t >= 2_500_000.0).expect("reaches what is wanted");
        assert!(reached <= 1000, "reached 2.5 Mbps at {reached} ms");
        assert!(points.iter().skip_while(|(at, _)| *at < reached).all(|(_, t)| *t >= 2_000_000.0), "and stays there");
    }

    #[test]
    fn a_300_kbps_bottleneck_brings_the_estimate_down_within_seconds_and_keeps_it_there() {
        let link = Link { capacity_bps: 300_000.0, queue_limit_us: 250_000, propagation_us: 20_000, lose_every: 0 };
        let mut sim = Sim::new(link, 1_500_000.0);
        let points = curve(&mut sim, 20_000);
        print("300 kbps bottleneck", &points);
        let down = first_time(&points, |t| t < 340_000.0).expect("comes down");
        assert!(down <= 3000, "below 340 kbps at {down} ms");
        let later: Vec<f64> = points.iter().filter(|(at, _)| *at > 5000).map(|(_, t)| *t).collect();
        let mean = later.iter().sum::<f64>() / later.len() as f64;
        assert!((200_000.0..360_000.0).contains(&mean), "settles near the link's rate: mean {mean}");
        assert!(later.iter().all(|t| *t < 500_000.0), "no excursion far above it: {later:?}");
    }

    #[test]
    fn a_queue_growing_without_loss_is_seen_by_the_delay_detector() {
        let mut sim = Sim::new(Link::clean(5e6), 1_500_000.0);
        sim.run(3_000_000, |_, _| {});
        assert!(sim.bwe.target_bps() >= 1_500_000.0);
        // The link drops to 600 kbps with a buffer deep enough never to lose.
        sim.link = Link { capacity_bps: 600_000.0, queue_limit_us: 60_000_000, propagation_us: 20_000, lose_every: 0 };
        let points = curve(&mut sim, 10_000);
        print("5 Mbps -> 600 kbps, no loss", &points);
        let down = first_time(&points, |t| t < 650_000.0).expect("comes down on delay alone");
        assert!(down <= 2000, "below 650 kbps {down} ms after the drop");
        assert!(sim.bwe.stats().loss_fraction.is_none_or(|f| f == 0.0));
    }

    #[test]
    fn loss_without_queueing_is_seen_by_the_loss_cap() {
        let mut sim = Sim::new(Link::clean(50e6), 2_000_000.0);
        sim.run(3_000_000, |_, _| {});
        // A quarter of the packets vanish; nothing queues.
        sim.link.lose_every = 4;
        let points = curve(&mut sim, 5000);
        print("25% loss, no queue", &points);
        let stats = sim.bwe.stats();
        assert!(stats.loss_cap_bps.is_some(), "{stats:?}");
        assert!(sim.bwe.target_bps() < 1_000_000.0, "{points:?}");
    }

    #[test]
    fn when_the_bottleneck_clears_demand_probes_climb_back_within_seconds() {
        let link = Link { capacity_bps: 300_000.0, queue_limit_us: 250_000, propagation_us: 20_000, lose_every: 0 };
        let mut sim = Sim::new(link, 1_500_000.0);
        sim.run(10_000_000, |_, _| {});
        assert!(sim.bwe.target_bps() < 400_000.0);
        sim.link = Link::clean(20e6);
        let points = curve(&mut sim, 10_000);
        print("300 kbps -> 20 Mbps", &points);
        let up = first_time(&points, |t| t >= 1_500_000.0).expect("climbs back to what is wanted");
        assert!(up <= 5000, "back at 1.5 Mbps {up} ms after the link cleared");
    }
}
