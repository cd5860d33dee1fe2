//! Per-consumer rewriting of RTP sequence numbers and timestamps.
//!
//! A consumer must see one gap-free sequence of numbers even though it does not get every
//! packet of the producer stream: nothing is forwarded while it (or its producer) is paused,
//! and a new or resumed video consumer drops everything until a keyframe arrives. The browser
//! would read each such hole as loss and NACK it, so the rewriter closes it: after a
//! [`SeqRewriter::resync`] the next forwarded packet gets the number after the last one sent.
//!
//! Between resyncs the mapping is a plain offset, `consumer = producer + offset` (wrapping), so
//! loss on the producer side stays visible to the consumer as a gap (which it NACKs), and a
//! consumer NACK maps back to exactly one producer packet ([`SeqRewriter::producer_seq`]),
//! which is how one retransmission buffer per producer stream serves all its consumers.
//!
//! Timestamps get a constant offset for as long as the consumer receives the same producer
//! stream. An RTP timestamp is a media clock, so across a pause it should jump by the paused
//! time, which is exactly what the producer's own timestamps do; closing that jump would make
//! the receiver's jitter buffer think the media was late. A constant offset also keeps the
//! Sender Report translation exact (see [`super::report::SenderReportTranslator`]). Only when
//! the consumer moves to another stream (another simulcast layer, or an encoder restarted
//! under a new SSRC) does the caller give it a new offset ([`SeqRewriter::set_timestamp_offset`]),
//! chosen so that time goes on where it was.
//!
//! Packets the consumer is not meant to get at all (a temporal layer above its target) are
//! [`SeqRewriter::skip`]ped: the numbers after them close over them, so the consumer sees no
//! loss it would NACK.
//!
//! Reordering: a packet older than the newest one forwarded is forwarded with the same offset
//! (so it lands in the hole the consumer saw, consistently) when it belongs to the current run
//! of packets (sent since the last resync) and is at most [`SeqRewriter::MAX_REORDER`] behind.
//! Otherwise it is dropped: a packet from before the resync has no number left for it, since
//! the numbers after the last one sent went to the packets after the resync. A skip starts a
//! new run too (one number less from there on); the run before it is kept, so a late packet
//! from before the skip still gets its own number. Late packets from before the run before
//! are dropped: with temporal layers skipped that is several frames back.

/// The consumer's sequence number and timestamp for one forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// The sequence number to write into the packet sent to the consumer.
    pub sequence_number: u16,
    /// The RTP timestamp to write into the packet sent to the consumer.
    pub timestamp: u32,
}

/// Maps one producer stream's sequence numbers and timestamps to one consumer stream's.
///
/// Lives per consumer stream; a few dozen bytes.
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    /// Added (wrapping) to a producer timestamp to get the consumer's.
    timestamp_offset: u32,
    /// The consumer number the next run of packets starts at.
    next_run_start: u16,
    /// The current run of packets; `None` before the first packet.
    run: Option<Run>,
    /// The run before the current one, when the current one began with a skipped packet.
    previous: Option<Run>,
    /// Set by [`SeqRewriter::resync`]: the next forwarded packet starts a new run.
    resync_pending: bool,
    /// The newest timestamp given out, in the consumer's terms.
    newest_timestamp: Option<u32>,
}

/// Packets forwarded with one sequence number offset.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Added (wrapping) to a producer sequence number to get the consumer's.
    offset: u16,
    /// The newest producer sequence number of this run.
    newest: u16,
    /// How far `newest` is past the run's first packet, saturating: older packets further back
    /// than this were not part of the run.
    span: u32,
    /// The run's first packet was skipped, not forwarded: its number belongs to the next one.
    starts_skipped: bool,
}

impl Run {
    /// The run's first producer number.
    fn first(&self) -> u16 {
        self.newest.wrapping_sub(self.span.min(u32::from(u16::MAX)) as u16)
    }

    /// The offset for `sequence_number`, at or before `newest`, if it belongs to this run and
    /// was not its skipped first packet. `end` bounds the run from above when a newer run
    /// follows it (its first packet, exclusive).
    fn offset_of(&self, sequence_number: u16, end: Option<u16>) -> Option<u16> {
        let behind = i32::from(self.newest.wrapping_sub(sequence_number) as i16);
        let within = match end {
            // Between this run's newest and the next run's start: late packets of this run.
            Some(end) => behind < 0 && (end.wrapping_sub(sequence_number) as i16) > 0,
            None => false,
        };
        if !within && (behind < 0 || behind as u32 > self.span) {
            return None;
        }
        if self.starts_skipped && sequence_number == self.first() {
            return None;
        }
        Some(self.offset)
    }
}

