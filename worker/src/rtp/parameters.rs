//! mediasoup's RTP dictionaries (`RtpParameters.ts`) as serde types.
//!
//! The JSON is exactly mediasoup's: camelCase keys, optional fields left out when unset, codec
//! `parameters` an object whose values are strings or numbers. Fields that mediasoup fills with
//! a default when missing (`parameters`, `rtcpFeedback`, `headerExtensions`, `encrypt`,
//! `reducedSize`, ...) are defaulted the same way on input and always written on output, so what
//! we send looks like what a mediasoup server sends after its own validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Media kind: `"audio"` or `"video"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// `"audio"` or `"video"`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }

    /// The kind named by a MIME type of the form `audio/<subtype>` or `video/<subtype>`
    /// (case-insensitive, as mediasoup's `^(audio|video)/(.+)` with the `i` flag), or `None`.
    pub fn from_mime_type(mime_type: &str) -> Option<MediaKind> {
        let (kind, subtype) = mime_type.split_once('/')?;
        if subtype.is_empty() {
            return None;
        }
        if kind.eq_ignore_ascii_case("audio") {
            Some(MediaKind::Audio)
        } else if kind.eq_ignore_ascii_case("video") {
            Some(MediaKind::Video)
        } else {
            None
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RTP payload type (the 7-bit `PT` field). Serialised as a plain number.
///
/// The wire type is a byte, so values up to 255 deserialise; [`PayloadType::is_valid`] tells
/// whether one fits the 7-bit field, and validation rejects those that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PayloadType(pub u8);

impl PayloadType {
    /// The largest payload type the RTP header can carry.
    pub const MAX: u8 = 127;

    /// True when the value fits the RTP header's 7-bit payload type field.
    pub fn is_valid(self) -> bool {
        self.0 <= Self::MAX
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An RTP synchronisation source identifier. Serialised as a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ssrc(pub u32);

impl Ssrc {
    /// The SSRC `n` places after this one, wrapping past `u32::MAX` and stepping over 0.
    ///
    /// RTP stacks (mediasoup included) read an SSRC of 0 as "no SSRC", so sequences of SSRCs
    /// derived from a caller's seed (mapped producer SSRCs, the RTX SSRC = SSRC + 1) must never
    /// land on it. A seed of 0 counts as 1. Distinct `n` below 2^32 - 1 give distinct SSRCs.
    pub fn after(self, n: u32) -> Ssrc {
        const NONZERO_VALUES: u64 = u32::MAX as u64;
        let index = u64::from(self.0.max(1) - 1);
        let shifted = (index + u64::from(n)) % NONZERO_VALUES;
        // `shifted` < 2^32 - 1, so `shifted + 1` fits in a u32.
        Ssrc((shifted + 1) as u32)
    }
}

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A value in a codec's or header extension's `parameters` object: a string or a number, the
/// two types mediasoup accepts (`validateRtpCodecParameters`).
///
/// Numbers keep their JSON form (integer or not), so they round-trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParameterValue {
    String(String),
    Number(serde_json::Number),
}

impl ParameterValue {
    /// The value as an integer: a JSON integer, or a string of decimal digits.
    ///
    /// mediasoup compares such parameters (`packetization-mode`, `profile-id`) with `===`, so
    /// `"1"` and `1` differ there; we read both as 1, since SDP itself has no such distinction.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            ParameterValue::Number(number) => number.as_i64(),
            ParameterValue::String(text) => text.trim().parse().ok(),
        }
    }

    /// True for values JavaScript treats as falsy (`""` and `0`), which mediasoup treats as
    /// absent when it writes `params[key] || default`.
    pub(crate) fn is_falsy(&self) -> bool {
        match self {
            ParameterValue::String(text) => text.is_empty(),
            ParameterValue::Number(number) => number.as_f64() == Some(0.0),
        }
    }
}

impl From<&str> for ParameterValue {
    fn from(value: &str) -> Self {
        ParameterValue::String(value.to_owned())
    }
}

impl From<String> for ParameterValue {
    fn from(value: String) -> Self {
        ParameterValue::String(value)
    }
}

impl From<u32> for ParameterValue {
    fn from(value: u32) -> Self {
        ParameterValue::Number(value.into())
    }
}

impl From<u8> for ParameterValue {
    fn from(value: u8) -> Self {
        ParameterValue::Number(value.into())
    }
}

impl fmt::Display for ParameterValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParameterValue::String(text) => f.write_str(text),
            ParameterValue::Number(number) => number.fmt(f),
        }
    }
}

