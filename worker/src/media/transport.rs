//! One WebRTC transport as a sans-IO state machine: ICE-lite, then DTLS, then SRTP.
//!
//! Input: datagrams (with their source) and time. Output: [`Output`]s to act on: datagrams to
//! send, decrypted RTP/RTCP for the router, and state changes. The engine owns the socket and
//! the clock; tests drive two ends in memory.
//!
//! Datagrams are told apart by their first byte (RFC 7983): 0-3 STUN, 20-63 DTLS, 128-191
//! RTP/RTCP (RTCP when the second byte is 192-223, RFC 5761). DTLS and SRTP are accepted only
//! from tuples that passed an ICE check, as in mediasoup. Anything else is dropped and counted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::dtls::{DtlsError, DtlsEvent, DtlsIdentity, DtlsSession, SrtpSession};
use crate::media::ice::{IceExpiry, IceLite, IceTimeouts, StunDrop};
use crate::media::sctp::{DEFAULT_MAX_MESSAGE_SIZE, SctpDrop, SctpMessage, SctpSession, StreamReliability};
use crate::room::{DtlsParameters, DtlsRole, TransportCloseCode};

/// At most this many ICE-validated source tuples are remembered per transport.
const MAX_VALID_TUPLES: usize = 8;
/// DTLS datagrams that arrive before the client's connect request are kept (at most this
/// many) and replayed once it comes.
const MAX_EARLY_DTLS: usize = 16;

/// How long DTLS may take to complete after the first valid ICE check. A browser finishes in
/// well under a second; a peer that passed ICE but never completes DTLS (no connect request,
/// no ClientHello) would otherwise hold its port for as long as it keeps consent.
pub const DTLS_SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The timers that close a transport by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportTimeouts {
    /// ICE timeout and consent timeout.
    pub ice: IceTimeouts,
    /// From the first valid ICE check to DTLS connected.
    pub dtls_setup: Duration,
}

impl Default for TransportTimeouts {
    fn default() -> Self {
        TransportTimeouts { ice: IceTimeouts::default(), dtls_setup: DTLS_SETUP_TIMEOUT }
    }
}

/// What the transport asks its owner to do, or tells it.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `data` to `to` from this transport's socket.
    Transmit { to: SocketAddr, data: Vec<u8> },
    /// A decrypted RTP packet from the peer.
    Rtp(Vec<u8>),
    /// A decrypted RTCP compound packet from the peer.
    Rtcp(Vec<u8>),
    /// A whole data channel message from the peer, over SCTP.
    Data(SctpMessage),
    /// ICE selected a tuple and DTLS completed: media can flow.
    Connected,
    /// The transport closed by itself (ICE timeout or consent lost, DTLS failed or closed):
    /// the code and a sentence for the `transportClosed` event.
    Closed { code: TransportCloseCode, reason: String },
}

/// Why a datagram was dropped. Counted per reason in the worker's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Stun(StunDrop),
    /// First byte matches no protocol (RFC 7983).
    Unknown,
    /// DTLS or SRTP from a tuple that never passed an ICE check.
    UnvalidatedTuple,
    /// SRTP/SRTCP before DTLS finished.
    NotConnected,
    /// SRTP/SRTCP that failed authentication, replay check or parsing.
    SrtpFailed,
    /// DTLS record the session refused.
    DtlsFailed,
    /// Too many early DTLS datagrams before connect.
    EarlyDtlsOverflow,
    /// A data channel message (see [`SctpDrop`]).
    Sctp(SctpDrop),
}

impl Drop {
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Stun(s) => s.as_str(),
            Drop::Unknown => "unknown_protocol",
            Drop::UnvalidatedTuple => "unvalidated_tuple",
            Drop::NotConnected => "not_connected",
            Drop::SrtpFailed => "srtp_failed",
            Drop::DtlsFailed => "dtls_failed",
            Drop::EarlyDtlsOverflow => "early_dtls_overflow",
            Drop::Sctp(reason) => reason.as_str(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Connected,
    Closed,
}

pub struct WebRtcTransport {
    ice: IceLite,
    dtls_setup_timeout: Duration,
    identity: DtlsIdentity,
    dtls: Option<DtlsSession>,
    srtp: Option<SrtpSession>,
    /// Made by the peer's first SCTP packet (see `media::sctp`).
    sctp: Option<SctpSession>,
    early_dtls: Vec<Vec<u8>>,
    valid_tuples: Vec<SocketAddr>,
    state: State,
    outputs: VecDeque<Output>,
    /// Datagrams dropped, by reason (the engine folds them into metrics).
    pub drops: Vec<Drop>,
}

impl WebRtcTransport {
    /// Created now, with the default timeouts.
    pub fn new(ufrag: impl Into<String>, password: impl Into<String>, identity: DtlsIdentity) -> Self {
        Self::with_timeouts(ufrag, password, identity, Instant::now(), TransportTimeouts::default())
    }

