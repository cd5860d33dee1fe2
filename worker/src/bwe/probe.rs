//! Probing: sending faster than the media does, for a moment, to learn what the path carries
//! above the current send rate. Without it an estimate could never rise above what is sent:
//! AIMD's increase stops at 1.5 times the acknowledged bitrate.
//!
//! [`ProbeController`] decides when to probe and at what rate (libwebrtc's `ProbeController`,
//! reduced to what an SFU needs): at start, at 3 and then 6 times the start bitrate; further
//! up, at twice each result, while results reach 70% of what was probed; and whenever the
//! consumers want more than the estimate, every few seconds, at twice the estimate. A probe
//! is a [`ProbeCluster`]: every packet sent on the transport while it lasts carries its id,
//! and the sender adds padding to reach its rate.
//!
//! [`ProbeEstimator`] turns a cluster's feedback into a rate (libwebrtc's
//! `ProbeBitrateEstimator`): what was sent over the cluster's send span and what arrived over
//! its arrival span. When less arrived than was sent, the link is saturated and its capacity
//! is 95% of the arrival rate; otherwise the send rate is a lower bound on it.

/// Padding packets are spread over this.
pub const PROBE_DURATION_US: i64 = 40_000;
/// A cluster with fewer packets measures nothing.
pub const MIN_PROBE_PACKETS: u32 = 5;
const MIN_RECEIVED_RATIO: f64 = 0.8;
const MAX_VALID_RATIO: f64 = 2.0;
const MIN_RATIO_FOR_UNSATURATED_LINK: f64 = 0.9;
const TARGET_UTILIZATION: f64 = 0.95;
const MAX_PROBE_INTERVAL_US: i64 = 1_000_000;
/// A cluster's feedback is awaited this long.
const PROBE_TIMEOUT_US: i64 = 1_000_000;
/// How often a start probe that measured nothing is sent again.
const START_RETRIES: u8 = 2;
/// Further probing continues while results reach this share of the probed rate.
const FURTHER_PROBE_THRESHOLD: f64 = 0.7;
/// How often to probe while consumers want more than the estimate.
pub const DEMAND_PROBE_INTERVAL_US: i64 = 3_000_000;

/// One probe: send at `target_bps` for [`PROBE_DURATION_US`], tagging what is sent with `id`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeCluster {
    /// 1-255; 0 means "not a probe" in the send history.
    pub id: u8,
    pub target_bps: f64,
}