impl SeqRewriter {
    /// How far behind the newest forwarded packet an older one may be and still be forwarded.
    ///
    /// Far beyond any reordering a network does (about 10 s of video at 100 packets/s), small
    /// enough that a stale packet never passes for a current one.
    pub const MAX_REORDER: u16 = 1000;

    /// A rewriter whose first forwarded packet gets `initial_sequence_number` and whose
    /// timestamps are the producer's plus `timestamp_offset`.
    ///
    /// RFC 3550 wants both initial values random; the caller draws them, so this stays
    /// deterministic.
    pub fn new(initial_sequence_number: u16, timestamp_offset: u32) -> Self {
        SeqRewriter {
            timestamp_offset,
            next_run_start: initial_sequence_number,
            run: None,
            previous: None,
            resync_pending: true,
            newest_timestamp: None,
        }
    }

    /// The packets the consumer will not get start now (pause, resume, waiting for a
    /// keyframe): the next forwarded packet continues at the last consumer number plus one,
    /// whatever the producer numbers in between.
    ///
    /// Until that packet arrives, the previous mapping still answers
    /// [`SeqRewriter::producer_seq`], so NACKs for packets sent before a pause still resolve.
    pub fn resync(&mut self) {
        self.resync_pending = true;
    }

    /// [`Self::resync`], leaving one number unused before the next packet: the consumer then
    /// sees the frame it was receiving as incomplete (one packet lost) rather than waiting
    /// for its end, which will not come. For a move to another stream in the middle of a
    /// frame, as mediasoup does.
    pub fn resync_leaving_a_gap(&mut self) {
        if !self.resync_pending {
            self.next_run_start = self.next_run_start.wrapping_add(1);
        }
        self.resync_pending = true;
    }

    /// The offset added to producer timestamps; the Sender Report translation needs it.
    pub fn timestamp_offset(&self) -> u32 {
        self.timestamp_offset
    }

    /// Timestamps from now on are the producer's plus `offset` (the consumer moved to another
    /// producer stream, whose clock started elsewhere).
    pub fn set_timestamp_offset(&mut self, offset: u32) {
        self.timestamp_offset = offset;
    }

    /// The newest timestamp given out, in the consumer's terms; `None` before the first.
    pub fn newest_timestamp(&self) -> Option<u32> {
        self.newest_timestamp
    }

    fn note_timestamp(&mut self, timestamp: u32) {
        let newer = self.newest_timestamp.is_none_or(|newest| (timestamp.wrapping_sub(newest) as i32) > 0);
        if newer {
            self.newest_timestamp = Some(timestamp);
        }
    }

    /// The consumer sequence number and timestamp of the producer packet `sequence_number`,
    /// `timestamp`, or `None` when it must be dropped (older than the current run or further
    /// back than [`SeqRewriter::MAX_REORDER`]). A duplicate gets the same numbers again.
    pub fn rewrite(&mut self, sequence_number: u16, timestamp: u32) -> Option<Rewritten> {
        let timestamp = timestamp.wrapping_add(self.timestamp_offset);
        let run = match self.run.as_mut() {
            Some(run) if !self.resync_pending => run,
            _ => {
                let start = self.next_run_start;
                self.run = Some(Run {
                    offset: start.wrapping_sub(sequence_number),
                    newest: sequence_number,
                    span: 0,
                    starts_skipped: false,
                });
                self.previous = None;
                self.resync_pending = false;
                self.next_run_start = start.wrapping_add(1);
                self.note_timestamp(timestamp);
                return Some(Rewritten {
                    sequence_number: start,
                    timestamp,
                });
            }
        };
        let ahead = sequence_number.wrapping_sub(run.newest) as i16;
        if ahead > 0 {
            run.newest = sequence_number;
            run.span = run.span.saturating_add(ahead as u32);
            let out = sequence_number.wrapping_add(run.offset);
            self.next_run_start = out.wrapping_add(1);
            self.note_timestamp(timestamp);
            return Some(Rewritten {
                sequence_number: out,
                timestamp,
            });
        }
        // `ahead` is in -32768..=0; `behind` fits a u32 whatever its value.
        let behind = u32::from(run.newest.wrapping_sub(sequence_number));
        if behind > u32::from(Self::MAX_REORDER) {
            return None;
        }
        let run = *run;
        let offset = run
            .offset_of(sequence_number, None)
            .or_else(|| self.previous.and_then(|previous| previous.offset_of(sequence_number, Some(run.first()))))?;
        Some(Rewritten {
            sequence_number: sequence_number.wrapping_add(offset),
            timestamp,
        })
    }

