//! From a producer's parameters to each consumer's: mediasoup's
//! `getProducerRtpParametersMapping`, `getConsumableRtpParameters`, `canConsume` and
//! `getConsumerRtpParameters`.
//!
//! A producer speaks in its own payload types and SSRCs. The router rewrites them to the
//! router's payload types and to SSRCs of its own ([`RtpMapping`]), which gives one description
//! of the producer in router terms ([`consumable_parameters`]). Each consumer then gets the part
//! of that description its device can decode, as a single stream with a fresh SSRC
//! ([`consumer_parameters`]).

use serde::{Deserialize, Serialize};

use super::codec::{Matching, apt, codecs_match, describe, is_rtx};
use super::error::RtpError;
use super::h264;
use super::header_extension_uri as uri;
use super::parameters::{
    MediaKind, Parameters, PayloadType, RtcpParameters, RtpCapabilities, RtpCodecCapability,
    RtpCodecParameters, RtpEncodingParameters, RtpHeaderExtensionDirection,
    RtpHeaderExtensionParameters, RtpParameters, RtxParameters, Ssrc,
};
use super::validation::{validate_rtp_capabilities, validate_rtp_parameters};

/// How a producer's payload types and RTP streams map onto the router's (mediasoup's
/// `RtpMapping`): the media plane rewrites incoming packets with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpMapping {
    /// One entry per producer codec, media codecs first, then RTX codecs.
    pub codecs: Vec<CodecMapping>,
    /// One entry per producer encoding, in the producer's order.
    pub encodings: Vec<EncodingMapping>,
}

impl RtpMapping {
    /// The router payload type for a payload type the producer sends, if it is mapped.
    pub fn mapped_payload_type(&self, payload_type: PayloadType) -> Option<PayloadType> {
        self.codecs
            .iter()
            .find(|entry| entry.payload_type == payload_type)
            .map(|entry| entry.mapped_payload_type)
    }
}

/// A producer payload type and the router payload type it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodecMapping {
    /// The payload type in the producer's packets.
    pub payload_type: PayloadType,
    /// The router's payload type for the same codec.
    pub mapped_payload_type: PayloadType,
}

/// A producer RTP stream, identified by SSRC or RID, and the SSRC the router gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncodingMapping {
    /// The producer's SSRC for the stream, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<Ssrc>,
    /// The stream's RID, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The stream's scalability mode, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// The SSRC the stream has inside the router.
    pub mapped_ssrc: Ssrc,
}

/// Validates a producer's `rtpParameters` and maps them onto the router's capabilities
/// (mediasoup's `validateRtpParameters` + `getProducerRtpParametersMapping`).
///
/// Each media codec maps to the first router codec that matches it strictly (MIME type, clock
/// rate, channels, H264 profile and packetization mode, VP9 profile); each RTX codec to the
/// router's RTX codec for the media codec it repairs. Encodings get mapped SSRCs
/// `first_mapped_ssrc`, `first_mapped_ssrc + 1`, ... (see [`Ssrc::after`]); mediasoup draws the
/// first one at random, here the caller does so that this function stays deterministic.
///
/// Errors: [`RtpError::InvalidRtpParameters`] for malformed parameters,
/// [`RtpError::UnsupportedCodec`] for a codec (or its RTX) the router does not have.
pub fn producer_mapping(
    kind: MediaKind,
    producer: &RtpParameters,
    router: &RtpCapabilities,
    first_mapped_ssrc: Ssrc,
) -> Result<RtpMapping, RtpError> {
    validate_rtp_parameters(kind, producer)?;

    let mut codecs = Vec::with_capacity(producer.codecs.len());
    for codec in producer
        .codecs
        .iter()
        .filter(|codec| !is_rtx(&codec.mime_type))
    {
        let mapped = router
            .codecs
            .iter()
            .filter(|candidate| codecs_match(codec, *candidate, Matching::Strict))
            .find_map(|candidate| candidate.preferred_payload_type)
            .ok_or_else(|| {
                RtpError::UnsupportedCodec(format!(
                    "the producer's codec with payload type {} ({}) is not enabled in this room; \
                     the room offers {}",
                    codec.payload_type,
                    describe(codec),
                    offered_codecs(router, kind)
                ))
            })?;
        codecs.push(CodecMapping {
            payload_type: codec.payload_type,
            mapped_payload_type: mapped,
        });
    }

    for codec in producer
        .codecs
        .iter()
        .filter(|codec| is_rtx(&codec.mime_type))
    {
        // Validation made sure `apt` names one of the media codecs just mapped.
        let mapped_media = apt(&codec.parameters)
            .and_then(|repaired| {
                codecs
                    .iter()
                    .find(|entry| entry.payload_type == repaired)
                    .map(|entry| entry.mapped_payload_type)
            })
            .ok_or_else(|| {
                RtpError::InvalidRtpParameters(format!(
                    "the RTX codec with payload type {} repairs no media codec of the producer",
                    codec.payload_type
                ))
            })?;
        let mapped = router_rtx_for(router, mapped_media)
            .and_then(|rtx| rtx.preferred_payload_type)
            .ok_or_else(|| {
                RtpError::UnsupportedCodec(format!(
                    "the producer's RTX codec with payload type {} repairs a codec for which this \
                     room has no RTX (router payload type {mapped_media}); leave RTX out",
                    codec.payload_type
                ))
            })?;
        codecs.push(CodecMapping {
            payload_type: codec.payload_type,
            mapped_payload_type: mapped,
        });
    }

    let encodings = producer
        .encodings
        .iter()
        .zip(0u32..)
        .map(|(encoding, index)| EncodingMapping {
            ssrc: encoding.ssrc,
            rid: encoding.rid.clone(),
            scalability_mode: encoding.scalability_mode.clone(),
            mapped_ssrc: first_mapped_ssrc.after(index),
        })
        .collect();

    Ok(RtpMapping { codecs, encodings })
}

