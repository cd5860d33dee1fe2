//! What one producer stream (encoding) delivers: the bitrate of each of its layers over the
//! last second ([`LayerBitrates`]) and mediasoup's 0-10 quality score ([`StreamScore`]).
//!
//! Both are sans-IO: time comes in as an [`Instant`].

use std::time::{Duration, Instant};

/// Layers a stream's bitrates are kept for; packets of higher ones count as the top one.
pub const MAX_SPATIAL: usize = 4;
pub const MAX_TEMPORAL: usize = 4;

const BUCKETS: usize = 10;
const BUCKET: Duration = Duration::from_millis(100);

/// Bytes per layer in ten 100 ms buckets: the bitrate of each layer over the last second, as
/// mediasoup's `RateCalculator` (1 s window) gives it. About 700 bytes, allocated inline.
#[derive(Debug, Clone)]
pub struct LayerBitrates {
    epoch: Option<Instant>,
    /// The newest bucket written, in bucket units since `epoch`.
    newest: u64,
    bytes: [[[u32; BUCKETS]; MAX_TEMPORAL]; MAX_SPATIAL],
}

impl Default for LayerBitrates {
    fn default() -> Self {
        LayerBitrates { epoch: None, newest: 0, bytes: [[[0; BUCKETS]; MAX_TEMPORAL]; MAX_SPATIAL] }
    }
}

impl LayerBitrates {
    fn bucket(&self, now: Instant) -> u64 {
        self.epoch.map_or(0, |epoch| (now.saturating_duration_since(epoch).as_millis() / BUCKET.as_millis()) as u64)
    }

    /// Empties the buckets that time has left behind, up to `now`'s.
    fn advance(&mut self, now: Instant) {
        self.epoch.get_or_insert(now);
        let bucket = self.bucket(now);
        if bucket <= self.newest {
            return;
        }
        let stale = (bucket - self.newest).min(BUCKETS as u64);
        for step in 1..=stale {
            let slot = ((self.newest + step) % BUCKETS as u64) as usize;
            for spatial in self.bytes.iter_mut() {
                for temporal in spatial.iter_mut() {
                    temporal[slot] = 0;
                }
            }
        }
        self.newest = bucket;
    }

    /// A packet of `bytes` of layers `spatial`/`temporal` arrived at `now`.
    pub fn on_packet(&mut self, spatial: u8, temporal: u8, bytes: usize, now: Instant) {
        self.advance(now);
        let slot = (self.newest % BUCKETS as u64) as usize;
        let (s, t) = (usize::from(spatial).min(MAX_SPATIAL - 1), usize::from(temporal).min(MAX_TEMPORAL - 1));
        let cell = &mut self.bytes[s][t][slot];
        *cell = cell.saturating_add(bytes as u32);
    }

    /// Bits per second of exactly layer `spatial`/`temporal` over the second before `now`.
    pub fn bitrate(&self, spatial: u8, temporal: u8, now: Instant) -> u64 {
        let (s, t) = (usize::from(spatial), usize::from(temporal));
        if s >= MAX_SPATIAL || t >= MAX_TEMPORAL || self.epoch.is_none() {
            return 0;
        }
        let bucket = self.bucket(now);
        // Buckets older than a second before `now` no longer count, even if not cleared yet.
        let live = |step: u64| self.newest >= step && bucket.saturating_sub(self.newest - step) < BUCKETS as u64;
        let bytes: u64 = (0..BUCKETS as u64)
            .filter(|&step| live(step))
            .map(|step| u64::from(self.bytes[s][t][((self.newest - step) % BUCKETS as u64) as usize]))
            .sum();
        bytes * 8
    }

    /// What a consumer receiving up to `spatial`/`temporal` gets, bits per second: the
    /// temporal layers up to `temporal` of spatial layer `spatial` for simulcast (each
    /// encoding is a stream of its own), of every spatial layer up to `spatial` too for SVC
    /// (upper layers need the lower ones).
    pub fn cumulative(&self, spatial: u8, temporal: u8, svc: bool, now: Instant) -> u64 {
        let spatial_layers = if svc { 0..=spatial } else { spatial..=spatial };
        spatial_layers.flat_map(|s| (0..=temporal).map(move |t| (s, t))).map(|(s, t)| self.bitrate(s, t, now)).sum()
    }
}

/// The bitrate of one stream over the last second (a consumer's), in ten 100 ms buckets.
#[derive(Debug, Clone, Default)]
pub struct BitrateWindow {
    epoch: Option<Instant>,
    newest: u64,
    bytes: [u32; BUCKETS],
}

impl BitrateWindow {
    fn bucket(&self, now: Instant) -> u64 {
        self.epoch.map_or(0, |epoch| (now.saturating_duration_since(epoch).as_millis() / BUCKET.as_millis()) as u64)
    }

