//! Raw Engine.IO and Socket.IO packets through the parsers signalling runs (engineioxide's
//! packet decoding, then socketioxide's common parser with its binary attachments), and on
//! into what a decoded packet reaches in signalling: a CONNECT packet's `auth` goes through the
//! token lookup and the HS256 verifier, an EVENT of a request event through the request's
//! admission (`admit_payload`: payload and attachments, size, shape, ids) and its payload reader.
//! Nothing may panic, and refusals keep their codes and bounded messages.
//!
//! Input: an Engine.IO text packet (what a websocket text frame carries, e.g.
//! `42["join-room",{"roomId":"maths"}]`), then binary attachments (websocket binary frames),
//! each after a 0xFF byte (never in UTF-8).
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use fanout_signalling::auth::{JwtConfig, JwtVerifier, find_token};
use fanout_signalling::events::REQUESTS;
use fanout_signalling::{Limits, admit_payload, read_request};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParseError, ParserState};
use socketioxide_parser_common::CommonParser;

/// Longer refusal messages echo the packet back.
const MAX_MESSAGE: usize = 1024;

fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| JwtVerifier::new(&JwtConfig::hs256("fuzz-secret-of-reasonable-length")).expect("verifier"))
}

fuzz_target!(|data: &[u8]| {
    let mut frames = data.split(|&b| b == 0xff);
    let text = String::from_utf8_lossy(frames.next().unwrap_or_default()).into_owned();
    let Ok(engineioxide::Packet::Message(message)) = engineioxide::Packet::try_from(text) else { return };
    let state = ParserState::default();
    let mut decoded = CommonParser.decode_str(&state, message);
    while matches!(decoded, Err(ParseError::NeedsMoreBinaryData)) {
        let Some(frame) = frames.next() else { return };
        decoded = CommonParser.decode_bin(&state, Bytes::copy_from_slice(frame));
    }
    let Ok(packet) = decoded else { return };
    match packet.inner {
        PacketData::Connect(auth) => {
            // As the connect middleware's `TryData<Value>` reads it.
            let auth: Option<Value> = CommonParser.decode_default(auth.as_ref()).ok();
            match find_token(auth.as_ref(), &http::HeaderMap::new(), Some("EIO=4&transport=websocket")) {
                Ok(token) => {
                    if let Err(error) = verifier().verify(&token) {
                        assert!(error.code().starts_with("TOKEN_"), "{}", error.code());
                        assert!(error.to_string().len() <= MAX_MESSAGE, "a {}-byte refusal", error.to_string().len());
                    }
                }
                Err(error) => assert_eq!(error.code(), "TOKEN_MISSING"),
            }
        }
        PacketData::Event(value, _) | PacketData::BinaryEvent(value, _) => {
            let Ok(event) = CommonParser.read_event(&value).map(str::to_owned) else { return };
            if !REQUESTS.iter().any(|(name, _)| *name == event) {
                return;
            }
            let admitted = admit_payload(&event, &value, &Limits::default()).and_then(|payload| read_request(&event, payload));
            if let Err(error) = admitted {
                assert!(matches!(error.code(), "INVALID_PAYLOAD" | "INVALID_ROOM_ID" | "PAYLOAD_TOO_LARGE"), "{event}: {} {error}", error.code());
                assert!(error.to_string().len() <= MAX_MESSAGE, "{event}: a {}-byte refusal", error.to_string().len());
            }
        }
        _ => {}
    }
});
