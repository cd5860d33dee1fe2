//! Every request body of the worker's REST API (`fanout_worker::api`), read as its handler
//! reads it (`JsonBody`: serde_json, a blank body as `{}`): no input panics, and a body that
//! reads also survives a round trip through its serialised form unchanged, since the typed
//! client sends exactly that form (signalling -> worker). Bodies that read are then put through
//! the pure checks the control plane makes before anything changes (DTLS parameters; RTP
//! parameters with the ORTC mapping of a producer, and what a device can consume of it).
#![no_main]

use std::fmt::Debug;

use fanout_worker::api::{
    ConnectTransportRequest, ConsumeRequest, CreateTransportRequest, EnsureRoomRequest, JoinRequest, ProduceRequest,
};
use fanout_worker::rtp::{
    ConsumerOptions, Ssrc, can_consume, consumable_parameters, consumer_parameters, default_media_codecs, producer_mapping,
    router_capabilities,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// As `JsonBody` reads a body, and if it reads, the round trip.
fn read<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) -> Option<T> {
    let json: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let value: T = serde_json::from_slice(json).ok()?;
    let sent = serde_json::to_vec(&value).expect("a body that was read serialises");
    let received: T = serde_json::from_slice(&sent)
        .unwrap_or_else(|e| panic!("{value:?} serialises to {} which reads back as: {e}", String::from_utf8_lossy(&sent)));
    assert_eq!(received, value, "round trip through {}", String::from_utf8_lossy(&sent));
    Some(value)
}

fuzz_target!(|body: &[u8]| {
    let ensure = read::<EnsureRoomRequest>(body);
    let _ = read::<JoinRequest>(body);
    let _ = read::<CreateTransportRequest>(body);
    if let Some(connect) = read::<ConnectTransportRequest>(body) {
        let _ = connect.dtls_parameters.validated();
    }
    let produce = read::<ProduceRequest>(body);
    let consume = read::<ConsumeRequest>(body);

    // The pure part of produce and consume, against the default router or the codecs this
    // body names when it reads as a room's.
    let codecs = ensure.map(|e| e.media_codecs).filter(|c| !c.is_empty());
    let Ok(router) = router_capabilities(codecs.as_deref().unwrap_or(&default_media_codecs())) else {
        return;
    };
    let Some(produce) = produce else { return };
    // SSRCs next to the wrap, where "the next SSRC" arithmetic is easiest to get wrong.
    let Ok(mapping) = producer_mapping(produce.kind, &produce.rtp_parameters, &router, Ssrc(u32::MAX - 1)) else {
        return;
    };
    let consumable = consumable_parameters(produce.kind, &produce.rtp_parameters, &router, &mapping);
    if let Some(consume) = consume {
        if can_consume(&consumable, &consume.rtp_capabilities) {
            let options = ConsumerOptions { mid: Some("0".into()), ..ConsumerOptions::new(produce.kind, Ssrc(u32::MAX)) };
            let _ = consumer_parameters(&consumable, &consume.rtp_capabilities, &options);
        }
    }
});
