//! The worker against a real WebRTC stack: two `webrtc` crate (webrtc-rs 0.21) peer connections
//! talk to an in-process worker over loopback UDP, negotiated from hand-built SDP the way
//! mediasoup-client's `RemoteSdp` builds it from the worker's transport, producer and consumer
//! parameters. The sending peer offers (one m-section per track, fixed SSRCs) and gets an
//! ice-lite answer with `a=setup:passive`; the receiving peer gets an ice-lite offer with
//! `a=setup:actpass` built from the consumers' parameters and answers as DTLS client (what
//! mediasoup-client's `localDtlsRole: 'client'` makes a browser do). ICE, DTLS, SRTP, RTCP
//! feedback and NACK/RTX are all the `webrtc` crate's own.
#![cfg(all(feature = "media", feature = "client"))]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use fanout_worker::api::{ConsumeRequest, JoinRequest, ProduceRequest};
use fanout_worker::client::WorkerClient;
use fanout_worker::room::{
    ConsumerCreated, Direction, DtlsFingerprint, DtlsParameters, DtlsRole, PeerId, ProducerId, RoomEvent,
    TransportCreated,
};
use fanout_worker::rtp::{
    MediaKind, ParameterValue, Parameters, PayloadType, RtcpFeedback, RtcpParameters, RtpCapabilities,
    RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtension,
    RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters, RtxParameters, Ssrc,
};
use fanout_worker::server::{RunningWorker, WorkerConfig, start};

use rtc::interceptor::{Attribute, Interceptor, Packet as ChainPacket, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

const ROOM: &str = "webrtc-interop";
const VP8_SSRC: u32 = 0x1111_2222;
const VP8_RTX_SSRC: u32 = 0x1111_2223;
const OPUS_SSRC: u32 = 0x3333_4444;
const VP8_PT: u8 = 96;
const VP8_RTX_PT: u8 = 97;
const OPUS_PT: u8 = 111;
/// A VP8 payload descriptor (S=1, PID 0) and a key frame header (P=0, start code 9d 01 2a).
const KEYFRAME: &[u8] = &[0x10, 0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
const WAIT: Duration = Duration::from_secs(4);

// ------------------------------------------------------------------------------------------
// SDP: just enough parsing of the webrtc crate's own descriptions, and mediasoup-client's
// RemoteSdp / MediaSection for ours.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Default, Clone)]
struct Section {
    kind: String,
    protocol: String,
    mid: String,
    payload_types: Vec<u8>,
    /// PT -> (encoding name, clock rate, channels).
    rtpmap: BTreeMap<u8, (String, u32, Option<u8>)>,
    fmtp: BTreeMap<u8, String>,
    rtcp_fb: Vec<(u8, String, String)>,
    /// (id, uri)
    extmap: Vec<(u8, String)>,
    /// (ssrc, attribute, value)
    ssrcs: Vec<(u32, String, String)>,
    fid: Option<(u32, u32)>,
    fingerprint: Option<(String, String)>,
}

impl Section {
    fn media_kind(&self) -> MediaKind {
        match self.kind.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            other => panic!("unexpected m-section kind {other}"),
        }
    }

    fn mime_type(&self, pt: u8) -> String {
        format!("{}/{}", self.kind, self.rtpmap[&pt].0)
    }

    fn feedback(&self, pt: u8) -> Vec<RtcpFeedback> {
        self.rtcp_fb
            .iter()
            .filter(|(p, _, _)| *p == pt)
            .map(|(_, t, param)| RtcpFeedback::new(t, param))
            .collect()
    }

    fn parameters(&self, pt: u8) -> Parameters {
        // sdp-transform's parseParams: numbers become numbers.
        let mut parameters = Parameters::new();
        for item in self.fmtp.get(&pt).map(String::as_str).unwrap_or("").split(';') {
            if let Some((key, value)) = item.trim().split_once('=') {
                let value = match value.parse::<u64>() {
                    Ok(number) => ParameterValue::Number(number.into()),
                    Err(_) => ParameterValue::from(value),
                };
                parameters.insert(key.to_owned(), value);
            }
        }
        parameters
    }

    fn rtx_for(&self, pt: u8) -> Option<u8> {
        self.payload_types.iter().copied().find(|p| {
            self.rtpmap[p].0.eq_ignore_ascii_case("rtx")
                && self.parameters(*p).get("apt").and_then(ParameterValue::as_integer) == Some(i64::from(pt))
        })
    }
}

#[derive(Debug, Default)]
struct Sdp {
    fingerprint: Option<(String, String)>,
    sections: Vec<Section>,
}

impl Sdp {
    /// The DTLS fingerprint, at session or media level.
    fn fingerprint(&self) -> DtlsFingerprint {
        let (algorithm, value) = self
            .fingerprint
            .clone()
            .or_else(|| self.sections.iter().find_map(|s| s.fingerprint.clone()))
            .expect("the local SDP has a fingerprint");
        DtlsFingerprint { algorithm, value }
    }
}

fn parse_sdp(sdp: &str) -> Sdp {
    let mut parsed = Sdp::default();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let fields: Vec<&str> = m.split_whitespace().collect();
            parsed.sections.push(Section {
                kind: fields[0].to_owned(),
                protocol: fields[2].to_owned(),
                payload_types: fields[3..].iter().filter_map(|pt| pt.parse().ok()).collect(),
                ..Default::default()
            });
            continue;
        }
        let Some(attribute) = line.strip_prefix("a=") else { continue };
        let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
        if name == "fingerprint" {
            let (algorithm, hash) = value.split_once(' ').expect("fingerprint line");
            let fingerprint = Some((algorithm.to_owned(), hash.to_owned()));
            match parsed.sections.last_mut() {
                Some(section) => section.fingerprint = fingerprint,
                None => parsed.fingerprint = fingerprint,
            }
            continue;
        }
        let Some(section) = parsed.sections.last_mut() else { continue };
        match name {
            "mid" => section.mid = value.to_owned(),
            "rtpmap" => {
                let (pt, codec) = value.split_once(' ').expect("rtpmap line");
                let mut parts = codec.split('/');
                let name = parts.next().unwrap().to_owned();
                let rate = parts.next().unwrap().parse().unwrap();
                let channels = parts.next().map(|c| c.parse().unwrap());
                section.rtpmap.insert(pt.parse().unwrap(), (name, rate, channels));
            }
            "fmtp" => {
                let (pt, config) = value.split_once(' ').expect("fmtp line");
                section.fmtp.insert(pt.parse().unwrap(), config.to_owned());
            }
            "rtcp-fb" => {
                let mut parts = value.split_whitespace();
                let pt = parts.next().unwrap();
                let kind = parts.next().unwrap_or_default().to_owned();
                let parameter = parts.next().unwrap_or_default().to_owned();
                let pts = if pt == "*" { section.payload_types.clone() } else { vec![pt.parse().unwrap()] };
                for pt in pts {
                    section.rtcp_fb.push((pt, kind.clone(), parameter.clone()));
                }
            }
            "extmap" => {
                let (id, uri) = value.split_once(' ').expect("extmap line");
                let id = id.split('/').next().unwrap().parse().unwrap();
                section.extmap.push((id, uri.split_whitespace().next().unwrap().to_owned()));
            }
            "ssrc" => {
                let (ssrc, rest) = value.split_once(' ').expect("ssrc line");
                let (attribute, value) = rest.split_once(':').unwrap_or((rest, ""));
                section.ssrcs.push((ssrc.parse().unwrap(), attribute.to_owned(), value.to_owned()));
            }
            "ssrc-group" => {
                let mut parts = value.split_whitespace();
                if parts.next() == Some("FID") {
                    let primary = parts.next().unwrap().parse().unwrap();
                    let rtx = parts.next().unwrap().parse().unwrap();
                    section.fid = Some((primary, rtx));
                }
            }
            _ => {}
        }
    }
    parsed
}