    /// Created at `now`, closing itself on `timeouts`.
    pub fn with_timeouts(
        ufrag: impl Into<String>,
        password: impl Into<String>,
        identity: DtlsIdentity,
        now: Instant,
        timeouts: TransportTimeouts,
    ) -> Self {
        WebRtcTransport {
            ice: IceLite::with_timeouts(ufrag, password, now, timeouts.ice),
            dtls_setup_timeout: timeouts.dtls_setup,
            identity,
            dtls: None,
            srtp: None,
            sctp: None,
            early_dtls: Vec::new(),
            valid_tuples: Vec::new(),
            state: State::New,
            outputs: VecDeque::new(),
            drops: Vec::new(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn selected_tuple(&self) -> Option<SocketAddr> {
        self.ice.selected()
    }

    /// Whether a valid ICE check came from `tuple` (an ICE-TCP connection is kept only once
    /// one has).
    pub fn is_valid_tuple(&self, tuple: SocketAddr) -> bool {
        self.valid_tuples.contains(&tuple)
    }

    /// The client's DTLS parameters arrived: set up DTLS in `local_role` and replay any DTLS
    /// that came early. When DTLS cannot be set up the transport closes (`DTLS_FAILED`).
    pub fn connect(&mut self, remote: &DtlsParameters, local_role: DtlsRole, now: Instant) -> Result<(), DtlsError> {
        let session = match DtlsSession::new(&self.identity, remote, local_role, now) {
            Ok(session) => session,
            Err(error) => {
                self.close_with(TransportCloseCode::DtlsFailed, format!("DTLS could not be set up: {error}"));
                return Err(error);
            }
        };
        self.dtls = Some(session);
        // As client we may already know where to send the ClientHello.
        self.flush_dtls();
        for datagram in std::mem::take(&mut self.early_dtls) {
            self.handle_dtls(&datagram, now);
        }
        Ok(())
    }

    pub fn restart_ice(&mut self, ufrag: impl Into<String>, password: impl Into<String>) {
        self.ice.restart(ufrag, password);
    }

    /// Feeds one datagram received from `from`.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        if self.state == State::Closed {
            return;
        }
        match data.first() {
            Some(0..=3) => self.handle_stun(from, data, now),
            Some(20..=63) => {
                if !self.valid_tuples.contains(&from) {
                    self.drops.push(Drop::UnvalidatedTuple);
                } else if self.dtls.is_none() {
                    if self.early_dtls.len() < MAX_EARLY_DTLS {
                        self.early_dtls.push(data.to_vec());
                    } else {
                        self.drops.push(Drop::EarlyDtlsOverflow);
                    }
                } else {
                    self.handle_dtls(data, now);
                }
            }
            Some(128..=191) => {
                if !self.valid_tuples.contains(&from) {
                    self.drops.push(Drop::UnvalidatedTuple);
                    return;
                }
                let Some(srtp) = self.srtp.as_mut() else {
                    self.drops.push(Drop::NotConnected);
                    return;
                };
                let is_rtcp = data.get(1).is_some_and(|pt| (192..=223).contains(pt));
                let result = if is_rtcp { srtp.inbound.decrypt_rtcp(data) } else { srtp.inbound.decrypt_rtp(data) };
                match result {
                    Ok(plain) if is_rtcp => self.outputs.push_back(Output::Rtcp(plain.to_vec())),
                    Ok(plain) => self.outputs.push_back(Output::Rtp(plain.to_vec())),
                    Err(_) => self.drops.push(Drop::SrtpFailed),
                }
            }
            _ => self.drops.push(Drop::Unknown),
        }
    }

    fn handle_stun(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let provider = self.identity.provider().clone();
        match self.ice.handle(from, data, now, provider.crypto()) {
            Ok(reply) => {
                if !self.valid_tuples.contains(&from) {
                    if self.valid_tuples.len() == MAX_VALID_TUPLES {
                        self.valid_tuples.remove(0);
                    }
                    self.valid_tuples.push(from);
                }
                self.outputs.push_back(Output::Transmit { to: from, data: reply.response });
                if reply.selected.is_some() {
                    // DTLS as client waits for a tuple to send its ClientHello to.
                    self.flush_dtls();
                }
            }
            Err(refused) => {
                if let Some(response) = refused.response {
                    self.outputs.push_back(Output::Transmit { to: from, data: response });
                }
                self.drops.push(Drop::Stun(refused.reason));
            }
        }
    }

    fn handle_dtls(&mut self, data: &[u8], now: Instant) {
        let Some(dtls) = self.dtls.as_mut() else { return };
        match dtls.handle_datagram(data, now) {
            Ok(events) => {
                for event in events {
                    match event {
                        DtlsEvent::Connected(srtp) => {
                            self.srtp = Some(*srtp);
                            self.state = State::Connected;
                            self.outputs.push_back(Output::Connected);
                        }
                        DtlsEvent::Closed => {
                            self.close_with(TransportCloseCode::DtlsClosed, TransportCloseCode::DtlsClosed.describe().to_owned())
                        }
                        DtlsEvent::Data(packet) if self.srtp.is_some() => {
                            let sctp = self.sctp.get_or_insert_with(|| SctpSession::new(DEFAULT_MAX_MESSAGE_SIZE));
                            sctp.handle_packet(packet.freeze(), now);
                        }
                        DtlsEvent::Data(_) => self.drops.push(Drop::NotConnected),
                    }
                }
            }
            Err(DtlsError::Handshake(reason)) if !dtls.is_connected() => {
                let code = if dtls.fingerprint_mismatched() {
                    TransportCloseCode::DtlsFingerprintMismatch
                } else {
                    TransportCloseCode::DtlsFailed
                };
                // The alert goes out before the transport closes, so the peer learns it too.
                self.flush_dtls();
                let reason = match code {
                    TransportCloseCode::DtlsFingerprintMismatch => code.describe().to_owned(),
                    _ => format!("the DTLS handshake failed: {reason}"),
                };
                self.close_with(code, reason);
                return;
            }
            Err(_) => self.drops.push(Drop::DtlsFailed),
        }
        self.flush_sctp(now);
        self.flush_dtls();
    }

    /// Moves SCTP's messages to the outputs and its packets into DTLS records.
    fn flush_sctp(&mut self, now: Instant) {
        let (Some(sctp), Some(dtls)) = (self.sctp.as_mut(), self.dtls.as_mut()) else { return };
        while let Some(message) = sctp.poll_message() {
            self.outputs.push_back(Output::Data(message));
        }
        self.drops.extend(sctp.drops.drain(..).map(Drop::Sctp));
        for packet in sctp.poll_transmits(now) {
            if dtls.send(&packet, now).is_err() {
                self.drops.push(Drop::Sctp(SctpDrop::Refused));
            }
        }
    }

    /// Queues a data channel message on outgoing SCTP stream `stream_id` (a DataConsumer's),
    /// opened with `reliability` the first time. Says why when it is dropped instead: no
    /// association yet, too large, the stream's send buffer full.
    pub fn send_data(
        &mut self,
        stream_id: u16,
        ppid: u32,
        payload: &bytes::Bytes,
        reliability: StreamReliability,
        now: Instant,
    ) -> Result<(), SctpDrop> {
        let sctp = self.sctp.as_mut().ok_or(SctpDrop::NotConnected)?;
        sctp.send(stream_id, ppid, payload, reliability, now)?;
        self.flush_sctp(now);
        self.flush_dtls();
        Ok(())
    }

    /// Resets outgoing SCTP stream `stream_id`, which closes the peer's data channel on it
    /// (its DataConsumer or DataProducer closed).
    pub fn close_data_stream(&mut self, stream_id: u16, now: Instant) {
        if let Some(sctp) = self.sctp.as_mut() {
            sctp.close_stream(stream_id, now);
            self.flush_sctp(now);
            self.flush_dtls();
        }
    }

    /// Moves DTLS output to the selected tuple (held back until ICE selected one).
    fn flush_dtls(&mut self) {
        let (Some(dtls), Some(to)) = (self.dtls.as_mut(), self.ice.selected()) else { return };
        while let Some(data) = dtls.poll_transmit() {
            self.outputs.push_back(Output::Transmit { to, data });
        }
    }

    /// Drives timers: ICE timeout and consent, DTLS setup and retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        match self.ice.expired(now) {
            Some(IceExpiry::Timeout) => {
                let code = TransportCloseCode::IceTimeout;
                return self.close_with(code, code.describe().to_owned());
            }
            Some(IceExpiry::ConsentLost) => {
                let code = TransportCloseCode::IceConsentLost;
                return self.close_with(code, code.describe().to_owned());
            }
            None => {}
        }
        if self.dtls_setup_deadline().is_some_and(|at| at <= now) {
            let reason = match self.dtls {
                Some(_) => format!("the DTLS handshake did not complete within {} s of ICE connecting", self.dtls_setup_timeout.as_secs()),
                None => format!(
                    "ICE connected but no DTLS parameters (connect-transport) came within {} s",
                    self.dtls_setup_timeout.as_secs()
                ),
            };
            return self.close_with(TransportCloseCode::DtlsFailed, reason);
        }
        if let Some(dtls) = self.dtls.as_mut()
            && dtls.poll_timeout().is_some_and(|at| at <= now)
        {
            if let Err(e) = dtls.handle_timeout(now)
                && !dtls.is_connected()
            {
                return self.close_with(TransportCloseCode::DtlsFailed, format!("the DTLS handshake failed: {e}"));
            }
            self.flush_dtls();
        }
        if let Some(sctp) = self.sctp.as_mut()
            && sctp.poll_timeout().is_some_and(|at| at <= now)
        {
            sctp.handle_timeout(now);
            self.flush_sctp(now);
            self.flush_dtls();
        }
    }

