//! Receiver Reports to producers and Sender Reports to consumers.
//!
//! Towards a producer the worker is the receiver: [`ReceiverStats`] keeps what RFC 3550
//! section 6.4.1 asks a report block to carry (loss, highest sequence number, jitter, and the
//! timing of the last Sender Report, from which the producer computes its RTT).
//!
//! Towards a consumer the worker is the sender, and its Sender Reports carry what lip sync
//! needs: a pair (NTP time, RTP timestamp) naming the same instant. Only the producer knows
//! that pair for its media, so [`SenderReportTranslator`] takes it from the producer's latest
//! SR, moves it forward by the time elapsed since (on both clocks alike, so the pair stays
//! true), and shifts the RTP timestamp by the consumer's timestamp offset. A browser
//! receiving an audio and a video consumer of one peer thereby gets SRs on the producer's NTP
//! clock for both, exactly as if it were talking to that peer, and syncs them.

use std::time::{Duration, Instant};

use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;

use crate::rtp::Ssrc;

/// The middle 32 bits of a 64-bit NTP timestamp: the LSR field (RFC 3550 section 6.4.1).
pub fn ntp_middle(ntp_time: u64) -> u32 {
    (ntp_time >> 16) as u32
}

/// A duration in 64-bit NTP format: seconds in the high 32 bits, fraction in the low 32.
fn duration_to_ntp(duration: Duration) -> u64 {
    let fraction = (u64::from(duration.subsec_nanos()) << 32) / 1_000_000_000;
    (duration.as_secs() << 32).wrapping_add(fraction)
}

/// A duration in units of 1/65536 s, saturating: the DLSR field.
fn duration_to_dlsr(duration: Duration) -> u32 {
    let units = duration.as_nanos().saturating_mul(65_536) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// A DLSR value as a duration.
fn dlsr_to_duration(dlsr: u32) -> Duration {
    Duration::from_nanos(u64::from(dlsr) * 1_000_000_000 / 65_536)
}

/// `duration` in ticks of a `clock_rate` Hz RTP clock, wrapping like RTP timestamps.
fn duration_to_rtp(duration: Duration, clock_rate: u32) -> u32 {
    (duration.as_nanos() * u128::from(clock_rate) / 1_000_000_000) as u32
}

/// What the worker has received of one producer stream, for the report block about it.
///
/// Lives per producer stream.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    clock_rate: u32,
    /// Arrival times are measured from here, in RTP clock ticks.
    epoch: Option<Instant>,
    /// Lowest and highest sequence numbers seen, extended past 16 bits. Extended numbers
    /// start at 2^16 + the first number, so reporting subtracts 2^16 and late packets from
    /// before the first one do not underflow.
    base: u64,
    highest: u64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Interarrival jitter in RTP ticks, times 16 (RFC 3550 A.8).
    jitter_x16: u64,
    last_transit: Option<u32>,
    /// The middle bits of the last SR's NTP time, and when it arrived.
    last_sender_report: Option<(u32, Instant)>,
}

const EXTENDED_START: u64 = 1 << 16;

impl ReceiverStats {
    /// Stats for a stream whose RTP clock runs at `clock_rate` Hz (the codec's).
    pub fn new(clock_rate: u32) -> Self {
        ReceiverStats {
            clock_rate,
            epoch: None,
            base: 0,
            highest: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_x16: 0,
            last_transit: None,
            last_sender_report: None,
        }
    }

