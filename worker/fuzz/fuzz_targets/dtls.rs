//! DTLS into a transport whose peer tuple passed an ICE check, in both roles the worker takes:
//! the record layer, handshake parsing (hellos, certificates, key exchange, finished), alerts,
//! retransmission timers and whatever follows a completed handshake must never panic, and a
//! handshake that fails closes the transport instead of leaving it half open.
//!
//! Input: a mode byte, then the rest.
//! - bit 0 of the mode: the worker's DTLS role: 0 server (against mediasoup-client, which says
//!   `client`), 1 client (the peer said `server`).
//! - bit 1 of the mode: 0, the fuzzer is the peer: the rest is datagrams, each a 2-byte
//!   big-endian length and that many bytes. 1, a real peer (the rtc crate's DTLS, as a browser)
//!   runs the handshake, and each byte of the rest says what happens to the peer's next
//!   datagram (see [`Op`]): delivered, dropped, corrupted, truncated, replaced or followed by
//!   fuzzer bytes, or the clock moves on. Whatever is left after the handshake went quiet is
//!   fed as raw datagrams again, now against a connected transport.
//! - bits 2-4 of the mode: the hash of the fingerprint the peer signalled (sha-256, sha-1,
//!   sha-224, sha-384, sha-512), which the worker checks the peer's certificate with.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fanout_worker::media::dtls::{DtlsIdentity, DtlsSession, FingerprintAlgorithm};
use fanout_worker::media::ice::binding_request;
use fanout_worker::media::transport::{Output, WebRtcTransport};
use fanout_worker::room::{DtlsParameters, DtlsRole};
use libfuzzer_sys::fuzz_target;

const UFRAG: &str = "fuzzufrag";
const PASSWORD: &str = "fuzz-password-0123456789";

fn identities() -> &'static (DtlsIdentity, DtlsIdentity) {
    static IDENTITIES: OnceLock<(DtlsIdentity, DtlsIdentity)> = OnceLock::new();
    IDENTITIES.get_or_init(|| {
        let generate = || DtlsIdentity::generate(rtc::crypto::default_provider().expect("ring")).expect("certificate");
        (generate(), generate())
    })
}

/// The peer's ICE check, built once: its HMAC does not depend on the input.
fn ice_check() -> &'static [u8] {
    static CHECK: OnceLock<Vec<u8>> = OnceLock::new();
    CHECK.get_or_init(|| {
        let provider = rtc::crypto::default_provider().expect("ring");
        binding_request(UFRAG, "browser", PASSWORD, true, provider.crypto())
    })
}

/// Reads the input front to back; an exhausted reader yields nothing.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    /// A length-prefixed chunk (cut short when the input ends first).
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u16()?).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(chunk)
    }
}

/// What happens to the real peer's next datagram.
enum Op {
    Deliver,
    Drop,
    /// XOR the byte at this position (modulo the length) with a value.
    Corrupt { at: u16, with: u8 },
    Truncate { to: u16 },
    /// The fuzzer's bytes instead of the datagram.
    Replace,
    /// The datagram, then the fuzzer's bytes.
    Append,
    /// The datagram goes out twice (a retransmission, or a replay).
    Duplicate,
    /// The clock moves on (timers fire) and the datagram waits for the next op.
    Advance { ms: u16 },
}

impl Op {
    fn read(input: &mut Input) -> Option<Op> {
        Some(match input.byte()? % 8 {
            0 => Op::Deliver,
            1 => Op::Drop,
            2 => Op::Corrupt { at: input.u16()?, with: input.byte()? | 1 },
            3 => Op::Truncate { to: input.u16()? },
            4 => Op::Replace,
            5 => Op::Append,
            6 => Op::Duplicate,
            _ => Op::Advance { ms: input.u16()? },
        })
    }
}

struct Call {
    worker: WebRtcTransport,
    peer: Option<DtlsSession>,
    /// Datagrams the peer has sent that the worker has not been handed yet.
    from_peer: VecDeque<Vec<u8>>,
    now: Instant,
}

impl Call {
    fn peer_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    fn to_worker(&mut self, datagram: &[u8]) {
        self.worker.handle_datagram(Self::peer_addr(), datagram, self.now);
    }