/// The router's RTX codec repairing the router codec with the given payload type.
fn router_rtx_for(
    router: &RtpCapabilities,
    media_payload_type: PayloadType,
) -> Option<&RtpCodecCapability> {
    router.codecs.iter().find(|candidate| {
        is_rtx(&candidate.mime_type) && apt(&candidate.parameters) == Some(media_payload_type)
    })
}

/// The router's media codecs of a kind, for error messages.
fn offered_codecs(router: &RtpCapabilities, kind: MediaKind) -> String {
    let offered: Vec<String> = router
        .codecs
        .iter()
        .filter(|codec| codec.kind == kind && !is_rtx(&codec.mime_type))
        .map(|codec| match codec.preferred_payload_type {
            Some(payload_type) => format!("{} as payload type {payload_type}", describe(codec)),
            None => describe(codec),
        })
        .collect();
    if offered.is_empty() {
        format!("no {kind} codecs")
    } else {
        offered.join(", ")
    }
}

/// The producer's codec parameters as the router keeps them. mediasoup's strict matching with
/// `modify` rewrites an H264 producer's `profile-level-id` into the answer it would give (the
/// canonical form, at the producer's level), so consumers see that rather than the raw value.
fn negotiated_parameters(
    producer_codec: &RtpCodecParameters,
    router_codec: &RtpCodecCapability,
) -> Parameters {
    let mut parameters = producer_codec.parameters.clone();
    let mime_type = producer_codec.mime_type.to_ascii_lowercase();
    if mime_type == "video/h264" || mime_type == "video/h264-svc" {
        match h264::answer_profile_level_id(&producer_codec.parameters, &router_codec.parameters) {
            Ok(Some(profile_level_id)) => {
                parameters.insert("profile-level-id".to_owned(), profile_level_id.into());
            }
            Ok(None) => {
                parameters.remove("profile-level-id");
            }
            // The mapping matched these codecs strictly, so the profiles agree; keep the
            // producer's value rather than invent one if that ever stops holding.
            Err(h264::ProfileMismatch) => {}
        }
    }
    parameters
}

/// Describes a producer in router terms: the router's payload types (plus RTX for each video
/// codec the router has RTX for), the producer's codec parameters, the router's header
/// extensions of the producer's kind that the router can send, and the producer's encodings
/// with their mapped SSRCs (mediasoup's `getConsumableRtpParameters`).
///
/// `mapping` must be the one [`producer_mapping`] returned for these parameters and this
/// router; codecs or encodings it does not cover are left out rather than guessed.
pub fn consumable_parameters(
    kind: MediaKind,
    producer: &RtpParameters,
    router: &RtpCapabilities,
    mapping: &RtpMapping,
) -> RtpParameters {
    let mut codecs = Vec::new();
    for codec in producer
        .codecs
        .iter()
        .filter(|codec| !is_rtx(&codec.mime_type))
    {
        let Some(mapped) = mapping.mapped_payload_type(codec.payload_type) else {
            continue;
        };
        let Some(router_codec) = router
            .codecs
            .iter()
            .find(|candidate| candidate.preferred_payload_type == Some(mapped))
        else {
            continue;
        };
        codecs.push(RtpCodecParameters {
            mime_type: router_codec.mime_type.clone(),
            payload_type: mapped,
            clock_rate: router_codec.clock_rate,
            channels: router_codec.channels,
            parameters: negotiated_parameters(codec, router_codec),
            rtcp_feedback: router_codec.rtcp_feedback.clone(),
        });
        // The router offers RTX towards consumers even when the producer sends none: the
        // worker retransmits from its own packet store.
        if let Some(rtx) = router_rtx_for(router, mapped)
            && let Some(rtx_payload_type) = rtx.preferred_payload_type
        {
            codecs.push(RtpCodecParameters {
                mime_type: rtx.mime_type.clone(),
                payload_type: rtx_payload_type,
                clock_rate: rtx.clock_rate,
                channels: None,
                parameters: rtx.parameters.clone(),
                rtcp_feedback: rtx.rtcp_feedback.clone(),
            });
        }
    }

    let header_extensions = router
        .header_extensions
        .iter()
        .filter(|extension| {
            extension.kind == kind
                && matches!(
                    extension.direction,
                    RtpHeaderExtensionDirection::SendRecv | RtpHeaderExtensionDirection::SendOnly
                )
        })
        .map(|extension| RtpHeaderExtensionParameters {
            uri: extension.uri.clone(),
            id: extension.preferred_id,
            encrypt: extension.preferred_encrypt,
            parameters: Parameters::new(),
        })
        .collect();

    let encodings = producer
        .encodings
        .iter()
        .zip(&mapping.encodings)
        .map(|(encoding, mapped)| RtpEncodingParameters {
            ssrc: Some(mapped.mapped_ssrc),
            rid: None,
            codec_payload_type: None,
            rtx: None,
            ..encoding.clone()
        })
        .collect();

    RtpParameters {
        mid: None,
        codecs,
        header_extensions,
        encodings,
        rtcp: RtcpParameters {
            cname: producer.rtcp.cname.clone(),
            reduced_size: true,
        },
    }
}

/// True when a device with these capabilities can decode the producer described by
/// `consumable` (mediasoup's `canConsume`): its first codec that the device matches strictly
/// must be a media codec, not RTX. Malformed capability codecs simply match nothing.
pub fn can_consume(consumable: &RtpParameters, capabilities: &RtpCapabilities) -> bool {
    consumable
        .codecs
        .iter()
        .find(|codec| {
            capabilities
                .codecs
                .iter()
                .any(|capability| codecs_match(capability, *codec, Matching::Strict))
        })
        .is_some_and(|codec| !is_rtx(&codec.mime_type))
}

/// What the transport decides for a new consumer, beyond the device's capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// The consumer's fresh SSRC (mediasoup draws it at random). Its RTX stream, if any, uses
    /// the next one. 0 is not an SSRC and is read as 1.
    pub ssrc: Ssrc,
    /// Whether to offer RTX and NACK-based retransmission.
    pub enable_rtx: bool,
    /// The `mid` mediasoup's transport assigns to each consumer (a counter); `None` lets the
    /// client choose its own.
    pub mid: Option<String>,
}