    /// A packet arrived at `now`. Pass retransmissions too (they count as received, as RFC
    /// 3550 wants); only packets that advance the sequence update jitter, so retransmitted
    /// and reordered packets, whose arrival says nothing about network jitter, do not.
    pub fn on_packet(&mut self, sequence_number: u16, timestamp: u32, now: Instant) {
        self.received += 1;
        let Some(epoch) = self.epoch else {
            self.epoch = Some(now);
            self.base = EXTENDED_START + u64::from(sequence_number);
            self.highest = self.base;
            self.last_transit = Some(self.transit(timestamp, now, now));
            return;
        };
        let delta = i64::from(sequence_number.wrapping_sub(self.highest as u16) as i16);
        // `highest` >= 2^16 and `base` only moves down within one i16 step of it.
        let extended = self.highest.saturating_add_signed(delta);
        if delta <= 0 {
            self.base = self.base.min(extended);
            return;
        }
        self.highest = extended;
        let transit = self.transit(timestamp, epoch, now);
        if let Some(last) = self.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, in sixteenths: J16 += |D| - J16 / 16 (rounded).
            self.jitter_x16 = (self.jitter_x16 + d).saturating_sub((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Relative transit time (arrival minus RTP timestamp) in RTP ticks; only differences
    /// between two of these mean anything.
    fn transit(&self, timestamp: u32, epoch: Instant, now: Instant) -> u32 {
        let arrival = duration_to_rtp(now.saturating_duration_since(epoch), self.clock_rate);
        arrival.wrapping_sub(timestamp)
    }

    /// The producer's Sender Report with `ntp_time` arrived at `now`.
    pub fn on_sender_report(&mut self, ntp_time: u64, now: Instant) {
        self.last_sender_report = Some((ntp_middle(ntp_time), now));
    }

    /// Packets the sequence numbers say were sent so far (0 before the first).
    pub fn expected(&self) -> u64 {
        if self.epoch.is_none() { 0 } else { self.highest - self.base + 1 }
    }

    /// The stream's RTP clock rate, Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// The interarrival jitter in RTP clock ticks.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }

    /// The report block about the stream `ssrc` to send at `now`; `None` before its first
    /// packet. Starts a new interval for the fraction lost, so call it once per report sent.
    pub fn reception_report(&mut self, ssrc: Ssrc, now: Instant) -> Option<ReceptionReport> {
        self.epoch?;
        let expected = self.highest - self.base + 1;
        let lost = i64::try_from(expected).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX);
        let expected_interval = expected - self.expected_prior.min(expected);
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            // lost_interval <= expected_interval, so this is at most 256; 256 (all lost)
            // saturates to 255.
            ((lost_interval as u64) * 256 / expected_interval).min(255) as u8
        };
        // A signed 24-bit field: duplicates can make it negative (RFC 3550 A.3).
        let total_lost = (lost.clamp(-0x80_0000, 0x7f_ffff) as i32 as u32) & 0x00ff_ffff;
        let (last_sender_report, delay) = match self.last_sender_report {
            Some((lsr, received_at)) => (
                lsr,
                duration_to_dlsr(now.saturating_duration_since(received_at)),
            ),
            None => (0, 0),
        };
        Some(ReceptionReport {
            ssrc: ssrc.0,
            fraction_lost,
            total_lost,
            last_sequence_number: (self.highest - EXTENDED_START) as u32,
            jitter: self.jitter(),
            last_sender_report,
            delay,
        })
    }
}

/// Builds one consumer stream's Sender Reports from its producer's.
///
/// Lives per consumer stream; a few dozen bytes.
#[derive(Debug, Clone)]
pub struct SenderReportTranslator {
    ssrc: Ssrc,
    clock_rate: u32,
    packets_sent: u32,
    octets_sent: u32,
    /// The producer's latest SR: NTP time, RTP timestamp, and when it arrived.
    producer: Option<(u64, u32, Instant)>,
    /// The LSR value of the last SR sent and when, to turn the consumer's report blocks into
    /// an RTT on the worker's own clock (the NTP times sent are the producer's).
    last_sent: Option<(u32, Instant)>,
}

impl SenderReportTranslator {
    /// A translator for the consumer stream `ssrc` with a `clock_rate` Hz RTP clock.
    pub fn new(ssrc: Ssrc, clock_rate: u32) -> Self {
        SenderReportTranslator {
            ssrc,
            clock_rate,
            packets_sent: 0,
            octets_sent: 0,
            producer: None,
            last_sent: None,
        }
    }

