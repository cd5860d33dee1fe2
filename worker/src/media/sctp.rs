//! SCTP over a transport's DTLS (RFC 8261): the association WebRTC data channels run on, on
//! the webrtc-rs `rtc-sctp` crate, sans-IO.
//!
//! mediasoup-client opens every data channel as `negotiated` with the stream id signalling
//! agreed on (`produce-data` / `consume-data`), so no DCEP handshake (RFC 8832) ever runs:
//! a DataProducer is a stream id the browser sends on, a DataConsumer a stream id the worker
//! sends on, with the reliability its parameters say. DCEP messages that do come are ignored
//! and counted, as mediasoup does.
//!
//! The worker only answers the association the peer starts, in either DTLS role: browsers
//! send INIT as DTLS client and as DTLS server alike (libwebrtc connects from both ends), so
//! the worker never needs to, and no INIT collision can happen. The session is made when the
//! first SCTP packet arrives, so a transport whose client never opens data channels holds none.
//!
//! Memory is bounded: inbound messages larger than `maxMessageSize` are dropped (SCTP's own
//! receive window bounds what is buffered before reassembly), and a consumer stream whose
//! send buffer holds more than [`SEND_BUFFER_BYTES`] drops further messages (mediasoup's
//! `sctpSendBufferSize`, same default) rather than queueing without end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rtc::sctp::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, Payload,
    PayloadProtocolIdentifier, ReliabilityType, ServerConfig, StreamEvent, TransportConfig,
};
use rtc::shared::TransportProtocol;

/// The SCTP port in every transport's `sctpParameters` (WebRTC always uses 5000).
pub const SCTP_PORT: u16 = 5000;
/// mediasoup's default `maxSctpMessageSize`.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 262_144;
/// The worker's outgoing and incoming stream counts (`OS`, `MIS`), mediasoup's defaults.
pub const NUM_STREAMS: u16 = 1024;
/// Bytes a consumer stream may have queued for sending before messages to it are dropped
/// (mediasoup's default `sctpSendBufferSize`).
pub const SEND_BUFFER_BYTES: usize = 262_144;

/// The fixed address the SCTP endpoint knows the peer by: the association runs over one DTLS
/// connection, whatever ICE tuple carries it.
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)), 9);

/// WebRTC's payload protocol identifiers for data channel messages (RFC 8831 section 8).
pub mod ppid {
    pub const DCEP: u32 = 50;
    pub const STRING: u32 = 51;
    pub const BINARY: u32 = 53;
    pub const STRING_EMPTY: u32 = 56;
    pub const BINARY_EMPTY: u32 = 57;

    /// True for the identifiers of application messages (the ones forwarded).
    pub fn is_message(ppid: u32) -> bool {
        matches!(ppid, STRING | BINARY | STRING_EMPTY | BINARY_EMPTY)
    }
}

/// One whole message on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpMessage {
    pub stream_id: u16,
    /// Its payload protocol identifier (string or binary; see [`ppid`]).
    pub ppid: u32,
    pub payload: Bytes,
}

/// How a stream delivers: mediasoup's `sctpStreamParameters` without the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamReliability {
    pub ordered: bool,
    /// Give up on a message after this many milliseconds.
    pub max_packet_life_time: Option<u16>,
    /// Give up on a message after this many retransmissions.
    pub max_retransmits: Option<u16>,
}

impl StreamReliability {
    /// `(unordered, type, value)` as `rtc-sctp` takes them.
    fn sctp_params(self) -> (bool, ReliabilityType, u32) {
        match (self.max_retransmits, self.max_packet_life_time) {
            (Some(n), _) => (!self.ordered, ReliabilityType::Rexmit, u32::from(n)),
            (None, Some(ms)) => (!self.ordered, ReliabilityType::Timed, u32::from(ms)),
            (None, None) => (!self.ordered, ReliabilityType::Reliable, 0),
        }
    }
}

