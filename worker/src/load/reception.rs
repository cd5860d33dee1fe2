//! What subscribers saw: loss and reordering per received stream, and added latency.
//! Pure bookkeeping; the receive loop feeds it.

/// Sequence-number accounting of one received RTP stream (RFC 3550 appendix A.1 in spirit):
/// expected = highest extended sequence number seen - first + 1 since the window began;
/// lost = expected - received; a packet older than the highest seen is reordered.
#[derive(Debug, Clone, Default)]
pub struct StreamReception {
    /// Highest extended sequence number so far.
    highest: Option<u64>,
    /// Extended sequence number where the counting window starts.
    window_start: Option<u64>,
    received: u64,
    reordered: u64,
    duplicates: u64,
    /// Since the first packet, for the receiver's reports: the first extended sequence
    /// number, packets received, and (expected, received) at the last report.
    first: Option<u64>,
    received_total: u64,
    reported: (u64, u64),
}

/// Counts over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceptionCounts {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
}

impl std::ops::AddAssign for ReceptionCounts {
    fn add_assign(&mut self, o: Self) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
    }
}

impl StreamReception {
    pub fn on_packet(&mut self, sequence: u16) {
        let extended = match self.highest {
            None => (1 << 16) + sequence as u64,
            Some(highest) => {
                // The extended number nearest to the highest one.
                let base = highest & !0xffff;
                [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
                    .into_iter()
                    .map(|b| b + sequence as u64)
                    .min_by_key(|candidate| candidate.abs_diff(highest))
                    .unwrap_or(base + sequence as u64)
            }
        };
        self.first.get_or_insert(extended);
        if self.highest.is_none_or(|h| extended != h) {
            self.received_total += 1;
        }
        let start = *self.window_start.get_or_insert(extended);
        if extended < start {
            // From before the window: neither expected nor received in it.
            return;
        }
        match self.highest {
            Some(highest) if extended == highest => self.duplicates += 1,
            Some(highest) if extended < highest => {
                self.reordered += 1;
                self.received += 1;
            }
            _ => {
                self.highest = Some(extended);
                self.received += 1;
            }
        }
    }

    /// Starts a new counting window after the last packet seen (the warm-up ends).
    pub fn restart_window(&mut self) {
        self.window_start = self.highest.map(|h| h + 1);
        self.received = 0;
        self.reordered = 0;
        self.duplicates = 0;
    }

    /// The reception report block a browser sends about this stream (RFC 3550 6.4.1): the
    /// highest sequence number, cumulative loss, and the fraction lost since the last block.
    /// Jitter and round-trip fields are left zero. None before the first packet.
    pub fn report_block(&mut self, ssrc: u32) -> Option<rtc::rtcp::reception_report::ReceptionReport> {
        let (first, highest) = (self.first?, self.highest?);
        let expected = highest - first + 1;
        let lost = expected.saturating_sub(self.received_total);
        let (expected_interval, received_interval) = (expected - self.reported.0, self.received_total.saturating_sub(self.reported.1));
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8).checked_div(expected_interval).map_or(0, |f| f.min(255) as u8);
        self.reported = (expected, self.received_total);
        Some(rtc::rtcp::reception_report::ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: lost.min(0x7f_ffff) as u32,
            last_sequence_number: (highest - (1 << 16)) as u32,
            jitter: 0,
            last_sender_report: 0,
            delay: 0,
        })
    }

    pub fn counts(&self) -> ReceptionCounts {
        let expected = match (self.window_start, self.highest) {
            (Some(start), Some(highest)) if highest >= start => highest - start + 1,
            _ => 0,
        };
        ReceptionCounts {
            expected,
            received: self.received,
            lost: expected.saturating_sub(self.received),
            reordered: self.reordered,
            duplicates: self.duplicates,
        }
    }
}

/// Latencies in 10 µs buckets up to one second (beyond: the last bucket).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: u64,
}