    fn advance(&mut self, ms: u16) {
        self.now += Duration::from_millis(u64::from(ms));
        self.worker.handle_timeout(self.now);
        if let Some(peer) = self.peer.as_mut() {
            if peer.poll_timeout().is_some_and(|at| at <= self.now) {
                let _ = peer.handle_timeout(self.now);
            }
        }
    }

    /// Hands the worker's DTLS output to the real peer and collects the peer's answers.
    fn exchange(&mut self) {
        while let Some(output) = self.worker.poll_output() {
            if let (Output::Transmit { data, .. }, Some(peer)) = (output, self.peer.as_mut()) {
                if (20..=63).contains(&data[0]) {
                    let _ = peer.handle_datagram(&data, self.now);
                }
            }
        }
        if let Some(peer) = self.peer.as_mut() {
            while let Some(datagram) = peer.poll_transmit() {
                self.from_peer.push_back(datagram);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    let (worker_identity, peer_identity) = identities();
    let worker_role = if mode & 1 == 0 { DtlsRole::Server } else { DtlsRole::Client };
    let peer_role = if worker_role == DtlsRole::Server { DtlsRole::Client } else { DtlsRole::Server };
    let real_peer = mode & 2 != 0;

    let mut call = Call {
        worker: WebRtcTransport::new(UFRAG, PASSWORD, worker_identity.clone()),
        peer: None,
        from_peer: VecDeque::new(),
        now: Instant::now(),
    };
    call.to_worker(ice_check());
    let algorithm = [
        FingerprintAlgorithm::Sha256,
        FingerprintAlgorithm::Sha1,
        FingerprintAlgorithm::Sha224,
        FingerprintAlgorithm::Sha384,
        FingerprintAlgorithm::Sha512,
    ][usize::from(mode >> 2 & 7) % 5];
    let peer_params = DtlsParameters { role: peer_role, fingerprints: vec![peer_identity.fingerprint_with(algorithm)] };
    call.worker.connect(&peer_params, worker_role, call.now).expect("the peer's fingerprint is usable");

    let mut clean = true;
    if real_peer {
        let worker_params = DtlsParameters { role: worker_role, fingerprints: worker_identity.fingerprints() };
        call.peer = Some(DtlsSession::new(peer_identity, &worker_params, peer_role, call.now).expect("peer session"));
        call.exchange();
        // A handshake is a handful of flights; the bound keeps a run of Advance ops finite.
        for _ in 0..64 {
            let Some(datagram) = call.from_peer.pop_front() else { break };
            let op = Op::read(&mut input).unwrap_or(Op::Deliver);
            clean &= matches!(op, Op::Deliver);
            match op {
                Op::Deliver => call.to_worker(&datagram),
                Op::Drop => {}
                Op::Corrupt { at, with } => {
                    let mut corrupted = datagram;
                    let at = usize::from(at) % corrupted.len().max(1);
                    if let Some(byte) = corrupted.get_mut(at) {
                        *byte ^= with;
                    }
                    call.to_worker(&corrupted);
                }
                Op::Truncate { to } => call.to_worker(&datagram[..usize::from(to).min(datagram.len())]),
                Op::Replace => {
                    let replacement = input.chunk().unwrap_or_default();
                    call.to_worker(replacement);
                }
                Op::Append => {
                    call.to_worker(&datagram);
                    let extra = input.chunk().unwrap_or_default();
                    call.to_worker(extra);
                }
                Op::Duplicate => {
                    call.to_worker(&datagram);
                    call.to_worker(&datagram);
                }
                Op::Advance { ms } => {
                    call.from_peer.push_front(datagram);
                    call.advance(ms);
                }
            }
            call.exchange();
        }
        if clean {
            assert!(call.worker.is_connected(), "an untouched handshake with a real peer connects");
        }
    }

    // The fuzzer as the peer: raw datagrams (after a real handshake: against a connected
    // transport, where DTLS records are application data, alerts or renegotiation).
    while let Some(datagram) = input.chunk() {
        call.to_worker(datagram);
        while call.worker.poll_output().is_some() {}
    }
    call.advance(1000);
    while call.worker.poll_output().is_some() {}
});
