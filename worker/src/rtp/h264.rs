//! H264 `profile-level-id` rules (RFC 6184 section 8.1), as the `h264-profile-level-id`
//! package that mediasoup and mediasoup-client use implements them (itself a port of
//! WebRTC's `h264_profile_level_id.cc`).
//!
//! Two H264 codecs match when their profiles are equal; levels never prevent a match, they
//! only decide the level written in the answer.

use super::parameters::{ParameterValue, Parameters};

const PROFILE_LEVEL_ID: &str = "profile-level-id";
const LEVEL_ASYMMETRY_ALLOWED: &str = "level-asymmetry-allowed";

/// An H264 profile, as far as WebRTC distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    ConstrainedBaseline,
    Baseline,
    Main,
    ConstrainedHigh,
    High,
    PredictiveHigh444,
}

/// An H264 level as its `level_idc` (level 3.1 is 31), except level 1b, which shares
/// `level_idc` 11 with level 1.1 and is told apart by constraint_set3_flag; it is stored as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level(u8);

impl Level {
    const L1_B: Level = Level(0);
    const L1: Level = Level(10);
    const L1_1: Level = Level(11);
    const L3_1: Level = Level(31);

    /// The `level_idc` values defined by the standard, other than 11 (see [`Level`]).
    const PLAIN_LEVEL_IDCS: [u8; 15] = [10, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52];

    /// Level ordering, with 1b between 1 and 1.1.
    ///
    /// This is WebRTC's `IsLess`. The JavaScript port answers `self != L1` in the second branch,
    /// which would put 1.1 and above below 1b; it only matters for answers at level 1b.
    fn is_less_than(self, other: Level) -> bool {
        if self == Level::L1_B {
            return other != Level::L1 && other != Level::L1_B;
        }
        if other == Level::L1_B {
            return self == Level::L1;
        }
        self.0 < other.0
    }

    fn min(self, other: Level) -> Level {
        if self.is_less_than(other) {
            self
        } else {
            other
        }
    }
}

/// A parsed `profile-level-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProfileLevelId {
    pub(crate) profile: Profile,
    pub(crate) level: Level,
}

/// What a codec without `profile-level-id` means. RFC 6184 says Baseline level 1, but WebRTC
/// (and so mediasoup) uses Constrained Baseline 3.1 for compatibility; see crbug/webrtc/6337.
const DEFAULT_PROFILE_LEVEL_ID: ProfileLevelId = ProfileLevelId {
    profile: Profile::ConstrainedBaseline,
    level: Level::L3_1,
};

/// A `profile_iop` byte pattern such as `x1xx0000`, where `x` matches either bit.
struct BitPattern {
    mask: u8,
    value: u8,
}

impl BitPattern {
    const fn new(pattern: [u8; 8]) -> BitPattern {
        let mut mask = 0u8;
        let mut value = 0u8;
        let mut i = 0;
        while i < 8 {
            let bit = 0x80u8 >> i;
            if pattern[i] != b'x' {
                mask |= bit;
            }
            if pattern[i] == b'1' {
                value |= bit;
            }
            i += 1;
        }
        BitPattern { mask, value }
    }

    fn matches(&self, byte: u8) -> bool {
        byte & self.mask == self.value
    }
}

/// `(profile_idc, profile_iop pattern, profile)`, first match wins (RFC 6184 table 5).
const PROFILE_PATTERNS: [(u8, BitPattern, Profile); 9] = [
    (
        0x42,
        BitPattern::new(*b"x1xx0000"),
        Profile::ConstrainedBaseline,
    ),
    (
        0x4d,
        BitPattern::new(*b"1xxx0000"),
        Profile::ConstrainedBaseline,
    ),
    (
        0x58,
        BitPattern::new(*b"11xx0000"),
        Profile::ConstrainedBaseline,
    ),
    (0x42, BitPattern::new(*b"x0xx0000"), Profile::Baseline),
    (0x58, BitPattern::new(*b"10xx0000"), Profile::Baseline),
    (0x4d, BitPattern::new(*b"0x0x0000"), Profile::Main),
    (0x64, BitPattern::new(*b"00000000"), Profile::High),
    (
        0x64,
        BitPattern::new(*b"00001100"),
        Profile::ConstrainedHigh,
    ),
    (
        0xf4,
        BitPattern::new(*b"00000000"),
        Profile::PredictiveHigh444,
    ),
];

