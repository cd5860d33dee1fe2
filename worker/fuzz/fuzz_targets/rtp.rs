//! Any RTP packet from a producer: parsing, header rewriting, RTX unwrapping, keyframe
//! detection and forwarding must never panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use fanout_worker::media::router::Router;
use fanout_worker::room::{ForwardingTable, TransportId};
use fanout_worker::testing::video_call;
use libfuzzer_sys::fuzz_target;

/// The test call's forwarding table and its producer's transport, built once: building the
/// room (ORTC mapping included) costs far more than routing a packet.
struct Call {
    table: ForwardingTable,
    alice_send: TransportId,
}

fn call() -> &'static Call {
    static CALL: OnceLock<Call> = OnceLock::new();
    CALL.get_or_init(|| {
        let call = video_call();
        let table = call.rooms.forwarding_table(&call.room).expect("room");
        Call { table, alice_send: call.alice_send }
    })
}

fuzz_target!(|data: &[u8]| {
    let call = call();
    let mut router = Router::default();
    let now = Instant::now();
    router.update(call.table.clone(), now);
    // As sent, and with the header pointed at the real producer streams (VP8 and its RTX), so
    // the fuzzer reaches the forwarding path and not only the unknown-SSRC exit.
    router.on_rtp(&call.alice_send, data, now);
    for (ssrc, pt) in [(2471283948u32, 96u8), (1389617367, 97)] {
        if data.len() >= 12 {
            let mut packet = data.to_vec();
            packet[0] = 0x80 | (packet[0] & 0x3f);
            packet[1] = (packet[1] & 0x80) | pt;
            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
            router.on_rtp(&call.alice_send, &packet, now);
        }
    }
    router.handle_timeout(now);
});
