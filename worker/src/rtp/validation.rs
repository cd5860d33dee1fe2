//! Checks on what peers send: a producer's `rtpParameters` and a device's `rtpCapabilities`.
//!
//! Serde already enforces the JSON types; these checks are mediasoup's `validateRtpParameters`
//! plus the consistency checks its C++ worker makes when a producer is created (unique payload
//! types, RTX `apt` naming a media codec, encodings that can be told apart). Each message names
//! the offending field by its path so the client developer can find it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::codec::{apt, is_rtx};
use super::error::RtpError;
use super::parameters::{
    MediaKind, RtpCapabilities, RtpCodecParameters, RtpHeaderExtensionParameters, RtpParameters,
    Ssrc,
};

/// Checks a producer's `rtpParameters` for the given producer kind.
///
/// Beyond the JSON shape it requires: at least one codec, all of the producer's kind, unique
/// payload types of at most 127, every RTX codec's `apt` naming a media codec of the list,
/// nonzero and unique header extension ids, at least one encoding, encodings that can be told
/// apart (an `ssrc` or `rid` each when there are several; with one and no `mid`, an `ssrc` or
/// `rid` too), and no SSRC or RID used twice.
pub fn validate_rtp_parameters(
    kind: MediaKind,
    parameters: &RtpParameters,
) -> Result<(), RtpError> {
    if parameters.mid.as_deref() == Some("") {
        return Err(invalid(
            "mid is an empty string; leave it out or give the mid of the client's m-section",
        ));
    }
    validate_codecs(kind, &parameters.codecs)?;
    validate_header_extensions(&parameters.header_extensions)?;
    validate_encodings(parameters)
}

fn invalid(message: impl Into<String>) -> RtpError {
    RtpError::InvalidRtpParameters(message.into())
}

