//! RTCP-driven media repair and timing: keyframes, NACK/RTX, Sender and Receiver Reports,
//! and the per-consumer rewriting of sequence numbers and timestamps they rely on.
//!
//! Everything here is sans-IO: time is passed in as an [`std::time::Instant`], nothing reads a
//! clock, draws a random number or touches a socket. Callers parse and build RTCP with the
//! `rtc` crate (low rate); the per-packet parts (sequence rewriting, the retransmission
//! buffer, keyframe detection) work on plain integers and byte slices and do not allocate.
//!
//! # Who owns what
//!
//! Per **producer stream** (one per incoming SSRC; shared by all its consumers):
//! - [`RetransmissionBuffer`]: the last packets as the producer sent them, to answer NACKs.
//! - [`NackGenerator`]: notices gaps and decides which numbers to NACK the producer for.
//! - [`ReceiverStats`]: loss, jitter and SR timing for the Receiver Reports to the producer.
//! - [`KeyframeRequester`]: merges keyframe needs of all consumers into at most one PLI or
//!   FIR per second.
//! - [`LatestKeyframe`]: where its newest keyframe starts in the retransmission buffer, so a
//!   consumer that starts just after it passed is sent it again instead of waiting for one.
//!
//! Per **consumer stream**:
//! - [`SeqRewriter`]: producer sequence number/timestamp to the consumer's, gap-free across
//!   pause, resume and the wait for a keyframe; maps the consumer's NACKs back.
//! - [`KeyframeGate`]: drops video until a keyframe, for new and resumed consumers.
//! - [`SenderReportTranslator`]: the consumer's Sender Reports, from the producer's.
//!
//! # The flow
//!
//! A producer packet: [`NackGenerator::on_packet`], [`ReceiverStats::on_packet`],
//! [`RetransmissionBuffer::insert`]; if [`is_keyframe`], [`KeyframeRequester::on_keyframe`].
//! Then per consumer: [`KeyframeGate::admit`], [`SeqRewriter::rewrite`], write the header,
//! send, [`SenderReportTranslator::on_packet_sent`].
//!
//! A consumer NACK: for each number of [`nack_to_seqs`], [`SeqRewriter::producer_seq`], then
//! [`RetransmissionBuffer::lookup`]; rewrite the packet for the consumer and send it with
//! [`build_rtx`] when the consumer has RTX, as it is otherwise.
//!
//! A consumer PLI/FIR, and every new or resumed video consumer ([`KeyframeGate::close`] and
//! [`SeqRewriter::resync`]): [`KeyframeRequester::request`]; send what it returns, and what
//! [`KeyframeRequester::poll`] returns at its [`KeyframeRequester::poll_timeout`].
//!
//! A producer SR: [`ReceiverStats::on_sender_report`] and, for each consumer,
//! [`SenderReportTranslator::on_producer_sender_report`]. On the RTCP timer: a Receiver
//! Report to each producer from [`ReceiverStats::reception_report`], a Sender Report to each
//! consumer from [`SenderReportTranslator::sender_report`], and NACKs from
//! [`NackGenerator::poll_nacks`]. Producer retransmissions arrive on its RTX stream:
//! [`unwrap_rtx`] them and treat them as producer packets.
//!
//! # Memory: under 64 KiB per consumer
//!
//! The costly state is the retransmission buffer (512 slots of 1500 bytes, about 750 KiB),
//! and it belongs to the producer stream: every consumer gets the same packets with only the
//! header changed, and because a consumer's sequence numbers are the producer's plus an offset
//! between resyncs, its NACKs map back to the producer's packets. A consumer stream holds only
//! its [`SeqRewriter`], [`KeyframeGate`] and [`SenderReportTranslator`], under a hundred bytes
//! (checked by a test below), so the 64 KiB budget is left to the transport and its buffers.

pub mod keyframe;
pub mod nack;
pub mod report;
pub mod retransmit;
pub mod seq;

pub use keyframe::{
    KeyframeGate, KeyframeRequest, KeyframeRequestKind, KeyframeRequester, LatestKeyframe, ReplayLimits,
    ReplayRange, VideoCodec, is_keyframe,
};
pub use nack::{NackConfig, NackGenerator, NackStats};
pub use report::{ReceiverStats, SenderReportTranslator, ntp_middle};
pub use retransmit::{
    InsertError, RetransmissionBuffer, RtxError, RtxHeader, build_rtx, nack_to_seqs, unwrap_rtx,
};
pub use seq::{Rewritten, SeqRewriter};

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::rtp::{PayloadType, Ssrc};

    #[test]
    fn per_consumer_state_stays_far_below_its_budget() {
        let per_consumer = std::mem::size_of::<SeqRewriter>()
            + std::mem::size_of::<KeyframeGate>()
            + std::mem::size_of::<SenderReportTranslator>();
        assert!(
            per_consumer <= 128,
            "{per_consumer} bytes per consumer stream"
        );
    }

    /// An RTP packet with PT 96, SSRC 1, the given sequence number and timestamp.
    fn producer_packet(seq: u16, timestamp: u32) -> Vec<u8> {
        let mut bytes = vec![0x80, 96];
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"payload");
        bytes
    }

    #[test]
    fn consumer_nack_after_a_pause_is_answered_from_the_producer_buffer() {
        let now = Instant::now();
        let mut buffer = RetransmissionBuffer::with_defaults();
        let mut rewriter = SeqRewriter::new(40_000, 0);
        for seq in 100..110u16 {
            buffer.insert(&producer_packet(seq, 0), now).unwrap();
            if !(103..=105).contains(&seq) {
                // Paused for 103..=105.
                rewriter.rewrite(seq, 0);
            }
            if seq == 102 {
                rewriter.resync();
            }
        }
        // The consumer saw 40000..=40002 then 40003..=40006 for producer 106..=109; it lost
        // 40004 (producer 107) and NACKs it.
        let producer_seq = rewriter.producer_seq(40_004).expect("in the current run");
        assert_eq!(producer_seq, 107);
        let original = buffer.lookup(producer_seq, now).expect("still buffered");
        let mut rtx = [0u8; 64];
        let header = RtxHeader {
            ssrc: Ssrc(9),
            payload_type: PayloadType(97),
            sequence_number: 0,
        };
        let len = build_rtx(original, 40_004, header, &mut rtx).unwrap();
        assert_eq!(&rtx[12..14], &40_004u16.to_be_bytes());
        assert_eq!(&rtx[14..len], b"payload");
    }
}
