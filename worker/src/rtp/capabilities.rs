//! What the worker can route, and a router's capabilities built from a room's media codecs
//! (mediasoup's `supportedRtpCapabilities.ts` and `generateRouterRtpCapabilities`).

use std::collections::VecDeque;

use super::codec::{Matching, codecs_match, describe};
use super::error::RtpError;
use super::header_extension_uri as uri;
use super::parameters::{
    MediaKind, Parameters, PayloadType, RtcpFeedback, RtpCapabilities, RtpCodecCapability,
    RtpHeaderExtension, RtpHeaderExtensionDirection,
};

/// Dynamic payload types in the order mediasoup hands them out: 100-127 first, then 96-99.
const DYNAMIC_PAYLOAD_TYPES: [u8; 32] = [
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 122, 123, 124, 125, 126, 127, 96, 97, 98, 99,
];

fn parameters(entries: &[(&str, super::parameters::ParameterValue)]) -> Parameters {
    entries
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

/// Feedback for video codecs: NACK (answered from the per-consumer packet store), PLI and FIR
/// (keyframe requests, forwarded to producers), and both bandwidth-estimation feedbacks, as
/// mediasoup lists them: transport-cc (the worker sends transport-wide feedback to publishers
/// and reads it from subscribers) and goog-remb (REMB to publishers that negotiated only
/// abs-send-time). Each consumer keeps one of the two ([`super::ortc::consumer_parameters`]).
fn video_feedback() -> Vec<RtcpFeedback> {
    vec![
        RtcpFeedback::new("goog-remb", ""),
        RtcpFeedback::new("transport-cc", ""),
        RtcpFeedback::new("ccm", "fir"),
        RtcpFeedback::new("nack", ""),
        RtcpFeedback::new("nack", "pli"),
    ]
}

/// Feedback for audio codecs: transport-cc, so a publisher's audio is counted by its browser's
/// estimator with its video (mediasoup's audio codecs list it too).
fn audio_feedback() -> Vec<RtcpFeedback> {
    vec![RtcpFeedback::new("transport-cc", "")]
}

fn supported_codec(
    kind: MediaKind,
    mime_type: &str,
    preferred_payload_type: Option<u8>,
    clock_rate: u32,
    channels: Option<u8>,
    codec_parameters: Parameters,
) -> RtpCodecCapability {
    RtpCodecCapability {
        kind,
        mime_type: mime_type.to_owned(),
        preferred_payload_type: preferred_payload_type.map(PayloadType),
        clock_rate,
        channels,
        parameters: codec_parameters,
        rtcp_feedback: match kind {
            MediaKind::Audio => audio_feedback(),
            MediaKind::Video => video_feedback(),
        },
    }
}

fn supported_extension(kind: MediaKind, uri: &str, preferred_id: u8) -> RtpHeaderExtension {
    RtpHeaderExtension {
        kind,
        uri: uri.to_owned(),
        preferred_id,
        preferred_encrypt: false,
        direction: RtpHeaderExtensionDirection::SendRecv,
    }
}

/// An extension the router only receives: producers send it, consumers never get it.
fn received_extension(kind: MediaKind, uri: &str, preferred_id: u8) -> RtpHeaderExtension {
    RtpHeaderExtension {
        direction: RtpHeaderExtensionDirection::RecvOnly,
        ..supported_extension(kind, uri, preferred_id)
    }
}

/// Everything this worker can route: the codecs a room may enable and the header extensions
/// every router offers (mediasoup's `getSupportedRtpCapabilities`).
///
/// Audio is forwarded without looking inside, so the usual WebRTC audio codecs are all here.
/// Video is limited to the codecs whose keyframes the worker recognises (VP8, VP9, H264),
/// because a new consumer drops video until the first keyframe. Header extension ids are
/// mediasoup's, which mediasoup-client's users may have come to rely on. The RID extensions
/// are what a browser needs to send simulcast (it names each encoding by RID rather than
/// SSRC); without them Chrome refuses `produce` with several encodings.
pub fn supported_capabilities() -> RtpCapabilities {
    use MediaKind::{Audio, Video};
    RtpCapabilities {
        codecs: vec![
            supported_codec(Audio, "audio/opus", None, 48000, Some(2), Parameters::new()),
            supported_codec(
                Audio,
                "audio/PCMU",
                Some(0),
                8000,
                Some(1),
                Parameters::new(),
            ),
            supported_codec(
                Audio,
                "audio/PCMA",
                Some(8),
                8000,
                Some(1),
                Parameters::new(),
            ),
            supported_codec(
                Audio,
                "audio/G722",
                Some(9),
                8000,
                Some(1),
                Parameters::new(),
            ),
            supported_codec(Video, "video/VP8", None, 90000, None, Parameters::new()),
            supported_codec(Video, "video/VP9", None, 90000, None, Parameters::new()),
            supported_codec(
                Video,
                "video/H264",
                None,
                90000,
                None,
                parameters(&[("level-asymmetry-allowed", 1u8.into())]),
            ),
        ],
        header_extensions: vec![
            supported_extension(Audio, uri::MID, 1),
            supported_extension(Video, uri::MID, 1),
            // Receive-only, as in mediasoup: a consumer is one stream, so it has no RID.
            received_extension(Video, uri::RID, 2),
            received_extension(Video, uri::REPAIRED_RID, 3),
            supported_extension(Audio, uri::ABS_SEND_TIME, 4),
            supported_extension(Video, uri::ABS_SEND_TIME, 4),
            // Transport-wide sequence numbers: publishers stamp audio and video, so their
            // feedback covers both; towards subscribers only video carries them (mediasoup's
            // rule: audio is too little to estimate from, and never dropped).
            received_extension(Audio, uri::TRANSPORT_WIDE_CC, 5),
            supported_extension(Video, uri::TRANSPORT_WIDE_CC, 5),
            supported_extension(Audio, uri::SSRC_AUDIO_LEVEL, 10),
            supported_extension(Video, uri::VIDEO_ORIENTATION, 11),
            supported_extension(Video, uri::TOFFSET, 12),
            // Receive-only: it tells the worker an H264 frame's temporal layer (its payload
            // has none). Consumers do not get it: its frame numbers would jump at every
            // simulcast switch, and a receiver that goes by them would take the new
            // encoding's frames for old ones.
            received_extension(Video, uri::DEPENDENCY_DESCRIPTOR, 8),
        ],
    }
}

fn media_codec(
    kind: MediaKind,
    mime_type: &str,
    clock_rate: u32,
    channels: Option<u8>,
    codec_parameters: Parameters,
) -> RtpCodecCapability {
    RtpCodecCapability {
        kind,
        mime_type: mime_type.to_owned(),
        preferred_payload_type: None,
        clock_rate,
        channels,
        parameters: codec_parameters,
        rtcp_feedback: Vec::new(),
    }
}

/// The media codecs a room gets when it names none: Opus, VP8, VP9 profile 0, and H264
/// Constrained Baseline and Main (both packetization-mode 1), which covers every current
/// browser including Safari's hardware H264.
pub fn default_media_codecs() -> Vec<RtpCodecCapability> {
    use MediaKind::{Audio, Video};
    let h264 = |profile_level_id: &str| {
        parameters(&[
            ("packetization-mode", 1u8.into()),
            ("profile-level-id", profile_level_id.into()),
            ("level-asymmetry-allowed", 1u8.into()),
        ])
    };
    vec![
        media_codec(Audio, "audio/opus", 48000, Some(2), Parameters::new()),
        media_codec(Video, "video/VP8", 90000, None, Parameters::new()),
        media_codec(
            Video,
            "video/VP9",
            90000,
            None,
            parameters(&[("profile-id", 0u8.into())]),
        ),
        media_codec(Video, "video/H264", 90000, None, h264("42e01f")),
        media_codec(Video, "video/H264", 90000, None, h264("4d001f")),
    ]
}

fn take_dynamic(free: &mut VecDeque<u8>) -> Result<PayloadType, RtpError> {
    free.pop_front().map(PayloadType).ok_or_else(|| {
        RtpError::InvalidMediaCodecs(
            "too many codecs: all 32 dynamic payload types (96-127) are taken; enable fewer \
             video codecs (each takes two, one for its RTX)"
                .to_owned(),
        )
    })
}

/// Builds a router's RTP capabilities from the room's media codecs, as mediasoup's
/// `generateRouterRtpCapabilities` does.
///
/// Each media codec must match a [`supported_capabilities`] codec by MIME type, clock rate and
/// channels (so Opus must say `channels: 2`). The result takes the supported codec's feedback
/// and its parameters overlaid with the media codec's. Payload types: the media codec's
/// `preferredPayloadType` if given, else the supported codec's static one (PCMU is 0), else the
/// next free dynamic one (100-127, then 96-99). Every video codec is followed by its RTX codec
/// (`video/rtx`, `apt` = the video codec's payload type). The header extensions are the
/// supported ones.
pub fn router_capabilities(
    media_codecs: &[RtpCodecCapability],
) -> Result<RtpCapabilities, RtpError> {
    let supported = supported_capabilities();
    let mut free_dynamic: VecDeque<u8> = DYNAMIC_PAYLOAD_TYPES.into_iter().collect();
    let mut codecs: Vec<RtpCodecCapability> = Vec::new();

    for (index, requested) in media_codecs.iter().enumerate() {
        let Some(kind) = MediaKind::from_mime_type(&requested.mime_type) else {
            return Err(RtpError::InvalidMediaCodecs(format!(
                "mediaCodecs[{index}].mimeType {:?} is not of the form audio/<name> or video/<name>",
                requested.mime_type
            )));
        };
        if let Some(payload_type) = requested.preferred_payload_type
            && !payload_type.is_valid()
        {
            return Err(RtpError::InvalidMediaCodecs(format!(
                "mediaCodecs[{index}].preferredPayloadType {payload_type} is outside the RTP range 0-127"
            )));
        }

        let Some(supported_codec) = supported
            .codecs
            .iter()
            .find(|candidate| codecs_match(requested, *candidate, Matching::Loose))
        else {
            let offered: Vec<String> = supported.codecs.iter().map(describe).collect();
            return Err(RtpError::UnsupportedCodec(format!(
                "mediaCodecs[{index}] {} is not a codec this worker can route; supported: {}",
                describe(requested),
                offered.join(", ")
            )));
        };

        let mut codec = supported_codec.clone();
        codec.kind = kind;
        let payload_type = match (
            requested.preferred_payload_type,
            supported_codec.preferred_payload_type,
        ) {
            (Some(chosen), _) => {
                free_dynamic.retain(|free| *free != chosen.0);
                chosen
            }
            (None, Some(static_type)) => static_type,
            (None, None) => take_dynamic(&mut free_dynamic)?,
        };
        if let Some(holder) = codecs
            .iter()
            .find(|other| other.preferred_payload_type == Some(payload_type))
        {
            return Err(RtpError::InvalidMediaCodecs(format!(
                "mediaCodecs[{index}] {} would take payload type {payload_type}, which {} already has",
                describe(requested),
                describe(holder)
            )));
        }
        codec.preferred_payload_type = Some(payload_type);
        codec.parameters.extend(
            requested
                .parameters
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        codecs.push(codec);

        if kind == MediaKind::Video {
            let rtx_payload_type = take_dynamic(&mut free_dynamic)?;
            codecs.push(RtpCodecCapability {
                kind,
                mime_type: "video/rtx".to_owned(),
                preferred_payload_type: Some(rtx_payload_type),
                clock_rate: supported_codec.clock_rate,
                channels: None,
                parameters: parameters(&[("apt", payload_type.0.into())]),
                rtcp_feedback: Vec::new(),
            });
        }
    }

    Ok(RtpCapabilities {
        codecs,
        header_extensions: supported.header_extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::codec::{apt, is_rtx};
    use super::*;
    use serde_json::{Value, json};

    fn default_router() -> RtpCapabilities {
        router_capabilities(&default_media_codecs()).expect("default codecs are supported")
    }

    #[test]
    fn dynamic_payload_types_start_at_100_and_end_with_96_to_99() {
        assert_eq!(DYNAMIC_PAYLOAD_TYPES[0], 100);
        assert_eq!(DYNAMIC_PAYLOAD_TYPES[27], 127);
        assert_eq!(DYNAMIC_PAYLOAD_TYPES[28..], [96, 97, 98, 99]);
    }

    #[test]
    fn default_router_assigns_payload_types_in_mediasoup_order() {
        let codecs: Vec<(String, u8)> = default_router()
            .codecs
            .iter()
            .map(|codec| {
                (
                    codec.mime_type.clone(),
                    codec.preferred_payload_type.map_or(0, |pt| pt.0),
                )
            })
            .collect();
        let expected = [
            ("audio/opus", 100),
            ("video/VP8", 101),
            ("video/rtx", 102),
            ("video/VP9", 103),
            ("video/rtx", 104),
            ("video/H264", 105),
            ("video/rtx", 106),
            ("video/H264", 107),
            ("video/rtx", 108),
        ];
        let expected: Vec<(String, u8)> = expected
            .iter()
            .map(|(m, pt)| ((*m).to_owned(), *pt))
            .collect();
        assert_eq!(codecs, expected);
    }

    #[test]
    fn default_router_payload_types_are_unique() {
        let router = default_router();
        let mut payload_types: Vec<_> = router
            .codecs
            .iter()
            .map(|codec| codec.preferred_payload_type)
            .collect();
        let count = payload_types.len();
        payload_types.sort();
        payload_types.dedup();
        assert_eq!(payload_types.len(), count);
        assert!(payload_types.iter().all(Option::is_some));
    }

    #[test]
    fn every_video_codec_is_followed_by_rtx_naming_it_in_apt() {
        let router = default_router();
        for (index, codec) in router.codecs.iter().enumerate() {
            if codec.kind != MediaKind::Video || is_rtx(&codec.mime_type) {
                continue;
            }
            let rtx = &router.codecs[index + 1];
            assert_eq!(rtx.mime_type, "video/rtx", "after {}", codec.mime_type);
            assert_eq!(apt(&rtx.parameters), codec.preferred_payload_type);
            assert_eq!(rtx.clock_rate, codec.clock_rate);
            assert!(rtx.rtcp_feedback.is_empty());
        }
        let audio_rtx = router
            .codecs
            .iter()
            .filter(|c| c.kind == MediaKind::Audio && is_rtx(&c.mime_type));
        assert_eq!(audio_rtx.count(), 0);
    }

    #[test]
    fn video_feedback_is_nack_pli_fir_and_audio_has_none() {
        let router = default_router();
        for codec in &router.codecs {
            let feedback: Vec<(&str, &str)> = codec
                .rtcp_feedback
                .iter()
                .map(|fb| (fb.r#type.as_str(), fb.parameter.as_str()))
                .collect();
            match (codec.kind, is_rtx(&codec.mime_type)) {
                (MediaKind::Video, false) => assert_eq!(
                    feedback,
                    [("goog-remb", ""), ("transport-cc", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
                ),
                (MediaKind::Audio, _) => assert_eq!(feedback, [("transport-cc", "")]),
                _ => assert!(feedback.is_empty(), "{}: {feedback:?}", codec.mime_type),
            }
        }
    }

    #[test]
    fn header_extensions_are_the_supported_ones_with_mediasoup_ids() {
        let router = default_router();
        let extensions: Vec<(MediaKind, String, u8)> = router
            .header_extensions
            .iter()
            .map(|extension| (extension.kind, extension.uri.clone(), extension.preferred_id))
            .collect();
        let expected = [
            (MediaKind::Audio, uri::MID, 1),
            (MediaKind::Video, uri::MID, 1),
            (MediaKind::Video, uri::RID, 2),
            (MediaKind::Video, uri::REPAIRED_RID, 3),
            (MediaKind::Audio, uri::ABS_SEND_TIME, 4),
            (MediaKind::Video, uri::ABS_SEND_TIME, 4),
            (MediaKind::Audio, uri::TRANSPORT_WIDE_CC, 5),
            (MediaKind::Video, uri::TRANSPORT_WIDE_CC, 5),
            (MediaKind::Audio, uri::SSRC_AUDIO_LEVEL, 10),
            (MediaKind::Video, uri::VIDEO_ORIENTATION, 11),
            (MediaKind::Video, uri::TOFFSET, 12),
            (MediaKind::Video, uri::DEPENDENCY_DESCRIPTOR, 8),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, u, id)| (*k, (*u).to_owned(), *id))
            .collect();
        assert_eq!(extensions, expected);
        // Producers send the RIDs (and audio's transport-wide sequence numbers, and the
        // dependency descriptor); consumers never get them.
        let receive_only: Vec<&str> = router
            .header_extensions
            .iter()
            .filter(|e| e.direction == RtpHeaderExtensionDirection::RecvOnly)
            .map(|e| e.uri.as_str())
            .collect();
        assert_eq!(receive_only, [uri::RID, uri::REPAIRED_RID, uri::TRANSPORT_WIDE_CC, uri::DEPENDENCY_DESCRIPTOR]);
    }

    #[test]
    fn media_codec_parameters_are_merged_over_the_supported_ones() {
        let router = default_router();
        let h264 = &router.codecs[5];
        assert_eq!(
            serde_json::to_value(&h264.parameters).ok(),
            Some(
                json!({"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"})
            )
        );
    }

    #[test]
    fn router_capabilities_serialise_like_mediasoup() {
        let router = default_router();
        let value = serde_json::to_value(&router).expect("serialises");
        assert_eq!(
            value["codecs"][0],
            json!({"kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100,
                   "clockRate": 48000, "channels": 2, "parameters": {},
                   "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]})
        );
        assert_eq!(
            value["codecs"][2],
            json!({"kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 102,
                   "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []})
        );
        assert_eq!(
            value["headerExtensions"][0],
            json!({"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1,
                   "preferredEncrypt": false, "direction": "sendrecv"})
        );
        let transport_wide: Vec<&Value> = value["headerExtensions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["uri"] == uri::TRANSPORT_WIDE_CC)
            .collect();
        assert_eq!(
            transport_wide,
            [
                &json!({"kind": "audio", "uri": uri::TRANSPORT_WIDE_CC, "preferredId": 5,
                        "preferredEncrypt": false, "direction": "recvonly"}),
                &json!({"kind": "video", "uri": uri::TRANSPORT_WIDE_CC, "preferredId": 5,
                        "preferredEncrypt": false, "direction": "sendrecv"})
            ]
        );
    }

    #[test]
    fn an_explicit_preferred_payload_type_is_kept_and_not_reused() {
        let mut codecs = default_media_codecs();
        codecs[1].preferred_payload_type = Some(PayloadType(101));
        codecs[0].preferred_payload_type = None;
        // VP8 asks for 101; opus (first) already took 100, VP8's RTX must then skip 101.
        let router = router_capabilities(&codecs).expect("accepted");
        let payload_types: Vec<u8> = router
            .codecs
            .iter()
            .filter_map(|c| c.preferred_payload_type)
            .map(|pt| pt.0)
            .collect();
        assert_eq!(&payload_types[..3], [100, 101, 102]);
        assert_eq!(apt(&router.codecs[2].parameters), Some(PayloadType(101)));
    }

    #[test]
    fn a_static_payload_type_of_the_supported_codec_is_used() {
        let pcmu = media_codec(
            MediaKind::Audio,
            "audio/PCMU",
            8000,
            None,
            Parameters::new(),
        );
        let router = router_capabilities(&[pcmu]).expect("PCMU is supported");
        assert_eq!(
            router.codecs[0].preferred_payload_type,
            Some(PayloadType(0))
        );
    }

    #[test]
    fn duplicated_preferred_payload_types_are_rejected() {
        let mut codecs = default_media_codecs();
        // Opus and VP8 both ask for 102.
        codecs[0].preferred_payload_type = Some(PayloadType(102));
        codecs[1].preferred_payload_type = Some(PayloadType(102));
        let error = router_capabilities(&codecs).expect_err("duplicate refused");
        assert_eq!(error.code(), "INVALID_MEDIA_CODECS");
        assert!(error.to_string().contains("payload type 102"), "{error}");
    }

    #[test]
    fn an_unsupported_codec_is_rejected_with_its_code_and_the_alternatives() {
        let av1 = media_codec(
            MediaKind::Video,
            "video/AV1",
            90000,
            None,
            Parameters::new(),
        );
        let error = router_capabilities(&[av1]).expect_err("AV1 is not supported");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        let message = error.to_string();
        assert!(
            message.contains("mediaCodecs[0] video/AV1 90000 Hz"),
            "{message}"
        );
        assert!(message.contains("video/VP8 90000 Hz"), "{message}");
    }

    #[test]
    fn opus_must_be_declared_with_two_channels() {
        let mono_opus = media_codec(
            MediaKind::Audio,
            "audio/opus",
            48000,
            None,
            Parameters::new(),
        );
        let error = router_capabilities(&[mono_opus]).expect_err("opus is stereo in WebRTC");
        assert_eq!(error.code(), "UNSUPPORTED_CODEC");
        assert!(
            error.to_string().contains("audio/opus 48000 Hz 1 ch"),
            "{error}"
        );
    }

    #[test]
    fn kind_is_taken_from_the_mime_type() {
        let vp8 = media_codec(
            MediaKind::Audio,
            "video/VP8",
            90000,
            None,
            Parameters::new(),
        );
        let router = router_capabilities(&[vp8]).expect("accepted");
        assert_eq!(router.codecs[0].kind, MediaKind::Video);
    }

    #[test]
    fn malformed_mime_types_are_invalid_media_codecs() {
        let bad = media_codec(MediaKind::Video, "VP8", 90000, None, Parameters::new());
        assert_eq!(
            router_capabilities(&[bad]).map_err(|e| e.code()),
            Err("INVALID_MEDIA_CODECS")
        );
    }

    #[test]
    fn running_out_of_dynamic_payload_types_is_an_error_not_a_panic() {
        let vp8 = media_codec(
            MediaKind::Video,
            "video/VP8",
            90000,
            None,
            Parameters::new(),
        );
        // 16 video codecs take all 32 dynamic types; the 17th has none left.
        assert!(router_capabilities(&vec![vp8.clone(); 16]).is_ok());
        let error = router_capabilities(&vec![vp8; 17]).expect_err("exhausted");
        assert_eq!(error.code(), "INVALID_MEDIA_CODECS");
    }
}
