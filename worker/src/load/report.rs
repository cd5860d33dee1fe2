//! Turning runs into the figures the issue asks for, and the table the README shows.

use crate::load::relay::RelayRun;
use crate::load::synthetic::{DELTA_FRAME_PACKETS, KEYFRAME_INTERVAL_FRAMES, KEYFRAME_PACKETS, VIDEO_FPS};
use crate::load::worker_run::WorkerRun;

/// Packets per second of one synthetic 1 Mbps video stream (about 95).
pub fn video_packets_per_second() -> f64 {
    let per_interval = (KEYFRAME_INTERVAL_FRAMES as usize - 1) * DELTA_FRAME_PACKETS + KEYFRAME_PACKETS;
    per_interval as f64 * VIDEO_FPS as f64 / KEYFRAME_INTERVAL_FRAMES as f64
}

/// One line of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// How subscribers were reached and what was published ([`crate::load::Media::label`]).
    pub media: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub consumers: usize,
    /// RTP packets the worker received from publishers per second (every simulcast encoding).
    pub received_per_second: f64,
    /// Packets the worker forwarded per second of the window.
    pub forwarded_per_second: f64,
    /// Worker process CPU per forwarded packet (copy sent to a consumer), µs. The packets
    /// received count in the cost but not in the divisor: a simulcast encoding that nobody
    /// gets makes each forwarded packet dearer.
    pub worker_us_per_packet: f64,
    /// 1 / the above: what one fully busy core forwards.
    pub packets_per_second_per_core: f64,
    /// That, in consumers of a 1 Mbps video stream.
    pub video_consumers_per_core: f64,
    /// Share of a core the worker's media thread used: how loaded the run was.
    pub media_thread_load: Option<f64>,
    /// The relay's CPU per forwarded packet, µs, and the worker's cost as a multiple of it.
    pub relay_us_per_packet: Option<f64>,
    pub ratio_to_relay: Option<f64>,
    pub loss_percent: f64,
    pub reorder_percent: f64,
    /// Publisher send to subscriber receive, ms.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The relay's p99 in the same shape: how low this machine lets the worker's go.
    pub relay_latency_p99_ms: Option<f64>,
    /// Worker RSS added per subscriber (one transport, one consumer per producer), KiB.
    pub rss_per_subscriber_kib: f64,
    pub rss_per_consumer_kib: f64,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

pub fn row(worker: &WorkerRun, relay: Option<&RelayRun>) -> Row {
    let window = worker.window.as_secs_f64().max(1e-9);
    let forwarded = worker.forwarded.max(1) as f64;
    // The worker process's own accounting (the relay's thread's), as the issue asks: the
    // pinned core's busy time also counts whatever else ran there. Where the two disagree,
    // fanout-load says so ([`other_work_on_core`]).
    let us = worker.cpu_seconds * 1e6 / forwarded;
    let relay_us = relay.filter(|r| r.forwarded > 0).map(|r| r.cpu_seconds * 1e6 / r.forwarded as f64);
    let consumers = worker.subscribers * 2 * worker.publishers;
    let added_kib = worker.rss_after_kib.saturating_sub(worker.rss_before_kib) as f64;
    let counts = worker.receiver.counts;
    Row {
        media: worker.media.label(),
        publishers: worker.publishers,
        subscribers: worker.subscribers,
        consumers,
        received_per_second: worker.received as f64 / window,
        forwarded_per_second: worker.forwarded as f64 / window,
        worker_us_per_packet: us,
        packets_per_second_per_core: if us > 0.0 { 1e6 / us } else { 0.0 },
        video_consumers_per_core: if us > 0.0 { 1e6 / us / video_packets_per_second() } else { 0.0 },
        media_thread_load: worker.media_cpu_seconds.map(|s| s / window),
        relay_us_per_packet: relay_us,
        ratio_to_relay: relay_us.filter(|r| *r > 0.0).map(|r| us / r),
        loss_percent: percent(counts.lost, counts.expected),
        reorder_percent: percent(counts.reordered, counts.expected),
        latency_p50_ms: worker.receiver.latency.quantile_ms(0.5),
        latency_p99_ms: worker.receiver.latency.quantile_ms(0.99),
        latency_max_ms: worker.receiver.latency.max_ms(),
        relay_latency_p99_ms: relay.map(|r| r.receiver.latency.quantile_ms(0.99)),
        rss_per_subscriber_kib: added_kib / worker.subscribers.max(1) as f64,
        rss_per_consumer_kib: added_kib / consumers.max(1) as f64,
    }
}

/// How much longer the worker's pinned core ran tasks than the worker itself, as a share of
/// the worker's time, when that is over a tenth: another program shared the core, which makes
/// the figures of that run unreliable.
///
/// Only judged when the worker kept its core at least a fifth busy. The core's figure comes
/// from scheduler ticks, which charge a whole tick to whatever runs at that instant; a worker
/// that wakes briefly a few hundred times a second is then over- or under-counted several
/// times over, while its own figure is exact ([`crate::load::procfs::process_cpu_seconds`]).
pub fn other_work_on_core(worker: &WorkerRun) -> Option<f64> {
    let core = worker.core_busy_seconds?;
    if worker.cpu_seconds < 0.2 * worker.window.as_secs_f64() {
        return None;
    }
    let extra = (core - worker.cpu_seconds) / worker.cpu_seconds.max(1e-9);
    (extra > 0.1).then_some(extra)
}

