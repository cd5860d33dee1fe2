//! Any RTCP compound packet from a consumer or a producer: parsing, PLI/FIR relay, NACK
//! answers and report handling must never panic.
#![no_main]

use std::time::Instant;

use fanout_worker::media::router::Router;
use fanout_worker::testing::video_call;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let call = video_call();
    let mut router = Router::default();
    let now = Instant::now();
    router.update(call.rooms.forwarding_table(&call.room).expect("room"), now);
    router.on_rtcp(&call.bob_recv, data, now);
    router.on_rtcp(&call.alice_send, data, now);
    router.handle_timeout(now);
});
