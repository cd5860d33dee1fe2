//! When two codecs are the same codec (mediasoup's `isRtxCodec` and `matchCodecs`).

use super::h264;
use super::parameters::{
    MediaKind, ParameterValue, Parameters, PayloadType, RtpCodecCapability, RtpCodecParameters,
};

/// What codec capabilities and codec parameters have in common for matching.
pub(crate) trait Codec {
    fn mime_type(&self) -> &str;
    fn clock_rate(&self) -> u32;
    /// `channels` as written, before the audio default of 1 is applied.
    fn declared_channels(&self) -> Option<u8>;
    fn parameters(&self) -> &Parameters;
}

impl Codec for RtpCodecCapability {
    fn mime_type(&self) -> &str {
        &self.mime_type
    }
    fn clock_rate(&self) -> u32 {
        self.clock_rate
    }
    fn declared_channels(&self) -> Option<u8> {
        self.channels
    }
    fn parameters(&self) -> &Parameters {
        &self.parameters
    }
}

impl Codec for RtpCodecParameters {
    fn mime_type(&self) -> &str {
        &self.mime_type
    }
    fn clock_rate(&self) -> u32 {
        self.clock_rate
    }
    fn declared_channels(&self) -> Option<u8> {
        self.channels
    }
    fn parameters(&self) -> &Parameters {
        &self.parameters
    }
}

/// The channel count mediasoup compares: audio without `channels` has 1, video has none.
pub(crate) fn channels(codec: &impl Codec) -> Option<u8> {
    match MediaKind::from_mime_type(codec.mime_type()) {
        Some(MediaKind::Audio) => Some(codec.declared_channels().unwrap_or(1)),
        Some(MediaKind::Video) => None,
        None => codec.declared_channels(),
    }
}

/// True for an RTX (retransmission, RFC 4588) MIME type such as `video/rtx`.
pub(crate) fn is_rtx(mime_type: &str) -> bool {
    let bytes = mime_type.as_bytes();
    // mediasoup's /.+\/rtx$/i: something, then "/rtx".
    bytes.len() > 4 && bytes[bytes.len() - 4..].eq_ignore_ascii_case(b"/rtx")
}

/// The `apt` parameter of an RTX codec: the payload type it repairs. mediasoup requires a
/// number here, so a string does not count.
pub(crate) fn apt(parameters: &Parameters) -> Option<PayloadType> {
    match parameters.get("apt")? {
        ParameterValue::Number(number) => number
            .as_u64()
            .and_then(|value| u8::try_from(value).ok())
            .map(PayloadType),
        ParameterValue::String(_) => None,
    }
}

/// An integer codec parameter with mediasoup's `params[key] || fallback` reading: absent, `""`
/// and 0 give the fallback. `None` when the value is not an integer at all.
fn integer_parameter(parameters: &Parameters, key: &str, fallback: i64) -> Option<i64> {
    match parameters.get(key) {
        None => Some(fallback),
        Some(value) if value.is_falsy() => Some(fallback),
        Some(value) => value.as_integer(),
    }
}