/// Parses a `profile-level-id` of three hex bytes (`42e01f`); `None` when it is malformed or
/// names a profile or level WebRTC does not know.
pub(crate) fn parse_profile_level_id(text: &str) -> Option<ProfileLevelId> {
    const CONSTRAINT_SET3_FLAG: u8 = 0x10;

    if text.len() != 6 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let numeric = u32::from_str_radix(text, 16).ok()?;
    if numeric == 0 {
        return None;
    }
    let [_, profile_idc, profile_iop, level_idc] = numeric.to_be_bytes();

    let level = if level_idc == Level::L1_1.0 {
        if profile_iop & CONSTRAINT_SET3_FLAG != 0 {
            Level::L1_B
        } else {
            Level::L1_1
        }
    } else if Level::PLAIN_LEVEL_IDCS.contains(&level_idc) {
        Level(level_idc)
    } else {
        return None;
    };

    PROFILE_PATTERNS
        .iter()
        .find(|(idc, pattern, _)| *idc == profile_idc && pattern.matches(profile_iop))
        .map(|(_, _, profile)| ProfileLevelId {
            profile: *profile,
            level,
        })
}

/// The canonical three-byte form of a profile-level-id, or `None` for level 1b in profiles
/// that do not allow it.
fn profile_level_id_to_string(id: ProfileLevelId) -> Option<String> {
    if id.level == Level::L1_B {
        return match id.profile {
            Profile::ConstrainedBaseline => Some("42f00b".to_owned()),
            Profile::Baseline => Some("42100b".to_owned()),
            Profile::Main => Some("4d100b".to_owned()),
            _ => None,
        };
    }
    let profile_idc_iop = match id.profile {
        Profile::ConstrainedBaseline => "42e0",
        Profile::Baseline => "4200",
        Profile::Main => "4d00",
        Profile::ConstrainedHigh => "640c",
        Profile::High => "6400",
        Profile::PredictiveHigh444 => "f400",
    };
    Some(format!("{profile_idc_iop}{:02x}", id.level.0))
}

/// The `profile-level-id` parameter when present. Like the JavaScript original, an empty
/// string or 0 counts as absent.
fn profile_level_id_parameter(parameters: &Parameters) -> Option<&ParameterValue> {
    parameters
        .get(PROFILE_LEVEL_ID)
        .filter(|value| !value.is_falsy())
}

/// The profile-level-id a codec's parameters describe: the default when absent, `None` when
/// present but invalid.
fn sdp_profile_level_id(parameters: &Parameters) -> Option<ProfileLevelId> {
    match profile_level_id_parameter(parameters) {
        None => Some(DEFAULT_PROFILE_LEVEL_ID),
        Some(ParameterValue::String(text)) => parse_profile_level_id(text),
        // sdp-transform turns an all-digit fmtp value such as `640032` into a number, which the
        // JavaScript library then rejects; reading its digits back is what the SDP meant.
        Some(ParameterValue::Number(number)) => parse_profile_level_id(&number.to_string()),
    }
}

/// True when both parameter sets name valid profile-level-ids of the same profile.
pub(crate) fn is_same_profile(a: &Parameters, b: &Parameters) -> bool {
    match (sdp_profile_level_id(a), sdp_profile_level_id(b)) {
        (Some(a), Some(b)) => a.profile == b.profile,
        _ => false,
    }
}

fn is_level_asymmetry_allowed(parameters: &Parameters) -> bool {
    parameters
        .get(LEVEL_ASYMMETRY_ALLOWED)
        .and_then(ParameterValue::as_integer)
        == Some(1)
}

/// The profiles of the two codecs differ, or one profile-level-id is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProfileMismatch;

