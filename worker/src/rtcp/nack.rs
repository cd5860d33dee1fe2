//! Asking producers to resend lost packets.
//!
//! The worker is the producer's receiver, so it NACKs gaps itself instead of waiting for each
//! consumer to: one retransmission from the producer then fills the gap for every consumer
//! (they NACK the worker, which answers from its retransmission buffer once the packet is in).
//!
//! Memory is bounded: at most [`NackConfig::max_missing`] numbers are tracked, in a queue
//! allocated up front. A gap wider than that keeps only its newest numbers (older ones would
//! come back too late to help).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

/// When and how often to NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackConfig {
    /// Wait this long after a gap is seen before the first NACK: packets reordered by the
    /// network arrive within a few milliseconds and need no retransmission.
    pub initial_delay: Duration,
    /// The shortest time between two NACKs for one packet, even when the RTT is shorter.
    pub min_retry_interval: Duration,
    /// The RTT assumed before one is measured.
    pub default_rtt: Duration,
    /// NACKs per packet before giving it up.
    pub max_retries: u8,
    /// Give a packet up this long after its gap was seen: the retransmission buffers of
    /// senders keep about a second, and later media is useless to a real-time receiver.
    pub max_age: Duration,
    /// Missing packets tracked at once.
    pub max_missing: usize,
}

impl Default for NackConfig {
    fn default() -> Self {
        NackConfig {
            initial_delay: Duration::from_millis(10),
            min_retry_interval: Duration::from_millis(20),
            default_rtt: Duration::from_millis(100),
            max_retries: 10,
            max_age: Duration::from_secs(1),
            max_missing: 512,
        }
    }
}

/// Counters for metrics; loss for Receiver Reports comes from
/// [`super::report::ReceiverStats`], which counts per RFC 3550.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Sequence numbers put in NACKs, each retry counted again.
    pub requested: u64,
    /// Missing packets that arrived later (reordered or retransmitted).
    pub recovered: u64,
    /// Missing packets given up: out of retries, too old, or pushed out by a wider gap.
    pub given_up: u64,
}

/// Finds gaps in one producer stream and decides which sequence numbers to NACK when.
///
/// Lives per producer stream. Feed it every packet's sequence number (retransmissions too,
/// unwrapped from RTX) with [`Self::on_packet`]; call [`Self::poll_nacks`] when
/// [`Self::poll_timeout`] is reached.
#[derive(Debug, Clone)]
pub struct NackGenerator {
    config: NackConfig,
    /// The highest sequence number seen, extended past 16 bits.
    highest: Option<u64>,
    /// Missing packets in ascending order of extended sequence number.
    missing: VecDeque<Missing>,
    stats: NackStats,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    extended: u64,
    detected_at: Instant,
    last_sent: Option<Instant>,
    retries: u8,
}