/// mediasoup-client's `RemoteSdp` session part: ice-lite, the worker's fingerprint (the last
/// one, as `RemoteSdp` picks it), BUNDLE of every mid.
fn remote_session(transport: &TransportCreated, mids: &[&str]) -> String {
    let fingerprint = transport.dtls_parameters.fingerprints.last().expect("the worker has a fingerprint");
    let mut sdp = String::new();
    sdp.push_str("v=0\r\no=mediasoup-client 10000 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    if transport.ice_parameters.ice_lite {
        sdp.push_str("a=ice-lite\r\n");
    }
    let _ = write!(sdp, "a=fingerprint:{} {}\r\n", fingerprint.algorithm, fingerprint.value);
    sdp.push_str("a=msid-semantic: WMS *\r\n");
    let _ = write!(sdp, "a=group:BUNDLE {}\r\n", mids.join(" "));
    sdp
}

/// `MediaSection`'s common part: ICE credentials and candidates (component 1: rtcp-mux).
fn ice_lines(sdp: &mut String, transport: &TransportCreated) {
    let _ = write!(sdp, "a=ice-ufrag:{}\r\n", transport.ice_parameters.username_fragment);
    let _ = write!(sdp, "a=ice-pwd:{}\r\n", transport.ice_parameters.password);
    for candidate in &transport.ice_candidates {
        let protocol = serde_json::to_value(candidate.protocol).unwrap();
        let typ = serde_json::to_value(candidate.r#type).unwrap();
        let _ = write!(
            sdp,
            "a=candidate:{} 1 {} {} {} {} typ {}{}\r\n",
            candidate.foundation,
            protocol.as_str().unwrap(),
            candidate.priority,
            candidate.address,
            candidate.port,
            typ.as_str().unwrap(),
            if candidate.tcp_type.is_some() { " tcptype passive" } else { "" }
        );
    }
    sdp.push_str("a=end-of-candidates\r\na=ice-options:renomination\r\n");
}

/// The codec lines of an m-section (rtpmap, fmtp, rtcp-fb) and its header extensions.
fn codec_lines(sdp: &mut String, parameters: &RtpParameters) {
    for codec in &parameters.codecs {
        let name = codec.mime_type.split_once('/').unwrap().1;
        let _ = write!(sdp, "a=rtpmap:{} {}/{}", codec.payload_type, name, codec.clock_rate);
        match codec.channels {
            Some(channels) if channels > 1 => {
                let _ = write!(sdp, "/{channels}\r\n");
            }
            _ => sdp.push_str("\r\n"),
        }
        if !codec.parameters.is_empty() {
            let config: Vec<String> = codec.parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(sdp, "a=fmtp:{} {}\r\n", codec.payload_type, config.join(";"));
        }
        for feedback in &codec.rtcp_feedback {
            let _ = write!(sdp, "a=rtcp-fb:{} {}", codec.payload_type, feedback.r#type);
            if feedback.parameter.is_empty() {
                sdp.push_str("\r\n");
            } else {
                let _ = write!(sdp, " {}\r\n", feedback.parameter);
            }
        }
    }
    for extension in &parameters.header_extensions {
        let _ = write!(sdp, "a=extmap:{} {}\r\n", extension.id, extension.uri);
    }
}

fn m_line(sdp: &mut String, kind: &str, protocol: &str, parameters: &RtpParameters) {
    let pts: Vec<String> = parameters.codecs.iter().map(|c| c.payload_type.to_string()).collect();
    let _ = write!(sdp, "m={kind} 7 {protocol} {}\r\nc=IN IP4 127.0.0.1\r\n", pts.join(" "));
}

/// `RemoteSdp.send()` for every m-section of the local offer: `AnswerMediaSection`, recvonly,
/// `a=setup:passive` (mediasoup-client's `updateDtlsRole('server')` after taking the client role).
fn send_answer(transport: &TransportCreated, offer: &Sdp, answers: &[RtpParameters]) -> String {
    let mids: Vec<&str> = offer.sections.iter().map(|s| s.mid.as_str()).collect();
    let mut sdp = remote_session(transport, &mids);
    for (section, answer) in offer.sections.iter().zip(answers) {
        m_line(&mut sdp, &section.kind, &section.protocol, answer);
        codec_lines(&mut sdp, answer);
        sdp.push_str("a=setup:passive\r\n");
        let _ = write!(sdp, "a=mid:{}\r\n", section.mid);
        sdp.push_str("a=recvonly\r\n");
        ice_lines(&mut sdp, transport);
        sdp.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
    }
    sdp
}

/// `RemoteSdp.receive()` for each consumer: `OfferMediaSection`, sendonly, `a=setup:actpass`,
/// msid `<cname> <consumer id>`, `a=ssrc` cname lines and the FID group.
fn receive_offer(transport: &TransportCreated, consumers: &[&ConsumerCreated]) -> String {
    let mids: Vec<&str> = consumers.iter().map(|c| c.rtp_parameters.mid.as_deref().expect("consumer mid")).collect();
    let mut sdp = remote_session(transport, &mids);
    for consumer in consumers {
        let parameters = &consumer.rtp_parameters;
        m_line(&mut sdp, consumer.kind.as_str(), "UDP/TLS/RTP/SAVPF", parameters);
        codec_lines(&mut sdp, parameters);
        sdp.push_str("a=setup:actpass\r\n");
        let _ = write!(sdp, "a=mid:{}\r\n", parameters.mid.as_deref().unwrap());
        sdp.push_str("a=sendonly\r\n");
        ice_lines(&mut sdp, transport);
        let cname = parameters.rtcp.cname.clone().expect("consumer cname");
        let _ = write!(sdp, "a=msid:{} {}\r\n", cname, consumer.id);
        sdp.push_str("a=rtcp-mux\r\na=rtcp-rsize\r\n");
        let encoding = &parameters.encodings[0];
        let ssrc = encoding.ssrc.expect("consumer SSRC").0;
        let _ = write!(sdp, "a=ssrc:{ssrc} cname:{cname}\r\n");
        if let Some(rtx) = encoding.rtx {
            let _ = write!(sdp, "a=ssrc:{} cname:{cname}\r\n", rtx.ssrc.0);
            let _ = write!(sdp, "a=ssrc-group:FID {ssrc} {}\r\n", rtx.ssrc.0);
        }
    }
    sdp
}

// ------------------------------------------------------------------------------------------
// mediasoup-client's ORTC: what a device can receive, what a producer sends.
// ------------------------------------------------------------------------------------------

/// mediasoup-client's `matchCodecs` (strict): MIME type, clock rate, channels, and the
/// parameters that tell codecs apart (H264 packetization mode and profile, VP9 profile).
fn same_codec(router: &RtpCodecCapability, section: &Section, pt: u8) -> bool {
    let (name, rate, channels) = &section.rtpmap[&pt];
    if !router.mime_type.eq_ignore_ascii_case(&format!("{}/{name}", section.kind))
        || router.clock_rate != *rate
        || (router.kind == MediaKind::Audio && router.channels.unwrap_or(1) != channels.unwrap_or(1))
    {
        return false;
    }
    let native = section.parameters(pt);
    let integer = |parameters: &Parameters, key: &str, default: i64| {
        parameters.get(key).and_then(ParameterValue::as_integer).unwrap_or(default)
    };
    let text = |parameters: &Parameters, key: &str| parameters.get(key).map(|v| v.to_string().to_ascii_lowercase());
    match router.mime_type.to_ascii_lowercase().as_str() {
        "video/h264" => {
            integer(&router.parameters, "packetization-mode", 0) == integer(&native, "packetization-mode", 0)
                && text(&router.parameters, "profile-level-id") == text(&native, "profile-level-id")
        }
        "video/vp9" => integer(&router.parameters, "profile-id", 0) == integer(&native, "profile-id", 0),
        _ => true,
    }
}

fn common_feedback(a: &[RtcpFeedback], b: &[RtcpFeedback]) -> Vec<RtcpFeedback> {
    a.iter().filter(|f| b.contains(f)).cloned().collect()
}

/// `device.rtpCapabilities`: the router's codecs (with its payload types) and header extensions
/// that the native stack, asked through a recvonly offer as mediasoup-client's
/// `getNativeRtpCapabilities` does, also has.
fn device_capabilities(router: &RtpCapabilities, native: &Sdp) -> RtpCapabilities {
    let mut device = RtpCapabilities::default();
    for codec in router.codecs.iter().filter(|c| !c.mime_type.eq_ignore_ascii_case("video/rtx")) {
        let Some(section) = native.sections.iter().find(|s| s.media_kind() == codec.kind) else { continue };
        let Some(&native_pt) = section.payload_types.iter().find(|pt| same_codec(codec, section, **pt)) else {
            continue;
        };
        let mut matched = codec.clone();
        matched.rtcp_feedback = common_feedback(&codec.rtcp_feedback, &section.feedback(native_pt));
        device.codecs.push(matched);
        let router_pt = codec.preferred_payload_type.expect("router payload type");
        let router_rtx = router.codecs.iter().find(|c| {
            c.mime_type.eq_ignore_ascii_case("video/rtx")
                && c.parameters.get("apt").and_then(ParameterValue::as_integer) == Some(i64::from(router_pt.0))
        });
        if let (Some(rtx), Some(_)) = (router_rtx, section.rtx_for(native_pt)) {
            device.codecs.push(rtx.clone());
        }
    }
    for extension in &router.header_extensions {
        let native_has = native
            .sections
            .iter()
            .any(|s| s.media_kind() == extension.kind && s.extmap.iter().any(|(_, uri)| *uri == extension.uri));
        let router_sends =
            matches!(extension.direction, RtpHeaderExtensionDirection::SendRecv | RtpHeaderExtensionDirection::SendOnly);
        if native_has && router_sends {
            device.header_extensions.push(RtpHeaderExtension { direction: RtpHeaderExtensionDirection::SendRecv, ..extension.clone() });
        }
    }
    device
}

/// `getSendingRtpParameters` + the `produce` call's parameters for one m-section of the local
/// offer: its first codec the router knows and that codec's RTX (with the *local* payload types
/// and extension ids), the SSRCs and cname of its `a=ssrc` lines, the mid.
fn sending_parameters(section: &Sdp, index: usize, router: &RtpCapabilities) -> RtpParameters {
    let section = &section.sections[index];
    let kind = section.media_kind();
    let (pt, router_codec) = section
        .payload_types
        .iter()
        .find_map(|pt| router.codecs.iter().find(|c| c.kind == kind && same_codec(c, section, *pt)).map(|c| (*pt, c)))
        .expect("the offer has a codec the router supports");
    let (_, rate, channels) = section.rtpmap[&pt];
    let mut codecs = vec![RtpCodecParameters {
        mime_type: section.mime_type(pt),
        payload_type: PayloadType(pt),
        clock_rate: rate,
        channels,
        parameters: section.parameters(pt),
        rtcp_feedback: common_feedback(&section.feedback(pt), &router_codec.rtcp_feedback),
    }];
    if let Some(rtx) = section.rtx_for(pt) {
        codecs.push(RtpCodecParameters {
            mime_type: section.mime_type(rtx),
            payload_type: PayloadType(rtx),
            clock_rate: section.rtpmap[&rtx].1,
            channels: None,
            parameters: section.parameters(rtx),
            rtcp_feedback: vec![],
        });
    }
    let header_extensions = section
        .extmap
        .iter()
        .filter(|(_, uri)| {
            router.header_extensions.iter().any(|e| {
                e.kind == kind
                    && e.uri == *uri
                    && matches!(e.direction, RtpHeaderExtensionDirection::SendRecv | RtpHeaderExtensionDirection::RecvOnly)
            })
        })
        .map(|(id, uri)| RtpHeaderExtensionParameters { uri: uri.clone(), id: *id, encrypt: false, parameters: Parameters::new() })
        .collect();
    let (ssrc, rtx) = match section.fid {
        Some((ssrc, rtx)) => (ssrc, Some(rtx)),
        None => (section.ssrcs.first().expect("the offer has a=ssrc lines").0, None),
    };
    let cname = section.ssrcs.iter().find(|(s, attribute, _)| *s == ssrc && attribute == "cname").map(|(_, _, v)| v.clone());
    RtpParameters {
        mid: Some(section.mid.clone()),
        codecs,
        header_extensions,
        encodings: vec![RtpEncodingParameters {
            ssrc: Some(Ssrc(ssrc)),
            rtx: rtx.map(|ssrc| RtxParameters { ssrc: Ssrc(ssrc) }),
            ..Default::default()
        }],
        rtcp: RtcpParameters { cname, reduced_size: true },
    }
}

// ------------------------------------------------------------------------------------------
// Interceptors.
// ------------------------------------------------------------------------------------------

/// Marks inbound PLI and FIR for the application (webrtc's `RtcpForwarderInterceptor` from its
/// `rtcp-processing` example): inbound RTCP otherwise stops inside the interceptor chain.
#[derive(Default)]
struct KeyframeRequestsToApp {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = ChainPacket::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestsToApp {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// What [`LossyWire`] did.
#[derive(Default)]
struct LossLog {
    /// Original transmissions of the marked sequence number dropped.
    dropped: AtomicU32,
    /// Retransmissions that left afterwards: RTX packets repairing it, or the same packet again.
    retransmitted: AtomicU32,
}

/// The wire-most interceptor of the sending peer: loses the first transmission of one video
/// sequence number, after the NACK responder has buffered it, and lets retransmissions pass.
struct LossyWire {
    lose_seq: Arc<AtomicU32>,
    log: Arc<LossLog>,
    write: VecDeque<TaggedPacket>,
    read: VecDeque<TaggedPacket>,
}

const NO_LOSS: u32 = u32::MAX;

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossyWire {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtp(packet) = &msg.message.packet {
            let lose = self.lose_seq.load(Ordering::SeqCst);
            if lose != NO_LOSS {
                let header = &packet.header;
                if header.ssrc == VP8_SSRC && u32::from(header.sequence_number) == lose {
                    if self.log.dropped.load(Ordering::SeqCst) == 0 {
                        self.log.dropped.fetch_add(1, Ordering::SeqCst);
                        return Ok(());
                    }
                    self.log.retransmitted.fetch_add(1, Ordering::SeqCst);
                } else if header.ssrc == VP8_RTX_SSRC
                    && packet.payload.len() >= 2
                    && u32::from(u16::from_be_bytes([packet.payload[0], packet.payload[1]])) == lose
                {
                    self.log.retransmitted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for LossyWire {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// What [`LossyInbound`] is to lose: the first arrival of the packet of `ssrc` carrying
/// `payload`; arrivals on `rtx_ssrc` are counted.
#[derive(Default)]
struct InboundLoss {
    target: std::sync::Mutex<Option<(u32, u32, Vec<u8>)>>,
    log: LossLog,
}

/// The wire-most interceptor of the receiving peer: loses one packet before its NACK generator
/// sees it, and counts the RTX packets that come to repair it.
struct LossyInbound {
    loss: Arc<InboundLoss>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LossyInbound {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtp(packet) = &msg.message.packet
            && let Some((ssrc, rtx_ssrc, payload)) = self.loss.target.lock().unwrap().as_ref()
        {
            if packet.header.ssrc == *ssrc && packet.payload.as_ref() == payload.as_slice() {
                if self.loss.log.dropped.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Ok(());
                }
            } else if packet.header.ssrc == *rtx_ssrc {
                self.loss.log.retransmitted.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for LossyInbound {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

// ------------------------------------------------------------------------------------------
// Peers.
// ------------------------------------------------------------------------------------------

struct Handler {
    states: mpsc::UnboundedSender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    rtp: mpsc::UnboundedSender<rtc::rtp::packet::Packet>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.states.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track.clone());
        let rtp = self.rtp.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let _ = rtp.send(packet);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

struct Peer {
    pc: Arc<dyn PeerConnection>,
    states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    rtp: mpsc::UnboundedReceiver<rtc::rtp::packet::Packet>,
}

impl Peer {
    async fn new(media: MediaEngine, registry: Registry, answer_as_dtls_client: bool) -> Peer {
        let (states_tx, states) = mpsc::unbounded_channel();
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let (rtp_tx, rtp) = mpsc::unbounded_channel();
        let mut settings = SettingEngineBuilder::new();
        if answer_as_dtls_client {
            settings = settings.with_answering_dtls_role(RTCDtlsRole::Client);
        }
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings.build())
            .with_handler(Arc::new(Handler { states: states_tx, tracks: tracks_tx, rtp: rtp_tx }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .expect("peer connection builds");
        Peer { pc: Arc::new(pc), states, tracks, rtp }
    }

    async fn connected(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let state = tokio::time::timeout_at(deadline, self.states.recv())
                .await
                .expect("the peer connection connects in time")
                .expect("state events");
            match state {
                RTCPeerConnectionState::Connected => return,
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => panic!("peer connection {state}"),
                _ => {}
            }
        }
    }

    async fn local_sdp(&self) -> Sdp {
        parse_sdp(&self.pc.local_description().await.expect("local description").sdp)
    }

    /// The next RTP packet the remote tracks deliver that `accept` takes.
    async fn next_rtp(&mut self, what: &str, mut accept: impl FnMut(&rtc::rtp::packet::Packet) -> bool) -> rtc::rtp::packet::Packet {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rtp.recv()).await {
                Ok(Some(packet)) if accept(&packet) => return packet,
                Ok(Some(_)) => {}
                Ok(None) => panic!("RTP channel closed waiting for {what}"),
                Err(_) => panic!("no RTP with {what} within {WAIT:?}"),
            }
        }
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() })
        .collect()
}

/// A Chrome-like sender: VP8 with RTX, Opus; the default interceptors (NACK responder, reports),
/// keyframe requests surfaced to the application, and a wire that can lose a packet.
fn sender_engine(lose_seq: Arc<AtomicU32>, log: Arc<LossLog>) -> (MediaEngine, Registry) {
    let mut media = MediaEngine::default();
    let codec = |mime: &str, pt: u8, rate: u32, channels: u16, fmtp: &str, feedback: Vec<RTCPFeedback>| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: feedback,
        },
        payload_type: pt,
    };
    media.register_codec(codec(MIME_TYPE_VP8, VP8_PT, 90000, 0, "", video_feedback()), RtpCodecKind::Video).unwrap();
    media
        .register_codec(codec(MIME_TYPE_RTX, VP8_RTX_PT, 90000, 0, &format!("apt={VP8_PT}"), vec![]), RtpCodecKind::Video)
        .unwrap();
    media
        .register_codec(codec(MIME_TYPE_OPUS, OPUS_PT, 48000, 2, "minptime=10;useinbandfec=1", vec![]), RtpCodecKind::Audio)
        .unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).expect("default interceptors");
    let registry = registry
        .with(Slot::from(14_000), KeyframeRequestsToApp::default())
        .with(Slot::from(500), LossyWire { lose_seq, log, write: VecDeque::new(), read: VecDeque::new() });
    (media, registry)
}

/// A receiver with the webrtc crate's default codecs and interceptors (NACK generator, RTX),
/// and optionally a wire that can lose an inbound packet.
fn receiver_engine(loss: Option<Arc<InboundLoss>>) -> (MediaEngine, Registry) {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let mut registry = register_default_interceptors(Registry::new(), &mut media).expect("default interceptors");
    if let Some(loss) = loss {
        registry = registry.with(Slot::from(500), LossyInbound { loss, read: VecDeque::new(), write: VecDeque::new() });
    }
    (media, registry)
}

fn local_track(kind: RtpCodecKind, id: &str, ssrc: u32, rtx: Option<u32>, codec: RTCRtpCodec) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "alice-stream".to_owned(),
        id.to_owned(),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> rtc::rtp::packet::Packet {
    rtc::rtp::packet::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

fn delta(n: u8) -> Vec<u8> {
    vec![0x10, 0x51, 0x01, 0x00, 0xD0, n]
}

// ------------------------------------------------------------------------------------------
// The call.
// ------------------------------------------------------------------------------------------

struct Call {
    worker: RunningWorker,
    client: WorkerClient,
    alice: Peer,
    bob: Peer,
    camera_track: Arc<TrackLocalStaticRTP>,
    mic_track: Arc<TrackLocalStaticRTP>,
    /// Keyframe requests Alice's camera track got (their media SSRCs).
    keyframe_requests: mpsc::UnboundedReceiver<u32>,
    camera: ProducerId,
    video: ConsumerCreated,
    audio: ConsumerCreated,
    lose_seq: Arc<AtomicU32>,
    loss: Arc<LossLog>,
    bob_loss: Arc<InboundLoss>,
}

impl Call {
    fn endpoint(&self) -> String {
        self.worker.endpoint()
    }

    async fn send_video(&self, seq: u16, payload: &[u8]) {
        self.camera_track.write_rtp(rtp(VP8_PT, seq, u32::from(seq) * 3000, VP8_SSRC, payload)).await.expect("writes video");
    }

    async fn send_audio(&self, seq: u16, payload: &[u8]) {
        self.mic_track.write_rtp(rtp(OPUS_PT, seq, u32::from(seq) * 960, OPUS_SSRC, payload)).await.expect("writes audio");
    }

    /// The next packet of a consumer at Bob's: its SSRC, and the payload `payload` if given.
    async fn bob_receives(&mut self, consumer: &ConsumerCreated, payload: Option<&[u8]>) -> rtc::rtp::packet::Packet {
        let ssrc = ssrc_of(consumer);
        self.bob.next_rtp(&format!("SSRC {ssrc} and payload {payload:02x?}"), |p| {
            p.header.ssrc == ssrc && payload.is_none_or(|payload| p.payload.as_ref() == payload)
        })
        .await
    }
}

fn ssrc_of(consumer: &ConsumerCreated) -> u32 {
    consumer.rtp_parameters.encodings[0].ssrc.expect("consumer SSRC").0
}

fn pt_of(consumer: &ConsumerCreated) -> u8 {
    consumer.rtp_parameters.codecs[0].payload_type.0
}

/// Alice publishes camera and microphone from a webrtc peer connection, Bob consumes both into
/// another, both connected; signalling done the way mediasoup-client does it over the REST API.
async fn call(ports: (u16, u16)) -> Call {
    let worker = start(WorkerConfig::loopback(ports)).await.expect("worker starts");
    let client = WorkerClient::new(None, Duration::from_secs(5));
    let endpoint = worker.endpoint();
    let router = client.ensure_room(&endpoint, ROOM, &[]).await.expect("room opens");
    for name in ["alice", "bob"] {
        client.join(&endpoint, ROOM, &JoinRequest::new(name)).await.expect("joins");
    }
    let (alice_id, bob_id) = (PeerId::from("alice"), PeerId::from("bob"));

    // --- Alice: send transport, an offer with both tracks, the worker's answer, produce.
    let lose_seq = Arc::new(AtomicU32::new(NO_LOSS));
    let loss = Arc::new(LossLog::default());
    let (media, registry) = sender_engine(lose_seq.clone(), loss.clone());
    let mut alice = Peer::new(media, registry, false).await;
    let mic_track = local_track(
        RtpCodecKind::Audio,
        "microphone",
        OPUS_SSRC,
        None,
        RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
    );
    let camera_track = local_track(
        RtpCodecKind::Video,
        "camera",
        VP8_SSRC,
        Some(VP8_RTX_SSRC),
        RTCRtpCodec { mime_type: MIME_TYPE_VP8.to_owned(), clock_rate: 90000, channels: 0, sdp_fmtp_line: String::new(), rtcp_feedback: vec![] },
    );
    alice.pc.add_track(mic_track.clone() as Arc<dyn TrackLocal>).await.expect("adds the microphone");
    alice.pc.add_track(camera_track.clone() as Arc<dyn TrackLocal>).await.expect("adds the camera");
    let offer = alice.pc.create_offer(None).await.expect("offer");
    alice.pc.set_local_description(offer).await.expect("sets the offer");
    let offer = alice.local_sdp().await;
    assert_eq!(offer.sections.len(), 2, "one m-section per track");

    let send = client.create_transport(&endpoint, ROOM, &alice_id, Direction::Send).await.expect("send transport");
    let dtls = DtlsParameters { role: DtlsRole::Client, fingerprints: vec![offer.fingerprint()] };
    client.connect_transport(&endpoint, ROOM, &send.id, &dtls).await.expect("connects the send transport");
    let sending: Vec<RtpParameters> = (0..offer.sections.len()).map(|i| sending_parameters(&offer, i, &router)).collect();
    let answer = send_answer(&send, &offer, &sending);
    alice
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("Alice takes the answer: {e}\n{answer}"));
    let mut producers = Vec::new();
    for (section, rtp_parameters) in offer.sections.iter().zip(sending) {
        let request = ProduceRequest {
            peer_id: alice_id.clone(),
            transport_id: send.id.clone(),
            kind: section.media_kind(),
            rtp_parameters,
            app_data: Default::default(),
            paused: false,
        };
        let producer = client.produce(&endpoint, ROOM, &request).await.unwrap_or_else(|e| panic!("produce {request:?}: {e}"));
        producers.push((section.media_kind(), producer.id));
    }
    let producer_of = |kind| producers.iter().find(|(k, _)| *k == kind).unwrap().1.clone();
    let (camera, microphone) = (producer_of(MediaKind::Video), producer_of(MediaKind::Audio));

    // --- Bob: device capabilities from a recvonly native offer, a recv transport, consume both,
    // the worker's offer, his answer, connect.
    let (media, registry) = receiver_engine(None);
    let probe = Peer::new(media, registry, false).await;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
        probe.pc.add_transceiver_from_kind(kind, Some(init)).await.expect("probe transceiver");
    }
    let native = parse_sdp(&probe.pc.create_offer(None).await.expect("native offer").sdp);
    probe.pc.close().await.ok();
    let device = device_capabilities(&router, &native);

    let bob_loss = Arc::new(InboundLoss::default());
    let (media, registry) = receiver_engine(Some(bob_loss.clone()));
    let mut bob = Peer::new(media, registry, true).await;
    let recv = client.create_transport(&endpoint, ROOM, &bob_id, Direction::Recv).await.expect("recv transport");
    let consume = |producer_id: &ProducerId| ConsumeRequest {
        peer_id: bob_id.clone(),
        transport_id: recv.id.clone(),
        producer_id: producer_id.clone(),
        rtp_capabilities: device.clone(),
        paused: false,
    };
    let video = client.consume(&endpoint, ROOM, &consume(&camera)).await.expect("consumes video");
    let audio = client.consume(&endpoint, ROOM, &consume(&microphone)).await.expect("consumes audio");
    let offer = receive_offer(&recv, &[&video, &audio]);
    bob.pc
        .set_remote_description(RTCSessionDescription::offer(offer.clone()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("Bob takes the offer: {e}\n{offer}"));
    let answer = bob.pc.create_answer(None).await.expect("Bob answers");
    bob.pc.set_local_description(answer).await.expect("Bob sets his answer");
    let answer = bob.local_sdp().await;
    let dtls = DtlsParameters { role: DtlsRole::Client, fingerprints: vec![answer.fingerprint()] };
    client.connect_transport(&endpoint, ROOM, &recv.id, &dtls).await.expect("connects the recv transport");

    alice.connected().await;
    bob.connected().await;

    // Keyframe requests reaching Alice's camera track, read through TrackLocal::poll.
    let (requests_tx, keyframe_requests) = mpsc::unbounded_channel();
    let track = camera_track.clone();
    tokio::spawn(async move {
        while !requests_tx.is_closed() {
            match track.poll().await {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    for packet in packets {
                        if let Some(pli) = packet.as_any().downcast_ref::<PictureLossIndication>() {
                            let _ = requests_tx.send(pli.media_ssrc);
                        } else if let Some(fir) = packet.as_any().downcast_ref::<FullIntraRequest>() {
                            for entry in &fir.fir {
                                let _ = requests_tx.send(entry.ssrc);
                            }
                        }
                    }
                }
                Some(_) => {}
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });

    Call { worker, client, alice, bob, camera_track, mic_track, keyframe_requests, camera, video, audio, lose_seq, loss, bob_loss }
}

// ------------------------------------------------------------------------------------------
// Tests.
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_and_video_from_a_webrtc_peer_reach_another_with_the_consumers_ssrc_and_payload_type() {
    let mut c = call((47300, 47319)).await;
    assert_eq!(c.video.rtp_parameters.codecs[0].mime_type.to_ascii_lowercase(), "video/vp8");
    assert_eq!(c.audio.rtp_parameters.codecs[0].mime_type.to_ascii_lowercase(), "audio/opus");

    c.send_video(1000, KEYFRAME).await;
    let video = c.bob_receives(&c.video.clone(), Some(KEYFRAME)).await;
    assert_eq!(video.header.ssrc, ssrc_of(&c.video));
    assert_eq!(video.header.payload_type, pt_of(&c.video), "the consumer's payload type, not Alice's {VP8_PT}");
    for n in 1..=3u16 {
        c.send_video(1000 + n, &delta(n as u8)).await;
        let packet = c.bob_receives(&c.video.clone(), Some(&delta(n as u8))).await;
        assert_eq!(packet.header.sequence_number, video.header.sequence_number.wrapping_add(n), "in sequence");
    }

    c.send_audio(50, b"opus frame").await;
    let audio = c.bob_receives(&c.audio.clone(), Some(b"opus frame")).await;
    assert_eq!(audio.header.ssrc, ssrc_of(&c.audio));
    assert_eq!(audio.header.payload_type, pt_of(&c.audio));

    let tracks: HashSet<Vec<u32>> = {
        let mut tracks = HashSet::new();
        while let Ok(track) = c.bob.tracks.try_recv() {
            tracks.insert(track.ssrcs().await);
        }
        tracks
    };
    assert!(
        tracks.iter().any(|s| s.contains(&ssrc_of(&c.video))) && tracks.iter().any(|s| s.contains(&ssrc_of(&c.audio))),
        "Bob's on_track fired for both consumer SSRCs: {tracks:?}"
    );
    let stats = c.client.stats(&c.endpoint()).await.unwrap();
    assert_eq!((stats.producers, stats.consumers), (2, 2));
    c.alice.pc.close().await.ok();
    c.bob.pc.close().await.ok();
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pli_from_the_receiving_peer_reaches_the_sending_peer() {
    let mut c = call((47320, 47339)).await;
    c.send_video(1, KEYFRAME).await;
    c.bob_receives(&c.video.clone(), Some(KEYFRAME)).await;
    // The worker asks the producer for a keyframe itself for a new consumer, at most once a
    // second per producer stream. Wait that window out, forget what came so far, and check
    // that nothing comes unasked before Bob asks.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    while c.keyframe_requests.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.keyframe_requests.try_recv().is_err(), "no keyframe request arrives unasked");

    let bob_video = loop {
        let track = tokio::time::timeout(WAIT, c.bob.tracks.recv()).await.expect("Bob's tracks").expect("open");
        if track.ssrcs().await.contains(&ssrc_of(&c.video)) {
            break track;
        }
    };
    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc_of(&c.video) };
    bob_video.write_rtcp(vec![Box::new(pli)]).await.expect("Bob sends a PLI");
    let asked = tokio::time::timeout(WAIT, c.keyframe_requests.recv())
        .await
        .expect("a keyframe request reaches Alice")
        .expect("open");
    assert_eq!(asked, VP8_SSRC, "the request names Alice's own SSRC");
    c.alice.pc.close().await.ok();
    c.bob.pc.close().await.ok();
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_packet_lost_on_the_way_to_the_worker_is_recovered_by_nack() {
    let mut c = call((47340, 47359)).await;
    c.send_video(500, KEYFRAME).await;
    let first = c.bob_receives(&c.video.clone(), Some(KEYFRAME)).await;

    // Alice's wire loses 501 after her NACK responder buffered it; 502 and 503 go through.
    c.lose_seq.store(501, Ordering::SeqCst);
    for n in 1..=3u16 {
        c.send_video(500 + n, &delta(n as u8)).await;
    }
    let later = c.bob_receives(&c.video.clone(), Some(&delta(2))).await;
    let recovered = c.bob_receives(&c.video.clone(), Some(&delta(1))).await;
    assert_eq!(c.loss.dropped.load(Ordering::SeqCst), 1, "the original 501 never left Alice");
    assert!(c.loss.retransmitted.load(Ordering::SeqCst) >= 1, "Alice's NACK responder resent 501");
    assert_eq!(recovered.header.ssrc, ssrc_of(&c.video));
    assert_eq!(recovered.header.payload_type, pt_of(&c.video));
    assert_eq!(recovered.header.sequence_number, first.header.sequence_number.wrapping_add(1), "in its place");
    assert_eq!(later.header.sequence_number, first.header.sequence_number.wrapping_add(2));
    c.alice.pc.close().await.ok();
    c.bob.pc.close().await.ok();
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_packet_the_receiving_peer_lost_is_recovered_by_its_nack_over_the_workers_rtx() {
    let mut c = call((47380, 47399)).await;
    let rtx_ssrc = c.video.rtp_parameters.encodings[0].rtx.expect("the consumer has RTX").ssrc.0;
    c.send_video(700, KEYFRAME).await;
    let first = c.bob_receives(&c.video.clone(), Some(KEYFRAME)).await;

    // Bob's wire loses the packet carrying delta(1) before his NACK generator sees it.
    *c.bob_loss.target.lock().unwrap() = Some((ssrc_of(&c.video), rtx_ssrc, delta(1)));
    for n in 1..=3u16 {
        c.send_video(700 + n, &delta(n as u8)).await;
    }
    let later = c.bob_receives(&c.video.clone(), Some(&delta(2))).await;
    let recovered = c.bob_receives(&c.video.clone(), Some(&delta(1))).await;
    assert_eq!(c.bob_loss.log.dropped.load(Ordering::SeqCst), 1, "the original reached Bob's wire once, and was lost");
    assert!(c.bob_loss.log.retransmitted.load(Ordering::SeqCst) >= 1, "the worker answered on the consumer's RTX SSRC");
    assert_eq!(recovered.header.ssrc, ssrc_of(&c.video), "Bob's stack put the RTX payload back on the media SSRC");
    assert_eq!(recovered.header.payload_type, pt_of(&c.video));
    assert_eq!(recovered.header.sequence_number, first.header.sequence_number.wrapping_add(1));
    assert_eq!(later.header.sequence_number, first.header.sequence_number.wrapping_add(2));
    c.alice.pc.close().await.ok();
    c.bob.pc.close().await.ok();
    c.worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_producer_closes_the_consumer_with_an_event() {
    let mut c = call((47360, 47379)).await;
    c.send_video(1, KEYFRAME).await;
    c.bob_receives(&c.video.clone(), Some(KEYFRAME)).await;
    let endpoint = c.endpoint();
    let mut events = Box::pin(c.client.events(&endpoint, ROOM).await.expect("subscribes"));
    c.client.close_producer(&endpoint, ROOM, &c.camera).await.expect("closes the camera");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("consumerClosed in time")
            .expect("stream open")
            .expect("readable event");
        if let RoomEvent::ConsumerClosed { consumer_id, peer_id, producer_id, .. } = &event {
            assert_eq!(*consumer_id, c.video.id);
            assert_eq!(*peer_id, PeerId::from("bob"));
            assert_eq!(*producer_id, c.camera);
            break;
        }
    }
    // Bob gets no more video; the microphone is undisturbed.
    c.send_video(2, KEYFRAME).await;
    c.send_audio(7, b"still talking").await;
    c.bob_receives(&c.audio.clone(), Some(b"still talking")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(packet) = c.bob.rtp.try_recv() {
        assert_ne!(packet.header.ssrc, ssrc_of(&c.video), "video after its consumer closed");
    }
    let stats = c.client.stats(&endpoint).await.unwrap();
    assert_eq!((stats.producers, stats.consumers), (1, 1));
    c.alice.pc.close().await.ok();
    c.bob.pc.close().await.ok();
    c.worker.shutdown().await;
}