impl Serialize for ParameterValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParameterValue::String(text) => serializer.serialize_str(text),
            ParameterValue::Number(number) => number.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ParameterValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A hand-written visitor rather than `#[serde(untagged)]`, so that a boolean or an
        // object gets "expected a string or a number" instead of an opaque untagged error.
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = ParameterValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(value.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(ParameterValue::String(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Number(value.into()))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(ParameterValue::Number(value.into()))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(value)
                    .map(ParameterValue::Number)
                    .ok_or_else(|| E::custom("parameter numbers must be finite"))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// Codec or header extension parameters: a JSON object of string or number values
/// (e.g. `{"packetization-mode": 1, "profile-level-id": "42e01f"}`).
pub type Parameters = BTreeMap<String, ParameterValue>;

/// One RTCP feedback message a codec uses, e.g. `{"type": "nack", "parameter": "pli"}`.
///
/// `parameter` is always written, as `""` when there is none, as mediasoup does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtcpFeedback {
    /// The feedback type: `nack`, `ccm`, `transport-cc`, `goog-remb`, ...
    pub r#type: String,
    /// The feedback parameter (`pli` for `nack pli`, `fir` for `ccm fir`), or `""`.
    #[serde(default)]
    pub parameter: String,
}

impl RtcpFeedback {
    /// Feedback of the given type and parameter (`""` for none).
    pub fn new(r#type: &str, parameter: &str) -> Self {
        RtcpFeedback {
            r#type: r#type.to_owned(),
            parameter: parameter.to_owned(),
        }
    }
}

/// What a router or a device can receive: its codecs (media and RTX) and header extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCapabilities {
    /// Supported media and RTX codecs, in order of preference.
    #[serde(default)]
    pub codecs: Vec<RtpCodecCapability>,
    /// Supported RTP header extensions.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtension>,
}

/// One codec in RTP capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecCapability {
    /// The media kind. mediasoup derives it from `mime_type`; so does [`router_capabilities`].
    ///
    /// [`router_capabilities`]: crate::rtp::router_capabilities
    pub kind: MediaKind,
    /// The codec MIME type, e.g. `audio/opus`, `video/VP8`, `video/rtx`. Matched
    /// case-insensitively.
    pub mime_type: String,
    /// The payload type the router or device prefers for this codec. Always set in router
    /// capabilities; optional in the media codecs a router is created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_payload_type: Option<PayloadType>,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Number of audio channels; absent means 1 for audio and is meaningless for video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific parameters; some (H264 `packetization-mode` and `profile-level-id`, VP9
    /// `profile-id`, RTX `apt`) decide whether two codecs match.
    #[serde(default)]
    pub parameters: Parameters,
    /// RTCP feedback the codec supports.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// Which way a header extension may flow, seen from the router.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtpHeaderExtensionDirection {
    /// The router both receives and sends it.
    #[default]
    SendRecv,
    /// The router sends it but does not receive it.
    SendOnly,
    /// The router receives it but does not send it.
    RecvOnly,
    /// Neither.
    Inactive,
}

/// One header extension in RTP capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtension {
    /// The media kind the extension applies to.
    pub kind: MediaKind,
    /// The extension URI (RFC 8285).
    pub uri: String,
    /// The id the router or device prefers for it in RTP packets.
    pub preferred_id: u8,
    /// Whether encryption (RFC 6904) is preferred. mediasoup never encrypts extensions.
    #[serde(default)]
    pub preferred_encrypt: bool,
    /// Which way the extension may flow; `sendrecv` when absent.
    #[serde(default)]
    pub direction: RtpHeaderExtensionDirection,
}

/// The RTP parameters of one producer or consumer: what is actually sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpParameters {
    /// The BUNDLE `mid` of the client's m-section; lets the router match packets by their MID
    /// header extension when SSRCs are not signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Media and RTX codecs in use.
    pub codecs: Vec<RtpCodecParameters>,
    /// Header extensions in use, with their ids.
    #[serde(default)]
    pub header_extensions: Vec<RtpHeaderExtensionParameters>,
    /// The RTP streams (one per simulcast layer).
    #[serde(default)]
    pub encodings: Vec<RtpEncodingParameters>,
    /// RTCP settings.
    #[serde(default)]
    pub rtcp: RtcpParameters,
}