/// Two integer parameters are equal, with garbage never equal to anything.
fn same_integer_parameter(a: &Parameters, b: &Parameters, key: &str) -> bool {
    match (integer_parameter(a, key, 0), integer_parameter(b, key, 0)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// How closely [`codecs_match`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matching {
    /// MIME type, clock rate and channels: enough to pick a supported codec for a router.
    Loose,
    /// Also the parameters that change the bitstream: H264 `packetization-mode` and profile,
    /// VP9 `profile-id`. Used whenever media will actually flow.
    Strict,
}

/// mediasoup's `matchCodecs`.
pub(crate) fn codecs_match(a: &impl Codec, b: &impl Codec, matching: Matching) -> bool {
    let mime_type = a.mime_type().to_ascii_lowercase();
    if !mime_type.eq_ignore_ascii_case(b.mime_type())
        || a.clock_rate() != b.clock_rate()
        || channels(a) != channels(b)
    {
        return false;
    }
    if matching == Matching::Loose {
        return true;
    }
    match mime_type.as_str() {
        "video/h264" | "video/h264-svc" => {
            same_integer_parameter(a.parameters(), b.parameters(), "packetization-mode")
                && h264::is_same_profile(a.parameters(), b.parameters())
                && h264::answer_profile_level_id(a.parameters(), b.parameters()).is_ok()
        }
        "video/vp9" => same_integer_parameter(a.parameters(), b.parameters(), "profile-id"),
        _ => true,
    }
}

/// A short description of a codec for error messages, e.g.
/// `video/H264 90000 Hz (packetization-mode=1, profile-level-id=42e01f)`.
pub(crate) fn describe(codec: &impl Codec) -> String {
    use std::fmt::Write as _;

    // Writing to a String cannot fail, hence the ignored results.
    let mut text = format!("{} {} Hz", codec.mime_type(), codec.clock_rate());
    if let Some(channels) = channels(codec) {
        let _ = write!(text, " {channels} ch");
    }
    // Only the parameters that decide a match: the rest would drown the message.
    let deciding: Vec<String> = [
        "packetization-mode",
        "profile-level-id",
        "profile-id",
        "apt",
    ]
    .iter()
    .filter_map(|key| {
        codec
            .parameters()
            .get(*key)
            .map(|value| format!("{key}={value}"))
    })
    .collect();
    if !deciding.is_empty() {
        let _ = write!(text, " ({})", deciding.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(
        mime_type: &str,
        clock_rate: u32,
        channels: Option<u8>,
        parameters: &[(&str, ParameterValue)],
    ) -> RtpCodecParameters {
        RtpCodecParameters {
            mime_type: mime_type.to_owned(),
            payload_type: PayloadType(96),
            clock_rate,
            channels,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            rtcp_feedback: Vec::new(),
        }
    }

    fn h264(packetization_mode: u8, profile_level_id: &str) -> RtpCodecParameters {
        codec(
            "video/H264",
            90000,
            None,
            &[
                ("packetization-mode", packetization_mode.into()),
                ("profile-level-id", profile_level_id.into()),
                ("level-asymmetry-allowed", 1u8.into()),
            ],
        )
    }

    #[test]
    fn rtx_is_recognised_by_its_subtype() {
        assert!(is_rtx("video/rtx"));
        assert!(is_rtx("Video/RTX"));
        assert!(!is_rtx("/rtx"));
        assert!(!is_rtx("video/vp8"));
        assert!(!is_rtx("rtx"));
    }

    #[test]
    fn apt_must_be_a_number_within_a_byte() {
        let numeric = codec("video/rtx", 90000, None, &[("apt", 96u8.into())]);
        let textual = codec("video/rtx", 90000, None, &[("apt", "96".into())]);
        let huge = codec("video/rtx", 90000, None, &[("apt", 300u32.into())]);
        assert_eq!(apt(&numeric.parameters), Some(PayloadType(96)));
        assert_eq!(apt(&textual.parameters), None);
        assert_eq!(apt(&huge.parameters), None);
    }

    #[test]
    fn mime_type_is_compared_case_insensitively() {
        let a = codec("video/VP8", 90000, None, &[]);
        let b = codec("video/vp8", 90000, None, &[]);
        assert!(codecs_match(&a, &b, Matching::Strict));
    }

    #[test]
    fn audio_without_channels_counts_as_mono() {
        let stereo = codec("audio/opus", 48000, Some(2), &[]);
        let unspecified = codec("audio/opus", 48000, None, &[]);
        let mono = codec("audio/opus", 48000, Some(1), &[]);
        assert!(!codecs_match(&stereo, &unspecified, Matching::Loose));
        assert!(codecs_match(&mono, &unspecified, Matching::Loose));
    }

    #[test]
    fn clock_rate_must_match() {
        let a = codec("audio/opus", 48000, Some(2), &[]);
        let b = codec("audio/opus", 16000, Some(2), &[]);
        assert!(!codecs_match(&a, &b, Matching::Loose));
    }

    #[test]
    fn h264_matches_by_profile_not_level() {
        assert!(codecs_match(
            &h264(1, "42e01f"),
            &h264(1, "42e01f"),
            Matching::Strict
        ));
        assert!(codecs_match(
            &h264(1, "42e01f"),
            &h264(1, "42e034"),
            Matching::Strict
        ));
        assert!(!codecs_match(
            &h264(1, "42e01f"),
            &h264(1, "4d001f"),
            Matching::Strict
        ));
        assert!(!codecs_match(
            &h264(1, "42e01f"),
            &h264(1, "42001f"),
            Matching::Strict
        ));
    }

    #[test]
    fn h264_packetization_mode_must_match_and_defaults_to_zero() {
        assert!(!codecs_match(
            &h264(0, "42e01f"),
            &h264(1, "42e01f"),
            Matching::Strict
        ));
        let without_mode = codec(
            "video/H264",
            90000,
            None,
            &[("profile-level-id", "42e01f".into())],
        );
        assert!(codecs_match(
            &without_mode,
            &h264(0, "42e01f"),
            Matching::Strict
        ));
    }

    #[test]
    fn loose_matching_ignores_h264_profiles() {
        assert!(codecs_match(
            &h264(0, "42e01f"),
            &h264(1, "4d001f"),
            Matching::Loose
        ));
    }

    #[test]
    fn vp9_profile_id_must_match_and_defaults_to_zero() {
        let profile0 = codec("video/VP9", 90000, None, &[("profile-id", 0u8.into())]);
        let profile2 = codec("video/VP9", 90000, None, &[("profile-id", 2u8.into())]);
        let unspecified = codec("video/VP9", 90000, None, &[]);
        let textual = codec("video/VP9", 90000, None, &[("profile-id", "2".into())]);
        assert!(codecs_match(&profile0, &unspecified, Matching::Strict));
        assert!(!codecs_match(&profile0, &profile2, Matching::Strict));
        assert!(codecs_match(&profile2, &textual, Matching::Strict));
    }

    #[test]
    fn description_names_the_parameters_that_decide_a_match() {
        assert_eq!(
            describe(&h264(1, "42e01f")),
            "video/H264 90000 Hz (packetization-mode=1, profile-level-id=42e01f)"
        );
        assert_eq!(
            describe(&codec("audio/opus", 48000, Some(2), &[])),
            "audio/opus 48000 Hz 2 ch"
        );
    }
}