/// The `profile-level-id` to answer with, for a local codec matched against a remote offer
/// (`generateProfileLevelIdStringForAnswer`).
///
/// `Ok(None)` means the answer carries no `profile-level-id` (both sides use the default).
/// With level asymmetry allowed by both sides the local level is kept; otherwise the lower of
/// the two, since the answer may not upgrade the offer's level.
pub(crate) fn answer_profile_level_id(
    local: &Parameters,
    remote: &Parameters,
) -> Result<Option<String>, ProfileMismatch> {
    if profile_level_id_parameter(local).is_none() && profile_level_id_parameter(remote).is_none() {
        return Ok(None);
    }
    let local_id = sdp_profile_level_id(local).ok_or(ProfileMismatch)?;
    let remote_id = sdp_profile_level_id(remote).ok_or(ProfileMismatch)?;
    if local_id.profile != remote_id.profile {
        return Err(ProfileMismatch);
    }
    let level = if is_level_asymmetry_allowed(local) && is_level_asymmetry_allowed(remote) {
        local_id.level
    } else {
        local_id.level.min(remote_id.level)
    };
    Ok(profile_level_id_to_string(ProfileLevelId {
        profile: local_id.profile,
        level,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[(&str, ParameterValue)]) -> Parameters {
        entries
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect()
    }

    fn plid(text: &str) -> Parameters {
        params(&[(PROFILE_LEVEL_ID, text.into())])
    }

    #[test]
    fn parses_the_profiles_browsers_offer() {
        let cases = [
            ("42e01f", Profile::ConstrainedBaseline, 31),
            ("42001f", Profile::Baseline, 31),
            ("4d001f", Profile::Main, 31),
            ("4de01f", Profile::ConstrainedBaseline, 31),
            ("640c1f", Profile::ConstrainedHigh, 31),
            ("640032", Profile::High, 50),
            ("f4001f", Profile::PredictiveHigh444, 31),
            ("42E01F", Profile::ConstrainedBaseline, 31),
        ];
        for (text, profile, level) in cases {
            assert_eq!(
                parse_profile_level_id(text),
                Some(ProfileLevelId {
                    profile,
                    level: Level(level)
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn level_1b_is_told_apart_from_1_1_by_constraint_set3() {
        assert_eq!(
            parse_profile_level_id("42f00b").map(|id| id.level),
            Some(Level::L1_B)
        );
        assert_eq!(
            parse_profile_level_id("42e00b").map(|id| id.level),
            Some(Level::L1_1)
        );
    }

    #[test]
    fn rejects_malformed_or_unknown_profile_level_ids() {
        for text in [
            "", "42e01", "42e01f0", "+42e01", "42e0zz", "000000", "42e0ff", "6e001f",
        ] {
            assert_eq!(parse_profile_level_id(text), None, "{text}");
        }
    }

    #[test]
    fn same_profile_ignores_the_level() {
        assert!(is_same_profile(&plid("42e01f"), &plid("42e034")));
        assert!(!is_same_profile(&plid("42e01f"), &plid("4d001f")));
        assert!(!is_same_profile(&plid("42e01f"), &plid("nonsense")));
    }

    #[test]
    fn missing_profile_level_id_means_constrained_baseline() {
        assert!(is_same_profile(&Parameters::new(), &plid("42e01f")));
        assert!(!is_same_profile(&Parameters::new(), &plid("4d001f")));
    }

    #[test]
    fn numeric_profile_level_id_from_sdp_transform_is_read_as_digits() {
        let numeric = params(&[(PROFILE_LEVEL_ID, 640032u32.into())]);
        assert!(!is_same_profile(&numeric, &plid("640c1f")));
        assert!(is_same_profile(&numeric, &plid("64001f")));
    }

    #[test]
    fn answer_keeps_the_local_level_when_both_allow_asymmetry() {
        let local = params(&[
            (PROFILE_LEVEL_ID, "42e034".into()),
            (LEVEL_ASYMMETRY_ALLOWED, 1u8.into()),
        ]);
        let remote = params(&[
            (PROFILE_LEVEL_ID, "42e01f".into()),
            (LEVEL_ASYMMETRY_ALLOWED, "1".into()),
        ]);
        assert_eq!(
            answer_profile_level_id(&local, &remote),
            Ok(Some("42e034".to_owned()))
        );
    }

    #[test]
    fn answer_never_raises_the_offered_level_without_asymmetry() {
        assert_eq!(
            answer_profile_level_id(&plid("42e034"), &plid("42e01f")),
            Ok(Some("42e01f".to_owned()))
        );
        assert_eq!(
            answer_profile_level_id(&plid("42e00a"), &plid("42e01f")),
            Ok(Some("42e00a".to_owned()))
        );
    }

    #[test]
    fn answer_is_canonical_and_absent_when_neither_side_names_a_profile() {
        assert_eq!(
            answer_profile_level_id(&plid("4DE01F"), &plid("42e01f")),
            Ok(Some("42e01f".to_owned()))
        );
        assert_eq!(
            answer_profile_level_id(&Parameters::new(), &Parameters::new()),
            Ok(None)
        );
    }

    #[test]
    fn answer_fails_on_profile_mismatch() {
        assert_eq!(
            answer_profile_level_id(&plid("42e01f"), &plid("4d001f")),
            Err(ProfileMismatch)
        );
    }

    #[test]
    fn level_1b_sorts_between_1_and_1_1() {
        assert!(Level::L1.is_less_than(Level::L1_B));
        assert!(Level::L1_B.is_less_than(Level::L1_1));
        assert!(!Level::L1_B.is_less_than(Level::L1));
        assert!(!Level::L1_1.is_less_than(Level::L1_B));
        assert_eq!(Level::L1_1.min(Level::L1_B), Level::L1_B);
        assert_eq!(Level::L1.min(Level::L1_B), Level::L1);
    }
}