const BUCKET_NS: u64 = 10_000;
const BUCKETS: usize = 100_000;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: vec![0; BUCKETS], count: 0, max_ns: 0 }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, ns: u64) {
        let bucket = ((ns / BUCKET_NS) as usize).min(BUCKETS - 1);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }

    /// The latency (upper edge of its bucket, ms) that `q` of the samples do not exceed.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (((i as u64 + 1) * BUCKET_NS).min(self.max_ns)) as f64 / 1e6;
            }
        }
        self.max_ms()
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    pub fn clear(&mut self) {
        *self = LatencyHistogram::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(seqs: &[u16]) -> ReceptionCounts {
        let mut r = StreamReception::default();
        for s in seqs {
            r.on_packet(*s);
        }
        r.counts()
    }

    #[test]
    fn an_unbroken_run_has_no_loss() {
        let c = receive(&[10, 11, 12, 13]);
        assert_eq!((c.expected, c.received, c.lost, c.reordered), (4, 4, 0, 0));
    }

    #[test]
    fn gaps_are_lost_and_late_packets_are_reordered_not_lost() {
        assert_eq!(receive(&[1, 2, 5, 6]).lost, 2);
        let c = receive(&[1, 3, 2, 4]);
        assert_eq!((c.expected, c.received, c.lost, c.reordered), (4, 4, 0, 1));
        let c = receive(&[1, 2, 2, 3]);
        assert_eq!((c.received, c.duplicates, c.lost), (3, 1, 0));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let c = receive(&[65534, 65535, 0, 1]);
        assert_eq!((c.expected, c.lost), (4, 0));
        let c = receive(&[65535, 1, 0]);
        assert_eq!((c.expected, c.lost, c.reordered), (3, 0, 1));
    }

    #[test]
    fn a_new_window_counts_from_after_the_last_packet() {
        let mut r = StreamReception::default();
        for s in [1, 2, 4] {
            r.on_packet(s);
        }
        r.restart_window();
        assert_eq!(r.counts(), ReceptionCounts::default());
        // 3 arrives late, from before the window: ignored.
        for s in [3, 5, 7] {
            r.on_packet(s);
        }
        let c = r.counts();
        assert_eq!((c.expected, c.received, c.lost), (3, 2, 1));
    }

    #[test]
    fn report_blocks_carry_the_highest_sequence_and_the_loss_since_the_last_one() {
        let mut r = StreamReception::default();
        assert!(r.report_block(9).is_none(), "nothing received yet");
        for s in [65534, 65535, 0, 1] {
            r.on_packet(s);
        }
        let block = r.report_block(9).unwrap();
        assert_eq!((block.ssrc, block.fraction_lost, block.total_lost), (9, 0, 0));
        assert_eq!(block.last_sequence_number, (1 << 16) + 1, "one cycle after the wrap");
        // 2 and 3 lost of 2..=5, then the warm-up ends: the report still counts from the start.
        r.on_packet(4);
        r.restart_window();
        r.on_packet(5);
        let block = r.report_block(9).unwrap();
        assert_eq!((block.fraction_lost, block.total_lost), (128, 2));
        r.on_packet(6);
        assert_eq!(r.report_block(9).unwrap().fraction_lost, 0, "nothing lost since");
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = LatencyHistogram::default();
        for us in 1..=100u64 {
            h.record(us * 10_000); // 0.01 ms .. 1 ms
        }
        assert_eq!(h.count(), 100);
        assert!((h.quantile_ms(0.5) - 0.5).abs() < 0.011, "{}", h.quantile_ms(0.5));
        assert!((h.quantile_ms(0.99) - 0.99).abs() < 0.011, "{}", h.quantile_ms(0.99));
        assert_eq!(h.max_ms(), 1.0);
        let mut other = LatencyHistogram::default();
        other.record(5_000_000_000);
        h.merge(&other);
        assert_eq!(h.max_ms(), 5_000.0);
        assert_eq!(LatencyHistogram::default().quantile_ms(0.99), 0.0);
    }
}
