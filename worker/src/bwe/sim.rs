//! A simulated path for the estimator's tests: a sender that forwards media at what its
//! estimate allows (and pads probes), one FIFO bottleneck with a rate, a queue limit, loss
//! and propagation delay, and a receiver that reports every 100 ms like Chrome does. Time is
//! simulated; nothing sleeps.

use std::collections::VecDeque;

use super::history::SendHistory;
use super::probe::{PROBE_DURATION_US, ProbeCluster};
use super::send_side::{PacketResult, SendSideBwe};

const STEP_US: i64 = 5_000;
const FRAME_US: i64 = 33_000;
const FEEDBACK_INTERVAL_US: i64 = 100_000;
/// The receiver's clock is unrelated to the sender's.
const RECEIVER_CLOCK_OFFSET_US: i64 = 7_777_777_777;

/// The bottleneck.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub capacity_bps: f64,
    /// Packets that would wait longer than this in the queue are dropped (a tail-drop buffer).
    pub queue_limit_us: i64,
    pub propagation_us: i64,
    /// Every n-th packet is lost on the way, whatever the queue (0: none).
    pub lose_every: u32,
}

impl Link {
    pub fn clean(capacity_bps: f64) -> Link {
        Link { capacity_bps, queue_limit_us: 300_000, propagation_us: 20_000, lose_every: 0 }
    }
}

/// A packet's sequence number and its arrival on the receiver's clock (`None`: lost).
type Arrival = (u16, Option<i64>);

pub struct Sim {
    pub bwe: SendSideBwe,
    pub history: SendHistory,
    pub link: Link,
    /// What the consumers would take unconstrained.
    pub wanted_bps: f64,
    pub now_us: i64,
    link_free_us: i64,
    sent_count: u32,
    /// Packets on their way or waiting to be reported.
    unreported: VecDeque<Arrival>,
    /// Reports on their way back: (delivery time, results).
    reports: VecDeque<(i64, Vec<Arrival>)>,
    next_frame_us: i64,
    next_feedback_us: i64,
    probe: Option<(ProbeCluster, i64, usize)>,
    /// The highest queueing delay seen, in µs.
    pub max_queue_us: i64,
    pub bytes_delivered: u64,
}

impl Sim {
    pub fn new(link: Link, wanted_bps: f64) -> Sim {
        Sim {
            bwe: SendSideBwe::default(),
            history: SendHistory::new(1),
            link,
            wanted_bps,
            now_us: 0,
            link_free_us: 0,
            sent_count: 0,
            unreported: VecDeque::new(),
            reports: VecDeque::new(),
            next_frame_us: 0,
            next_feedback_us: FEEDBACK_INTERVAL_US,
            probe: None,
            max_queue_us: 0,
            bytes_delivered: 0,
        }
    }

    /// What the sender sends: what its consumers want, limited by the estimate.
    fn media_bps(&self) -> f64 {
        self.wanted_bps.min(self.bwe.target_bps())
    }

    fn send(&mut self, size: usize) {
        let probe = self.probe.map_or(0, |(c, _, _)| c.id);
        let sequence = self.history.record(size, self.now_us, probe);
        self.sent_count += 1;
        let lost_on_the_way = self.link.lose_every > 0 && self.sent_count.is_multiple_of(self.link.lose_every);
        let start = self.link_free_us.max(self.now_us);
        let queued = start - self.now_us;
        let arrival = if queued > self.link.queue_limit_us || lost_on_the_way {
            None
        } else {
            self.max_queue_us = self.max_queue_us.max(queued);
            self.link_free_us = start + (size as f64 * 8e6 / self.link.capacity_bps) as i64;
            self.bytes_delivered += size as u64;
            Some(self.link_free_us + self.link.propagation_us + RECEIVER_CLOCK_OFFSET_US)
        };
        self.unreported.push_back((sequence, arrival));
    }

    /// Runs for `duration_us`, calling `observe(now_us, target)` every 100 ms.
    pub fn run(&mut self, duration_us: i64, mut observe: impl FnMut(i64, f64)) {
        let end = self.now_us + duration_us;
        while self.now_us < end {
            self.step();
            if self.now_us.rem_euclid(100_000) == 0 {
                observe(self.now_us, self.bwe.target_bps());
            }
        }
    }

    fn step(&mut self) {
        self.now_us += STEP_US;
        // Media: a frame every 33 ms, its packets 1 ms apart (as a publisher's pacer sends).
        if self.now_us >= self.next_frame_us {
            self.next_frame_us += FRAME_US;
            let mut bytes = (self.media_bps() * FRAME_US as f64 / 8e6) as usize;
            while bytes > 0 {
                let size = bytes.min(1200);
                self.send(size);
                bytes -= size;
            }
        }
        // Probes: padding paced in 5 ms steps up to the cluster's rate (media included).
        if self.probe.is_none() && self.now_us.rem_euclid(20_000) == 0 {
            let cap = (self.wanted_bps * 2.0).max(1e6);
            if let Some(cluster) = self.bwe.poll_probe(self.wanted_bps, cap, self.now_us) {
                self.probe = Some((cluster, self.now_us, 0));
            }
        }
        if let Some((cluster, started, sent)) = self.probe {
            let padding_bps = (cluster.target_bps - self.media_bps()).max(cluster.target_bps / 4.0);
            let due = (padding_bps * (self.now_us - started + STEP_US) as f64 / 8e6) as usize;
            // Small enough packets that even a slow probe has ten.
            let size = (cluster.bytes() / 10).clamp(200, 1200);
            let mut sent = sent;
            while sent + size <= due {
                self.send(size);
                sent += size;
            }
            self.probe = (self.now_us - started < PROBE_DURATION_US).then_some((cluster, started, sent));
        }
        // The receiver reports what has arrived by now.
        if self.now_us >= self.next_feedback_us {
            self.next_feedback_us += FEEDBACK_INTERVAL_US;
            let receiver_now = self.now_us + RECEIVER_CLOCK_OFFSET_US;
            let last_arrived = self.unreported.iter().rposition(|(_, a)| a.is_some_and(|a| a <= receiver_now));
            if let Some(last) = last_arrived {
                let report: Vec<_> = self.unreported.drain(..=last).collect();
                self.reports.push_back((self.now_us + self.link.propagation_us, report));
            }
        }
        while self.reports.front().is_some_and(|(at, _)| *at <= self.now_us) {
            let (_, report) = self.reports.pop_front().unwrap();
            let results: Vec<PacketResult> = report
                .iter()
                .filter_map(|(seq, arrived)| Some(PacketResult { sent: self.history.get(*seq)?, arrived_us: *arrived }))
                .collect();
            self.bwe.on_feedback(&results, self.now_us);
        }
        self.bwe.on_tick(None, self.now_us);
    }
}
