//! Feedback towards publishers, so their browsers' estimators have something to estimate
//! from (mediasoup's `TransportCongestionControlServer`).
//!
//! - transport-cc: every packet of a send transport carrying a transport-wide sequence number
//!   is recorded with its arrival time, and a feedback report (RTCP transport-cc,
//!   draft-holmer-rmcat-transport-wide-cc-extensions-01) goes back every 100 ms, mediasoup's
//!   and libwebrtc's default cadence. The recording and the report's encoding are the `rtc`
//!   crate's `TwccReceiverInterceptor` (a port of libwebrtc's packet arrival map and feedback
//!   builder), driven sans-IO with our clock; [`TransportCcFeedback`] only adapts our packets
//!   to it and marshals what it emits.
//! - REMB, when a transport's producers negotiated only abs-send-time and goog-remb: the
//!   receive-side estimate of [`super::remb::RembEstimator`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{AttributedPacket, Interceptor, Packet, RTPHeaderExtension, StreamInfo, TaggedPacket, TwccReceiverBuilder, TwccReceiverInterceptor};
use rtc::sansio::Protocol;

use crate::rtp::header_extension_uri::TRANSPORT_WIDE_CC;

/// How often feedback goes out (mediasoup's `TransportCcFeedbackSendInterval`).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// Transport-wide feedback for one send transport.
pub struct TransportCcFeedback {
    recorder: TwccReceiverInterceptor,
    extension_id: u8,
}

impl std::fmt::Debug for TransportCcFeedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportCcFeedback").field("extension_id", &self.extension_id).finish_non_exhaustive()
    }
}

impl TransportCcFeedback {
    /// Feedback for packets carrying the transport-wide sequence number as extension `extension_id`.
    pub fn new(extension_id: u8) -> Self {
        let mut recorder = TwccReceiverBuilder::new().with_interval(FEEDBACK_INTERVAL).build();
        // Transport-wide: bound once, it applies to every SSRC of the transport (RTX and
        // streams not bound yet included).
        recorder.bind_remote_stream(&StreamInfo {
            rtp_header_extensions: vec![RTPHeaderExtension { uri: TRANSPORT_WIDE_CC.to_owned(), id: u16::from(extension_id) }],
            ..StreamInfo::default()
        });
        TransportCcFeedback { recorder, extension_id }
    }

    pub fn extension_id(&self) -> u8 {
        self.extension_id
    }

    /// A packet of `ssrc` with transport-wide sequence number `sequence` arrived at `at`.
    pub fn on_packet(&mut self, ssrc: u32, sequence: u16, at: Instant) {
        let header = rtc::rtp::header::Header {
            version: 2,
            extension: true,
            extension_profile: rtc::rtp::header::EXTENSION_PROFILE_ONE_BYTE,
            extensions: vec![rtc::rtp::header::Extension { id: self.extension_id, payload: Bytes::copy_from_slice(&sequence.to_be_bytes()) }],
            ssrc,
            ..Default::default()
        };
        let packet = TaggedPacket {
            now: at,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet { header, payload: Bytes::new() })),
        };
        if self.recorder.handle_read(packet).is_ok() {
            // The recorder passes every packet on; this is where its walk ends.
            while self.recorder.poll_read().is_some() {}
        }
    }

    /// When the next report is due (none before the first packet).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.recorder.poll_timeout()
    }

    /// The reports due at `now`, each a marshalled RTCP packet.
    pub fn poll_feedback(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.recorder.poll_timeout().is_none_or(|at| now < at) || self.recorder.handle_timeout(now).is_err() {
            return out;
        }
        while let Some(tagged) = self.recorder.poll_write() {
            if let Packet::Rtcp(packets) = tagged.message.packet
                && let Ok(bytes) = rtc::rtcp::packet::marshal(&packets)
            {
                out.push(bytes.to_vec());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

    fn parse(report: &[u8]) -> TransportLayerCc {
        let packets = rtc::rtcp::packet::unmarshal(&mut &report[..]).unwrap();
        packets[0].as_any().downcast_ref::<TransportLayerCc>().expect("transport-cc feedback").clone()
    }

    #[test]
    fn arrivals_are_reported_every_100_ms_with_their_spacing_and_losses() {
        let t0 = Instant::now();
        let mut feedback = TransportCcFeedback::new(3);
        assert_eq!(feedback.poll_timeout(), None, "nothing to report before the first packet");
        // Sequence 10..=19 arrive 2 ms apart, 15 lost.
        for seq in (10..20u16).filter(|s| *s != 15) {
            feedback.on_packet(1111, seq, t0 + Duration::from_millis(2 * u64::from(seq - 10)));
        }
        assert!(feedback.poll_feedback(t0 + Duration::from_millis(50)).is_empty(), "not due yet");
        let reports = feedback.poll_feedback(t0 + Duration::from_millis(100));
        assert_eq!(reports.len(), 1);
        let report = parse(&reports[0]);
        assert_eq!((report.base_sequence_number, report.packet_status_count, report.media_ssrc), (10, 10, 1111));
        let acks: Vec<_> = rtc::interceptor::convert_twcc(&report).into_iter().take(10).collect();
        assert!(!acks[5].arrived && acks.iter().filter(|a| a.arrived).count() == 9);
        let arrivals: Vec<Duration> = acks.iter().filter_map(|a| a.arrival).collect();
        for pair in arrivals.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap == Duration::from_millis(2) || gap == Duration::from_millis(4), "{gap:?}");
        }
        // The next report starts after what this one covered.
        feedback.on_packet(1111, 20, t0 + Duration::from_millis(120));
        let next = parse(&feedback.poll_feedback(t0 + Duration::from_millis(200))[0]);
        assert_eq!((next.base_sequence_number, next.packet_status_count), (20, 1));
        assert_eq!(next.fb_pkt_count, report.fb_pkt_count.wrapping_add(1));
    }
}