fn validate_codecs(kind: MediaKind, codecs: &[RtpCodecParameters]) -> Result<(), RtpError> {
    if codecs.is_empty() {
        return Err(invalid(
            "codecs is empty: a producer needs at least one media codec",
        ));
    }

    let mut first_use: HashMap<_, usize> = HashMap::new();
    for (index, codec) in codecs.iter().enumerate() {
        let Some(codec_kind) = MediaKind::from_mime_type(&codec.mime_type) else {
            return Err(invalid(format!(
                "codecs[{index}].mimeType {:?} is not of the form audio/<name> or video/<name>",
                codec.mime_type
            )));
        };
        if codec_kind != kind {
            return Err(invalid(format!(
                "codecs[{index}].mimeType {:?} is {codec_kind}, but the producer's kind is {kind}",
                codec.mime_type
            )));
        }
        if !codec.payload_type.is_valid() {
            return Err(invalid(format!(
                "codecs[{index}].payloadType {} is outside the RTP range 0-127",
                codec.payload_type
            )));
        }
        match first_use.entry(codec.payload_type) {
            Entry::Occupied(first) => {
                return Err(invalid(format!(
                    "codecs[{index}].payloadType {} is already used by codecs[{}]",
                    codec.payload_type,
                    first.get()
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        if codec.clock_rate == 0 {
            return Err(invalid(format!(
                "codecs[{index}].clockRate must be a positive number of Hz"
            )));
        }
        if codec.channels == Some(0) {
            return Err(invalid(format!(
                "codecs[{index}].channels must be at least 1"
            )));
        }
        if let Some(value) = codec.parameters.get("apt")
            && apt(&codec.parameters).is_none()
        {
            return Err(invalid(format!(
                "codecs[{index}].parameters.apt must be a number naming a payload type, not {:?}",
                value.to_string()
            )));
        }
        if let Some(feedback) = codec
            .rtcp_feedback
            .iter()
            .position(|fb| fb.r#type.is_empty())
        {
            return Err(invalid(format!(
                "codecs[{index}].rtcpFeedback[{feedback}].type is empty"
            )));
        }
    }

    for (index, codec) in codecs
        .iter()
        .enumerate()
        .filter(|(_, codec)| is_rtx(&codec.mime_type))
    {
        let Some(repaired) = apt(&codec.parameters) else {
            return Err(invalid(format!(
                "codecs[{index}] ({}) has no apt parameter naming the codec it repairs",
                codec.mime_type
            )));
        };
        let Some(target) = codecs
            .iter()
            .position(|other| other.payload_type == repaired)
        else {
            return Err(invalid(format!(
                "codecs[{index}].parameters.apt {repaired} names no codec in codecs"
            )));
        };
        if is_rtx(&codecs[target].mime_type) {
            return Err(invalid(format!(
                "codecs[{index}].parameters.apt {repaired} names another RTX codec (codecs[{target}]); \
                 it must name a media codec"
            )));
        }
    }

    if codecs.iter().all(|codec| is_rtx(&codec.mime_type)) {
        return Err(invalid(
            "codecs has only RTX codecs; add the media codec they repair",
        ));
    }
    Ok(())
}

fn validate_header_extensions(extensions: &[RtpHeaderExtensionParameters]) -> Result<(), RtpError> {
    let mut first_use: HashMap<u8, usize> = HashMap::new();
    for (index, extension) in extensions.iter().enumerate() {
        if extension.uri.is_empty() {
            return Err(invalid(format!("headerExtensions[{index}].uri is empty")));
        }
        if extension.id == 0 {
            return Err(invalid(format!(
                "headerExtensions[{index}].id is 0, which RFC 8285 reserves; use 1-255"
            )));
        }
        match first_use.entry(extension.id) {
            Entry::Occupied(first) => {
                let first = *first.get();
                return Err(invalid(format!(
                    "headerExtensions[{index}].id {} ({}) is already used by headerExtensions[{first}] ({})",
                    extension.id, extension.uri, extensions[first].uri
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }
    Ok(())
}

fn validate_encodings(parameters: &RtpParameters) -> Result<(), RtpError> {
    let encodings = &parameters.encodings;
    if encodings.is_empty() {
        return Err(invalid(
            "encodings is empty: a producer sends at least one RTP stream",
        ));
    }

    // Where each SSRC and RID was first seen, to name both places in a duplicate's message.
    let mut ssrc_use: HashMap<Ssrc, String> = HashMap::new();
    let mut rid_use: HashMap<&str, usize> = HashMap::new();
    let mut claim_ssrc = |ssrc: Ssrc, path: String| -> Result<(), RtpError> {
        if ssrc.0 == 0 {
            return Err(invalid(format!(
                "{path} is 0, which RTP stacks read as \"no SSRC\""
            )));
        }
        match ssrc_use.entry(ssrc) {
            Entry::Occupied(first) => Err(invalid(format!(
                "{path} {ssrc} is already used by {}",
                first.get()
            ))),
            Entry::Vacant(slot) => {
                slot.insert(path);
                Ok(())
            }
        }
    };

    for (index, encoding) in encodings.iter().enumerate() {
        if let Some(ssrc) = encoding.ssrc {
            claim_ssrc(ssrc, format!("encodings[{index}].ssrc"))?;
        }
        if let Some(rtx) = encoding.rtx {
            claim_ssrc(rtx.ssrc, format!("encodings[{index}].rtx.ssrc"))?;
        }
        if let Some(rid) = encoding.rid.as_deref() {
            if rid.is_empty() {
                return Err(invalid(format!(
                    "encodings[{index}].rid is an empty string; leave it out or name the stream"
                )));
            }
            if let Some(first) = rid_use.insert(rid, index) {
                return Err(invalid(format!(
                    "encodings[{index}].rid {rid:?} is already used by encodings[{first}]"
                )));
            }
        }
        if let Some(payload_type) = encoding.codec_payload_type {
            match parameters
                .codecs
                .iter()
                .find(|codec| codec.payload_type == payload_type)
            {
                None => {
                    return Err(invalid(format!(
                        "encodings[{index}].codecPayloadType {payload_type} names no codec in codecs"
                    )));
                }
                Some(codec) if is_rtx(&codec.mime_type) => {
                    return Err(invalid(format!(
                        "encodings[{index}].codecPayloadType {payload_type} names an RTX codec; \
                         it must name a media codec"
                    )));
                }
                Some(_) => {}
            }
        }
        if encoding.ssrc.is_none() && encoding.rid.is_none() {
            if encodings.len() > 1 {
                return Err(invalid(format!(
                    "encodings[{index}] has neither ssrc nor rid; with several encodings \
                     (simulcast) each needs one so that its packets can be told apart"
                )));
            }
            if parameters.mid.is_none() {
                return Err(invalid(
                    "encodings[0] has neither ssrc nor rid and there is no mid, so its packets \
                     could not be recognised",
                ));
            }
        }
    }
    Ok(())
}

/// Checks a device's `rtpCapabilities` as mediasoup's `validateRtpCapabilities` does.
pub(crate) fn validate_rtp_capabilities(capabilities: &RtpCapabilities) -> Result<(), RtpError> {
    let invalid = |message: String| RtpError::InvalidRtpCapabilities(message);
    for (index, codec) in capabilities.codecs.iter().enumerate() {
        if MediaKind::from_mime_type(&codec.mime_type).is_none() {
            return Err(invalid(format!(
                "codecs[{index}].mimeType {:?} is not of the form audio/<name> or video/<name>",
                codec.mime_type
            )));
        }
        if let Some(payload_type) = codec.preferred_payload_type
            && !payload_type.is_valid()
        {
            return Err(invalid(format!(
                "codecs[{index}].preferredPayloadType {payload_type} is outside the RTP range 0-127"
            )));
        }
        if let Some(value) = codec.parameters.get("apt")
            && apt(&codec.parameters).is_none()
        {
            return Err(invalid(format!(
                "codecs[{index}].parameters.apt must be a number naming a payload type, not {:?}",
                value.to_string()
            )));
        }
    }
    for (index, extension) in capabilities.header_extensions.iter().enumerate() {
        if extension.uri.is_empty() {
            return Err(invalid(format!("headerExtensions[{index}].uri is empty")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A valid VP8 + RTX producer to break one field at a time.
    fn vp8_producer() -> RtpParameters {
        serde_json::from_value(json!({
            "mid": "0",
            "codecs": [
                {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000},
                {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
                 "parameters": {"apt": 96}}
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 9},
                {"uri": "urn:ietf:params:rtp-hdrext:toffset", "id": 1}
            ],
            "encodings": [{"ssrc": 1111, "rtx": {"ssrc": 2222}}],
            "rtcp": {"cname": "x"}
        }))
        .expect("fixture parses")
    }

    fn rejection(kind: MediaKind, parameters: &RtpParameters) -> String {
        match validate_rtp_parameters(kind, parameters) {
            Err(error) => {
                assert_eq!(error.code(), "INVALID_RTP_PARAMETERS");
                error.to_string()
            }
            Ok(()) => panic!("parameters were accepted"),
        }
    }

    #[test]
    fn accepts_a_well_formed_vp8_producer() {
        assert_eq!(
            validate_rtp_parameters(MediaKind::Video, &vp8_producer()),
            Ok(())
        );
    }

    #[test]
    fn rejects_empty_codecs() {
        let mut parameters = vp8_producer();
        parameters.codecs.clear();
        assert!(rejection(MediaKind::Video, &parameters).contains("codecs is empty"));
    }

    #[test]
    fn rejects_codecs_of_the_other_kind() {
        let message = rejection(MediaKind::Audio, &vp8_producer());
        assert!(
            message.contains(
                "codecs[0].mimeType \"video/VP8\" is video, but the producer's kind is audio"
            ),
            "{message}"
        );
    }

    #[test]
    fn rejects_malformed_mime_types() {
        let mut parameters = vp8_producer();
        parameters.codecs[0].mime_type = "VP8".into();
        assert!(
            rejection(MediaKind::Video, &parameters)
                .contains("codecs[0].mimeType \"VP8\" is not of the form")
        );
    }

    #[test]
    fn rejects_payload_types_beyond_127() {
        let mut parameters = vp8_producer();
        parameters.codecs[0].payload_type = super::super::PayloadType(200);
        assert!(rejection(MediaKind::Video, &parameters).contains("payloadType 200 is outside"));
    }

    #[test]
    fn rejects_duplicated_payload_types() {
        let mut parameters = vp8_producer();
        parameters.codecs[1].payload_type = super::super::PayloadType(96);
        let message = rejection(MediaKind::Video, &parameters);
        assert!(
            message.contains("codecs[1].payloadType 96 is already used by codecs[0]"),
            "{message}"
        );
    }

    #[test]
    fn rejects_rtx_whose_apt_names_no_codec() {
        let mut parameters = vp8_producer();
        parameters.codecs[1]
            .parameters
            .insert("apt".into(), 100u8.into());
        assert!(
            rejection(MediaKind::Video, &parameters)
                .contains("codecs[1].parameters.apt 100 names no codec")
        );
    }

    #[test]
    fn rejects_rtx_without_apt_or_with_textual_apt() {
        let mut parameters = vp8_producer();
        parameters.codecs[1].parameters.clear();
        assert!(rejection(MediaKind::Video, &parameters).contains("has no apt parameter"));
        parameters.codecs[1]
            .parameters
            .insert("apt".into(), "96".into());
        assert!(rejection(MediaKind::Video, &parameters).contains("apt must be a number"));
    }

    #[test]
    fn rejects_rtx_repairing_rtx() {
        let mut parameters = vp8_producer();
        parameters.codecs[1]
            .parameters
            .insert("apt".into(), 97u8.into());
        assert!(rejection(MediaKind::Video, &parameters).contains("names another RTX codec"));
    }

    #[test]
    fn rejects_rtx_only_codec_lists() {
        let mut parameters = vp8_producer();
        parameters.codecs[0].mime_type = "video/rtx".into();
        parameters.codecs[0]
            .parameters
            .insert("apt".into(), 97u8.into());
        parameters.codecs[1]
            .parameters
            .insert("apt".into(), 96u8.into());
        assert!(rejection(MediaKind::Video, &parameters).contains("RTX"));
    }

    #[test]
    fn rejects_duplicated_and_zero_header_extension_ids() {
        let mut parameters = vp8_producer();
        parameters.header_extensions[1].id = 9;
        let message = rejection(MediaKind::Video, &parameters);
        assert!(message.contains("headerExtensions[1].id 9"), "{message}");
        parameters.header_extensions[1].id = 0;
        assert!(rejection(MediaKind::Video, &parameters).contains("headerExtensions[1].id is 0"));
    }

    #[test]
    fn rejects_empty_encodings() {
        let mut parameters = vp8_producer();
        parameters.encodings.clear();
        assert!(rejection(MediaKind::Video, &parameters).contains("encodings is empty"));
    }

    #[test]
    fn rejects_simulcast_encodings_without_ssrc_or_rid() {
        let mut parameters = vp8_producer();
        parameters.encodings =
            serde_json::from_value(json!([{"rid": "r0"}, {"maxBitrate": 900000}]))
                .expect("encodings parse");
        assert!(
            rejection(MediaKind::Video, &parameters)
                .contains("encodings[1] has neither ssrc nor rid")
        );
    }

    #[test]
    fn single_encoding_without_ssrc_needs_a_mid() {
        let mut parameters = vp8_producer();
        parameters.encodings = vec![Default::default()];
        assert_eq!(
            validate_rtp_parameters(MediaKind::Video, &parameters),
            Ok(())
        );
        parameters.mid = None;
        assert!(rejection(MediaKind::Video, &parameters).contains("there is no mid"));
    }

    #[test]
    fn rejects_an_ssrc_used_twice() {
        let mut parameters = vp8_producer();
        parameters.encodings[0].rtx = Some(super::super::RtxParameters { ssrc: Ssrc(1111) });
        let message = rejection(MediaKind::Video, &parameters);
        assert!(
            message.contains("encodings[0].rtx.ssrc 1111 is already used by encodings[0].ssrc"),
            "{message}"
        );
    }

    #[test]
    fn rejects_zero_ssrc_and_duplicated_rid() {
        let mut parameters = vp8_producer();
        parameters.encodings[0].ssrc = Some(Ssrc(0));
        assert!(rejection(MediaKind::Video, &parameters).contains("encodings[0].ssrc is 0"));

        parameters.encodings =
            serde_json::from_value(json!([{"rid": "r0"}, {"rid": "r0"}])).expect("encodings parse");
        assert!(
            rejection(MediaKind::Video, &parameters)
                .contains("encodings[1].rid \"r0\" is already used")
        );
    }

    #[test]
    fn encoding_codec_payload_type_must_name_a_media_codec() {
        let mut parameters = vp8_producer();
        parameters.encodings[0].codec_payload_type = Some(super::super::PayloadType(97));
        assert!(rejection(MediaKind::Video, &parameters).contains("names an RTX codec"));
        parameters.encodings[0].codec_payload_type = Some(super::super::PayloadType(50));
        assert!(rejection(MediaKind::Video, &parameters).contains("names no codec"));
    }

    #[test]
    fn device_capabilities_with_malformed_codecs_are_refused() {
        let capabilities: RtpCapabilities = serde_json::from_value(json!({
            "codecs": [{"kind": "video", "mimeType": "vp8", "clockRate": 90000}]
        }))
        .expect("capabilities parse");
        let error = validate_rtp_capabilities(&capabilities).expect_err("refused");
        assert_eq!(error.code(), "INVALID_RTP_CAPABILITIES");
        assert!(error.to_string().contains("codecs[0].mimeType \"vp8\""));
    }
}