/// Why a message was not sent or not delivered. Counted per reason in the worker's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SctpDrop {
    /// The association is not up (yet, or any more).
    NotConnected,
    /// Larger than `maxMessageSize`.
    TooLarge,
    /// The consumer stream's send buffer is full: its receiver does not keep up.
    SendBufferFull,
    /// A DCEP message (negotiated channels need none).
    Dcep,
    /// A payload protocol identifier that is not a data channel message.
    UnknownPpid,
    /// The SCTP stack refused the message or packet.
    Refused,
}

impl SctpDrop {
    pub fn as_str(self) -> &'static str {
        match self {
            SctpDrop::NotConnected => "sctp_not_connected",
            SctpDrop::TooLarge => "sctp_message_too_large",
            SctpDrop::SendBufferFull => "sctp_send_buffer_full",
            SctpDrop::Dcep => "sctp_dcep_ignored",
            SctpDrop::UnknownPpid => "sctp_unknown_ppid",
            SctpDrop::Refused => "sctp_refused",
        }
    }
}

fn transport_config(max_message_size: u32) -> TransportConfig {
    TransportConfig::default()
        .with_sctp_port(SCTP_PORT)
        .with_max_message_size(max_message_size)
        .with_max_num_inbound_streams(NUM_STREAMS)
        .with_max_num_outbound_streams(NUM_STREAMS)
}

/// The SCTP association of one transport.
pub struct SctpSession {
    endpoint: Endpoint,
    association: Option<(AssociationHandle, Association)>,
    max_message_size: usize,
    connected: bool,
    messages: VecDeque<SctpMessage>,
    /// Messages dropped, by reason (the transport passes them on).
    pub drops: Vec<SctpDrop>,
}

impl SctpSession {
    /// Ready to answer the peer's INIT, taking messages of up to `max_message_size` bytes.
    pub fn new(max_message_size: u32) -> Self {
        let transport = transport_config(max_message_size);
        let local = SocketAddr::from(([0, 0, 0, 0], SCTP_PORT));
        let endpoint_config = Arc::new(EndpointConfig::new());
        let server = Arc::new(ServerConfig::new(transport));
        SctpSession {
            endpoint: Endpoint::new(local, TransportProtocol::UDP, endpoint_config, Some(server)),
            association: None,
            max_message_size: max_message_size as usize,
            connected: false,
            messages: VecDeque::new(),
            drops: Vec::new(),
        }
    }