    /// `bytes` were sent (or received) at `now`.
    pub fn on_bytes(&mut self, bytes: usize, now: Instant) {
        self.epoch.get_or_insert(now);
        let bucket = self.bucket(now);
        for step in 1..=(bucket.saturating_sub(self.newest)).min(BUCKETS as u64) {
            self.bytes[((self.newest + step) % BUCKETS as u64) as usize] = 0;
        }
        self.newest = self.newest.max(bucket);
        let cell = &mut self.bytes[(self.newest % BUCKETS as u64) as usize];
        *cell = cell.saturating_add(bytes as u32);
    }

    /// Bits per second over the second before `now`.
    pub fn bitrate(&self, now: Instant) -> u64 {
        if self.epoch.is_none() {
            return 0;
        }
        let bucket = self.bucket(now);
        (0..BUCKETS as u64)
            .filter(|&step| self.newest >= step && bucket.saturating_sub(self.newest - step) < BUCKETS as u64)
            .map(|step| u64::from(self.bytes[((self.newest - step) % BUCKETS as u64) as usize]))
            .sum::<u64>()
            * 8
    }
}

/// Counters a [`StreamScore`] is computed from, as totals since the stream began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Packets the sequence numbers say were sent.
    pub expected: u64,
    /// Packets received as they were sent (retransmissions not counted).
    pub received: u64,
    /// Missing packets that arrived in a retransmission.
    pub repaired: u64,
    /// Retransmissions received.
    pub retransmitted: u64,
}

/// mediasoup's score of a received stream (`RtpStreamRecv::UpdateScore` and
/// `RtpStream::UpdateScore`): each interval's delivered ratio to the fourth power, times 10,
/// with repaired packets counting partly as delivered; the score is the weighted average of
/// the last 24 intervals, newer ones weighing more. 10 is perfect, 0 means nothing arrives.
#[derive(Debug, Clone)]
pub struct StreamScore {
    history: [u8; Self::HISTORY],
    len: usize,
    score: u8,
    prior: Delivery,
}

impl Default for StreamScore {
    fn default() -> Self {
        StreamScore { history: [0; Self::HISTORY], len: 0, score: 0, prior: Delivery::default() }
    }
}

impl StreamScore {
    /// Intervals in the average (mediasoup's `ScoreHistogramLength`).
    pub const HISTORY: usize = 24;

    /// The score now.
    pub fn score(&self) -> u8 {
        self.score
    }

    /// Starts over at `score`: 10 when a stream (re)starts, 0 when it went silent. Returns
    /// whether the score changed.
    pub fn reset(&mut self, score: u8) -> bool {
        self.history = [0; Self::HISTORY];
        self.history[0] = score;
        self.len = 1;
        let changed = self.score != score;
        self.score = score;
        changed
    }

    /// An interval ends with these totals. Returns whether the score changed.
    pub fn update(&mut self, totals: Delivery) -> bool {
        let expected = totals.expected.saturating_sub(self.prior.expected);
        let received = totals.received.saturating_sub(self.prior.received);
        let mut repaired = totals.repaired.saturating_sub(self.prior.repaired);
        let mut retransmitted = totals.retransmitted.saturating_sub(self.prior.retransmitted);
        self.prior = totals;
        if expected == 0 || received == 0 {
            // Nothing was expected: nothing went wrong (silence is for the caller to reset).
            return self.push(10);
        }
        let mut lost = expected.saturating_sub(received).min(received);
        if repaired > lost {
            retransmitted = retransmitted.saturating_sub(repaired - lost);
            repaired = lost;
        }
        let repaired_ratio = repaired as f64 / received as f64;
        let mut repaired_weight = (1.0 / (repaired_ratio + 1.0)).powi(4);
        if retransmitted > 0 {
            repaired_weight *= repaired as f64 / retransmitted as f64;
        }
        lost = lost.saturating_sub((repaired as f64 * repaired_weight) as u64);
        let delivered = (received - lost) as f64 / received as f64;
        let score = (delivered.powi(4) * 10.0).round() as u8;
        self.push(score)
    }

