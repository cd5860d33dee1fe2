//! Any RTCP compound packet from a consumer or a producer: parsing, PLI/FIR relay, NACK
//! answers and report handling must never panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use fanout_worker::media::router::Router;
use fanout_worker::room::{ForwardingTable, TransportId};
use fanout_worker::testing::video_call;
use libfuzzer_sys::fuzz_target;

/// The test call's forwarding table and its two transports, built once: building the room
/// (ORTC mapping included) costs far more than routing a packet.
struct Call {
    table: ForwardingTable,
    alice_send: TransportId,
    bob_recv: TransportId,
}

fn call() -> &'static Call {
    static CALL: OnceLock<Call> = OnceLock::new();
    CALL.get_or_init(|| {
        let call = video_call();
        let table = call.rooms.forwarding_table(&call.room).expect("room");
        Call { table, alice_send: call.alice_send, bob_recv: call.bob_recv }
    })
}

fuzz_target!(|data: &[u8]| {
    let call = call();
    let mut router = Router::default();
    let now = Instant::now();
    router.update(call.table.clone(), now);
    router.on_rtcp(&call.bob_recv, data, now);
    router.on_rtcp(&call.alice_send, data, now);
    router.handle_timeout(now);
});
