//! DTLS on the webrtc-rs `rtc` crate, and the SRTP keys it yields.
//!
//! One [`DtlsSession`] per transport, created when the client sends its DTLS parameters. The
//! worker takes the DTLS server role against mediasoup-client (which says `client`), and the
//! client role when the peer says `server`. The peer's certificate must match a fingerprint it
//! signalled, or the handshake fails with a `bad_certificate` alert.
//!
//! The crate's endpoint keys connections by remote address and starts a new server handshake
//! for any unknown one, so the session feeds it one fixed key ([`CONNECTION_KEY`]) and the
//! transport sends its output to whatever tuple ICE has selected: an ICE tuple change never
//! restarts DTLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
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

/// The SRTP profiles the worker accepts. GCM first: ~4x cheaper per packet than CM+HMAC
/// (DESIGN.md section 7); the client's order decides, and browsers offer GCM first.
pub const SUPPORTED_SRTP_PROFILES: [SrtpProtectionProfile; 2] =
    [SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80];

/// Why DTLS could not be set up or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    #[error("could not create the worker's DTLS certificate: {0}")]
    Certificate(String),
    #[error("the peer signalled no sha-256 fingerprint")]
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
        let fingerprint = sha256_fingerprint(provider.as_ref(), der.as_ref()).map_err(DtlsError::Certificate)?;
        Ok(DtlsIdentity { certificate, fingerprint, provider })
    }

    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }

    /// As it goes into a transport's `dtlsParameters.fingerprints`.
    pub fn fingerprints(&self) -> Vec<DtlsFingerprint> {
        vec![DtlsFingerprint { algorithm: "sha-256".into(), value: self.fingerprint.clone() }]
    }
}

/// `AB:CD:...` of the SHA-256 of `der`.
pub fn sha256_fingerprint(provider: &dyn RTCCryptoProvider, der: &[u8]) -> Result<String, String> {
    let digest = provider.crypto().hash(HashAlgorithm::Sha256, der).map_err(|e| e.to_string())?;
    Ok(digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
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
}

/// The DTLS state of one transport.
pub struct DtlsSession {
    endpoint: Endpoint,
    role: DtlsRole,
    connected: bool,
    identity: DtlsIdentity,
}

impl DtlsSession {
    /// Prepares DTLS in `local_role` (server or client) toward a peer that must present a
    /// certificate matching `remote`'s sha-256 fingerprint.
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
        let expected: Vec<String> = remote
            .fingerprints
            .iter()
            .filter(|f| f.algorithm.eq_ignore_ascii_case("sha-256"))
            .map(|f| f.value.to_ascii_uppercase())
            .collect();
        if expected.is_empty() {
            return Err(DtlsError::NoUsableFingerprint);
        }
        let provider = identity.provider.clone();
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _| {
            let der = certs.first().ok_or(rtc::shared::error::Error::ErrNonCertificate)?;
            let got = sha256_fingerprint(provider.as_ref(), der).map_err(rtc::shared::error::Error::Other)?;
            if expected.contains(&got) {
                Ok(())
            } else {
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
        Ok(DtlsSession { endpoint, role: local_role, connected: false, identity: identity.clone() })
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
                _ => {}
            }
        }
        Ok(out)
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
