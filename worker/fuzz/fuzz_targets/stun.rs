//! Any datagram into a transport before and after ICE: STUN parsing, the ICE-lite checks,
//! and the first-byte demultiplexing must never panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use fanout_worker::media::dtls::DtlsIdentity;
use fanout_worker::media::transport::WebRtcTransport;
use libfuzzer_sys::fuzz_target;

fn identity() -> &'static DtlsIdentity {
    static IDENTITY: OnceLock<DtlsIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| DtlsIdentity::generate(rtc::crypto::default_provider().expect("ring")).expect("certificate"))
}

fuzz_target!(|data: &[u8]| {
    let mut transport = WebRtcTransport::new("fuzzufrag", "fuzz-password-0123456789", identity().clone());
    let from = SocketAddr::from(([127, 0, 0, 1], 5000));
    let now = Instant::now();
    transport.handle_datagram(from, data, now);
    // The same bytes as a STUN message (first byte forced into the STUN range).
    if let Some((first, rest)) = data.split_first() {
        let mut stun = vec![first & 0x03];
        stun.extend_from_slice(rest);
        transport.handle_datagram(from, &stun, now);
    }
    while transport.poll_output().is_some() {}
});