impl ConsumerOptions {
    /// mediasoup's defaults for a consumer of the given kind: retransmission for video only,
    /// no `mid`.
    pub fn new(kind: MediaKind, ssrc: Ssrc) -> Self {
        ConsumerOptions {
            ssrc,
            enable_rtx: kind == MediaKind::Video,
            mid: None,
        }
    }
}

/// Builds a consumer's `rtpParameters` from the producer's consumable parameters and the
/// consuming device's capabilities (mediasoup's `getConsumerRtpParameters`, non-pipe case).
///
/// Codecs: those of `consumable` the device matches strictly, with the device's RTCP feedback
/// (plain `nack` only with RTX enabled), RTX codecs only alongside their media codec. Header
/// extensions: those of `consumable` whose URI and id both appear in the device's
/// capabilities. One encoding with `options.ssrc` and, when RTX is negotiated, an RTX SSRC one
/// higher; with simulcast producers the encoding's scalability mode says `L<layers>T<temporal>`
/// and its `maxBitrate` is the highest of the producer's. RTCP: the producer's cname, reduced
/// size.
///
/// One deliberate difference from mediasoup: feedback the router codec does not list is never
/// passed on, whatever the device claims (the worker would not act on it). Bandwidth
/// estimation follows mediasoup's rule: transport-cc when the consumer has the transport-wide
/// sequence number extension, else goog-remb when it has abs-send-time, else neither; the
/// other's feedback is removed.
///
/// Errors: [`RtpError::InvalidRtpCapabilities`] for malformed capabilities,
/// [`RtpError::CannotConsume`] when the device matches none of the media codecs.
pub fn consumer_parameters(
    consumable: &RtpParameters,
    capabilities: &RtpCapabilities,
    options: &ConsumerOptions,
) -> Result<RtpParameters, RtpError> {
    validate_rtp_capabilities(capabilities)?;

    let mut codecs: Vec<RtpCodecParameters> = Vec::new();
    for codec in &consumable.codecs {
        if !options.enable_rtx && is_rtx(&codec.mime_type) {
            continue;
        }
        let Some(capability) = capabilities
            .codecs
            .iter()
            .find(|capability| codecs_match(*capability, codec, Matching::Strict))
        else {
            continue;
        };
        let rtcp_feedback = capability
            .rtcp_feedback
            .iter()
            // Without RTX there is nothing to answer a generic NACK with; `nack pli` stays.
            .filter(|fb| options.enable_rtx || fb.r#type != "nack" || !fb.parameter.is_empty())
            .filter(|fb| codec.rtcp_feedback.contains(fb))
            .cloned()
            .collect();
        codecs.push(RtpCodecParameters {
            rtcp_feedback,
            ..codec.clone()
        });
    }

    // An RTX codec is useless without the media codec it repairs.
    let kept_media: Vec<PayloadType> = codecs
        .iter()
        .filter(|codec| !is_rtx(&codec.mime_type))
        .map(|codec| codec.payload_type)
        .collect();
    codecs.retain(|codec| {
        !is_rtx(&codec.mime_type)
            || apt(&codec.parameters).is_some_and(|repaired| kept_media.contains(&repaired))
    });
    let rtx_negotiated = codecs.iter().any(|codec| is_rtx(&codec.mime_type));

    if codecs.first().is_none_or(|codec| is_rtx(&codec.mime_type)) {
        let producer_codecs: Vec<String> = consumable
            .codecs
            .iter()
            .filter(|codec| !is_rtx(&codec.mime_type))
            .map(describe)
            .collect();
        return Err(RtpError::CannotConsume(format!(
            "the consuming device supports none of the producer's codecs ({}); load the device \
             with this room's router capabilities and pass device.rtpCapabilities",
            producer_codecs.join(", ")
        )));
    }

    let header_extensions: Vec<RtpHeaderExtensionParameters> = consumable
        .header_extensions
        .iter()
        .filter(|extension| {
            capabilities.header_extensions.iter().any(|capability| {
                capability.preferred_id == extension.id && capability.uri == extension.uri
            })
        })
        .cloned()
        .collect();

    keep_one_bandwidth_estimation(&mut codecs, &header_extensions);

    Ok(RtpParameters {
        mid: options.mid.clone(),
        codecs,
        header_extensions,
        encodings: vec![consumer_encoding(consumable, options.ssrc, rtx_negotiated)],
        rtcp: consumable.rtcp.clone(),
    })
}

/// mediasoup's bandwidth-estimation rule for consumers: transport-cc feedback when its header
/// extension is in use, else REMB when abs-send-time is, else neither.
fn keep_one_bandwidth_estimation(
    codecs: &mut [RtpCodecParameters],
    header_extensions: &[RtpHeaderExtensionParameters],
) {
    let uses = |wanted: &str| {
        header_extensions
            .iter()
            .any(|extension| extension.uri == wanted)
    };
    let dropped: &[&str] = if uses(uri::TRANSPORT_WIDE_CC) {
        &["goog-remb"]
    } else if uses(uri::ABS_SEND_TIME) {
        &["transport-cc"]
    } else {
        &["transport-cc", "goog-remb"]
    };
    for codec in codecs {
        codec
            .rtcp_feedback
            .retain(|fb| !dropped.contains(&fb.r#type.as_str()));
    }
}

/// The consumer's single encoding: the fresh SSRC, RTX one above it when negotiated, and the
/// producer's layers and bitrate cap folded into one stream.
fn consumer_encoding(
    consumable: &RtpParameters,
    ssrc: Ssrc,
    rtx_negotiated: bool,
) -> RtpEncodingParameters {
    let ssrc = ssrc.after(0);
    let mut scalability_mode = consumable.encodings.iter().find_map(|encoding| {
        encoding
            .scalability_mode
            .clone()
            .filter(|mode| !mode.is_empty())
    });
    if consumable.encodings.len() > 1 {
        // The consumer sees simulcast as one stream whose spatial layers are the encodings.
        let temporal_layers = temporal_layers(scalability_mode.as_deref());
        scalability_mode = Some(format!("L{}T{temporal_layers}", consumable.encodings.len()));
    }
    RtpEncodingParameters {
        ssrc: Some(ssrc),
        rtx: rtx_negotiated.then(|| RtxParameters {
            ssrc: ssrc.after(1),
        }),
        scalability_mode,
        max_bitrate: consumable
            .encodings
            .iter()
            .filter_map(|encoding| encoding.max_bitrate)
            .max()
            .filter(|bitrate| *bitrate > 0),
        ..RtpEncodingParameters::default()
    }
}

/// The temporal layer count of a scalability mode such as `L1T3` or `S3T3_KEY`; 1 when absent
/// or unreadable (mediasoup's `scalabilityModes.parse`, which reads a prefix matching
/// `^[LS]([1-9]\d?)T([1-9]\d?)`).
fn temporal_layers(scalability_mode: Option<&str>) -> u8 {
    fn layer_count(text: &[u8]) -> Option<(u8, &[u8])> {
        let (&first, rest) = text.split_first()?;
        if !(b'1'..=b'9').contains(&first) {
            return None;
        }
        let mut count = first - b'0';
        let mut rest = rest;
        if let Some((&second, after)) = rest.split_first()
            && second.is_ascii_digit()
        {
            count = count * 10 + (second - b'0');
            rest = after;
        }
        Some((count, rest))
    }

    let parse = |mode: &str| -> Option<u8> {
        let rest = mode
            .as_bytes()
            .strip_prefix(b"L")
            .or_else(|| mode.as_bytes().strip_prefix(b"S"))?;
        let (_spatial, rest) = layer_count(rest)?;
        let rest = rest.strip_prefix(b"T")?;
        let (temporal, _) = layer_count(rest)?;
        Some(temporal)
    };
    scalability_mode.and_then(parse).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::super::capabilities::{default_media_codecs, router_capabilities};
    use super::*;
    use serde_json::{Value, json};

    fn router() -> RtpCapabilities {
        router_capabilities(&default_media_codecs()).expect("default codecs are supported")
    }

    /// What mediasoup-client's Chrome handler sends to `produce` for a camera track once the
    /// device is loaded with [`router`]: Chrome's own payload types and extension ids,
    /// feedback reduced to what the router offers, one encoding with RTX.
    fn chrome_vp8_producer() -> RtpParameters {
        serde_json::from_value(json!({
            "mid": "0",
            "codecs": [
                {
                    "mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                    "parameters": {},
                    "rtcpFeedback": [
                        {"type": "nack", "parameter": ""},
                        {"type": "nack", "parameter": "pli"},
                        {"type": "ccm", "parameter": "fir"}
                    ]
                },
                {
                    "mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
                    "parameters": {"apt": 96}, "rtcpFeedback": []
                }
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 9, "encrypt": false, "parameters": {}},
                {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 2,
                 "encrypt": false, "parameters": {}},
                {"uri": "urn:3gpp:video-orientation", "id": 3, "encrypt": false, "parameters": {}},
                {"uri": "urn:ietf:params:rtp-hdrext:toffset", "id": 1, "encrypt": false, "parameters": {}}
            ],
            "encodings": [{"ssrc": 2471283948u32, "rtx": {"ssrc": 1389617367}, "dtx": false}],
            "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": true}
        }))
        .expect("fixture parses")
    }

    /// Chrome's `device.rtpCapabilities` after loading [`router`]: the router's payload types
    /// and extension ids, Chrome's own codec parameters.
    fn chrome_device() -> Value {
        let video_feedback = json!([
            {"type": "goog-remb", "parameter": ""},
            {"type": "transport-cc", "parameter": ""},
            {"type": "ccm", "parameter": "fir"},
            {"type": "nack", "parameter": ""},
            {"type": "nack", "parameter": "pli"}
        ]);
        let rtx = |payload_type: u8, apt: u8| {
            json!({"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": payload_type,
                   "clockRate": 90000, "parameters": {"apt": apt}, "rtcpFeedback": []})
        };
        let extension = |kind: &str, uri: &str, id: u8| {
            json!({"kind": kind, "uri": uri, "preferredId": id, "preferredEncrypt": false,
                   "direction": "sendrecv"})
        };
        json!({
            "codecs": [
                {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100,
                 "clockRate": 48000, "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1},
                 "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
                {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101,
                 "clockRate": 90000, "parameters": {}, "rtcpFeedback": video_feedback},
                rtx(102, 101),
                {"mimeType": "video/VP9", "kind": "video", "preferredPayloadType": 103,
                 "clockRate": 90000, "parameters": {"profile-id": 0}, "rtcpFeedback": video_feedback},
                rtx(104, 103),
                {"mimeType": "video/H264", "kind": "video", "preferredPayloadType": 105,
                 "clockRate": 90000,
                 "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": 1,
                                "profile-level-id": "42e01f"},
                 "rtcpFeedback": video_feedback},
                rtx(106, 105)
            ],
            "headerExtensions": [
                extension("audio", uri::MID, 1),
                extension("video", uri::MID, 1),
                extension("audio", uri::ABS_SEND_TIME, 4),
                extension("video", uri::ABS_SEND_TIME, 4),
                extension("video", uri::TRANSPORT_WIDE_CC, 5),
                extension("audio", uri::SSRC_AUDIO_LEVEL, 10),
                extension("video", uri::VIDEO_ORIENTATION, 11),
                extension("video", uri::TOFFSET, 12)
            ]
        })
    }

    fn capabilities(value: Value) -> RtpCapabilities {
        serde_json::from_value(value).expect("capabilities parse")
    }

    fn h264_producer(packetization_mode: u8, profile_level_id: &str) -> RtpParameters {
        serde_json::from_value(json!({
            "mid": "1",
            "codecs": [
                {"mimeType": "video/H264", "payloadType": 102, "clockRate": 90000,
                 "parameters": {"level-asymmetry-allowed": 1, "packetization-mode": packetization_mode,
                                "profile-level-id": profile_level_id}},
                {"mimeType": "video/rtx", "payloadType": 103, "clockRate": 90000, "parameters": {"apt": 102}}
            ],
            "encodings": [{"ssrc": 11111111, "rtx": {"ssrc": 22222222}}],
            "rtcp": {"cname": "h264cname"}
        }))
        .expect("fixture parses")
    }

    fn vp8_consumable() -> RtpParameters {
        let router = router();
        let producer = chrome_vp8_producer();
        let mapping =
            producer_mapping(MediaKind::Video, &producer, &router, Ssrc(1000)).expect("maps");
        consumable_parameters(MediaKind::Video, &producer, &router, &mapping)
    }

    fn mapped(mapping: &RtpMapping) -> Vec<(u8, u8)> {
        mapping
            .codecs
            .iter()
            .map(|entry| (entry.payload_type.0, entry.mapped_payload_type.0))
            .collect()
    }

    #[test]
    fn chrome_vp8_and_rtx_map_onto_the_router_payload_types() {
        let mapping = producer_mapping(
            MediaKind::Video,
            &chrome_vp8_producer(),
            &router(),
            Ssrc(1000),
        )
        .expect("maps");
        assert_eq!(mapped(&mapping), [(96, 101), (97, 102)]);
        assert_eq!(
            mapping.encodings,
            [EncodingMapping {
                ssrc: Some(Ssrc(2471283948)),
                rid: None,
                scalability_mode: None,
                mapped_ssrc: Ssrc(1000)
            }]
        );
        assert_eq!(
            mapping.mapped_payload_type(PayloadType(97)),
            Some(PayloadType(102))
        );
        assert_eq!(mapping.mapped_payload_type(PayloadType(100)), None);
    }

    #[test]
    fn rtp_mapping_serialises_like_mediasoup() {
        let mapping = producer_mapping(
            MediaKind::Video,
            &chrome_vp8_producer(),
            &router(),
            Ssrc(1000),
        )
        .expect("maps");
        assert_eq!(
            serde_json::to_value(&mapping).ok(),
            Some(json!({
                "codecs": [
                    {"payloadType": 96, "mappedPayloadType": 101},
                    {"payloadType": 97, "mappedPayloadType": 102}
                ],
                "encodings": [{"ssrc": 2471283948u32, "mappedSsrc": 1000}]
            }))
        );
    }

    #[test]
    fn simulcast_encodings_get_consecutive_mapped_ssrcs() {
        let mut producer = chrome_vp8_producer();
        producer.encodings = serde_json::from_value(json!([
            {"rid": "r0", "scalabilityMode": "L1T3", "maxBitrate": 100000},
            {"rid": "r1", "scalabilityMode": "L1T3", "maxBitrate": 300000},
            {"rid": "r2", "scalabilityMode": "L1T3", "maxBitrate": 900000}
        ]))
        .expect("encodings parse");
        let mapping =
            producer_mapping(MediaKind::Video, &producer, &router(), Ssrc(u32::MAX)).expect("maps");
        let streams: Vec<(Option<&str>, u32)> = mapping
            .encodings
            .iter()
            .map(|e| (e.rid.as_deref(), e.mapped_ssrc.0))
            .collect();
        assert_eq!(
            streams,
            [(Some("r0"), u32::MAX), (Some("r1"), 1), (Some("r2"), 2)]
        );
        assert_eq!(
            mapping.encodings[2].scalability_mode.as_deref(),
            Some("L1T3")
        );
    }

    #[test]
    fn h264_42e01f_maps_to_the_42e01f_router_codec_not_4d001f() {
        let mapping = producer_mapping(
            MediaKind::Video,
            &h264_producer(1, "42e01f"),
            &router(),
            Ssrc(1),
        )
        .expect("constrained baseline is enabled");
        assert_eq!(mapped(&mapping), [(102, 105), (103, 106)]);
    }

    #[test]
    fn h264_4d001f_maps_to_the_main_profile_router_codec() {
        let mapping = producer_mapping(
            MediaKind::Video,
            &h264_producer(1, "4d001f"),
            &router(),
            Ssrc(1),
        )
        .expect("main is enabled");
        assert_eq!(mapped(&mapping), [(102, 107), (103, 108)]);
    }

    #[test]
    fn h264_matches_at_another_level_of_the_same_profile() {
        let mapping = producer_mapping(
            MediaKind::Video,
            &h264_producer(1, "42e034"),
            &router(),
            Ssrc(1),
        )
        .expect("levels do not prevent a match");
        assert_eq!(mapped(&mapping)[0], (102, 105));
    }

    #[test]
    fn h264_with_another_packetization_mode_is_unsupported() {
        let error = producer_mapping(
            MediaKind::Video,
            &h264_producer(0, "42e01f"),
            &router(),
            Ssrc(1),
        )
        .expect_err("the room enables packetization-mode 1 only");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        assert!(
            error.to_string().contains("packetization-mode=0"),
            "{error}"
        );
    }

    #[test]
    fn h264_baseline_profile_is_unsupported_when_only_constrained_baseline_is_enabled() {
        let error = producer_mapping(
            MediaKind::Video,
            &h264_producer(1, "42001f"),
            &router(),
            Ssrc(1),
        )
        .expect_err("42001f is Baseline, not Constrained Baseline");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
    }

    #[test]
    fn a_codec_the_room_lacks_is_rejected_with_its_code_and_the_offered_codecs() {
        let producer: RtpParameters = serde_json::from_value(json!({
            "mid": "0",
            "codecs": [{"mimeType": "video/AV1", "payloadType": 45, "clockRate": 90000}],
            "encodings": [{"ssrc": 5}]
        }))
        .expect("fixture parses");
        let error = producer_mapping(MediaKind::Video, &producer, &router(), Ssrc(1))
            .expect_err("AV1 is not enabled");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        let message = error.to_string();
        assert!(
            message.contains("payload type 45 (video/AV1 90000 Hz)"),
            "{message}"
        );
        assert!(
            message.contains("video/VP8 90000 Hz as payload type 101"),
            "{message}"
        );
        assert!(
            !message.contains("audio/opus"),
            "only codecs of the producer's kind: {message}"
        );
    }

    #[test]
    fn producer_parameters_are_validated_before_mapping() {
        let mut producer = chrome_vp8_producer();
        producer.encodings.clear();
        let error =
            producer_mapping(MediaKind::Video, &producer, &router(), Ssrc(1)).expect_err("invalid");
        assert_eq!(error.code(), "INVALID_RTP_PARAMETERS");
    }

    #[test]
    fn rtx_is_unsupported_when_the_router_has_no_rtx_for_the_codec() {
        let mut router = router();
        router.codecs.retain(|codec| !is_rtx(&codec.mime_type));
        let error = producer_mapping(MediaKind::Video, &chrome_vp8_producer(), &router, Ssrc(1))
            .expect_err("no RTX in the router");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        assert!(error.to_string().contains("leave RTX out"), "{error}");
    }

    #[test]
    fn consumable_parameters_describe_the_producer_in_router_terms() {
        assert_eq!(
            serde_json::to_value(vp8_consumable()).ok(),
            Some(json!({
                "codecs": [
                    {
                        "mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000,
                        "parameters": {},
                        "rtcpFeedback": [
                            {"type": "goog-remb", "parameter": ""},
                            {"type": "transport-cc", "parameter": ""},
                            {"type": "ccm", "parameter": "fir"},
                            {"type": "nack", "parameter": ""},
                            {"type": "nack", "parameter": "pli"}
                        ]
                    },
                    {
                        "mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                        "parameters": {"apt": 101}, "rtcpFeedback": []
                    }
                ],
                "headerExtensions": [
                    {"uri": uri::MID, "id": 1, "encrypt": false, "parameters": {}},
                    {"uri": uri::ABS_SEND_TIME, "id": 4, "encrypt": false, "parameters": {}},
                    {"uri": uri::TRANSPORT_WIDE_CC, "id": 5, "encrypt": false, "parameters": {}},
                    {"uri": uri::VIDEO_ORIENTATION, "id": 11, "encrypt": false, "parameters": {}},
                    {"uri": uri::TOFFSET, "id": 12, "encrypt": false, "parameters": {}}
                ],
                "encodings": [{"ssrc": 1000, "dtx": false}],
                "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": true}
            }))
        );
    }

    #[test]
    fn consumable_parameters_offer_rtx_even_when_the_producer_sends_none() {
        let router = router();
        let mut producer = chrome_vp8_producer();
        producer.codecs.truncate(1);
        producer.encodings[0].rtx = None;
        let mapping =
            producer_mapping(MediaKind::Video, &producer, &router, Ssrc(7)).expect("maps");
        let consumable = consumable_parameters(MediaKind::Video, &producer, &router, &mapping);
        let payload_types: Vec<u8> = consumable
            .codecs
            .iter()
            .map(|codec| codec.payload_type.0)
            .collect();
        assert_eq!(payload_types, [101, 102]);
    }

    #[test]
    fn consumable_h264_parameters_keep_the_producers_with_a_canonical_profile_level_id() {
        let router = router();
        let producer = h264_producer(1, "42E01F");
        let mapping =
            producer_mapping(MediaKind::Video, &producer, &router, Ssrc(7)).expect("maps");
        let consumable = consumable_parameters(MediaKind::Video, &producer, &router, &mapping);
        assert_eq!(
            serde_json::to_value(&consumable.codecs[0].parameters).ok(),
            Some(
                json!({"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"})
            )
        );
    }

    #[test]
    fn consumable_audio_keeps_only_audio_header_extensions() {
        let router = router();
        let producer: RtpParameters = serde_json::from_value(json!({
            "mid": "0",
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
                        "parameters": {"minptime": 10, "useinbandfec": 1}}],
            "headerExtensions": [{"uri": uri::SSRC_AUDIO_LEVEL, "id": 1}],
            "encodings": [{"ssrc": 3333}],
            "rtcp": {"cname": "audio"}
        }))
        .expect("fixture parses");
        let mapping =
            producer_mapping(MediaKind::Audio, &producer, &router, Ssrc(9)).expect("maps");
        let consumable = consumable_parameters(MediaKind::Audio, &producer, &router, &mapping);
        let extensions: Vec<(&str, u8)> = consumable
            .header_extensions
            .iter()
            .map(|e| (e.uri.as_str(), e.id))
            .collect();
        assert_eq!(
            extensions,
            [
                (uri::MID, 1),
                (uri::ABS_SEND_TIME, 4),
                (uri::SSRC_AUDIO_LEVEL, 10)
            ]
        );
        assert_eq!(consumable.codecs.len(), 1, "audio has no RTX");
        assert_eq!(consumable.codecs[0].payload_type, PayloadType(100));
        assert_eq!(
            consumable.codecs[0].parameters["useinbandfec"].as_integer(),
            Some(1)
        );
    }

    #[test]
    fn a_device_loaded_with_the_router_can_consume() {
        assert!(can_consume(
            &vp8_consumable(),
            &capabilities(chrome_device())
        ));
    }

    #[test]
    fn a_device_without_the_producers_codec_cannot_consume() {
        let mut device = chrome_device();
        let codecs = device["codecs"].as_array_mut().expect("codecs array");
        codecs.retain(|codec| codec["mimeType"] != "video/VP8");
        assert!(!can_consume(&vp8_consumable(), &capabilities(device)));
        assert!(!can_consume(&vp8_consumable(), &RtpCapabilities::default()));
    }

    #[test]
    fn a_device_matching_only_rtx_cannot_consume() {
        let device = json!({"codecs": [
            {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102, "clockRate": 90000,
             "parameters": {"apt": 101}}
        ]});
        assert!(!can_consume(&vp8_consumable(), &capabilities(device)));
    }

    #[test]
    fn consumer_gets_one_encoding_with_the_given_ssrc_and_rtx_one_above() {
        let mut options = ConsumerOptions::new(MediaKind::Video, Ssrc(555000));
        options.mid = Some("3".to_owned());
        let consumer =
            consumer_parameters(&vp8_consumable(), &capabilities(chrome_device()), &options)
                .expect("consumable");
        assert_eq!(
            serde_json::to_value(&consumer).ok(),
            Some(json!({
                "mid": "3",
                "codecs": [
                    {
                        "mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000,
                        "parameters": {},
                        "rtcpFeedback": [
                            {"type": "transport-cc", "parameter": ""},
                            {"type": "ccm", "parameter": "fir"},
                            {"type": "nack", "parameter": ""},
                            {"type": "nack", "parameter": "pli"}
                        ]
                    },
                    {
                        "mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                        "parameters": {"apt": 101}, "rtcpFeedback": []
                    }
                ],
                "headerExtensions": [
                    {"uri": uri::MID, "id": 1, "encrypt": false, "parameters": {}},
                    {"uri": uri::ABS_SEND_TIME, "id": 4, "encrypt": false, "parameters": {}},
                    {"uri": uri::TRANSPORT_WIDE_CC, "id": 5, "encrypt": false, "parameters": {}},
                    {"uri": uri::VIDEO_ORIENTATION, "id": 11, "encrypt": false, "parameters": {}},
                    {"uri": uri::TOFFSET, "id": 12, "encrypt": false, "parameters": {}}
                ],
                "encodings": [{"ssrc": 555000, "rtx": {"ssrc": 555001}}],
                "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": true}
            }))
        );
    }

    #[test]
    fn consumer_header_extensions_need_both_uri_and_id_to_match_the_device() {
        let mut device = chrome_device();
        let extensions = device["headerExtensions"]
            .as_array_mut()
            .expect("extensions array");
        // The device lacks toffset and knows video-orientation under another id.
        extensions.retain(|extension| extension["uri"] != uri::TOFFSET);
        for extension in extensions.iter_mut() {
            if extension["uri"] == uri::VIDEO_ORIENTATION {
                extension["preferredId"] = json!(13);
            }
        }
        let consumer = consumer_parameters(
            &vp8_consumable(),
            &capabilities(device),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(1)),
        )
        .expect("consumable");
        let kept: Vec<(&str, u8)> = consumer
            .header_extensions
            .iter()
            .map(|e| (e.uri.as_str(), e.id))
            .collect();
        assert_eq!(kept, [(uri::MID, 1), (uri::ABS_SEND_TIME, 4), (uri::TRANSPORT_WIDE_CC, 5)]);
    }

    #[test]
    fn consumer_without_device_rtx_has_no_rtx_stream() {
        let mut device = chrome_device();
        let codecs = device["codecs"].as_array_mut().expect("codecs array");
        codecs.retain(|codec| codec["mimeType"] != "video/rtx");
        let consumer = consumer_parameters(
            &vp8_consumable(),
            &capabilities(device),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(42)),
        )
        .expect("consumable");
        assert_eq!(consumer.codecs.len(), 1);
        assert_eq!(consumer.encodings[0].ssrc, Some(Ssrc(42)));
        assert_eq!(consumer.encodings[0].rtx, None);
    }

    #[test]
    fn consumer_with_rtx_disabled_drops_rtx_and_generic_nack_but_keeps_pli() {
        let options = ConsumerOptions {
            ssrc: Ssrc(42),
            enable_rtx: false,
            mid: None,
        };
        let consumer =
            consumer_parameters(&vp8_consumable(), &capabilities(chrome_device()), &options)
                .expect("consumable");
        assert_eq!(consumer.codecs.len(), 1);
        assert_eq!(consumer.encodings[0].rtx, None);
        let feedback: Vec<(&str, &str)> = consumer.codecs[0]
            .rtcp_feedback
            .iter()
            .map(|fb| (fb.r#type.as_str(), fb.parameter.as_str()))
            .collect();
        assert_eq!(feedback, [("transport-cc", ""), ("ccm", "fir"), ("nack", "pli")]);
    }

    #[test]
    fn consumer_rtx_ssrc_wraps_past_the_largest_ssrc() {
        let consumer = consumer_parameters(
            &vp8_consumable(),
            &capabilities(chrome_device()),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(u32::MAX)),
        )
        .expect("consumable");
        assert_eq!(
            consumer.encodings[0].rtx,
            Some(RtxParameters { ssrc: Ssrc(1) })
        );
    }

    #[test]
    fn consumer_feedback_never_includes_what_the_router_does_not_offer() {
        let mut device = chrome_device();
        device["codecs"][1]["rtcpFeedback"] = json!([
            {"type": "goog-lntf"}, {"type": "nack"}, {"type": "nack", "parameter": "pli"}
        ]);
        let consumer = consumer_parameters(
            &vp8_consumable(),
            &capabilities(device),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(1)),
        )
        .expect("consumable");
        let feedback: Vec<&str> = consumer.codecs[0]
            .rtcp_feedback
            .iter()
            .map(|fb| fb.r#type.as_str())
            .collect();
        assert_eq!(feedback, ["nack", "nack"]);
    }

    /// The bandwidth-estimation feedback a VP8 consumer gets from a device offering both,
    /// with `extensions` (uri, id) in its capabilities.
    fn estimation_feedback(extensions: &[(&str, u8)]) -> (Vec<String>, Vec<String>) {
        let mut device = chrome_device();
        device["codecs"][1]["rtcpFeedback"] = json!([
            {"type": "goog-remb"}, {"type": "transport-cc"}, {"type": "nack"}, {"type": "nack", "parameter": "pli"}
        ]);
        device["headerExtensions"] = extensions
            .iter()
            .map(|(uri, id)| json!({"kind": "video", "uri": uri, "preferredId": id, "preferredEncrypt": false, "direction": "sendrecv"}))
            .collect();
        let consumer = consumer_parameters(&vp8_consumable(), &capabilities(device), &ConsumerOptions::new(MediaKind::Video, Ssrc(1)))
            .expect("consumable");
        let feedback = consumer.codecs[0]
            .rtcp_feedback
            .iter()
            .map(|fb| fb.r#type.clone())
            .filter(|t| t == "goog-remb" || t == "transport-cc")
            .collect();
        (feedback, consumer.header_extensions.into_iter().map(|e| e.uri).collect())
    }

    #[test]
    fn consumers_get_transport_cc_when_both_are_offered_and_remb_without_the_transport_wide_extension() {
        let (feedback, extensions) = estimation_feedback(&[(uri::ABS_SEND_TIME, 4), (uri::TRANSPORT_WIDE_CC, 5)]);
        assert_eq!(feedback, ["transport-cc"]);
        // As mediasoup: both extensions stay, only the feedback is reduced.
        assert_eq!(extensions, [uri::ABS_SEND_TIME, uri::TRANSPORT_WIDE_CC]);
        assert_eq!(estimation_feedback(&[(uri::ABS_SEND_TIME, 4)]).0, ["goog-remb"]);
        assert!(estimation_feedback(&[(uri::MID, 1)]).0.is_empty(), "neither without their extensions");
        // An id other than the router's is not the same extension.
        assert_eq!(estimation_feedback(&[(uri::ABS_SEND_TIME, 4), (uri::TRANSPORT_WIDE_CC, 3)]).0, ["goog-remb"]);
    }

    #[test]
    fn consumer_of_a_simulcast_producer_gets_spatial_layers_and_the_highest_bitrate() {
        let router = router();
        let mut producer = chrome_vp8_producer();
        producer.encodings = serde_json::from_value(json!([
            {"rid": "r0", "scalabilityMode": "L1T3", "maxBitrate": 100000},
            {"rid": "r1", "scalabilityMode": "L1T3", "maxBitrate": 300000},
            {"rid": "r2", "scalabilityMode": "L1T3", "maxBitrate": 900000}
        ]))
        .expect("encodings parse");
        let mapping =
            producer_mapping(MediaKind::Video, &producer, &router, Ssrc(10)).expect("maps");
        let consumable = consumable_parameters(MediaKind::Video, &producer, &router, &mapping);
        let mapped_ssrcs: Vec<Option<Ssrc>> = consumable.encodings.iter().map(|e| e.ssrc).collect();
        assert_eq!(
            mapped_ssrcs,
            [Some(Ssrc(10)), Some(Ssrc(11)), Some(Ssrc(12))]
        );
        assert!(consumable.encodings.iter().all(|e| e.rid.is_none()));

        let consumer = consumer_parameters(
            &consumable,
            &capabilities(chrome_device()),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(77)),
        )
        .expect("consumable");
        assert_eq!(consumer.encodings.len(), 1);
        assert_eq!(
            consumer.encodings[0].scalability_mode.as_deref(),
            Some("L3T3")
        );
        assert_eq!(consumer.encodings[0].max_bitrate, Some(900000));
    }

    #[test]
    fn consumer_of_an_audio_producer_gets_no_rtx_by_default() {
        let router = router();
        let producer: RtpParameters = serde_json::from_value(json!({
            "mid": "0",
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 3333}]
        }))
        .expect("fixture parses");
        let mapping =
            producer_mapping(MediaKind::Audio, &producer, &router, Ssrc(9)).expect("maps");
        let consumable = consumable_parameters(MediaKind::Audio, &producer, &router, &mapping);
        let options = ConsumerOptions::new(MediaKind::Audio, Ssrc(31));
        assert!(!options.enable_rtx);
        let consumer = consumer_parameters(&consumable, &capabilities(chrome_device()), &options)
            .expect("consumable");
        assert_eq!(consumer.codecs[0].mime_type, "audio/opus");
        assert_eq!(consumer.encodings[0].rtx, None);
        assert_eq!(
            consumer.rtcp,
            RtcpParameters {
                cname: None,
                reduced_size: true
            }
        );
    }

    #[test]
    fn consuming_without_a_common_codec_fails_with_cannot_consume() {
        let device = json!({"codecs": [
            {"mimeType": "video/VP9", "kind": "video", "preferredPayloadType": 103, "clockRate": 90000}
        ]});
        let error = consumer_parameters(
            &vp8_consumable(),
            &capabilities(device),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(1)),
        )
        .expect_err("no common codec");
        assert_eq!(error.code(), "CANNOT_CONSUME");
        assert!(error.to_string().contains("video/VP8 90000 Hz"), "{error}");
    }

    #[test]
    fn malformed_device_capabilities_are_refused() {
        let device = json!({"codecs": [
            {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102, "clockRate": 90000,
             "parameters": {"apt": "101"}}
        ]});
        let error = consumer_parameters(
            &vp8_consumable(),
            &capabilities(device),
            &ConsumerOptions::new(MediaKind::Video, Ssrc(1)),
        )
        .expect_err("apt must be a number");
        assert_eq!(error.code(), "INVALID_RTP_CAPABILITIES");
    }

    #[test]
    fn temporal_layers_follow_mediasoups_scalability_mode_reading() {
        assert_eq!(temporal_layers(Some("L1T3")), 3);
        assert_eq!(temporal_layers(Some("S3T3_KEY")), 3);
        assert_eq!(temporal_layers(Some("L2T12")), 12);
        assert_eq!(temporal_layers(Some("L0T3")), 1);
        assert_eq!(temporal_layers(Some("nonsense")), 1);
        assert_eq!(temporal_layers(None), 1);
    }
}