    /// A packet with `payload_len` payload bytes (without header and padding, as RFC 3550
    /// counts octets) was sent to the consumer. Retransmissions are not counted.
    pub fn on_packet_sent(&mut self, payload_len: usize) {
        // Both counters wrap, as RFC 3550 section 6.4.1 allows.
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    /// The producer's Sender Report (`ntp_time`, `rtp_time`) arrived at `now`.
    pub fn on_producer_sender_report(&mut self, ntp_time: u64, rtp_time: u32, now: Instant) {
        self.producer = Some((ntp_time, rtp_time, now));
    }

    /// The Sender Report to send the consumer at `now`, given its `timestamp_offset` (from
    /// [`super::SeqRewriter::timestamp_offset`]); `None` until the producer has sent an SR
    /// and the consumer has been sent a packet, since without either an SR tells nothing.
    pub fn sender_report(&mut self, timestamp_offset: u32, now: Instant) -> Option<SenderReport> {
        let (ntp_time, rtp_time, received_at) = self.producer?;
        if self.packets_sent == 0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(received_at);
        let ntp_time = ntp_time.wrapping_add(duration_to_ntp(elapsed));
        let rtp_time = rtp_time
            .wrapping_add(duration_to_rtp(elapsed, self.clock_rate))
            .wrapping_add(timestamp_offset);
        self.last_sent = Some((ntp_middle(ntp_time), now));
        Some(SenderReport {
            ssrc: self.ssrc.0,
            ntp_time,
            rtp_time,
            packet_count: self.packets_sent,
            octet_count: self.octets_sent,
            ..SenderReport::default()
        })
    }

    /// The RTT to the consumer from a report block of its (the LSR and DLSR fields) arriving
    /// at `now`; `None` when the block does not answer the last SR sent.
    pub fn round_trip_time(
        &self,
        last_sender_report: u32,
        delay: u32,
        now: Instant,
    ) -> Option<Duration> {
        let (lsr, sent_at) = self.last_sent?;
        if last_sender_report == 0 || last_sender_report != lsr {
            return None;
        }
        Some(
            now.saturating_duration_since(sent_at)
                .saturating_sub(dlsr_to_duration(delay)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const SSRC: Ssrc = Ssrc(1234);

    fn report(stats: &mut ReceiverStats, now: Instant) -> ReceptionReport {
        stats
            .reception_report(SSRC, now)
            .expect("packets were received")
    }

    // --- ReceiverStats ---

    #[test]
    fn no_report_before_the_first_packet() {
        let mut stats = ReceiverStats::new(90_000);
        assert_eq!(stats.reception_report(SSRC, Instant::now()), None);
    }

    #[test]
    fn lossless_stream_reports_no_loss() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for seq in 100..200 {
            stats.on_packet(seq, 0, now);
        }
        let block = report(&mut stats, now);
        assert_eq!((block.fraction_lost, block.total_lost), (0, 0));
        assert_eq!(block.ssrc, 1234);
    }

    #[test]
    fn quarter_lost_reports_fraction_64() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for seq in (0..100).filter(|seq| seq % 4 != 1) {
            stats.on_packet(seq, 0, now);
        }
        let block = report(&mut stats, now);
        assert_eq!((block.fraction_lost, block.total_lost), (64, 25));
    }

    #[test]
    fn fraction_lost_covers_only_the_last_interval() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, now);
        stats.on_packet(2, 0, now);
        report(&mut stats, now);
        for seq in 3..10 {
            stats.on_packet(seq, 0, now);
        }
        let block = report(&mut stats, now);
        assert_eq!((block.fraction_lost, block.total_lost), (0, 1));
    }