    /// When DTLS must be up by, once ICE has connected (`None` when it is up, or ICE is not).
    fn dtls_setup_deadline(&self) -> Option<Instant> {
        if self.srtp.is_some() {
            return None;
        }
        self.ice.first_check()?.checked_add(self.dtls_setup_timeout)
    }

    /// The next instant [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.dtls.as_ref().and_then(|d| d.poll_timeout()),
            self.ice.consent_deadline(),
            self.dtls_setup_deadline(),
            self.sctp.as_ref().and_then(|s| s.poll_timeout()),
        ]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Encrypts an RTP packet and queues it for the selected tuple. False when not connected
    /// (the packet is dropped: a consumer's transport that is not up yet receives nothing).
    pub fn send_rtp(&mut self, packet: &[u8]) -> bool {
        self.send(packet, false)
    }

    /// Encrypts an RTCP compound packet and queues it for the selected tuple.
    pub fn send_rtcp(&mut self, packet: &[u8]) -> bool {
        self.send(packet, true)
    }

    /// The forwarding hot path: encrypts an RTP packet in `buffer` (which then holds the SRTP
    /// packet) and says where to send it, without queueing. `None` when not connected.
    pub fn seal_rtp(&mut self, buffer: &mut Vec<u8>) -> Option<SocketAddr> {
        let (Some(srtp), Some(to)) = (self.srtp.as_mut(), self.ice.selected()) else { return None };
        srtp.seal_rtp(buffer).then_some(to)
    }

    fn send(&mut self, packet: &[u8], rtcp: bool) -> bool {
        let (Some(srtp), Some(to)) = (self.srtp.as_mut(), self.ice.selected()) else { return false };
        if !rtcp {
            let mut data = packet.to_vec();
            if !srtp.seal_rtp(&mut data) {
                return false;
            }
            self.outputs.push_back(Output::Transmit { to, data });
            return true;
        }
        match srtp.outbound.encrypt_rtcp(packet) {
            Ok(data) => {
                self.outputs.push_back(Output::Transmit { to, data: data.to_vec() });
                true
            }
            Err(_) => false,
        }
    }

    /// Closes the transport (sending close_notify when DTLS is up).
    pub fn close(&mut self, now: Instant) {
        if let Some(dtls) = self.dtls.as_mut() {
            dtls.close(now);
            self.flush_dtls();
        }
        self.state = State::Closed;
    }

    fn close_with(&mut self, code: TransportCloseCode, reason: String) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.outputs.push_back(Output::Closed { code, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ice::binding_request;
    use crate::room::DtlsFingerprint;
    use std::time::Duration;

    const UFRAG: &str = "srvufrag";
    const PWD: &str = "server-password-0123456789";

    fn provider() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    fn browser_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50_000))
    }

    /// The browser's side: ICE checks and a DTLS client, as mediasoup-client drives Chrome.
    struct Browser {
        identity: DtlsIdentity,
        dtls: Option<DtlsSession>,
        srtp: Option<SrtpSession>,
    }

    impl Browser {
        fn new() -> Self {
            Browser { identity: DtlsIdentity::generate(provider()).unwrap(), dtls: None, srtp: None }
        }

        fn params(&self) -> DtlsParameters {
            DtlsParameters { role: DtlsRole::Client, fingerprints: self.identity.fingerprints() }
        }

        fn check(&self, nominate: bool) -> Vec<u8> {
            binding_request(UFRAG, "browser", PWD, nominate, provider().crypto())
        }
    }

    /// Runs datagrams both ways until neither side has anything to say.
    fn pump(server: &mut WebRtcTransport, browser: &mut Browser, now: Instant) -> Vec<Output> {
        let mut other = Vec::new();
        for _ in 0..50 {
            let mut progressed = false;
            while let Some(out) = server.poll_output() {
                progressed = true;
                match out {
                    Output::Transmit { to, data } => {
                        assert_eq!(to, browser_addr());
                        if (20..=63).contains(&data[0])
                            && let Some(dtls) = browser.dtls.as_mut()
                        {
                            for ev in dtls.handle_datagram(&data, now).unwrap_or_default() {
                                if let DtlsEvent::Connected(s) = ev {
                                    browser.srtp = Some(*s);
                                }
                            }
                        }
                    }
                    other_output => other.push(other_output),
                }
            }
            if let Some(dtls) = browser.dtls.as_mut() {
                while let Some(data) = dtls.poll_transmit() {
                    progressed = true;
                    server.handle_datagram(browser_addr(), &data, now);
                }
            }
            if !progressed {
                break;
            }
        }
        other
    }

    fn connected_pair() -> (WebRtcTransport, Browser, Instant) {
        connected_pair_with(crate::media::dtls::SUPPORTED_SRTP_PROFILES.to_vec())
    }

    fn connected_pair_with(
        browser_profiles: Vec<rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile>,
    ) -> (WebRtcTransport, Browser, Instant) {
        let server_identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let mut browser = Browser::new();
        let now = Instant::now();
        server.handle_datagram(browser_addr(), &browser.check(true), now);
        server.connect(&browser.params(), DtlsRole::Server, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Auto, fingerprints: server_identity.fingerprints() };
        let mut client = DtlsSession::with_profiles(&browser.identity, &server_params, DtlsRole::Client, now, browser_profiles).unwrap();
        while let Some(hello) = client.poll_transmit() {
            server.handle_datagram(browser_addr(), &hello, now);
        }
        browser.dtls = Some(client);
        let events = pump(&mut server, &mut browser, now);
        assert!(events.contains(&Output::Connected), "server connected: {events:?}");
        assert!(browser.srtp.is_some(), "browser got SRTP keys");
        (server, browser, now)
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ice_dtls_and_srtp_carry_media_both_ways() {
        let (mut server, mut browser, now) = connected_pair();
        assert!(server.is_connected());
        assert_eq!(server.selected_tuple(), Some(browser_addr()));

        // Browser -> worker: decrypted on arrival.
        let sent = rtp(1, b"camera frame");
        let sealed = browser.srtp.as_mut().unwrap().outbound.encrypt_rtp(&sent).unwrap();
        server.handle_datagram(browser_addr(), &sealed, now);
        assert_eq!(server.poll_output(), Some(Output::Rtp(sent)));

        // Worker -> browser: encrypted to the selected tuple.
        let forwarded = rtp(7, b"someone else's frame");
        assert!(server.send_rtp(&forwarded));
        let Some(Output::Transmit { to, data }) = server.poll_output() else { panic!("nothing sent") };
        assert_eq!(to, browser_addr());
        assert_ne!(data, forwarded, "encrypted on the wire");
        let opened = browser.srtp.as_mut().unwrap().inbound.decrypt_rtp(&data).unwrap();
        assert_eq!(opened.to_vec(), forwarded);
    }

    #[test]
    fn gcm_is_negotiated_when_both_offer_it() {
        let (server, _browser, _) = connected_pair();
        assert!(matches!(server.srtp.as_ref().unwrap().profile, rtc::srtp::protection_profile::ProtectionProfile::AeadAes128Gcm));
    }

    #[test]
    fn aes_cm_hmac_sha1_80_carries_media_when_the_peer_offers_only_it() {
        use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
        let (mut server, mut browser, now) = connected_pair_with(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]);
        assert!(matches!(
            server.srtp.as_ref().unwrap().profile,
            rtc::srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80
        ));
        let sent = rtp(3, b"cm protected");
        let sealed = browser.srtp.as_mut().unwrap().outbound.encrypt_rtp(&sent).unwrap();
        server.handle_datagram(browser_addr(), &sealed, now);
        assert_eq!(server.poll_output(), Some(Output::Rtp(sent)));
        assert!(server.send_rtp(&rtp(4, b"back")));
        let Some(Output::Transmit { data, .. }) = server.poll_output() else { panic!("nothing sent") };
        assert_eq!(browser.srtp.as_mut().unwrap().inbound.decrypt_rtp(&data).unwrap().to_vec(), rtp(4, b"back"));
    }

    #[test]
    fn rtcp_is_told_apart_from_rtp_and_decrypted() {
        let (mut server, mut browser, now) = connected_pair();
        // A minimal RTCP receiver report: V=2, RC=0, PT=201, length=1, SSRC.
        let rr = vec![0x80, 201, 0, 1, 0, 0, 0, 42];
        let sealed = browser.srtp.as_mut().unwrap().outbound.encrypt_rtcp(&rr).unwrap();
        server.handle_datagram(browser_addr(), &sealed, now);
        assert_eq!(server.poll_output(), Some(Output::Rtcp(rr)));
    }

    #[test]
    fn tampered_srtp_and_replays_are_dropped_and_counted() {
        let (mut server, mut browser, now) = connected_pair();
        let sealed = browser.srtp.as_mut().unwrap().outbound.encrypt_rtp(&rtp(5, b"payload")).unwrap().to_vec();
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        server.handle_datagram(browser_addr(), &tampered, now);
        assert_eq!(server.poll_output(), None);
        assert_eq!(server.drops.last(), Some(&Drop::SrtpFailed));
        server.handle_datagram(browser_addr(), &sealed, now);
        assert!(matches!(server.poll_output(), Some(Output::Rtp(_))));
        server.handle_datagram(browser_addr(), &sealed, now);
        assert_eq!(server.poll_output(), None, "a replayed packet is dropped");
    }

    #[test]
    fn media_from_a_tuple_that_never_passed_ice_is_dropped() {
        let (mut server, mut browser, now) = connected_pair();
        let sealed = browser.srtp.as_mut().unwrap().outbound.encrypt_rtp(&rtp(9, b"x")).unwrap();
        server.handle_datagram(SocketAddr::from(([127, 0, 0, 1], 40_404)), &sealed, now);
        assert_eq!(server.poll_output(), None);
        assert_eq!(server.drops.last(), Some(&Drop::UnvalidatedTuple));
    }

    #[test]
    fn random_datagrams_never_panic_and_are_counted() {
        let identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, identity);
        let now = Instant::now();
        let mut seed = 0x1234_5678u32;
        for len in 0..400usize {
            let data: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            server.handle_datagram(browser_addr(), &data, now);
        }
        assert!(!server.drops.is_empty());
        assert!(!server.is_connected());
    }

    #[test]
    fn a_peer_certificate_not_matching_the_signalled_fingerprint_fails_the_handshake() {
        let server_identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let mut browser = Browser::new();
        let now = Instant::now();
        server.handle_datagram(browser_addr(), &browser.check(true), now);
        let impostor = DtlsParameters {
            role: DtlsRole::Client,
            fingerprints: vec![DtlsFingerprint { algorithm: "sha-256".into(), value: ["AB"; 32].join(":") }],
        };
        server.connect(&impostor, DtlsRole::Server, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Auto, fingerprints: server_identity.fingerprints() };
        let mut client = DtlsSession::new(&browser.identity, &server_params, DtlsRole::Client, now).unwrap();
        while let Some(hello) = client.poll_transmit() {
            server.handle_datagram(browser_addr(), &hello, now);
        }
        browser.dtls = Some(client);
        let events = pump(&mut server, &mut browser, now);
        assert!(
            events.contains(&Output::Closed {
                code: TransportCloseCode::DtlsFingerprintMismatch,
                reason: TransportCloseCode::DtlsFingerprintMismatch.describe().to_owned()
            }),
            "{events:?}"
        );
        assert!(!server.is_connected());
        assert!(!server.send_rtp(&rtp(1, b"x")), "nothing is sent on a failed transport");
    }

    /// Like [`connected_pair`], with the browser signalling only this hash of its certificate.
    fn connect_signalling(algorithm: crate::media::dtls::FingerprintAlgorithm) -> Vec<Output> {
        let server_identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let mut browser = Browser::new();
        let now = Instant::now();
        server.handle_datagram(browser_addr(), &browser.check(true), now);
        let signalled = DtlsParameters { role: DtlsRole::Client, fingerprints: vec![browser.identity.fingerprint_with(algorithm)] };
        server.connect(&signalled, DtlsRole::Server, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Auto, fingerprints: server_identity.fingerprints() };
        let mut client = DtlsSession::new(&browser.identity, &server_params, DtlsRole::Client, now).unwrap();
        while let Some(hello) = client.poll_transmit() {
            server.handle_datagram(browser_addr(), &hello, now);
        }
        browser.dtls = Some(client);
        pump(&mut server, &mut browser, now)
    }

    #[test]
    fn a_peer_signalling_any_hash_mediasoup_accepts_connects() {
        use crate::media::dtls::FingerprintAlgorithm::*;
        for algorithm in [Sha1, Sha224, Sha256, Sha384, Sha512] {
            let events = connect_signalling(algorithm);
            assert!(events.contains(&Output::Connected), "{algorithm:?}: {events:?}");
        }
    }

    #[test]
    fn a_peer_with_several_hashes_is_checked_against_the_strongest() {
        let server_identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let mut browser = Browser::new();
        let now = Instant::now();
        server.handle_datagram(browser_addr(), &browser.check(true), now);
        // The right sha-256, and a sha-512 of another certificate: the sha-512 decides.
        let other = DtlsIdentity::generate(provider()).unwrap();
        use crate::media::dtls::FingerprintAlgorithm::{Sha256, Sha512};
        let signalled = DtlsParameters {
            role: DtlsRole::Client,
            fingerprints: vec![browser.identity.fingerprint_with(Sha256), other.fingerprint_with(Sha512)],
        };
        server.connect(&signalled, DtlsRole::Server, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Auto, fingerprints: server_identity.fingerprints() };
        let mut client = DtlsSession::new(&browser.identity, &server_params, DtlsRole::Client, now).unwrap();
        while let Some(hello) = client.poll_transmit() {
            server.handle_datagram(browser_addr(), &hello, now);
        }
        browser.dtls = Some(client);
        let events = pump(&mut server, &mut browser, now);
        assert!(
            events.iter().any(|e| matches!(e, Output::Closed { code: TransportCloseCode::DtlsFingerprintMismatch, .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_transport_that_never_gets_a_check_times_out() {
        let identity = DtlsIdentity::generate(provider()).unwrap();
        let now = Instant::now();
        let timeouts = TransportTimeouts { ice: IceTimeouts { setup: Duration::from_secs(5), ..IceTimeouts::default() }, ..TransportTimeouts::default() };
        let mut server = WebRtcTransport::with_timeouts(UFRAG, PWD, identity, now, timeouts);
        assert_eq!(server.poll_timeout(), Some(now + Duration::from_secs(5)));
        // Garbage and checks with the wrong password do not count.
        server.handle_datagram(browser_addr(), &[0, 1, 0, 0], now);
        server.handle_datagram(browser_addr(), &binding_request(UFRAG, "b", "wrong-password-xxxxxxxxx", true, provider().crypto()), now);
        server.handle_timeout(now + Duration::from_secs(4));
        assert!(!server.is_closed());
        server.handle_timeout(now + Duration::from_secs(5));
        let closed = std::iter::from_fn(|| server.poll_output()).find(|o| matches!(o, Output::Closed { .. }));
        assert_eq!(
            closed,
            Some(Output::Closed { code: TransportCloseCode::IceTimeout, reason: TransportCloseCode::IceTimeout.describe().to_owned() })
        );
    }

    #[test]
    fn ice_without_dtls_is_closed_after_the_dtls_setup_timeout() {
        let identity = DtlsIdentity::generate(provider()).unwrap();
        let now = Instant::now();
        let mut server = WebRtcTransport::with_timeouts(UFRAG, PWD, identity, now, TransportTimeouts::default());
        let browser = Browser::new();
        // Checks keep consent alive, but no connect-transport ever comes.
        for second in (0..=30).step_by(5) {
            server.handle_datagram(browser_addr(), &browser.check(true), now + Duration::from_secs(second));
            server.handle_timeout(now + Duration::from_secs(second));
        }
        assert!(server.is_closed());
        let closed = std::iter::from_fn(|| server.poll_output()).find(|o| matches!(o, Output::Closed { .. }));
        assert!(
            matches!(&closed, Some(Output::Closed { code: TransportCloseCode::DtlsFailed, reason }) if reason.contains("connect-transport")),
            "{closed:?}"
        );
    }

    #[test]
    fn a_refused_check_is_answered_with_its_error_response() {
        let identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, identity);
        let now = Instant::now();
        let controlled = crate::media::ice::BindingRequest {
            controlling: None,
            controlled: Some(1),
            ..crate::media::ice::BindingRequest::browser(UFRAG, "b", PWD, true)
        };
        server.handle_datagram(browser_addr(), &controlled.build(provider().crypto()), now);
        let Some(Output::Transmit { to, data }) = server.poll_output() else { panic!("no answer") };
        assert_eq!(to, browser_addr());
        assert_eq!(
            crate::media::ice::read_binding_answer(&data, PWD, provider().crypto()),
            crate::media::ice::BindingAnswer::Error { code: 487, reason: "Role Conflict".into() }
        );
        assert_eq!(server.drops, vec![Drop::Stun(StunDrop::RoleConflict)]);
        // A refused check validates nothing: DTLS from that tuple is still dropped.
        server.handle_datagram(browser_addr(), &[22, 254, 253, 0, 0], now);
        assert_eq!(server.drops.last(), Some(&Drop::UnvalidatedTuple));
    }

    #[test]
    fn losing_ice_consent_closes_the_transport() {
        let (mut server, _browser, now) = connected_pair();
        while server.poll_output().is_some() {}
        server.handle_timeout(now + Duration::from_secs(10));
        assert_eq!(server.poll_output(), None);
        server.handle_timeout(now + Duration::from_secs(31));
        assert!(matches!(server.poll_output(), Some(Output::Closed { code: TransportCloseCode::IceConsentLost, .. })));
        assert!(server.is_closed());
    }

    #[test]
    fn the_worker_can_take_the_dtls_client_role() {
        let server_identity = DtlsIdentity::generate(provider()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let mut browser = Browser::new();
        let now = Instant::now();
        // The peer says it is the DTLS server: the worker sends the ClientHello once ICE selects.
        let browser_params = DtlsParameters { role: DtlsRole::Server, fingerprints: browser.identity.fingerprints() };
        server.connect(&browser_params, DtlsRole::Client, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Client, fingerprints: server_identity.fingerprints() };
        browser.dtls = Some(DtlsSession::new(&browser.identity, &server_params, DtlsRole::Server, now).unwrap());
        server.handle_datagram(browser_addr(), &browser.check(true), now);
        let events = pump(&mut server, &mut browser, now);
        assert!(events.contains(&Output::Connected), "{events:?}");
    }
}

#[cfg(test)]
mod data_channel_tests {
    //! SCTP over the transport's DTLS, against a browser-side association over a real DTLS
    //! client session.
    use super::*;
    use crate::media::ice::binding_request;
    use crate::media::sctp::ppid;
    use bytes::Bytes;

    const UFRAG: &str = "srvufrag";
    const PWD: &str = "server-password-0123456789";

    fn browser_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50_001))
    }

    struct Browser {
        dtls: DtlsSession,
        sctp: SctpSession,
        connected: bool,
    }

    /// Moves datagrams both ways; returns what the worker's transport output besides them.
    fn pump(server: &mut WebRtcTransport, browser: &mut Browser, now: Instant) -> Vec<Output> {
        let mut other = Vec::new();
        for _ in 0..200 {
            let mut progressed = false;
            while let Some(out) = server.poll_output() {
                progressed = true;
                match out {
                    Output::Transmit { data, .. } => {
                        for event in browser.dtls.handle_datagram(&data, now).unwrap_or_default() {
                            match event {
                                DtlsEvent::Connected(_) => browser.connected = true,
                                DtlsEvent::Data(packet) => browser.sctp.handle_packet(packet.freeze(), now),
                                DtlsEvent::Closed => {}
                            }
                        }
                    }
                    output => other.push(output),
                }
            }
            if browser.connected {
                for packet in browser.sctp.poll_transmits(now) {
                    browser.dtls.send(&packet, now).unwrap();
                }
            }
            while let Some(data) = browser.dtls.poll_transmit() {
                progressed = true;
                server.handle_datagram(browser_addr(), &data, now);
            }
            if !progressed {
                break;
            }
        }
        other
    }

    fn connected() -> (WebRtcTransport, Browser, Instant) {
        let provider = rtc::crypto::default_provider().unwrap();
        let server_identity = DtlsIdentity::generate(provider.clone()).unwrap();
        let browser_identity = DtlsIdentity::generate(provider.clone()).unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, server_identity.clone());
        let now = Instant::now();
        server.handle_datagram(browser_addr(), &binding_request(UFRAG, "browser", PWD, true, provider.crypto()), now);
        let browser_params = DtlsParameters { role: DtlsRole::Client, fingerprints: browser_identity.fingerprints() };
        server.connect(&browser_params, DtlsRole::Server, now).unwrap();
        let server_params = DtlsParameters { role: DtlsRole::Auto, fingerprints: server_identity.fingerprints() };
        let dtls = DtlsSession::new(&browser_identity, &server_params, DtlsRole::Client, now).unwrap();
        let mut browser = Browser { dtls, sctp: SctpSession::client(DEFAULT_MAX_MESSAGE_SIZE, now), connected: false };
        let events = pump(&mut server, &mut browser, now);
        assert!(events.contains(&Output::Connected), "{events:?}");
        pump(&mut server, &mut browser, now);
        assert!(browser.sctp.is_connected(), "the browser's association came up over DTLS");
        (server, browser, now)
    }

    #[test]
    fn a_browsers_data_channel_messages_come_out_whole_and_in_order() {
        let (mut server, mut browser, now) = connected();
        let reliable = StreamReliability { ordered: true, ..Default::default() };
        for n in 0..20 {
            browser.sctp.send(2, ppid::STRING, &Bytes::from(format!("hello {n}")), reliable, now).unwrap();
        }
        let out = pump(&mut server, &mut browser, now);
        let messages: Vec<&SctpMessage> = out.iter().filter_map(|o| if let Output::Data(m) = o { Some(m) } else { None }).collect();
        assert_eq!(messages.len(), 20, "{out:?}");
        for (n, message) in messages.iter().enumerate() {
            assert_eq!((message.stream_id, message.ppid), (2, ppid::STRING));
            assert_eq!(message.payload, Bytes::from(format!("hello {n}")));
        }
    }

    #[test]
    fn the_worker_sends_on_a_stream_the_browser_receives_and_can_reset_it() {
        let (mut server, mut browser, now) = connected();
        let unordered = StreamReliability { ordered: false, max_retransmits: Some(0), max_packet_life_time: None };
        server.send_data(9, ppid::BINARY, &Bytes::from_static(b"\x00\x01\x02"), unordered, now).unwrap();
        pump(&mut server, &mut browser, now);
        let got = browser.sctp.poll_message().expect("the browser got the message");
        assert_eq!((got.stream_id, got.ppid, &got.payload[..]), (9, ppid::BINARY, &b"\x00\x01\x02"[..]));
        server.close_data_stream(9, now);
        pump(&mut server, &mut browser, now);
        assert!(!server.is_closed(), "a stream reset leaves the transport up");
    }

    #[test]
    fn data_before_the_association_is_refused_not_queued() {
        let provider = rtc::crypto::default_provider().unwrap();
        let mut server = WebRtcTransport::new(UFRAG, PWD, DtlsIdentity::generate(provider).unwrap());
        let sent = server.send_data(0, ppid::STRING, &Bytes::from_static(b"x"), StreamReliability::default(), Instant::now());
        assert_eq!(sent, Err(SctpDrop::NotConnected));
    }
}
