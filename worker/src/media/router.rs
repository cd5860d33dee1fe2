//! Where a packet is forwarded: one [`Router`] per room, sans-IO.
//!
//! A decrypted RTP packet from a producer's transport goes through the room's
//! [`ForwardingTable`]: one copy per active consumer that can decode it, with SSRC, payload type
//! and header extension ids rewritten in place ([`RtpView`]), handed back as [`Outgoing`]
//! packets for the consumers' transports to encrypt and send.
//!
//! RTCP from consumers: keyframe requests (PLI, FIR) are translated to the producer's SSRC and
//! sent to the producer at most once per [`KEYFRAME_REQUEST_INTERVAL`] per stream. A new or
//! resumed video consumer asks for a keyframe itself, so its picture starts at once.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::media::rtp_packet::RtpView;
use crate::room::{ConsumerId, ForwardingTable, TransportId};
use crate::rtp::{MediaKind, PayloadType, Ssrc};

/// Keyframe requests reach a producer at most this often (DESIGN.md section 7): every new
/// consumer would otherwise cost the publisher a full frame.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// The SSRC the worker signs its own RTCP with.
const WORKER_SSRC: u32 = 0xFA_0000_01;

/// A packet for one transport, in the clear (the transport encrypts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub transport: TransportId,
    pub packet: Vec<u8>,
    pub rtcp: bool,
}

/// The forwarding state of one room.
#[derive(Debug, Default)]
pub struct Router {
    table: ForwardingTable,
    /// Producer streams `(transport, ssrc)` with the time of their last keyframe request.
    last_keyframe_request: HashMap<(TransportId, Ssrc), Instant>,
    /// Consumers that were active (not paused) in the previous table.
    active_consumers: BTreeSet<ConsumerId>,
    /// Packets forwarded, for stats.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
}

impl Router {
    /// Installs the room's new table. Video consumers that became active (new, or resumed)
    /// trigger a keyframe request to their producer.
    pub fn update(&mut self, table: ForwardingTable, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let mut active = BTreeSet::new();
        let mut wants_keyframe = Vec::new();
        for ((transport, ssrc), stream) in table.streams() {
            if stream.rtx || stream.kind != MediaKind::Video {
                for t in stream.targets.iter().filter(|t| !t.paused) {
                    active.insert(t.consumer_id.clone());
                }
                continue;
            }
            for t in stream.targets.iter().filter(|t| !t.paused) {
                active.insert(t.consumer_id.clone());
                if !self.active_consumers.contains(&t.consumer_id) && !stream.producer_paused {
                    wants_keyframe.push((transport.clone(), *ssrc));
                }
            }
        }
        self.table = table;
        self.active_consumers = active;
        // Streams that are gone need no request history.
        let table = &self.table;
        self.last_keyframe_request.retain(|(t, s), _| table.stream(t, *s).is_some());
        wants_keyframe.dedup();
        for (transport, ssrc) in wants_keyframe {
            self.request_keyframe(&transport, ssrc, now, &mut out);
        }
        out
    }

    pub fn table(&self) -> &ForwardingTable {
        &self.table
    }

    /// A decrypted RTP packet arrived on `from`: the copies to send.
    pub fn on_rtp(&mut self, from: &TransportId, packet: &[u8]) -> Vec<Outgoing> {
        let Some(view) = RtpView::parse(packet) else { return Vec::new() };
        let ssrc = Ssrc(RtpView::ssrc(packet));
        let pt = PayloadType(RtpView::payload_type(packet));
        let Some(stream) = self.table.stream(from, ssrc) else { return Vec::new() };
        let mut out = Vec::new();
        for forward in self.table.forward(from, ssrc, pt) {
            let Some(target) = stream.targets.iter().find(|t| t.consumer_id == forward.consumer_id) else { continue };
            let mut copy = packet.to_vec();
            RtpView::set_ssrc(&mut copy, forward.ssrc.0);
            RtpView::set_payload_type(&mut copy, forward.payload_type.0);
            view.rewrite_extension_ids(&mut copy, &target.header_extension_ids);
            self.forwarded_packets += 1;
            self.forwarded_bytes += copy.len() as u64;
            out.push(Outgoing { transport: forward.transport_id, packet: copy, rtcp: false });
        }
        out
    }

