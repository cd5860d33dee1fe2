//! The ids clients name, checked at the edge before anything reaches a worker, and how much
//! of a client's text an error echoes back. Pure.
//!
//! Room ids become URL path segments on workers (`/v1/rooms/{room}/...`) and, with Kubernetes
//! placement, names of Room objects. One rule serves every placement mode, so a room id that
//! works on a laptop works on a cluster: a DNS label (RFC 1123), 1-63 characters of lowercase
//! `a-z`, digits and `-`, beginning and ending with a letter or digit. That leaves out `.`
//! and `..`, `/`, `%`, spaces and upper case.
//!
//! Object ids (`transportId`, `producerId`, `consumerId`, `targetId`, `messageId`) are the worker's or the
//! server's own (UUIDs, socket ids); signalling forwards only those it handed to the
//! participant itself. A client may still send anything, so their length is bounded before
//! they are looked up or quoted in an error.

use crate::error::{Result, SignallingError};

/// Longest room id.
pub const MAX_ROOM_ID: usize = 63;

/// Longest object id a request may name. The worker's are 36 characters (UUIDs).
pub const MAX_OBJECT_ID: usize = 128;

/// Longest piece of a client's own text (an id, a value) quoted in an error message.
const MAX_QUOTED: usize = 64;

/// Why `room` cannot be a room id, or `Ok`.
pub fn check_room_id(room: &str) -> Result<()> {
    let bytes = room.as_bytes();
    let reason = if bytes.is_empty() {
        "it is empty"
    } else if room.chars().count() > MAX_ROOM_ID {
        "it is longer than 63 characters"
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        "it may contain only lowercase letters a-z, digits and '-'"
    } else if !bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        || !bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    {
        "it must begin and end with a letter or digit"
    } else {
        return Ok(());
    };
    Err(SignallingError::InvalidRoomId {
        room: excerpt(room),
        reason,
    })
}

/// Whether `room` is a valid room id.
pub fn is_room_id(room: &str) -> bool {
    check_room_id(room).is_ok()
}

/// The top-level fields of a request that name objects.
const ID_FIELDS: &[&str] = &["roomId", "transportId", "producerId", "consumerId", "targetId", "messageId"];

/// Refuses a payload naming an object id longer than [`MAX_OBJECT_ID`] or containing control
/// characters; shapes (a string, present) are the event's own parsing's business.
pub fn check_object_ids(event: &str, payload: &serde_json::Value) -> Result<()> {
    for field in ID_FIELDS {
        let Some(id) = payload.get(*field).and_then(serde_json::Value::as_str) else {
            continue;
        };
        let length = id.chars().count();
        let reason = if length > MAX_OBJECT_ID {
            format!("{field} is {length} characters long; ids have at most {MAX_OBJECT_ID}")
        } else if id.chars().any(char::is_control) {
            format!("{field} contains control characters")
        } else {
            continue;
        };
        return Err(SignallingError::InvalidPayload {
            event: event.to_owned(),
            reason,
        });
    }
    Ok(())
}

/// `text` as quoted in an error: whole when short, otherwise its beginning and its length.
pub fn excerpt(text: &str) -> String {
    let length = text.chars().count();
    if length <= MAX_QUOTED {
        return text.to_owned();
    }
    let beginning: String = text.chars().take(MAX_QUOTED / 2).collect();
    format!("{beginning}… ({length} characters)")
}

/// Longest parser message, in bytes, kept whole after its quotes are shortened.
const MAX_MESSAGE_BYTES: usize = 512;

/// A parser's message with every backtick-quoted piece (serde quotes the value it could not
/// use: "unknown variant `...`") shortened to an [`excerpt`], and the whole cut at
/// [`MAX_MESSAGE_BYTES`]: a value with backticks of its own splits into pieces that the quote
/// rule cannot tell from the message's own words (found by the `packet` fuzz target).
pub fn shorten_quotes(message: &str) -> String {
    let shortened = message
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { excerpt(part) } else { part.to_owned() })
        .collect::<Vec<_>>()
        .join("`");
    if shortened.len() <= MAX_MESSAGE_BYTES {
        return shortened;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !shortened.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} characters in all)", &shortened[..end], shortened.chars().count())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn room_ids_are_dns_labels() {
        for good in ["maths-101", "a", "0", "e2e-pair-3fa9c1", &"a".repeat(63)] {
            assert!(is_room_id(good), "{good:?}");
        }
        for bad in [
            "", ".", "..", "a/b", "a%2Fb", "Maths", "a_b", "a b", "-x", "x-", "é", "a\nb",
            &"a".repeat(64),
        ] {
            let error = check_room_id(bad).unwrap_err();
            assert_eq!(error.code(), "INVALID_ROOM_ID", "{bad:?}");
        }
    }

    #[test]
    fn a_refused_room_id_says_why_and_quotes_only_its_beginning() {
        let error = check_room_id("Maths").unwrap_err().to_string();
        assert!(error.contains("lowercase"), "{error}");
        let huge = "A".repeat(100_000);
        let error = check_room_id(&huge).unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
        assert!(error.contains("100000 characters"), "{error}");
    }

    #[test]
    fn object_ids_are_bounded_and_printable() {
        let ok = json!({"transportId": "5b0c6f6e-3c4b-4a57-8a57-0f5e0a7c9d11", "roomId": 7});
        assert!(check_object_ids("connect-transport", &ok).is_ok());
        for field in ["roomId", "transportId", "producerId", "consumerId", "targetId"] {
            let long = json!({ field: "x".repeat(MAX_OBJECT_ID + 1) });
            let error = check_object_ids("consume", &long).unwrap_err();
            assert_eq!(error.code(), "INVALID_PAYLOAD", "{field}");
            assert!(error.to_string().contains(field), "{error}");
            assert!(error.to_string().len() < 200, "{error}");
            let control = json!({ field: "a\u{0}b" });
            assert!(check_object_ids("consume", &control).is_err(), "{field}");
        }
    }

    #[test]
    fn quoted_values_in_parser_messages_are_shortened() {
        let message = format!("unknown variant `{}`, expected `send` or `recv`", "x".repeat(5000));
        let short = shorten_quotes(&message);
        assert!(short.len() < 150, "{short}");
        assert!(short.ends_with("expected `send` or `recv`"), "{short}");
        assert_eq!(shorten_quotes("missing field `kind`"), "missing field `kind`");
    }

    #[test]
    fn a_quoted_value_with_backticks_of_its_own_is_bounded_too() {
        // The packet fuzz target's input: a direction whose text has a backtick in it, so the
        // long tail after it looked like the message's own words; multi-byte characters.
        let value = format!("-re{}`c{}", "\u{FFFD}".repeat(30), "\u{FFFD}".repeat(2000));
        let message = format!("unknown variant `{value}`, expected `send` or `recv`");
        let short = shorten_quotes(&message);
        assert!(short.len() <= MAX_MESSAGE_BYTES + 40, "{} bytes: {short}", short.len());
        assert!(short.starts_with("unknown variant `-re"), "{short}");
        assert!(short.ends_with("characters in all)"), "{short}");
        let four_byte = format!("unknown variant `a`{}", "\u{1F600}".repeat(1000));
        assert!(shorten_quotes(&four_byte).len() <= MAX_MESSAGE_BYTES + 40);
    }
}
