//! DTLS on the webrtc-rs `rtc` crate, and the SRTP keys it yields.
//!
//! One [`DtlsSession`] per transport, created when the client sends its DTLS parameters. The
//! worker takes the DTLS server role against mediasoup-client (which says `client`), and the
//! client role when the peer says `server`. The peer's certificate must match a fingerprint it
//! signalled, or the handshake fails with a `bad_certificate` alert. Fingerprints may use any
//! hash mediasoup accepts (sha-1, sha-224, sha-256, sha-384, sha-512: aiortc signals only
//! sha-512); as RFC 8122 section 5 says, the certificate is checked against those of the
//! strongest hash the peer used ([`expected_fingerprints`]).
//!
//! The crate's endpoint keys connections by remote address and starts a new server handshake
//! for any unknown one, so the session feeds it one fixed key ([`CONNECTION_KEY`]) and the
//! transport sends its output to whatever tuple ICE has selected: an ICE tuple change never
//! restarts DTLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use rtc::crypto::RTCCryptoProvider;
use sha1::Digest;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::srtp::config::{Config as SrtpConfig, LABEL_EXTRACTOR_DTLS_SRTP};
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::media::srtp::GcmRtpSealer;
use crate::room::{DtlsFingerprint, DtlsParameters, DtlsRole};

/// The fixed address the DTLS endpoint knows the peer by (see the module docs).
const CONNECTION_KEY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9)), 9);

/// The SRTP profiles the worker accepts. GCM first: ~4x cheaper per packet than CM+HMAC;
/// the client's order decides, and browsers offer GCM first.
pub const SUPPORTED_SRTP_PROFILES: [SrtpProtectionProfile; 2] =
    [SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80];

/// Why DTLS could not be set up or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    #[error("could not create the worker's DTLS certificate: {0}")]
    Certificate(String),
    #[error("the peer signalled no fingerprint in a supported hash (sha-1, sha-224, sha-256, sha-384 or sha-512)")]
    NoUsableFingerprint,
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    #[error("could not derive SRTP keys: {0}")]
    Srtp(String),
}

/// The worker's certificate, shared by all its transports (as mediasoup does per worker).
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: Certificate,
    fingerprint: String,
    provider: Arc<dyn RTCCryptoProvider>,
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate.
    pub fn generate(provider: Arc<dyn RTCCryptoProvider>) -> Result<Self, DtlsError> {
        let certificate = Certificate::generate_self_signed(vec!["fanout".to_string()], provider.crypto())
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let der = certificate.certificate.first().ok_or_else(|| DtlsError::Certificate("no certificate".into()))?;
        let fingerprint = FingerprintAlgorithm::Sha256.fingerprint(der.as_ref());
        Ok(DtlsIdentity { certificate, fingerprint, provider })
    }

    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }

    /// As it goes into a transport's `dtlsParameters.fingerprints`.
    pub fn fingerprints(&self) -> Vec<DtlsFingerprint> {
        vec![DtlsFingerprint { algorithm: "sha-256".into(), value: self.fingerprint.clone() }]
    }

    /// The certificate's fingerprint in another hash (test clients signal these as other
    /// implementations do: aiortc sends only sha-512).
    pub fn fingerprint_with(&self, algorithm: FingerprintAlgorithm) -> DtlsFingerprint {
        let der = self.certificate.certificate.first().map(|der| der.as_ref()).unwrap_or_default();
        DtlsFingerprint { algorithm: algorithm.name().into(), value: algorithm.fingerprint(der) }
    }
}