    #[test]
    fn retransmitted_packet_cancels_its_loss() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, now);
        stats.on_packet(2, 0, now);
        stats.on_packet(1, 0, now);
        assert_eq!(report(&mut stats, now).total_lost, 0);
    }

    #[test]
    fn duplicates_make_cumulative_loss_negative() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for seq in [0, 1, 1, 1] {
            stats.on_packet(seq, 0, now);
        }
        let block = report(&mut stats, now);
        assert_eq!(block.total_lost, 0x00ff_fffe);
        assert_eq!(block.fraction_lost, 0);
    }

    #[test]
    fn extended_highest_sequence_counts_wraps() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for seq in [65534, 65535, 0, 1] {
            stats.on_packet(seq, 0, now);
        }
        assert_eq!(report(&mut stats, now).last_sequence_number, 65536 + 1);
    }

    #[test]
    fn packet_from_before_the_first_lowers_the_base() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for seq in [5, 3, 6] {
            stats.on_packet(seq, 0, now);
        }
        let block = report(&mut stats, now);
        assert_eq!((block.total_lost, block.last_sequence_number), (1, 6));
    }

    #[test]
    fn steady_arrival_has_zero_jitter() {
        let start = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for i in 0..50u16 {
            // One packet every 20 ms, timestamps 1800 ticks apart.
            stats.on_packet(i, u32::from(i) * 1800, start + ms(u64::from(i) * 20));
        }
        assert_eq!(stats.jitter(), 0);
    }

    #[test]
    fn alternating_delay_converges_to_the_delay_variation() {
        let start = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        for i in 0..2000u16 {
            // Every other packet 10 ms (900 ticks) late: |D| is always 900.
            let late = if i % 2 == 1 { 10 } else { 0 };
            let arrival = start + ms(u64::from(i) * 20 + late);
            stats.on_packet(i, u32::from(i) * 1800, arrival);
        }
        let jitter = stats.jitter();
        assert!((880..=900).contains(&jitter), "jitter {jitter}");
    }

    #[test]
    fn first_jitter_step_is_a_sixteenth_of_the_transit_change() {
        let start = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, start);
        // 20 ms later but timestamped 40 ms later: D = -1800 ticks.
        stats.on_packet(1, 3600, start + ms(20));
        assert_eq!(stats.jitter(), 1800 / 16);
    }

    #[test]
    fn late_packet_does_not_move_jitter() {
        let start = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, start);
        stats.on_packet(2, 3600, start + ms(40));
        stats.on_packet(1, 1800, start + ms(500));
        assert_eq!(stats.jitter(), 0);
    }

    #[test]
    fn report_carries_lsr_and_delay_since_the_last_sender_report() {
        let start = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, start);
        stats.on_sender_report(0x1122_3344_5566_7788, start);
        let block = report(&mut stats, start + ms(500));
        assert_eq!(block.last_sender_report, 0x3344_5566);
        assert_eq!(block.delay, 32_768);
    }

    #[test]
    fn report_without_a_sender_report_has_zero_lsr_and_delay() {
        let now = Instant::now();
        let mut stats = ReceiverStats::new(90_000);
        stats.on_packet(0, 0, now);
        let block = report(&mut stats, now);
        assert_eq!((block.last_sender_report, block.delay), (0, 0));
    }

    #[test]
    fn report_block_marshals_with_the_rtc_crate() {
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::shared::marshal::Marshal;
        let now = Instant::now();
        let mut stats = ReceiverStats::new(48_000);
        for seq in [0, 1, 1, 1] {
            stats.on_packet(seq, 0, now);
        }
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![report(&mut stats, now)],
            ..ReceiverReport::default()
        };
        assert!(rr.marshal().is_ok());
    }

    // --- SenderReportTranslator ---

    fn translator_with_sr(received_at: Instant) -> SenderReportTranslator {
        let mut translator = SenderReportTranslator::new(Ssrc(77), 90_000);
        translator.on_producer_sender_report(5 << 32, 10_000, received_at);
        translator.on_packet_sent(1000);
        translator
    }

    #[test]
    fn no_sender_report_before_the_producer_sends_one() {
        let mut translator = SenderReportTranslator::new(Ssrc(77), 90_000);
        translator.on_packet_sent(100);
        assert_eq!(translator.sender_report(0, Instant::now()), None);
    }

    #[test]
    fn no_sender_report_before_a_packet_was_sent() {
        let now = Instant::now();
        let mut translator = SenderReportTranslator::new(Ssrc(77), 90_000);
        translator.on_producer_sender_report(5 << 32, 10_000, now);
        assert_eq!(translator.sender_report(0, now), None);
    }

    #[test]
    fn sender_report_right_away_repeats_the_producer_pair_shifted() {
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        let sr = translator.sender_report(500, now).expect("an SR");
        assert_eq!((sr.ssrc, sr.ntp_time, sr.rtp_time), (77, 5 << 32, 10_500));
    }

    #[test]
    fn sender_report_later_moves_both_clocks_alike() {
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        let sr = translator.sender_report(0, now + ms(1500)).expect("an SR");
        // 1.5 s: 6.5 in NTP, 135000 more ticks at 90 kHz.
        assert_eq!(sr.ntp_time, (6 << 32) + (1 << 31));
        assert_eq!(sr.rtp_time, 10_000 + 135_000);
    }

    #[test]
    fn audio_and_video_reports_keep_the_producer_sync() {
        // The producer's audio SR (NTP 100 s) and video SR (NTP 100.5 s) arrive 500 ms apart.
        // Translated at the same later instant, both name the same NTP time, each with the
        // RTP time the producer's own clock gives for it (plus the consumer's offset).
        let start = Instant::now();
        let mut audio = SenderReportTranslator::new(Ssrc(1), 48_000);
        let mut video = SenderReportTranslator::new(Ssrc(2), 90_000);
        audio.on_producer_sender_report(100 << 32, 4_800, start);
        video.on_producer_sender_report((100 << 32) + (1 << 31), 54_000, start + ms(500));
        audio.on_packet_sent(100);
        video.on_packet_sent(1000);
        let now = start + ms(2000);
        let a = audio.sender_report(7, now).expect("audio SR");
        let v = video.sender_report(11, now).expect("video SR");
        assert_eq!(a.ntp_time, 102 << 32);
        assert_eq!(v.ntp_time, 102 << 32);
        assert_eq!(a.rtp_time, 4_800 + 96_000 + 7);
        assert_eq!(v.rtp_time, 54_000 + 135_000 + 11);
    }

    #[test]
    fn sender_report_counts_packets_and_payload_octets() {
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        translator.on_packet_sent(200);
        let sr = translator.sender_report(0, now).expect("an SR");
        assert_eq!((sr.packet_count, sr.octet_count), (2, 1200));
    }

    #[test]
    fn rtp_time_wraps() {
        let now = Instant::now();
        let mut translator = SenderReportTranslator::new(Ssrc(1), 90_000);
        translator.on_producer_sender_report(0, u32::MAX - 9, now);
        translator.on_packet_sent(1);
        let sr = translator.sender_report(20, now).expect("an SR");
        assert_eq!(sr.rtp_time, 10);
    }

    #[test]
    fn sender_report_marshals_with_the_rtc_crate() {
        use rtc::shared::marshal::Marshal;
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        let sr = translator.sender_report(0, now).expect("an SR");
        assert!(sr.marshal().is_ok());
    }

    #[test]
    fn round_trip_time_comes_from_the_consumer_report_block() {
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        let sr = translator.sender_report(0, now).expect("an SR");
        // The consumer held the SR for 0.25 s (16384 units) and answered; it arrives 300 ms
        // after the SR left.
        let rtt = translator.round_trip_time(ntp_middle(sr.ntp_time), 16_384, now + ms(300));
        assert_eq!(rtt, Some(ms(50)));
    }

    #[test]
    fn report_block_about_another_sender_report_gives_no_rtt() {
        let now = Instant::now();
        let mut translator = translator_with_sr(now);
        translator.sender_report(0, now);
        assert_eq!(translator.round_trip_time(0x1234, 0, now + ms(300)), None);
        assert_eq!(translator.round_trip_time(0, 0, now + ms(300)), None);
    }
}