    /// A decrypted RTCP compound packet arrived on `from`.
    pub fn on_rtcp(&mut self, from: &TransportId, packet: &[u8], now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (pt, fmt, body) in rtcp_packets(packet) {
            let keyframe_request = pt == 206 && (fmt == 1 || fmt == 4);
            if !keyframe_request {
                continue;
            }
            // PLI: media SSRC at body[4..8]. FIR: the FCI entries (SSRC, seq) after 8 bytes.
            let media_ssrcs: Vec<u32> = if fmt == 1 {
                body.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).into_iter().collect()
            } else {
                body.get(8..)
                    .unwrap_or_default()
                    .chunks_exact(8)
                    .map(|e| u32::from_be_bytes([e[0], e[1], e[2], e[3]]))
                    .collect()
            };
            for consumer_ssrc in media_ssrcs {
                if let Some((transport, ssrc)) = self.producer_stream_of(from, consumer_ssrc) {
                    self.request_keyframe(&transport, ssrc, now, &mut out);
                }
            }
        }
        out
    }

    /// The producer stream a consumer on `transport` knows as `consumer_ssrc`.
    fn producer_stream_of(&self, transport: &TransportId, consumer_ssrc: u32) -> Option<(TransportId, Ssrc)> {
        self.table.streams().find_map(|((t, s), stream)| {
            stream
                .targets
                .iter()
                .any(|target| &target.transport_id == transport && target.ssrc.0 == consumer_ssrc)
                .then(|| (t.clone(), *s))
        })
    }

    fn request_keyframe(&mut self, transport: &TransportId, ssrc: Ssrc, now: Instant, out: &mut Vec<Outgoing>) {
        let key = (transport.clone(), ssrc);
        if self.last_keyframe_request.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        self.last_keyframe_request.insert(key, now);
        out.push(Outgoing { transport: transport.clone(), packet: pli(WORKER_SSRC, ssrc.0), rtcp: true });
    }
}

/// A Picture Loss Indication (RFC 4585 6.3.1).
pub fn pli(sender_ssrc: u32, media_ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 206, 0, 2];
    p.extend_from_slice(&sender_ssrc.to_be_bytes());
    p.extend_from_slice(&media_ssrc.to_be_bytes());
    p
}