/// A hash a certificate fingerprint is made with, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FingerprintAlgorithm {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl FingerprintAlgorithm {
    /// The algorithm for its SDP name (`sha-256`, any case); `None` for others (`md5`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ("sha-1", FingerprintAlgorithm::Sha1),
            ("sha-224", FingerprintAlgorithm::Sha224),
            ("sha-256", FingerprintAlgorithm::Sha256),
            ("sha-384", FingerprintAlgorithm::Sha384),
            ("sha-512", FingerprintAlgorithm::Sha512),
        ]
        .into_iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known))
        .map(|(_, algorithm)| algorithm)
    }

    /// The SDP name (`sha-256`).
    pub fn name(self) -> &'static str {
        match self {
            FingerprintAlgorithm::Sha1 => "sha-1",
            FingerprintAlgorithm::Sha224 => "sha-224",
            FingerprintAlgorithm::Sha256 => "sha-256",
            FingerprintAlgorithm::Sha384 => "sha-384",
            FingerprintAlgorithm::Sha512 => "sha-512",
        }
    }

    /// `AB:CD:...` (uppercase hex pairs) of this hash of `der`.
    pub fn fingerprint(self, der: &[u8]) -> String {
        let digest = match self {
            FingerprintAlgorithm::Sha1 => sha1::Sha1::digest(der).to_vec(),
            FingerprintAlgorithm::Sha224 => sha2::Sha224::digest(der).to_vec(),
            FingerprintAlgorithm::Sha256 => sha2::Sha256::digest(der).to_vec(),
            FingerprintAlgorithm::Sha384 => sha2::Sha384::digest(der).to_vec(),
            FingerprintAlgorithm::Sha512 => sha2::Sha512::digest(der).to_vec(),
        };
        digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }
}

/// What the peer's certificate is checked against (RFC 8122 section 5): the fingerprints of
/// the strongest supported hash among those it signalled, values in uppercase. `None` when it
/// signalled none in a supported hash.
pub fn expected_fingerprints(remote: &DtlsParameters) -> Option<(FingerprintAlgorithm, Vec<String>)> {
    let signalled: Vec<(FingerprintAlgorithm, &str)> = remote
        .fingerprints
        .iter()
        .filter_map(|f| FingerprintAlgorithm::from_name(&f.algorithm).map(|algorithm| (algorithm, f.value.as_str())))
        .collect();
    let strongest = signalled.iter().map(|(algorithm, _)| *algorithm).max()?;
    let values =
        signalled.iter().filter(|(algorithm, _)| *algorithm == strongest).map(|(_, value)| value.to_ascii_uppercase()).collect();
    Some((strongest, values))
}

/// SRTP contexts for both directions of one transport.
pub struct SrtpSession {
    pub profile: ProtectionProfile,
    /// Decrypts what the peer sends (with replay protection).
    pub inbound: Context,
    /// Encrypts what we send.
    pub outbound: Context,
    /// Encrypts the RTP we send in place, for AEAD_AES_128_GCM (the forwarding path); with
    /// another profile, RTP goes through `outbound`. Only one of them sees a given SSRC's RTP,
    /// so each keeps its rollover counters right.
    pub rtp_sealer: Option<GcmRtpSealer>,
}

impl SrtpSession {
    /// Encrypts an RTP packet in `packet`, replacing it with the SRTP packet.
    pub fn seal_rtp(&mut self, packet: &mut Vec<u8>) -> bool {
        match self.rtp_sealer.as_mut() {
            Some(sealer) => sealer.seal(packet).is_ok(),
            None => match self.outbound.encrypt_rtp(packet) {
                Ok(sealed) => {
                    packet.clear();
                    packet.extend_from_slice(&sealed);
                    true
                }
                Err(_) => false,
            },
        }
    }
}

/// Something the DTLS session reports.
pub enum DtlsEvent {
    /// Handshake done, peer certificate verified: SRTP may flow.
    Connected(Box<SrtpSession>),
    /// The peer sent close_notify.
    Closed,
    /// An application data record: an SCTP packet (RFC 8261).
    Data(BytesMut),
}

/// The DTLS state of one transport.
pub struct DtlsSession {
    endpoint: Endpoint,
    role: DtlsRole,
    connected: bool,
    identity: DtlsIdentity,
    /// Set by the certificate check when the peer's certificate matched no fingerprint, so a
    /// failed handshake can say that is why.
    fingerprint_mismatch: Arc<AtomicBool>,
}

impl DtlsSession {
    /// Prepares DTLS in `local_role` (server or client) toward a peer that must present a
    /// certificate matching `remote`'s fingerprints ([`expected_fingerprints`]).
    pub fn new(identity: &DtlsIdentity, remote: &DtlsParameters, local_role: DtlsRole, now: Instant) -> Result<Self, DtlsError> {
        Self::with_profiles(identity, remote, local_role, now, SUPPORTED_SRTP_PROFILES.to_vec())
    }