    /// The peer's side, as a browser runs it: sends INIT at once (test and load clients).
    pub fn client(max_message_size: u32, now: Instant) -> Self {
        let mut session = SctpSession::new(max_message_size);
        session.endpoint.set_server_config(None);
        let transport = transport_config(max_message_size);
        match session.endpoint.connect(now, ClientConfig::new(transport), PEER) {
            Ok(association) => session.association = Some(association),
            Err(e) => tracing::warn!(error = %e, "SCTP association could not start"),
        }
        session
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// One SCTP packet that arrived in a DTLS application data record.
    pub fn handle_packet(&mut self, packet: Bytes, now: Instant) {
        let Some((handle, event)) = self.endpoint.handle(now, PEER, None, packet) else { return };
        match event {
            DatagramEvent::NewAssociation(association) => {
                // One association per transport: a second INIT is the peer restarting.
                self.association = Some((handle, association));
            }
            DatagramEvent::AssociationEvent(event) => {
                if let Some((known, association)) = self.association.as_mut()
                    && *known == handle
                {
                    association.handle_event(event);
                }
            }
            _ => {}
        }
        self.poll_association();
    }

    /// Takes the association's events: connection state and whole messages.
    fn poll_association(&mut self) {
        let Some((handle, association)) = self.association.as_mut() else { return };
        let mut readable = Vec::new();
        while let Some(event) = association.poll() {
            match event {
                Event::Connected => self.connected = true,
                Event::HandshakeFailed { .. } => self.connected = false,
                // Despite its name, rtc-sctp emits this for one stream reset (RFC 6525: a data
                // channel closed at either end), the other streams going on; the association
                // itself being gone is `is_closed`, below.
                Event::AssociationLost { .. } => {}
                Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                _ => {}
            }
        }
        if association.is_closed() {
            self.connected = false;
        }
        // Streams the peer opened: nothing to set up (their reliability is in each chunk).
        while association.accept_stream().is_some() {}
        for id in readable {
            let Ok(mut stream) = association.stream(id) else { continue };
            while let Ok(Some(chunks)) = stream.read_sctp() {
                let ppid = chunks.ppi as u32;
                if chunks.len() > self.max_message_size {
                    self.drops.push(SctpDrop::TooLarge);
                } else if ppid == ppid::DCEP {
                    self.drops.push(SctpDrop::Dcep);
                } else if !ppid::is_message(ppid) {
                    self.drops.push(SctpDrop::UnknownPpid);
                } else if let Ok(payload) = chunks.to_payload(self.max_message_size) {
                    self.messages.push_back(SctpMessage { stream_id: id, ppid, payload: payload.freeze() });
                }
            }
        }
        let mut drained = false;
        while let Some(event) = association.poll_endpoint_event() {
            self.endpoint.handle_event(*handle, event);
            drained = true;
        }
        if drained {
            // The association ended (ABORT, SHUTDOWN): the peer may start another.
            self.association = None;
            self.connected = false;
        }
    }

    /// The next whole message from the peer.
    pub fn poll_message(&mut self) -> Option<SctpMessage> {
        self.messages.pop_front()
    }

    /// Queues `payload` on outgoing stream `stream_id` (opened with `reliability` the first
    /// time), or says why it was dropped.
    pub fn send(
        &mut self,
        stream_id: u16,
        ppid: u32,
        payload: &Bytes,
        reliability: StreamReliability,
        now: Instant,
    ) -> Result<(), SctpDrop> {
        if payload.len() > self.max_message_size {
            return Err(SctpDrop::TooLarge);
        }
        let Some((_, association)) = self.association.as_mut().filter(|_| self.connected) else {
            return Err(SctpDrop::NotConnected);
        };
        let ppi = PayloadProtocolIdentifier::from(ppid);
        let mut stream = match association.stream(stream_id) {
            Ok(stream) => stream,
            Err(_) => {
                let mut stream = association.open_stream(stream_id, ppi).map_err(|_| SctpDrop::Refused)?;
                let (unordered, kind, value) = reliability.sctp_params();
                stream.set_reliability_params(unordered, kind, value).map_err(|_| SctpDrop::Refused)?;
                stream
            }
        };
        if stream.buffered_amount().unwrap_or(0) > SEND_BUFFER_BYTES {
            return Err(SctpDrop::SendBufferFull);
        }
        stream.write_chunk_with_ppi(now, payload, ppi).map(drop).map_err(|_| SctpDrop::Refused)
    }

    /// Resets an outgoing stream (RFC 6525), which closes the data channel on it at the peer:
    /// its DataConsumer or DataProducer closed.
    pub fn close_stream(&mut self, stream_id: u16, now: Instant) {
        if let Some((_, association)) = self.association.as_mut()
            && let Ok(mut stream) = association.stream(stream_id)
        {
            let _ = stream.close(now);
        }
    }

    /// The SCTP packets to send now, each in a DTLS application data record of its own.
    pub fn poll_transmits(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        if let Some((_, association)) = self.association.as_mut() {
            while let Some(transmit) = association.poll_transmit(now) {
                if let Payload::RawEncode(packets) = transmit.message {
                    out.extend(packets);
                }
            }
        }
        out
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.association.as_ref().and_then(|(_, a)| a.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, association)) = self.association.as_mut() {
            association.handle_timeout(now);
        }
        self.poll_association();
    }
}

/// A per-peer limit on the data channel messages forwarded: a token bucket of `burst`
/// messages refilled at `per_second`. Pure: time comes in.
#[derive(Debug, Clone)]
pub struct MessageRate {
    per_second: u32,
    burst: u32,
    tokens: f64,
    last: Option<Instant>,
}