/// One codec in RTP parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpCodecParameters {
    /// The codec MIME type, e.g. `video/VP8`.
    pub mime_type: String,
    /// The payload type this codec's packets carry.
    pub payload_type: PayloadType,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Number of audio channels; absent means 1 for audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Codec-specific parameters (for RTX, `apt`: the payload type it repairs).
    #[serde(default)]
    pub parameters: Parameters,
    /// RTCP feedback in use for this codec.
    #[serde(default)]
    pub rtcp_feedback: Vec<RtcpFeedback>,
}

/// One header extension in RTP parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpHeaderExtensionParameters {
    /// The extension URI.
    pub uri: String,
    /// The id the extension has in these packets (1-14 for one-byte headers, up to 255).
    pub id: u8,
    /// Whether the extension is encrypted (RFC 6904); mediasoup never does this.
    #[serde(default)]
    pub encrypt: bool,
    /// Extension parameters; mediasoup considers none.
    #[serde(default)]
    pub parameters: Parameters,
}

/// The RTX stream that repairs an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RtxParameters {
    /// The SSRC of the retransmission stream.
    pub ssrc: Ssrc,
}

/// One RTP stream of a producer (one simulcast layer) or the single stream of a consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtpEncodingParameters {
    /// The media SSRC, when signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssrc: Option<Ssrc>,
    /// The RID (RTP stream id header extension value), used by simulcast without SSRCs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// The media codec this encoding uses; the first media codec when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec_payload_type: Option<PayloadType>,
    /// The RTX stream repairing this one, when RTX is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtx: Option<RtxParameters>,
    /// Whether discontinuous transmission is in use (audio silence, static screen share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtx: Option<bool>,
    /// Spatial and temporal layers of the stream, e.g. `L1T3` (webrtc-svc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalability_mode: Option<String>,
    /// How much the sender scales this layer's resolution down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_resolution_down_by: Option<f64>,
    /// Bitrate cap in bits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
    /// Frame rate cap, as the browser's `RTCRtpEncodingParameters` has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_framerate: Option<f64>,
}

/// RTCP settings of an RTP parameters set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtcpParameters {
    /// The canonical name used in RTCP SDES, shared by streams to be synchronised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    /// Reduced-size RTCP (RFC 5506); mediasoup assumes it, so it defaults to true.
    #[serde(default = "reduced_size_default")]
    pub reduced_size: bool,
}

fn reduced_size_default() -> bool {
    true
}