    /// Like [`DtlsSession::new`], offering only `profiles` (tests and load clients use it to
    /// check each profile end to end).
    pub fn with_profiles(
        identity: &DtlsIdentity,
        remote: &DtlsParameters,
        local_role: DtlsRole,
        now: Instant,
        profiles: Vec<SrtpProtectionProfile>,
    ) -> Result<Self, DtlsError> {
        let (algorithm, expected) = expected_fingerprints(remote).ok_or(DtlsError::NoUsableFingerprint)?;
        let fingerprint_mismatch = Arc::new(AtomicBool::new(false));
        let mismatch = fingerprint_mismatch.clone();
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
            let matched = certs.first().is_some_and(|der| expected.contains(&algorithm.fingerprint(der)));
            if matched {
                Ok(())
            } else {
                mismatch.store(true, Ordering::Relaxed);
                Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
            }
        });
        let is_client = local_role == DtlsRole::Client;
        let config = ConfigBuilder::default()
            .with_crypto_provider(identity.provider.clone())
            .with_certificates(vec![identity.certificate.clone()])
            .with_srtp_protection_profiles(profiles)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(is_client, None)
            .map_err(|e| DtlsError::Handshake(e.to_string()))?;
        let config = Arc::new(config);
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint = if is_client {
            let mut ep = Endpoint::new(local, TransportProtocol::UDP, None);
            ep.connect(now, CONNECTION_KEY, config, None).map_err(|e| DtlsError::Handshake(e.to_string()))?;
            ep
        } else {
            Endpoint::new(local, TransportProtocol::UDP, Some(config))
        };
        Ok(DtlsSession { endpoint, role: local_role, connected: false, identity: identity.clone(), fingerprint_mismatch })
    }

    /// True once the peer presented a certificate that matched none of its fingerprints.
    pub fn fingerprint_mismatched(&self) -> bool {
        self.fingerprint_mismatch.load(Ordering::Relaxed)
    }

    pub fn role(&self) -> DtlsRole {
        self.role
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Feeds one DTLS datagram (first byte 20-63).
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) -> Result<Vec<DtlsEvent>, DtlsError> {
        let events = self
            .endpoint
            .read(now, CONNECTION_KEY, None, BytesMut::from(data))
            .map_err(|e| DtlsError::Handshake(e.to_string()))?;
        let mut out = Vec::new();
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => {
                    self.connected = true;
                    out.push(DtlsEvent::Connected(Box::new(self.srtp_session()?)));
                }
                EndpointEvent::PeerClosed => out.push(DtlsEvent::Closed),
                EndpointEvent::ApplicationData(data) => out.push(DtlsEvent::Data(data)),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Sends `data` in an application data record (queued for [`Self::poll_transmit`]).
    pub fn send(&mut self, data: &[u8], now: Instant) -> Result<(), DtlsError> {
        self.endpoint.write(now, CONNECTION_KEY, data).map_err(|e| DtlsError::Handshake(e.to_string()))
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.endpoint.poll_transmit().map(|t| t.message.to_vec())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout(&CONNECTION_KEY)
    }

    /// Retransmits a flight when its timer ran out; an error means the handshake gave up.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        self.endpoint.handle_timeout(CONNECTION_KEY, now).map_err(|e| DtlsError::Handshake(e.to_string()))
    }

    /// Queues close_notify.
    pub fn close(&mut self, now: Instant) {
        let _ = self.endpoint.stop(now, CONNECTION_KEY);
    }

    fn srtp_session(&self) -> Result<SrtpSession, DtlsError> {
        let state = self
            .endpoint
            .get_connection_state(CONNECTION_KEY)
            .ok_or_else(|| DtlsError::Srtp("no DTLS state after the handshake".into()))?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            other => return Err(DtlsError::Srtp(format!("unsupported SRTP profile {other:?}"))),
        };
        let mut config = SrtpConfig { profile, ..Default::default() };
        let material = state
            .export_keying_material(LABEL_EXTRACTOR_DTLS_SRTP, &[], config.keying_material_len())
            .map_err(|e| DtlsError::Srtp(e.to_string()))?;
        config
            .set_session_keys_from_keying_material(material.as_ref(), state.is_client())
            .map_err(|e| DtlsError::Srtp(e.to_string()))?;
        let crypto = self.identity.provider.crypto();
        let keys = &config.keys;
        let outbound = Context::new(&keys.local_master_key, &keys.local_master_salt, profile, None, None, crypto)
            .map_err(|e| DtlsError::Srtp(e.to_string()))?;
        let inbound = Context::new(
            &keys.remote_master_key,
            &keys.remote_master_salt,
            profile,
            Some(srtp_replay_protection(256)),
            Some(srtcp_replay_protection(256)),
            crypto,
        )
        .map_err(|e| DtlsError::Srtp(e.to_string()))?;
        let rtp_sealer = match profile {
            ProtectionProfile::AeadAes128Gcm => Some(
                GcmRtpSealer::new(crypto, &keys.local_master_key, &keys.local_master_salt).map_err(|e| DtlsError::Srtp(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(SrtpSession { profile, inbound, outbound, rtp_sealer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(algorithm: &str, value: &str) -> DtlsFingerprint {
        DtlsFingerprint { algorithm: algorithm.into(), value: value.into() }
    }

    fn remote(fingerprints: Vec<DtlsFingerprint>) -> DtlsParameters {
        DtlsParameters { role: DtlsRole::Client, fingerprints }
    }

    #[test]
    fn digests_match_the_published_test_vectors() {
        // FIPS 180 "abc" vectors, first and last bytes.
        let abc = b"abc";
        assert!(FingerprintAlgorithm::Sha1.fingerprint(abc).starts_with("A9:99:3E"));
        assert!(FingerprintAlgorithm::Sha224.fingerprint(abc).starts_with("23:09:7D"));
        assert!(FingerprintAlgorithm::Sha256.fingerprint(abc).starts_with("BA:78:16"));
        assert!(FingerprintAlgorithm::Sha384.fingerprint(abc).starts_with("CB:00:75"));
        assert!(FingerprintAlgorithm::Sha512.fingerprint(abc).ends_with("A5:4C:A4:9F"));
        for (algorithm, bytes) in [
            (FingerprintAlgorithm::Sha1, 20),
            (FingerprintAlgorithm::Sha224, 28),
            (FingerprintAlgorithm::Sha256, 32),
            (FingerprintAlgorithm::Sha384, 48),
            (FingerprintAlgorithm::Sha512, 64),
        ] {
            assert_eq!(algorithm.fingerprint(abc).split(':').count(), bytes, "{algorithm:?}");
            assert_eq!(FingerprintAlgorithm::from_name(&algorithm.name().to_uppercase()), Some(algorithm));
        }
        assert_eq!(FingerprintAlgorithm::from_name("md5"), None);
    }

    #[test]
    fn the_strongest_signalled_hash_is_the_one_checked() {
        let picked = expected_fingerprints(&remote(vec![
            fingerprint("sha-256", "aa"),
            fingerprint("sha-512", "bb"),
            fingerprint("SHA-384", "cc"),
            fingerprint("sha-512", "dd"),
        ]));
        assert_eq!(picked, Some((FingerprintAlgorithm::Sha512, vec!["BB".to_owned(), "DD".to_owned()])));
        let only_sha1 = expected_fingerprints(&remote(vec![fingerprint("md5", "x"), fingerprint("sha-1", "ab:cd")]));
        assert_eq!(only_sha1, Some((FingerprintAlgorithm::Sha1, vec!["AB:CD".to_owned()])));
        assert_eq!(expected_fingerprints(&remote(vec![fingerprint("md5", "x")])), None);
        assert_eq!(expected_fingerprints(&remote(Vec::new())), None);
    }

    #[test]
    fn an_identity_gives_its_fingerprint_in_every_hash() {
        let identity = DtlsIdentity::generate(rtc::crypto::default_provider().unwrap()).unwrap();
        assert_eq!(identity.fingerprint_with(FingerprintAlgorithm::Sha256), identity.fingerprints()[0]);
        assert_eq!(identity.fingerprint_with(FingerprintAlgorithm::Sha512).value.split(':').count(), 64);
    }
}