/// Messages a peer's DataProducers may send per second, sustained, and in one burst: far
/// above chat, reactions or a whiteboard's strokes, low enough that one peer cannot make the
/// worker copy without bound for everybody else.
pub const DATA_MESSAGES_PER_SECOND: u32 = 500;
pub const DATA_MESSAGE_BURST: u32 = 1000;

impl Default for MessageRate {
    fn default() -> Self {
        MessageRate::new(DATA_MESSAGES_PER_SECOND, DATA_MESSAGE_BURST)
    }
}

impl MessageRate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        MessageRate { per_second, burst, tokens: f64::from(burst), last: None }
    }

    /// Whether one more message may pass at `now` (taking its token if so).
    pub fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.per_second)).min(f64::from(self.burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Carries packets both ways until neither side has more to say.
    fn pump(a: &mut SctpSession, b: &mut SctpSession, now: Instant) {
        for _ in 0..100 {
            let from_a = a.poll_transmits(now);
            let from_b = b.poll_transmits(now);
            if from_a.is_empty() && from_b.is_empty() {
                return;
            }
            for packet in from_a {
                b.handle_packet(packet, now);
            }
            for packet in from_b {
                a.handle_packet(packet, now);
            }
        }
    }

    fn connected() -> (SctpSession, SctpSession, Instant) {
        let now = Instant::now();
        let mut browser = SctpSession::client(DEFAULT_MAX_MESSAGE_SIZE, now);
        let mut worker = SctpSession::new(DEFAULT_MAX_MESSAGE_SIZE);
        pump(&mut browser, &mut worker, now);
        assert!(browser.is_connected() && worker.is_connected(), "the association comes up");
        (browser, worker, now)
    }

    fn messages(session: &mut SctpSession) -> Vec<SctpMessage> {
        std::iter::from_fn(|| session.poll_message()).collect()
    }

    #[test]
    fn messages_on_a_negotiated_stream_arrive_whole_and_in_order() {
        let (mut browser, mut worker, now) = connected();
        let ordered = StreamReliability { ordered: true, ..Default::default() };
        let big = Bytes::from(vec![7u8; 100_000]);
        for n in 0..50u32 {
            browser.send(3, ppid::STRING, &Bytes::from(format!("message {n}")), ordered, now).unwrap();
        }
        browser.send(3, ppid::BINARY, &big, ordered, now).unwrap();
        for _ in 0..20 {
            pump(&mut browser, &mut worker, now);
        }
        let got = messages(&mut worker);
        assert_eq!(got.len(), 51);
        for (n, message) in got.iter().take(50).enumerate() {
            assert_eq!((message.stream_id, message.ppid), (3, ppid::STRING));
            assert_eq!(message.payload, Bytes::from(format!("message {n}")));
        }
        assert_eq!(got[50].payload, big, "a message larger than one packet is reassembled");
        // And back, on a stream of the worker's choosing.
        worker.send(0, ppid::BINARY, &Bytes::from_static(b"\x01\x02"), ordered, now).unwrap();
        pump(&mut browser, &mut worker, now);
        assert_eq!(messages(&mut browser), vec![SctpMessage { stream_id: 0, ppid: ppid::BINARY, payload: Bytes::from_static(b"\x01\x02") }]);
    }

    #[test]
    fn a_reset_stream_leaves_the_other_streams_working_both_ways() {
        let (mut browser, mut worker, now) = connected();
        let ordered = StreamReliability { ordered: true, ..Default::default() };
        let say = |text: &str| Bytes::from(text.to_owned());
        // The browser's two data producers, and the worker's two data consumers towards it.
        for stream in [0, 1] {
            browser.send(stream, ppid::STRING, &say("before"), ordered, now).unwrap();
            worker.send(stream, ppid::STRING, &say("before"), ordered, now).unwrap();
        }
        pump(&mut browser, &mut worker, now);
        assert_eq!(messages(&mut worker).len(), 2);
        assert_eq!(messages(&mut browser).len(), 2);
        // Stream 0 closes on both sides (the browser closed its channel, the worker reset the
        // consumer's stream), as a data producer's close does.
        browser.close_stream(0, now);
        worker.close_stream(0, now);
        for _ in 0..5 {
            pump(&mut browser, &mut worker, now);
        }
        browser.send(1, ppid::STRING, &say("after"), ordered, now).unwrap();
        worker.send(1, ppid::STRING, &say("after"), ordered, now).unwrap();
        for _ in 0..5 {
            pump(&mut browser, &mut worker, now);
        }
        assert_eq!(messages(&mut worker).iter().map(|m| (m.stream_id, m.payload.clone())).collect::<Vec<_>>(), vec![(1, say("after"))]);
        assert_eq!(messages(&mut browser).iter().map(|m| (m.stream_id, m.payload.clone())).collect::<Vec<_>>(), vec![(1, say("after"))]);
    }

    #[test]
    fn an_unreliable_unordered_stream_delivers() {
        let (mut browser, mut worker, now) = connected();
        let unreliable = StreamReliability { ordered: false, max_retransmits: Some(0), max_packet_life_time: None };
        for n in 0..10u8 {
            worker.send(9, ppid::BINARY, &Bytes::from(vec![n]), unreliable, now).unwrap();
        }
        pump(&mut browser, &mut worker, now);
        let mut got: Vec<u8> = messages(&mut browser).into_iter().map(|m| m.payload[0]).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn too_large_and_dcep_messages_are_dropped_and_counted() {
        let now = Instant::now();
        let mut browser = SctpSession::client(DEFAULT_MAX_MESSAGE_SIZE, now);
        let mut worker = SctpSession::new(1000);
        pump(&mut browser, &mut worker, now);
        let ordered = StreamReliability { ordered: true, ..Default::default() };
        browser.send(1, ppid::BINARY, &Bytes::from(vec![0u8; 1001]), ordered, now).unwrap();
        browser.send(1, ppid::DCEP, &Bytes::from_static(&[3, 0, 0, 0]), ordered, now).unwrap();
        browser.send(1, ppid::STRING, &Bytes::from_static(b"fits"), ordered, now).unwrap();
        pump(&mut browser, &mut worker, now);
        let got = messages(&mut worker);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].payload, Bytes::from_static(b"fits"));
        assert!(worker.drops.contains(&SctpDrop::Dcep), "{:?}", worker.drops);
        assert!(worker.drops.contains(&SctpDrop::TooLarge) || worker.drops.contains(&SctpDrop::Refused), "{:?}", worker.drops);
        assert_eq!(worker.send(1, ppid::BINARY, &Bytes::from(vec![0u8; 1001]), ordered, now), Err(SctpDrop::TooLarge));
    }

    #[test]
    fn nothing_is_sent_before_the_association_is_up() {
        let mut worker = SctpSession::new(DEFAULT_MAX_MESSAGE_SIZE);
        let sent = worker.send(0, ppid::STRING, &Bytes::from_static(b"early"), StreamReliability::default(), Instant::now());
        assert_eq!(sent, Err(SctpDrop::NotConnected));
    }

    #[test]
    fn a_slow_receivers_stream_drops_past_its_send_buffer() {
        let (_browser, mut worker, now) = connected();
        let ordered = StreamReliability { ordered: true, ..Default::default() };
        let chunk = Bytes::from(vec![1u8; 60_000]);
        // Nothing is pumped: the peer acknowledges nothing, so the buffer only fills.
        let results: Vec<_> = (0..10).map(|_| worker.send(2, ppid::BINARY, &chunk, ordered, now)).collect();
        assert!(results.iter().take(4).all(Result::is_ok), "{results:?}");
        assert!(results.contains(&Err(SctpDrop::SendBufferFull)), "{results:?}");
    }

    #[test]
    fn a_peers_message_rate_is_limited_to_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut rate = MessageRate::new(10, 20);
        assert_eq!((0..25).filter(|_| rate.admit(start)).count(), 20, "the burst passes, no more");
        assert!(!rate.admit(start + Duration::from_millis(50)), "half a token is not a message");
        assert!(rate.admit(start + Duration::from_millis(100)));
        // A long quiet spell refills to the burst, never beyond.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| rate.admit(later)).count(), 20);
    }
}