impl Default for RtcpParameters {
    fn default() -> Self {
        RtcpParameters {
            cname: None,
            reduced_size: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_kind_comes_from_the_mime_type_case_insensitively() {
        assert_eq!(
            MediaKind::from_mime_type("audio/opus"),
            Some(MediaKind::Audio)
        );
        assert_eq!(
            MediaKind::from_mime_type("VIDEO/vp8"),
            Some(MediaKind::Video)
        );
        assert_eq!(MediaKind::from_mime_type("video/"), None);
        assert_eq!(MediaKind::from_mime_type("text/plain"), None);
        assert_eq!(MediaKind::from_mime_type("opus"), None);
    }

    #[test]
    fn ssrc_after_wraps_and_never_yields_zero() {
        assert_eq!(Ssrc(1000).after(0), Ssrc(1000));
        assert_eq!(Ssrc(1000).after(1), Ssrc(1001));
        assert_eq!(Ssrc(u32::MAX).after(1), Ssrc(1));
        assert_eq!(Ssrc(u32::MAX - 1).after(2), Ssrc(1));
        assert_eq!(Ssrc(0).after(0), Ssrc(1));
        // 2^32 - 1 nonzero values: a full turn comes back to the start.
        assert_eq!(Ssrc(1).after(u32::MAX), Ssrc(1));
    }

    #[test]
    fn payload_type_validity_is_the_seven_bit_range() {
        assert!(PayloadType(0).is_valid());
        assert!(PayloadType(127).is_valid());
        assert!(!PayloadType(128).is_valid());
    }

    #[test]
    fn parameter_values_accept_strings_and_numbers_only() {
        let parameters: Parameters =
            serde_json::from_value(json!({"apt": 96, "profile-level-id": "42e01f", "x": 1.5}))
                .expect("strings and numbers are parameter values");
        assert_eq!(parameters["apt"].as_integer(), Some(96));
        assert_eq!(
            parameters["profile-level-id"],
            ParameterValue::from("42e01f")
        );
        assert_eq!(
            serde_json::to_value(&parameters["x"]).ok(),
            Some(json!(1.5))
        );

        let error = serde_json::from_value::<Parameters>(json!({"usedtx": true}))
            .expect_err("booleans are not parameter values");
        assert!(
            error.to_string().contains("a string or a number"),
            "{error}"
        );
    }

    #[test]
    fn numeric_strings_read_as_integers() {
        assert_eq!(ParameterValue::from("1").as_integer(), Some(1));
        assert_eq!(ParameterValue::from(1u8).as_integer(), Some(1));
        assert_eq!(ParameterValue::from("42e01f").as_integer(), None);
    }

    #[test]
    fn router_capabilities_json_from_mediasoup_round_trips_unchanged() {
        // The shape `router.rtpCapabilities` has on a mediasoup server.
        let literal = json!({
            "codecs": [
                {
                    "kind": "audio", "mimeType": "audio/opus", "preferredPayloadType": 100,
                    "clockRate": 48000, "channels": 2, "parameters": {}, "rtcpFeedback": []
                },
                {
                    "kind": "video", "mimeType": "video/VP8", "preferredPayloadType": 101,
                    "clockRate": 90000, "parameters": {},
                    "rtcpFeedback": [
                        {"type": "nack", "parameter": ""},
                        {"type": "nack", "parameter": "pli"},
                        {"type": "ccm", "parameter": "fir"}
                    ]
                },
                {
                    "kind": "video", "mimeType": "video/rtx", "preferredPayloadType": 102,
                    "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []
                }
            ],
            "headerExtensions": [
                {
                    "kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid",
                    "preferredId": 1, "preferredEncrypt": false, "direction": "sendrecv"
                }
            ]
        });
        let capabilities: RtpCapabilities =
            serde_json::from_value(literal.clone()).expect("mediasoup capabilities parse");
        assert_eq!(
            capabilities.codecs[2].parameters["apt"].as_integer(),
            Some(101)
        );
        assert_eq!(serde_json::to_value(&capabilities).ok(), Some(literal));
    }

    #[test]
    fn consumer_parameters_json_from_mediasoup_round_trips_unchanged() {
        // The shape of `consumer.rtpParameters` a mediasoup server hands to mediasoup-client.
        let literal = json!({
            "mid": "1",
            "codecs": [
                {
                    "mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000,
                    "parameters": {},
                    "rtcpFeedback": [{"type": "nack", "parameter": "pli"}]
                },
                {
                    "mimeType": "video/rtx", "payloadType": 102, "clockRate": 90000,
                    "parameters": {"apt": 101}, "rtcpFeedback": []
                }
            ],
            "headerExtensions": [
                {
                    "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1, "encrypt": false,
                    "parameters": {}
                }
            ],
            "encodings": [{"ssrc": 123456789, "rtx": {"ssrc": 123456790}, "maxBitrate": 500000}],
            "rtcp": {"cname": "abcd1234", "reducedSize": true}
        });
        let parameters: RtpParameters =
            serde_json::from_value(literal.clone()).expect("mediasoup parameters parse");
        assert_eq!(
            parameters.encodings[0].rtx,
            Some(RtxParameters {
                ssrc: Ssrc(123456790)
            })
        );
        assert_eq!(serde_json::to_value(&parameters).ok(), Some(literal));
    }

    #[test]
    fn omitted_optional_fields_get_mediasoup_defaults() {
        let parameters: RtpParameters = serde_json::from_value(json!({
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
                        "rtcpFeedback": [{"type": "transport-cc"}]}]
        }))
        .expect("minimal parameters parse");
        assert!(parameters.header_extensions.is_empty());
        assert!(parameters.encodings.is_empty());
        assert_eq!(
            parameters.rtcp,
            RtcpParameters {
                cname: None,
                reduced_size: true
            }
        );
        assert_eq!(parameters.codecs[0].rtcp_feedback[0].parameter, "");

        let written = serde_json::to_value(&parameters).expect("serialises");
        assert_eq!(
            written,
            json!({
                "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000,
                            "parameters": {},
                            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]}],
                "headerExtensions": [],
                "encodings": [],
                "rtcp": {"reducedSize": true}
            })
        );
    }

    #[test]
    fn header_extension_direction_defaults_to_sendrecv() {
        let extension: RtpHeaderExtension = serde_json::from_value(json!({
            "kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "preferredId": 10
        }))
        .expect("extension without direction parses");
        assert_eq!(extension.direction, RtpHeaderExtensionDirection::SendRecv);
        assert!(!extension.preferred_encrypt);
    }
}