    fn push(&mut self, score: u8) -> bool {
        if self.len == Self::HISTORY {
            self.history.copy_within(1.., 0);
            self.len -= 1;
        }
        self.history[self.len] = score;
        self.len += 1;
        let (mut weighted, mut weights) = (0u32, 0u32);
        for (weight, &entry) in (1u32..).zip(&self.history[..self.len]) {
            weighted += weight * u32::from(entry);
            weights += weight;
        }
        let score = (f64::from(weighted) / f64::from(weights)).round() as u8;
        let changed = score != self.score;
        self.score = score;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_layers_bitrate_is_its_bytes_over_the_last_second() {
        let t0 = Instant::now();
        let mut rates = LayerBitrates::default();
        // 100 packets of 1000 bytes over one second on layer 1/0, 50 of 500 on 1/1.
        for i in 0..100 {
            rates.on_packet(1, 0, 1000, t0 + ms(i * 10));
            if i % 2 == 0 {
                rates.on_packet(1, 1, 500, t0 + ms(i * 10));
            }
        }
        let now = t0 + ms(995);
        assert_eq!(rates.bitrate(1, 0, now), 800_000);
        assert_eq!(rates.bitrate(1, 1, now), 200_000);
        assert_eq!(rates.cumulative(1, 1, false, now), 1_000_000);
        assert_eq!(rates.bitrate(0, 0, now), 0);
        // Half a second later, half of it has aged out; two seconds later all of it.
        assert_eq!(rates.bitrate(1, 0, t0 + ms(1495)), 400_000);
        assert_eq!(rates.bitrate(1, 0, t0 + ms(3000)), 0);
    }

    #[test]
    fn svc_layers_add_up_across_spatial_layers() {
        let now = Instant::now();
        let mut rates = LayerBitrates::default();
        rates.on_packet(0, 0, 100, now);
        rates.on_packet(1, 0, 200, now);
        rates.on_packet(2, 0, 400, now);
        rates.on_packet(1, 2, 50, now);
        assert_eq!(rates.cumulative(1, 2, true, now), 8 * 350);
        assert_eq!(rates.cumulative(1, 2, false, now), 8 * 250);
        // Layers beyond what is kept count as the top one.
        rates.on_packet(9, 9, 10, now);
        assert_eq!(rates.bitrate(3, 3, now), 80);
    }

    #[test]
    fn a_streams_bitrate_window_forgets_what_is_older_than_a_second() {
        let t0 = Instant::now();
        let mut window = BitrateWindow::default();
        assert_eq!(window.bitrate(t0), 0);
        for i in 0..10 {
            window.on_bytes(1250, t0 + ms(i * 100));
        }
        assert_eq!(window.bitrate(t0 + ms(950)), 100_000);
        assert_eq!(window.bitrate(t0 + ms(1450)), 50_000);
        window.on_bytes(1250, t0 + ms(5000));
        assert_eq!(window.bitrate(t0 + ms(5000)), 10_000);
    }

    fn delivery(expected: u64, received: u64, repaired: u64, retransmitted: u64) -> Delivery {
        Delivery { expected, received, repaired, retransmitted }
    }

    #[test]
    fn a_clean_stream_scores_10() {
        let mut score = StreamScore::default();
        score.reset(10);
        for second in 1..=5 {
            score.update(delivery(100 * second, 100 * second, 0, 0));
        }
        assert_eq!(score.score(), 10);
    }

    #[test]
    fn loss_lowers_the_score_as_the_fourth_power_of_what_arrives() {
        let mut score = StreamScore::default();
        score.reset(10);
        // 10% lost for a long time: (90 - 10) / 90 delivered, to the fourth power: 6.2 -> 6.
        let mut totals = Delivery::default();
        for _ in 0..30 {
            totals.expected += 100;
            totals.received += 90;
            score.update(totals);
        }
        assert_eq!(score.score(), 6);
        // Recovers step by step once the loss stops.
        let mut previous = score.score();
        for _ in 0..30 {
            totals.expected += 100;
            totals.received += 100;
            score.update(totals);
            assert!(score.score() >= previous);
            previous = score.score();
        }
        assert_eq!(score.score(), 10);
    }

    #[test]
    fn repaired_packets_count_almost_as_delivered() {
        let (mut repaired, mut lost) = (StreamScore::default(), StreamScore::default());
        repaired.reset(10);
        lost.reset(10);
        let (mut a, mut b) = (Delivery::default(), Delivery::default());
        for _ in 0..24 {
            a = delivery(a.expected + 100, a.received + 80, a.repaired + 20, a.retransmitted + 20);
            b = delivery(b.expected + 100, b.received + 80, 0, 0);
            repaired.update(a);
            lost.update(b);
        }
        assert!(repaired.score() > lost.score(), "{} vs {}", repaired.score(), lost.score());
        assert_eq!(lost.score(), 3, "((80 - 20) / 80)^4 * 10: mediasoup's ratio counts loss against what arrived");
    }

    #[test]
    fn silence_is_reset_to_zero_and_back_to_ten() {
        let mut score = StreamScore::default();
        assert!(score.reset(10));
        assert!(score.reset(0));
        assert_eq!(score.score(), 0);
        assert!(!score.reset(0));
        assert!(score.reset(10));
    }
}