/// The sweep as a Markdown table, ready for the README.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| subscribers over, video | publishers × subscribers | received pkt/s | forwarded pkt/s | worker core load | worker µs/pkt | relay µs/pkt | worker/relay | pkt/s per core | 1 Mbps consumers per core | loss | reordered | latency p50 / p99 / max (ms) | relay latency p99 (ms) | RSS per subscriber |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_string(), f);
        out.push_str(&format!(
            "| {} | {} × {} | {:.0} | {:.0} | {} | {:.2} | {} | {} | {:.0} | {:.0} | {:.3}% | {:.3}% | {:.2} / {:.2} / {:.2} | {} | {:.1} KiB |\n",
            r.media,
            r.publishers,
            r.subscribers,
            r.received_per_second,
            r.forwarded_per_second,
            opt(r.media_thread_load, &|l| format!("{:.0}%", l * 100.0)),
            r.worker_us_per_packet,
            opt(r.relay_us_per_packet, &|v| format!("{v:.2}")),
            opt(r.ratio_to_relay, &|v| format!("{v:.2}x")),
            r.packets_per_second_per_core,
            r.video_consumers_per_core,
            r.loss_percent,
            r.reorder_percent,
            r.latency_p50_ms,
            r.latency_p99_ms,
            r.latency_max_ms,
            opt(r.relay_latency_p99_ms, &|v| format!("{v:.2}")),
            r.rss_per_subscriber_kib,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::publisher::PublisherReport;
    use crate::load::receiver::ReceiverReport;
    use crate::load::reception::ReceptionCounts;
    use std::time::Duration;

    fn worker_run() -> WorkerRun {
        let mut receiver = ReceiverReport { counts: ReceptionCounts { expected: 1000, received: 990, lost: 10, reordered: 5, duplicates: 0 }, ..Default::default() };
        receiver.latency.record(1_000_000);
        WorkerRun {
            subscribers: 100,
            publishers: 1,
            media: crate::load::Media::default(),
            window: Duration::from_secs(10),
            forwarded: 1_000_000,
            received: 1_450,
            cpu_seconds: 3.0,
            media_cpu_seconds: Some(2.5),
            core_busy_seconds: None,
            rss_before_kib: 10_000,
            rss_after_kib: 12_000,
            setup: Duration::from_secs(1),
            receiver,
            publisher: PublisherReport::default(),
        }
    }

    #[test]
    fn figures_follow_from_the_counters() {
        let mut relay = RelayRun {
            subscribers: 100,
            window: Duration::from_secs(10),
            forwarded: 1_000_000,
            cpu_seconds: 2.0,
            core_busy_seconds: Some(1.5),
            receiver: ReceiverReport::default(),
            publisher: PublisherReport::default(),
        };
        relay.receiver.latency.record(700_000);
        let r = row(&worker_run(), Some(&relay));
        assert_eq!(r.consumers, 200);
        assert_eq!(r.forwarded_per_second, 100_000.0);
        assert!((r.worker_us_per_packet - 3.0).abs() < 1e-9);
        assert!((r.packets_per_second_per_core - 333_333.3).abs() < 1.0);
        assert!((r.ratio_to_relay.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(r.media_thread_load, Some(0.25));
        assert_eq!(other_work_on_core(&worker_run()), None, "not pinned: nothing to compare");
        assert!((r.loss_percent - 1.0).abs() < 1e-9);
        assert!((r.reorder_percent - 0.5).abs() < 1e-9);
        assert_eq!((r.rss_per_subscriber_kib, r.rss_per_consumer_kib), (20.0, 10.0));
        let table = table(std::slice::from_ref(&r));
        assert!(table.contains("| UDP | 1 × 100 | 145 | 100000 | 25% | 3.00 | 2.00 | 1.50x | 333333 |"), "{table}");
        assert_eq!(table.lines().nth(1).map(|l| l.matches('|').count()), table.lines().nth(2).map(|l| l.matches('|').count()));
        let relay_p99 = r.relay_latency_p99_ms.unwrap();
        assert!((0.6..0.8).contains(&relay_p99), "the relay's own latency, {relay_p99} ms");
        assert!(table.contains(&format!("| {relay_p99:.2} | 20.0 KiB |")), "{table}");
    }

    #[test]
    fn a_core_busier_than_the_worker_is_flagged() {
        let mut run = worker_run();
        run.core_busy_seconds = Some(3.2);
        assert_eq!(other_work_on_core(&run), None, "within a tenth: accounting noise");
        run.core_busy_seconds = Some(4.5);
        assert!((other_work_on_core(&run).unwrap() - 0.5).abs() < 1e-9);
        // The figures stay the process's own.
        assert!((row(&run, None).worker_us_per_packet - 3.0).abs() < 1e-9);
        // A worker using a tenth of its core: the core's tick-sampled figure cannot judge it.
        run.cpu_seconds = 1.0;
        assert_eq!(other_work_on_core(&run), None);
    }

    #[test]
    fn a_one_megabit_stream_is_about_95_packets_a_second() {
        assert!((90.0..100.0).contains(&video_packets_per_second()));
        let r = row(&worker_run(), None);
        assert_eq!((r.relay_us_per_packet, r.ratio_to_relay), (None, None));
        assert!((r.video_consumers_per_core - 333_333.3 / video_packets_per_second()).abs() < 1.0);
    }
}