/// Splits an RTCP compound packet into `(packet type, count/format, body after the 4-byte
/// header)`; stops at the first malformed packet.
pub fn rtcp_packets(compound: &[u8]) -> impl Iterator<Item = (u8, u8, &[u8])> {
    let mut rest = compound;
    std::iter::from_fn(move || {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return None;
        }
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        let packet = rest.get(..len)?;
        rest = &rest[len..];
        Some((packet[1], packet[0] & 0x1f, &packet[4..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::video_call;
    use crate::media::rtp_packet::tests::packet;
    use crate::rtp::header_extension_uri as uri;

    /// Chrome sends VP8 as payload type 96 on SSRC 2471283948 with abs-send-time as id 2.
    const CHROME_VP8_SSRC: u32 = 2471283948;

    fn consumer_rtp(call: &crate::fixtures::VideoCall) -> crate::rtp::RtpParameters {
        call.rooms.room(&call.room).unwrap().consumer(&call.consumer).unwrap().rtp_parameters.clone()
    }

    #[test]
    fn a_producer_packet_reaches_the_consumer_with_its_ssrc_payload_type_and_extension_ids() {
        let call = video_call();
        let mut router = Router::default();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        let consumer = consumer_rtp(&call);
        let abs_send_time_id = consumer.header_extensions.iter().find(|e| e.uri == uri::ABS_SEND_TIME).unwrap().id;

        let sent = packet(96, 500, 9000, CHROME_VP8_SSRC, &[(2, &[1, 2, 3]), (5, &[7])], b"vp8 frame");
        let out = router.on_rtp(&call.alice_send, &sent);
        assert_eq!(out.len(), 1);
        let copy = &out[0];
        assert_eq!(copy.transport, call.bob_recv);
        assert!(!copy.rtcp);
        let p = &copy.packet;
        assert_eq!(RtpView::ssrc(p), consumer.encodings[0].ssrc.unwrap().0);
        assert_eq!(RtpView::payload_type(p), consumer.codecs[0].payload_type.0);
        assert_eq!(RtpView::sequence(p), 500);
        let view = RtpView::parse(p).unwrap();
        assert_eq!(view.extension(p, abs_send_time_id), Some(&[1u8, 2, 3][..]));
        assert_eq!(view.extension(p, 5), None, "an extension the producer did not negotiate is removed");
        assert_eq!(view.payload(p), b"vp8 frame");
        assert_eq!(router.forwarded_packets, 1);
    }

    #[test]
    fn rtx_packets_go_to_the_consumers_rtx_stream() {
        let call = video_call();
        let mut router = Router::default();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        let consumer = consumer_rtp(&call);
        let out = router.on_rtp(&call.alice_send, &packet(97, 1, 1, 1389617367, &[], b"\x01\xf4retransmitted"));
        assert_eq!(out.len(), 1);
        assert_eq!(RtpView::ssrc(&out[0].packet), consumer.encodings[0].rtx.unwrap().ssrc.0);
        let rtx_pt = consumer.codecs.iter().find(|c| c.mime_type.eq_ignore_ascii_case("video/rtx")).unwrap().payload_type.0;
        assert_eq!(RtpView::payload_type(&out[0].packet), rtx_pt);
    }

    #[test]
    fn unknown_streams_garbage_and_paused_consumers_get_nothing() {
        let mut call = video_call();
        let mut router = Router::default();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        assert!(router.on_rtp(&call.alice_send, &packet(96, 1, 1, 12345, &[], b"x")).is_empty(), "unknown SSRC");
        assert!(router.on_rtp(&call.bob_recv, &packet(96, 1, 1, CHROME_VP8_SSRC, &[], b"x")).is_empty(), "wrong transport");
        assert!(router.on_rtp(&call.alice_send, &[0x80, 96, 0]).is_empty(), "truncated");
        call.rooms.pause_consumer(&call.room, &call.consumer).unwrap();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        assert!(router.on_rtp(&call.alice_send, &packet(96, 1, 1, CHROME_VP8_SSRC, &[], b"x")).is_empty());
    }

    #[test]
    fn a_new_video_consumer_asks_the_producer_for_a_keyframe() {
        let call = video_call();
        let mut router = Router::default();
        let out = router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        assert_eq!(out, vec![Outgoing { transport: call.alice_send.clone(), packet: pli(WORKER_SSRC, CHROME_VP8_SSRC), rtcp: true }]);
        // The same table again: nobody new, no request.
        assert!(router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now() + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn a_resumed_consumer_asks_for_a_keyframe_again() {
        let mut call = video_call();
        let mut router = Router::default();
        let t0 = Instant::now();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), t0);
        call.rooms.pause_consumer(&call.room, &call.consumer).unwrap();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), t0 + Duration::from_secs(2));
        call.rooms.resume_consumer(&call.room, &call.consumer).unwrap();
        let out = router.update(call.rooms.forwarding_table(&call.room).unwrap(), t0 + Duration::from_secs(4));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].transport, call.alice_send);
    }

    #[test]
    fn a_consumers_pli_reaches_the_producer_at_most_once_a_second() {
        let call = video_call();
        let mut router = Router::default();
        let t0 = Instant::now();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), t0);
        let consumer_ssrc = consumer_rtp(&call).encodings[0].ssrc.unwrap().0;
        let from_bob = pli(0xB0B, consumer_ssrc);
        let out = router.on_rtcp(&call.bob_recv, &from_bob, t0 + Duration::from_millis(1500));
        assert_eq!(out, vec![Outgoing { transport: call.alice_send.clone(), packet: pli(WORKER_SSRC, CHROME_VP8_SSRC), rtcp: true }]);
        assert!(router.on_rtcp(&call.bob_recv, &from_bob, t0 + Duration::from_millis(1900)).is_empty(), "throttled");
        assert_eq!(router.on_rtcp(&call.bob_recv, &from_bob, t0 + Duration::from_millis(2600)).len(), 1);
    }

    #[test]
    fn a_fir_is_relayed_as_a_keyframe_request_too() {
        let call = video_call();
        let mut router = Router::default();
        let t0 = Instant::now();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), t0);
        let consumer_ssrc = consumer_rtp(&call).encodings[0].ssrc.unwrap().0;
        // FIR: header, sender SSRC, media SSRC 0, one FCI entry (SSRC, seq nr, reserved).
        let mut fir = vec![0x84, 206, 0, 4, 0, 0, 0xB, 0xB, 0, 0, 0, 0];
        fir.extend_from_slice(&consumer_ssrc.to_be_bytes());
        fir.extend_from_slice(&[1, 0, 0, 0]);
        let out = router.on_rtcp(&call.bob_recv, &fir, t0 + Duration::from_secs(2));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].packet, pli(WORKER_SSRC, CHROME_VP8_SSRC));
    }

    #[test]
    fn malformed_rtcp_is_ignored() {
        let call = video_call();
        let mut router = Router::default();
        router.update(call.rooms.forwarding_table(&call.room).unwrap(), Instant::now());
        for junk in [&[][..], &[0x81, 206, 0xff, 0xff][..], &[0x00; 16][..], &[0x81, 206, 0, 1, 1, 2, 3][..]] {
            assert!(router.on_rtcp(&call.bob_recv, junk, Instant::now()).is_empty());
        }
    }
}