    /// The producer packet `sequence_number` is not for this consumer (a layer it does not
    /// get): the consumer's numbers close over it. Only a packet newer than every one seen
    /// can be closed over; an older one is already behind numbers given out, and stays a gap.
    pub fn skip(&mut self, sequence_number: u16) {
        if self.resync_pending {
            return;
        }
        let Some(run) = self.run.as_mut() else { return };
        let ahead = sequence_number.wrapping_sub(run.newest) as i16;
        if ahead <= 0 {
            return;
        }
        if ahead == 1 && run.starts_skipped && run.span == 0 {
            // Skipped right after a skipped packet: nothing between to keep a number for.
            run.newest = sequence_number;
            run.offset = run.offset.wrapping_sub(1);
            return;
        }
        let next = Run {
            offset: run.offset.wrapping_sub(1),
            newest: sequence_number,
            span: 0,
            starts_skipped: true,
        };
        self.previous = Some(*run);
        *run = next;
    }

    /// The producer sequence number of the packet the consumer knows as `consumer_seq`, for
    /// answering its NACKs; `None` when that number was not given out in the current run or
    /// the one before a skip (before a resync, or not sent yet).
    pub fn producer_seq(&self, consumer_seq: u16) -> Option<u16> {
        let run = self.run.as_ref()?;
        let candidate = consumer_seq.wrapping_sub(run.offset);
        if run.offset_of(candidate, None).is_some() {
            return Some(candidate);
        }
        let previous = self.previous.as_ref()?;
        let candidate = consumer_seq.wrapping_sub(previous.offset);
        previous.offset_of(candidate, Some(run.first())).map(|_| candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(rewriter: &mut SeqRewriter, producer_seq: u16) -> Option<u16> {
        rewriter
            .rewrite(producer_seq, 0)
            .map(|rewritten| rewritten.sequence_number)
    }

    #[test]
    fn first_packet_gets_the_initial_sequence_number() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        assert_eq!(seq(&mut rewriter, 42), Some(1000));
    }

    #[test]
    fn consecutive_packets_get_consecutive_numbers() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        let out: Vec<_> = (42..46).map(|s| seq(&mut rewriter, s)).collect();
        assert_eq!(out, [Some(1000), Some(1001), Some(1002), Some(1003)]);
    }