impl ProbeCluster {
    /// Bytes the cluster should carry in all.
    pub fn bytes(&self) -> usize {
        (self.target_bps * PROBE_DURATION_US as f64 / 8e6) as usize
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Aggregate {
    id: u8,
    target_bps: f64,
    first_sent_us: i64,
    last_sent_us: i64,
    size_last_sent: usize,
    first_arrived_us: i64,
    last_arrived_us: i64,
    size_first_arrived: usize,
    size_total: usize,
    packets: u32,
}

/// Rates measured from clusters' feedback.
#[derive(Debug, Clone, Default)]
pub struct ProbeEstimator {
    /// The clusters being measured (few are in flight at once).
    clusters: Vec<Aggregate>,
    last_estimate: Option<f64>,
}

impl ProbeEstimator {
    pub fn new() -> Self {
        ProbeEstimator::default()
    }

    /// A cluster whose packets are on their way (its target sets how much must arrive).
    pub fn expect(&mut self, cluster: ProbeCluster) {
        self.clusters.retain(|c| c.id != cluster.id);
        if self.clusters.len() >= 4 {
            self.clusters.remove(0);
        }
        self.clusters.push(Aggregate { id: cluster.id, target_bps: cluster.target_bps, first_sent_us: i64::MAX, first_arrived_us: i64::MAX, last_sent_us: i64::MIN, last_arrived_us: i64::MIN, ..Aggregate::default() });
    }

    /// A received packet of cluster `id`.
    pub fn on_packet(&mut self, id: u8, sent_us: i64, arrived_us: i64, size: usize) {
        let Some(cluster) = self.clusters.iter_mut().find(|c| c.id == id) else { return };
        if sent_us < cluster.first_sent_us {
            cluster.first_sent_us = sent_us;
        }
        if sent_us > cluster.last_sent_us {
            cluster.last_sent_us = sent_us;
            cluster.size_last_sent = size;
        }
        if arrived_us < cluster.first_arrived_us {
            cluster.first_arrived_us = arrived_us;
            cluster.size_first_arrived = size;
        }
        cluster.last_arrived_us = cluster.last_arrived_us.max(arrived_us);
        cluster.size_total += size;
        cluster.packets += 1;
        let min_bytes = MIN_RECEIVED_RATIO * cluster.target_bps * PROBE_DURATION_US as f64 / 8e6;
        if f64::from(cluster.packets) < MIN_RECEIVED_RATIO * f64::from(MIN_PROBE_PACKETS) || (cluster.size_total as f64) < min_bytes {
            return;
        }
        let send_interval = cluster.last_sent_us - cluster.first_sent_us;
        let receive_interval = cluster.last_arrived_us - cluster.first_arrived_us;
        if !(1..=MAX_PROBE_INTERVAL_US).contains(&send_interval) || !(1..=MAX_PROBE_INTERVAL_US).contains(&receive_interval) {
            return;
        }
        // The last packet sent and the first received span no interval of their own.
        let send_bps = 8e6 * (cluster.size_total - cluster.size_last_sent) as f64 / send_interval as f64;
        let receive_bps = 8e6 * (cluster.size_total - cluster.size_first_arrived) as f64 / receive_interval as f64;
        if receive_bps / send_bps > MAX_VALID_RATIO {
            return;
        }
        let mut estimate = send_bps.min(receive_bps);
        if receive_bps < MIN_RATIO_FOR_UNSATURATED_LINK * send_bps {
            estimate = TARGET_UTILIZATION * receive_bps;
        }
        self.last_estimate = Some(estimate);
    }

    /// The latest result since the last call.
    pub fn take_estimate(&mut self) -> Option<f64> {
        self.last_estimate.take()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Nothing sent yet.
    Start,
    /// A cluster is out; its result (or its timeout) decides what follows.
    Waiting { cluster: ProbeCluster, sent_us: i64, further: bool },
    Idle,
}

/// When to probe, and how fast.
#[derive(Debug, Clone)]
pub struct ProbeController {
    phase: Phase,
    next_id: u8,
    last_probe_us: Option<i64>,
    /// Set at the first probe: the second probe of the start sequence (6x start).
    second_start_probe: Option<f64>,
    /// Start probes sent again after measuring nothing.
    start_retries: u8,
}

impl Default for ProbeController {
    fn default() -> Self {
        ProbeController { phase: Phase::Start, next_id: 1, last_probe_us: None, second_start_probe: None, start_retries: 0 }
    }
}

impl ProbeController {
    pub fn new() -> Self {
        ProbeController::default()
    }

    /// A probe's result arrived.
    pub fn on_result(&mut self, bps: f64, now_us: i64, cap_bps: f64) -> Option<ProbeCluster> {
        let Phase::Waiting { cluster, further, .. } = self.phase else { return None };
        self.phase = Phase::Idle;
        if let Some(second) = self.second_start_probe.take() {
            if bps >= FURTHER_PROBE_THRESHOLD * cluster.target_bps && second.min(cap_bps) > bps {
                return Some(self.send(second.min(cap_bps), now_us, true));
            }
            return None;
        }
        if further && bps >= FURTHER_PROBE_THRESHOLD * cluster.target_bps && 2.0 * bps <= cap_bps {
            return Some(self.send(2.0 * bps, now_us, true));
        }
        if further && bps >= FURTHER_PROBE_THRESHOLD * cluster.target_bps && cap_bps > bps * 1.1 {
            return Some(self.send(cap_bps, now_us, false));
        }
        None
    }

    /// What to probe now, if anything: `estimate_bps` is the transport's estimate,
    /// `wanted_bps` what its consumers would take unconstrained, `cap_bps` the most worth
    /// probing for; `congested` holds probing back while the path is over-using or losing.
    pub fn poll(&mut self, estimate_bps: f64, wanted_bps: f64, cap_bps: f64, congested: bool, now_us: i64) -> Option<ProbeCluster> {
        match self.phase {
            Phase::Start => {
                self.second_start_probe = Some(6.0 * estimate_bps);
                let target = (3.0 * estimate_bps).min(cap_bps.max(estimate_bps));
                Some(self.send(target, now_us, false))
            }
            Phase::Waiting { sent_us, .. } => {
                if now_us - sent_us > PROBE_TIMEOUT_US {
                    // A start probe that measured nothing (its feedback lost, the stream it
                    // rode on not yet known to the receiver) is tried again rather than
                    // leaving the estimate at its start value until a demand probe.
                    let start_probe = self.second_start_probe.take().is_some();
                    if start_probe && self.start_retries < START_RETRIES {
                        self.start_retries += 1;
                        self.phase = Phase::Start;
                    } else {
                        self.phase = Phase::Idle;
                    }
                }
                None
            }
            Phase::Idle => {
                let due = self.last_probe_us.is_none_or(|last| now_us - last >= DEMAND_PROBE_INTERVAL_US);
                if due && !congested && wanted_bps > 1.1 * estimate_bps {
                    let target = (2.0 * estimate_bps).min(cap_bps).max(estimate_bps * 1.2);
                    return Some(self.send(target, now_us, true));
                }
                None
            }
        }
    }

    fn send(&mut self, target_bps: f64, now_us: i64, further: bool) -> ProbeCluster {
        let cluster = ProbeCluster { id: self.next_id, target_bps };
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.phase = Phase::Waiting { cluster, sent_us: now_us, further };
        self.last_probe_us = Some(now_us);
        cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a cluster sent at `send_bps` over 40 ms whose packets arrive at `arrive_bps`.
    fn measure(send_bps: f64, arrive_bps: f64) -> Option<f64> {
        let cluster = ProbeCluster { id: 7, target_bps: send_bps };
        let mut estimator = ProbeEstimator::new();
        estimator.expect(cluster);
        let size = 1000;
        let packets = cluster.bytes() / size;
        for i in 0..packets as i64 {
            let sent = i * (8e9 / send_bps) as i64;
            let arrived = 50_000 + i * (8e9 / arrive_bps) as i64;
            estimator.on_packet(7, sent, arrived, size);
        }
        estimator.take_estimate()
    }

    #[test]
    fn an_unsaturated_path_measures_the_send_rate() {
        let bps = measure(2_000_000.0, 2_000_000.0).unwrap();
        assert!((1_900_000.0..2_100_000.0).contains(&bps), "{bps}");
    }

    #[test]
    fn a_saturated_path_measures_95_percent_of_what_arrived() {
        let bps = measure(2_000_000.0, 300_000.0).unwrap();
        assert!((270_000.0..300_000.0).contains(&bps), "{bps}");
    }

    #[test]
    fn too_few_packets_measure_nothing() {
        let mut estimator = ProbeEstimator::new();
        estimator.expect(ProbeCluster { id: 1, target_bps: 1e6 });
        for i in 0..3 {
            estimator.on_packet(1, i * 10_000, i * 10_000, 1200);
        }
        assert_eq!(estimator.take_estimate(), None);
    }

    #[test]
    fn start_probes_at_3x_then_6x_then_double_up_to_the_cap() {
        let mut control = ProbeController::new();
        let first = control.poll(600_000.0, 0.0, 10e6, false, 0).unwrap();
        assert_eq!(first.target_bps, 1_800_000.0);
        assert_eq!(control.poll(600_000.0, 0.0, 10e6, false, 10_000), None, "one cluster at a time");
        let second = control.on_result(1_750_000.0, 100_000, 10e6).unwrap();
        assert_eq!(second.target_bps, 3_600_000.0);
        let third = control.on_result(3_500_000.0, 200_000, 10e6).unwrap();
        assert_eq!(third.target_bps, 7_000_000.0);
        let last = control.on_result(6_900_000.0, 300_000, 10e6).unwrap();
        assert_eq!(last.target_bps, 10e6, "the cap, not twice the result");
        assert_eq!(control.on_result(9_800_000.0, 400_000, 10e6), None);
    }

    #[test]
    fn a_start_probe_that_measures_nothing_is_sent_again_after_the_timeout_twice_at_most() {
        let mut control = ProbeController::new();
        let first = control.poll(600_000.0, 0.0, 10e6, false, 0).unwrap();
        assert_eq!(control.poll(600_000.0, 0.0, 10e6, false, 900_000), None, "waiting for its result");
        assert_eq!(control.poll(600_000.0, 0.0, 10e6, false, 1_100_000), None, "timed out");
        let again = control.poll(600_000.0, 0.0, 10e6, false, 1_150_000).expect("the start probe again");
        assert_eq!(again.target_bps, first.target_bps);
        assert_ne!(again.id, first.id);
        control.poll(600_000.0, 0.0, 10e6, false, 2_200_000);
        control.poll(600_000.0, 0.0, 10e6, false, 2_250_000).expect("a second retry");
        control.poll(600_000.0, 0.0, 10e6, false, 3_300_000);
        assert_eq!(control.poll(600_000.0, 0.0, 10e6, false, 3_350_000), None, "no third: demand probes take over");
        // And a retried start probe that measures goes on as the first would have.
        let mut control = ProbeController::new();
        control.poll(600_000.0, 0.0, 10e6, false, 0).unwrap();
        control.poll(600_000.0, 0.0, 10e6, false, 1_100_000);
        control.poll(600_000.0, 0.0, 10e6, false, 1_150_000).unwrap();
        let second = control.on_result(1_750_000.0, 1_250_000, 10e6).expect("the 6x start probe");
        assert_eq!(second.target_bps, 3_600_000.0);
    }

    #[test]
    fn a_saturated_start_probe_ends_the_start_sequence() {
        let mut control = ProbeController::new();
        control.poll(600_000.0, 0.0, 10e6, false, 0).unwrap();
        assert_eq!(control.on_result(280_000.0, 100_000, 10e6), None);
    }

    #[test]
    fn demand_above_the_estimate_probes_every_few_seconds_and_climbs_while_it_succeeds() {
        let mut control = ProbeController::new();
        control.poll(300_000.0, 0.0, 3e6, false, 0);
        control.on_result(280_000.0, 100_000, 3e6);
        // Consumers want 1.5 Mbps; the estimate is 280 kbps.
        assert_eq!(control.poll(280_000.0, 1_500_000.0, 3e6, false, 1_000_000), None, "too soon after the last probe");
        assert_eq!(control.poll(280_000.0, 1_500_000.0, 3e6, true, 3_100_000), None, "not while congested");
        let probe = control.poll(280_000.0, 1_500_000.0, 3e6, false, 3_200_000).unwrap();
        assert_eq!(probe.target_bps, 560_000.0);
        // The link has cleared: each result doubles the next probe, up to the cap.
        let next = control.on_result(540_000.0, 3_400_000, 3e6).unwrap();
        assert_eq!(next.target_bps, 1_080_000.0);
        let next = control.on_result(1_050_000.0, 3_600_000, 3e6).unwrap();
        assert_eq!(next.target_bps, 2_100_000.0);
        let last = control.on_result(2_050_000.0, 3_800_000, 3e6).unwrap();
        assert_eq!(last.target_bps, 3e6);
        assert_eq!(control.on_result(2_900_000.0, 4_000_000, 3e6), None);
    }
}
