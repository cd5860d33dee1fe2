//! The payload of every request event, read into its typed request as the event's handler
//! reads it (`fanout_signalling::read_request` over `events::REQUESTS`): no JSON value panics,
//! and every refusal is `INVALID_PAYLOAD` with a message of bounded size, whatever the payload
//! holds (a megabyte of unknown `direction` must not come back whole).
#![no_main]

use fanout_signalling::events::REQUESTS;
use fanout_signalling::read_request;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Longer refusal messages echo the payload back.
const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // What socketioxide hands the handlers: a JSON value (unreadable text never gets here).
    let Ok(payload) = serde_json::from_slice::<Value>(data) else { return };
    for (event, _) in REQUESTS {
        if let Err(error) = read_request(event, payload.clone()) {
            assert_eq!(error.code(), "INVALID_PAYLOAD", "{event}: {error}");
            let message = error.to_string();
            assert!(message.len() <= MAX_MESSAGE, "{event}: a {}-byte refusal", message.len());
        }
    }
});