    #[test]
    fn producer_loss_stays_a_gap_so_the_consumer_can_nack_it() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 42);
        assert_eq!(seq(&mut rewriter, 45), Some(1003));
    }

    #[test]
    fn timestamp_gets_the_constant_offset() {
        let mut rewriter = SeqRewriter::new(0, 500);
        let out = rewriter.rewrite(7, 90_000).map(|r| r.timestamp);
        assert_eq!(out, Some(90_500));
    }

    #[test]
    fn timestamp_offset_wraps() {
        let mut rewriter = SeqRewriter::new(0, 10);
        let out = rewriter.rewrite(7, u32::MAX - 4).map(|r| r.timestamp);
        assert_eq!(out, Some(5));
    }

    #[test]
    fn after_a_pause_the_next_packet_continues_at_last_plus_one() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 11);
        rewriter.resync();
        // The producer went on sending 12..=499 while the consumer was paused.
        assert_eq!(seq(&mut rewriter, 500), Some(1002));
        assert_eq!(seq(&mut rewriter, 501), Some(1003));
    }

    #[test]
    fn dropping_until_a_keyframe_leaves_no_gap() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        // A new video consumer never forwarded 10..=19; the keyframe is 20.
        assert_eq!(seq(&mut rewriter, 20), Some(1000));
        assert_eq!(seq(&mut rewriter, 21), Some(1001));
    }

    #[test]
    fn timestamps_keep_their_offset_across_a_pause() {
        let mut rewriter = SeqRewriter::new(0, 100);
        rewriter.rewrite(10, 1_000);
        rewriter.resync();
        let out = rewriter.rewrite(500, 450_000).map(|r| r.timestamp);
        assert_eq!(out, Some(450_100));
    }

    #[test]
    fn producer_sequence_wrap_is_continuous() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        let out: Vec<_> = [65534, 65535, 0, 1]
            .iter()
            .map(|&s| seq(&mut rewriter, s))
            .collect();
        assert_eq!(out, [Some(1000), Some(1001), Some(1002), Some(1003)]);
    }

    #[test]
    fn consumer_sequence_wraps() {
        let mut rewriter = SeqRewriter::new(65535, 0);
        assert_eq!(seq(&mut rewriter, 7), Some(65535));
        assert_eq!(seq(&mut rewriter, 8), Some(0));
    }

    #[test]
    fn resync_continues_across_the_consumer_wrap() {
        let mut rewriter = SeqRewriter::new(65535, 0);
        seq(&mut rewriter, 7);
        rewriter.resync();
        assert_eq!(seq(&mut rewriter, 3000), Some(0));
    }

    #[test]
    fn reordered_packet_in_the_current_run_fills_its_hole() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 12);
        assert_eq!(seq(&mut rewriter, 11), Some(1001));
        assert_eq!(seq(&mut rewriter, 13), Some(1003));
    }

    #[test]
    fn reordered_packet_across_the_producer_wrap_fills_its_hole() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 65534);
        seq(&mut rewriter, 0);
        assert_eq!(seq(&mut rewriter, 65535), Some(1001));
    }

    #[test]
    fn duplicate_gets_the_same_number() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 11);
        assert_eq!(seq(&mut rewriter, 11), Some(1001));
        assert_eq!(seq(&mut rewriter, 10), Some(1000));
    }

    #[test]
    fn packet_from_before_the_run_is_dropped() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 20);
        seq(&mut rewriter, 21);
        assert_eq!(seq(&mut rewriter, 19), None);
    }

    #[test]
    fn packet_from_before_a_resync_is_dropped() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        rewriter.resync();
        seq(&mut rewriter, 50);
        seq(&mut rewriter, 51);
        assert_eq!(seq(&mut rewriter, 30), None);
    }

    #[test]
    fn packet_further_back_than_the_reorder_window_is_dropped() {
        let mut rewriter = SeqRewriter::new(0, 0);
        for s in 0..=2000 {
            seq(&mut rewriter, s);
        }
        assert_eq!(
            seq(&mut rewriter, 2000 - SeqRewriter::MAX_REORDER),
            Some(1000)
        );
        assert_eq!(seq(&mut rewriter, 1999 - SeqRewriter::MAX_REORDER), None);
    }

    #[test]
    fn half_the_sequence_space_ahead_counts_as_behind_and_is_dropped() {
        let mut rewriter = SeqRewriter::new(0, 0);
        seq(&mut rewriter, 100);
        seq(&mut rewriter, 101);
        assert_eq!(seq(&mut rewriter, 101 + 0x8000), None);
    }

    #[test]
    fn many_pauses_keep_the_consumer_sequence_gap_free() {
        let mut rewriter = SeqRewriter::new(500, 0);
        let mut producer: u16 = 65000;
        let mut sent = Vec::new();
        for round in 0..50u16 {
            for _ in 0..(round % 7 + 1) {
                sent.push(seq(&mut rewriter, producer).expect("in order"));
                producer = producer.wrapping_add(1);
            }
            rewriter.resync();
            producer = producer.wrapping_add(round * 37 + 1);
        }
        let expected: Vec<u16> = (0..sent.len() as u16)
            .map(|i| 500u16.wrapping_add(i))
            .collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn nack_maps_back_to_the_producer_sequence_number() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        rewriter.resync();
        for s in 300..310 {
            seq(&mut rewriter, s);
        }
        assert_eq!(rewriter.producer_seq(1004), Some(304));
        assert_eq!(rewriter.producer_seq(1000), Some(300));
        assert_eq!(rewriter.producer_seq(1009), Some(309));
    }

    #[test]
    fn nack_maps_back_across_both_wraps() {
        let mut rewriter = SeqRewriter::new(65534, 0);
        for s in [65535, 0, 1, 2] {
            seq(&mut rewriter, s);
        }
        assert_eq!(rewriter.producer_seq(65535), Some(0));
        assert_eq!(rewriter.producer_seq(0), Some(1));
    }

    #[test]
    fn nack_for_a_number_not_yet_sent_maps_to_nothing() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        assert_eq!(rewriter.producer_seq(1001), None);
    }

    #[test]
    fn nack_for_a_number_before_the_run_maps_to_nothing() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 11);
        rewriter.resync();
        seq(&mut rewriter, 80);
        assert_eq!(rewriter.producer_seq(1001), None);
        assert_eq!(rewriter.producer_seq(1002), Some(80));
    }

    #[test]
    fn nack_while_paused_still_maps_through_the_previous_run() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 11);
        rewriter.resync();
        assert_eq!(rewriter.producer_seq(1001), Some(11));
    }

    #[test]
    fn nack_before_any_packet_maps_to_nothing() {
        let rewriter = SeqRewriter::new(1000, 0);
        assert_eq!(rewriter.producer_seq(1000), None);
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;

    fn seq(rewriter: &mut SeqRewriter, producer_seq: u16) -> Option<u16> {
        rewriter.rewrite(producer_seq, 0).map(|rewritten| rewritten.sequence_number)
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        assert_eq!(seq(&mut rewriter, 10), Some(1000));
        rewriter.skip(11);
        assert_eq!(seq(&mut rewriter, 12), Some(1001));
        // A frame of three packets skipped at once.
        for s in 13..16 {
            rewriter.skip(s);
        }
        assert_eq!(seq(&mut rewriter, 16), Some(1002));
        assert_eq!(seq(&mut rewriter, 17), Some(1003));
    }

    #[test]
    fn a_late_packet_from_before_a_skip_gets_its_own_number() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        assert_eq!(seq(&mut rewriter, 10), Some(1000));
        rewriter.skip(12);
        assert_eq!(seq(&mut rewriter, 13), Some(1002));
        // 11 was on its way (or lost and retransmitted): it fills the hole left for it.
        assert_eq!(seq(&mut rewriter, 11), Some(1001));
        assert_eq!(rewriter.producer_seq(1001), Some(11));
        assert_eq!(rewriter.producer_seq(1002), Some(13));
        assert_eq!(rewriter.producer_seq(1000), Some(10));
    }

    #[test]
    fn a_skipped_packet_arriving_again_is_dropped() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        rewriter.skip(11);
        assert_eq!(seq(&mut rewriter, 11), None, "its number went to the next packet");
        assert_eq!(seq(&mut rewriter, 12), Some(1001));
    }

    #[test]
    fn an_old_packet_cannot_be_skipped() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        seq(&mut rewriter, 12);
        rewriter.skip(11);
        assert_eq!(seq(&mut rewriter, 13), Some(1003), "11 stays the gap the consumer saw");
    }

    #[test]
    fn skips_before_the_first_packet_or_while_resyncing_change_nothing() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        rewriter.skip(9);
        assert_eq!(seq(&mut rewriter, 10), Some(1000));
        rewriter.resync();
        rewriter.skip(20);
        assert_eq!(seq(&mut rewriter, 30), Some(1001));
    }

    #[test]
    fn a_new_timestamp_offset_applies_to_the_next_packets() {
        let mut rewriter = SeqRewriter::new(0, 100);
        assert_eq!(rewriter.newest_timestamp(), None);
        rewriter.rewrite(1, 9_000);
        assert_eq!(rewriter.newest_timestamp(), Some(9_100));
        // Another stream whose clock reads 500 now: it continues one frame after 9 100.
        rewriter.set_timestamp_offset(9_100 + 3_000 - 500);
        rewriter.resync();
        assert_eq!(rewriter.rewrite(77, 500).map(|r| r.timestamp), Some(12_100));
        assert_eq!(rewriter.newest_timestamp(), Some(12_100));
    }

    #[test]
    fn a_resync_in_the_middle_of_a_frame_can_leave_one_number_free() {
        let mut rewriter = SeqRewriter::new(1000, 0);
        seq(&mut rewriter, 10);
        rewriter.resync_leaving_a_gap();
        rewriter.resync_leaving_a_gap();
        assert_eq!(seq(&mut rewriter, 500), Some(1002), "one number, however often asked");
    }
}
