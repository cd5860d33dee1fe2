//! The payload of every request event, admitted and read into its typed request as the server
//! does (`fanout_signalling::admit_payload`, then `read_request`, over `events::REQUESTS`): the
//! fuzzer's bytes are the payload's text in the event packet `["<event>", <payload>]`, JSON or
//! not. Nothing panics, and every refusal is `INVALID_PAYLOAD`, `INVALID_ROOM_ID` (join-room)
//! or `PAYLOAD_TOO_LARGE` with a message of bounded size, whatever the payload holds (a
//! megabyte of unknown `direction` must not come back whole).
#![no_main]

use fanout_signalling::events::REQUESTS;
use fanout_signalling::{Limits, admit_payload, read_request};
use libfuzzer_sys::fuzz_target;
use socketioxide_core::{Str, Value};

/// Longer refusal messages echo the payload back.
const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let payload = String::from_utf8_lossy(data);
    let limits = Limits::default();
    for (event, _) in REQUESTS {
        let packet = Value::Str(Str::from(format!(r#"["{event}",{payload}]"#)), None);
        let admitted = admit_payload(event, &packet, &limits).and_then(|payload| read_request(event, payload));
        if let Err(error) = admitted {
            assert!(matches!(error.code(), "INVALID_PAYLOAD" | "INVALID_ROOM_ID" | "PAYLOAD_TOO_LARGE"), "{event}: {} {error}", error.code());
            let message = error.to_string();
            assert!(message.len() <= MAX_MESSAGE, "{event}: a {}-byte refusal", message.len());
        }
    }
});