impl NackGenerator {
    /// A generator with `config`; allocates its queue of missing packets now.
    pub fn new(config: NackConfig) -> Self {
        NackGenerator {
            config,
            highest: None,
            missing: VecDeque::with_capacity(config.max_missing),
            stats: NackStats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// How many packets are missing and still to be asked for.
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }

    /// A packet with `sequence_number` arrived at `now`: newer ones after a gap mark the gap
    /// missing, older ones fill it.
    pub fn on_packet(&mut self, sequence_number: u16, now: Instant) {
        let Some(highest) = self.highest else {
            // Start far from zero so extended numbers of late packets never underflow.
            self.highest = Some((1 << 32) + u64::from(sequence_number));
            return;
        };
        let delta = i64::from(sequence_number.wrapping_sub(highest as u16) as i16);
        // `highest` starts at 2^32 and only grows, so adding any i16 stays positive.
        let extended = highest.wrapping_add_signed(delta);
        if delta > 0 {
            self.highest = Some(extended);
            self.mark_missing(highest + 1, extended, now);
        } else if delta < 0
            && let Ok(index) = self.missing.binary_search_by_key(&extended, |m| m.extended)
        {
            self.missing.remove(index);
            self.stats.recovered += 1;
        }
    }

    /// Marks `from..to` (extended numbers) missing, keeping at most `max_missing` entries.
    fn mark_missing(&mut self, from: u64, to: u64, now: Instant) {
        let limit = self.config.max_missing as u64;
        let count = to - from;
        if count == 0 || limit == 0 {
            return;
        }
        let from = if count > limit {
            self.stats.given_up += count - limit;
            to - limit
        } else {
            from
        };
        let overflow = (self.missing.len() as u64 + (to - from)).saturating_sub(limit);
        for _ in 0..overflow {
            self.missing.pop_front();
            self.stats.given_up += 1;
        }
        for extended in from..to {
            self.missing.push_back(Missing {
                extended,
                detected_at: now,
                last_sent: None,
                retries: 0,
            });
        }
    }

    /// Clears `out` and fills it with the NACK entries to send now, in ascending order;
    /// `rtt` is the latest round-trip time to the producer, if known. Packets out of retries
    /// or too old are given up here.
    pub fn poll_nacks(&mut self, now: Instant, rtt: Option<Duration>, out: &mut Vec<NackPair>) {
        out.clear();
        let retry_interval = self.retry_interval(rtt);
        let config = self.config;
        let stats = &mut self.stats;
        self.missing.retain_mut(|missing| {
            if missing.retries >= config.max_retries
                || now.saturating_duration_since(missing.detected_at) > config.max_age
            {
                stats.given_up += 1;
                return false;
            }
            let due = match missing.last_sent {
                None => now >= missing.detected_at + config.initial_delay,
                Some(sent) => now >= sent + retry_interval,
            };
            if due {
                missing.last_sent = Some(now);
                missing.retries += 1;
                stats.requested += 1;
                push_seq(out, missing.extended as u16);
            }
            true
        });
    }

    /// When [`Self::poll_nacks`] next has something to do; `None` when nothing is missing.
    pub fn poll_timeout(&self, rtt: Option<Duration>) -> Option<Instant> {
        let retry_interval = self.retry_interval(rtt);
        self.missing
            .iter()
            .map(|missing| {
                let next = match missing.last_sent {
                    None => missing.detected_at + self.config.initial_delay,
                    Some(sent) => sent + retry_interval,
                };
                // Giving up is also work for `poll_nacks`.
                next.min(missing.detected_at + self.config.max_age)
            })
            .min()
    }

    fn retry_interval(&self, rtt: Option<Duration>) -> Duration {
        rtt.unwrap_or(self.config.default_rtt)
            .max(self.config.min_retry_interval)
    }
}

/// Adds `seq` to the last entry of `out` when it falls in its bitmask, else starts an entry.
/// Called in ascending (wrapping) order.
fn push_seq(out: &mut Vec<NackPair>, seq: u16) {
    if let Some(last) = out.last_mut() {
        let distance = seq.wrapping_sub(last.packet_id);
        if (1..=16).contains(&distance) {
            last.lost_packets |= 1 << (distance - 1);
            return;
        }
    }
    out.push(NackPair {
        packet_id: seq,
        lost_packets: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtcp::retransmit::nack_to_seqs;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn generator() -> NackGenerator {
        NackGenerator::new(NackConfig::default())
    }

    fn nacked(generator: &mut NackGenerator, now: Instant) -> Vec<u16> {
        let mut out = Vec::new();
        generator.poll_nacks(now, None, &mut out);
        out.iter()
            .flat_map(|pair| nack_to_seqs(pair.packet_id, pair.lost_packets))
            .collect()
    }

    fn receive(generator: &mut NackGenerator, seqs: impl IntoIterator<Item = u16>, now: Instant) {
        for seq in seqs {
            generator.on_packet(seq, now);
        }
    }

    #[test]
    fn in_order_stream_has_nothing_to_nack() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, 0..100, start);
        assert_eq!(nacked(&mut generator, start + ms(50)), Vec::<u16>::new());
        assert_eq!(generator.poll_timeout(None), None);
    }

    #[test]
    fn gap_is_nacked_after_the_initial_delay() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 13], start);
        assert_eq!(nacked(&mut generator, start + ms(9)), Vec::<u16>::new());
        assert_eq!(generator.poll_timeout(None), Some(start + ms(10)));
        assert_eq!(nacked(&mut generator, start + ms(10)), [11, 12]);
    }

    #[test]
    fn reordered_packet_within_the_delay_is_never_nacked() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        generator.on_packet(11, start + ms(3));
        assert_eq!(nacked(&mut generator, start + ms(10)), Vec::<u16>::new());
        assert_eq!(generator.stats().recovered, 1);
    }

    #[test]
    fn retry_waits_one_rtt() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        let mut out = Vec::new();
        generator.poll_nacks(start + ms(50), Some(ms(50)), &mut out);
        assert!(out.is_empty());
        assert_eq!(generator.poll_timeout(Some(ms(50))), Some(start + ms(60)));
        generator.poll_nacks(start + ms(60), Some(ms(50)), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn unknown_rtt_spaces_retries_by_the_default() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        assert_eq!(nacked(&mut generator, start + ms(109)), Vec::<u16>::new());
        assert_eq!(nacked(&mut generator, start + ms(110)), [11]);
    }

    #[test]
    fn tiny_rtt_is_floored_at_the_minimum_retry_interval() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        assert_eq!(generator.poll_timeout(Some(ms(1))), Some(start + ms(30)));
    }

    #[test]
    fn retransmission_stops_the_nacks() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        generator.on_packet(11, start + ms(40));
        assert_eq!(nacked(&mut generator, start + ms(500)), Vec::<u16>::new());
        assert_eq!(generator.missing_count(), 0);
    }

    #[test]
    fn packet_is_given_up_after_the_max_retries() {
        let start = Instant::now();
        let config = NackConfig {
            max_retries: 3,
            ..NackConfig::default()
        };
        let mut generator = NackGenerator::new(config);
        receive(&mut generator, [10, 12], start);
        let sends = (0..10)
            .filter(|i| !nacked(&mut generator, start + ms(10 + 100 * i)).is_empty())
            .count();
        assert_eq!(sends, 3);
        assert_eq!(generator.stats().given_up, 1);
        assert_eq!(generator.missing_count(), 0);
    }

    #[test]
    fn packet_is_given_up_after_the_max_age() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        assert_eq!(nacked(&mut generator, start + ms(1001)), Vec::<u16>::new());
        assert_eq!(generator.stats().given_up, 1);
    }

    #[test]
    fn poll_timeout_covers_giving_up() {
        let start = Instant::now();
        let config = NackConfig {
            max_age: ms(50),
            ..NackConfig::default()
        };
        let mut generator = NackGenerator::new(config);
        receive(&mut generator, [10, 12], start);
        nacked(&mut generator, start + ms(10));
        assert_eq!(generator.poll_timeout(None), Some(start + ms(50)));
    }

    #[test]
    fn gap_across_the_wrap_is_nacked() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [65533, 1], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), [65534, 65535, 0]);
    }

    #[test]
    fn late_packet_across_the_wrap_fills_its_gap() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [65534, 1, 65535], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), [0]);
    }

    #[test]
    fn late_packet_before_the_first_one_is_harmless() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [5, 4, 3, 6], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), Vec::<u16>::new());
    }

    #[test]
    fn seventeen_close_numbers_fit_one_entry() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [0, 18], start);
        let mut out = Vec::new();
        generator.poll_nacks(start + ms(10), None, &mut out);
        assert_eq!(
            out,
            [NackPair {
                packet_id: 1,
                lost_packets: 0xffff
            }]
        );
    }

    #[test]
    fn numbers_more_than_sixteen_apart_get_separate_entries() {
        let start = Instant::now();
        let mut generator = generator();
        receive(
            &mut generator,
            (0..=31).filter(|&seq| seq != 1 && seq != 30),
            start,
        );
        let mut out = Vec::new();
        generator.poll_nacks(start + ms(10), None, &mut out);
        assert_eq!(
            out,
            [
                NackPair {
                    packet_id: 1,
                    lost_packets: 0
                },
                NackPair {
                    packet_id: 30,
                    lost_packets: 0
                },
            ]
        );
    }

    #[test]
    fn bitmask_marks_only_the_missing_numbers() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [0, 2, 4, 6], start);
        let mut out = Vec::new();
        generator.poll_nacks(start + ms(10), None, &mut out);
        assert_eq!(
            out,
            [NackPair {
                packet_id: 1,
                lost_packets: 0b1010
            }]
        );
    }

    #[test]
    fn wide_gap_keeps_only_the_newest_missing_numbers() {
        let start = Instant::now();
        let config = NackConfig {
            max_missing: 4,
            ..NackConfig::default()
        };
        let mut generator = NackGenerator::new(config);
        receive(&mut generator, [0, 11], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), [7, 8, 9, 10]);
        assert_eq!(generator.stats().given_up, 6);
    }

    #[test]
    fn new_gaps_push_out_the_oldest_missing_numbers() {
        let start = Instant::now();
        let config = NackConfig {
            max_missing: 3,
            ..NackConfig::default()
        };
        let mut generator = NackGenerator::new(config);
        receive(&mut generator, [0, 3, 6], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), [2, 4, 5]);
        assert_eq!(generator.missing_count(), 3);
    }

    #[test]
    fn missing_queue_never_grows_past_its_bound() {
        let start = Instant::now();
        let mut generator = generator();
        let mut seq = 0u16;
        for _ in 0..5000 {
            generator.on_packet(seq, start);
            seq = seq.wrapping_add(3);
        }
        assert_eq!(generator.missing_count(), NackConfig::default().max_missing);
    }

    #[test]
    fn duplicate_changes_nothing() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [1, 3, 3], start);
        assert_eq!(nacked(&mut generator, start + ms(10)), [2]);
        assert_eq!(generator.stats().recovered, 0);
    }

    #[test]
    fn requested_counts_every_nacked_number() {
        let start = Instant::now();
        let mut generator = generator();
        receive(&mut generator, [1, 4], start);
        nacked(&mut generator, start + ms(10));
        nacked(&mut generator, start + ms(110));
        assert_eq!(generator.stats().requested, 4);
    }
}
