//! SRTP sealing for the forwarding path: AEAD_AES_128_GCM (RFC 7714) applied to an RTP packet
//! in its own buffer.
//!
//! The `rtc` crate's SRTP context parses each packet into an owned header (allocating for its
//! extensions) and returns a new buffer, which is several allocations and a copy per forwarded
//! copy. GCM needs neither: the header is the additional data, the payload is encrypted where
//! it lies and the tag is appended. Session keys come from the master key and salt with the
//! AES-CM PRF (RFC 3711 section 4.3.3), as the `rtc` context derives them, and a unit test
//! checks the two produce the same bytes. Other profiles keep using the `rtc` context.

use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};
use rustc_hash::FxHashMap;

use crate::media::rtp_packet::RtpView;

const TAG_LEN: usize = 16;
const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_SALT: u8 = 0x02;

/// Seals outgoing RTP with AEAD_AES_128_GCM. One per transport direction; keeps the rollover
/// counter of each SSRC it sends.
pub struct GcmRtpSealer {
    cipher: Box<dyn AeadCipher>,
    session_salt: [u8; 12],
    /// Per SSRC: the highest sequence number sent and its rollover counter. Looked up for
    /// every copy, so with a cheap hash (SSRCs are not chosen by an attacker here: the worker
    /// assigns its consumers' own).
    streams: FxHashMap<u32, (u16, u32)>,
}

/// Why a sealer could not be made or a packet sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("SRTP key material has the wrong length")]
    KeyLength,
    #[error("SRTP crypto: {0}")]
    Crypto(String),
    #[error("not an RTP packet")]
    NotRtp,
}

/// The AES-CM PRF of RFC 3711 section 4.3.3 with index DIV kdr = 0: `out_len` bytes of the
/// session key or salt labelled `label`.
fn derive(crypto: &dyn RTCCrypto, label: u8, master_key: &[u8; 16], master_salt: &[u8], out_len: usize) -> Result<Vec<u8>, SrtpError> {
    let mut input = [0u8; 16];
    input[..master_salt.len()].copy_from_slice(master_salt);
    input[7] ^= label;
    let mut out = Vec::with_capacity(out_len + 16);
    for counter in 0u16.. {
        if out.len() >= out_len {
            break;
        }
        let mut block = input;
        block[14..].copy_from_slice(&counter.to_be_bytes());
        crypto.block_encrypt(BlockCipherAlgorithm::Aes128, master_key, &mut block).map_err(|e| SrtpError::Crypto(e.to_string()))?;
        out.extend_from_slice(&block);
    }
    out.truncate(out_len);
    Ok(out)
}

impl GcmRtpSealer {
    /// From the DTLS-exported master key (16 bytes) and salt (12 bytes) of our direction.
    pub fn new(crypto: &dyn RTCCrypto, master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let master_key: &[u8; 16] = master_key.try_into().map_err(|_| SrtpError::KeyLength)?;
        if master_salt.len() != 12 {
            return Err(SrtpError::KeyLength);
        }
        let key = derive(crypto, LABEL_SRTP_ENCRYPTION, master_key, master_salt, 16)?;
        let salt = derive(crypto, LABEL_SRTP_SALT, master_key, master_salt, 12)?;
        let cipher = crypto.new_aead(AeadAlgorithm::Aes128Gcm, &key).map_err(|e| SrtpError::Crypto(e.to_string()))?;
        let mut session_salt = [0u8; 12];
        session_salt.copy_from_slice(&salt);
        Ok(GcmRtpSealer { cipher, session_salt, streams: FxHashMap::default() })
    }

    /// The rollover counter for sending `seq` on `ssrc`, advancing it when the sequence
    /// wraps (RFC 3711 section 3.3.1: the sender knows its own index).
    fn rollover(&mut self, ssrc: u32, seq: u16) -> u32 {
        let (highest, roc) = self.streams.entry(ssrc).or_insert((seq, 0));
        let ahead = seq.wrapping_sub(*highest);
        if ahead == 0 {
            *roc
        } else if ahead < 0x8000 {
            // Newer: past 65535 it wrapped.
            if seq < *highest {
                *roc = roc.wrapping_add(1);
            }
            *highest = seq;
            *roc
        } else if seq > *highest {
            // Older, from before the last wrap (a retransmission).
            roc.wrapping_sub(1)
        } else {
            *roc
        }
    }

    /// Encrypts the RTP packet in `packet` in place and appends the tag.
    pub fn seal(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let view = RtpView::parse(packet).ok_or(SrtpError::NotRtp)?;
        let (ssrc, seq) = (RtpView::ssrc(packet), RtpView::sequence(packet));
        // RFC 7714 section 8.1: everything after the header (padding included) is encrypted.
        let header_len = view.header_len();
        let roc = self.rollover(ssrc, seq);
        let mut nonce = [0u8; 12];
        nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
        nonce[6..10].copy_from_slice(&roc.to_be_bytes());
        nonce[10..12].copy_from_slice(&seq.to_be_bytes());
        for (n, s) in nonce.iter_mut().zip(self.session_salt) {
            *n ^= s;
        }
        let mut tag = [0u8; TAG_LEN];
        let (aad, payload) = packet.split_at_mut(header_len);
        self.cipher.seal_in_place(&nonce, aad, payload, &mut tag).map_err(|e| SrtpError::Crypto(e.to_string()))?;
        packet.extend_from_slice(&tag);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const KEY: [u8; 16] = [0x0e, 0x7f, 0x22, 0x53, 0x91, 0xa4, 0x11, 0x08, 0xd7, 0x3c, 0x65, 0x2a, 0x9f, 0x40, 0x71, 0xbb];
    const SALT: [u8; 12] = [0x51, 0x02, 0xe3, 0x34, 0x95, 0x06, 0x17, 0xc8, 0x09, 0x4a, 0x3b, 0x1c];

    fn crypto() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    fn context() -> Context {
        Context::new(&KEY, &SALT, ProtectionProfile::AeadAes128Gcm, None, None, crypto().crypto()).unwrap()
    }

    fn rtp(seq: u16, ssrc: u32, extensions: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![if extensions { 0x90 } else { 0x80 }, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        if extensions {
            p.extend_from_slice(&[0xBE, 0xDE, 0, 2, 0x90, b'1', 0x22, 1, 2, 3, 0, 0]);
        }
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn sealing_in_place_gives_the_same_bytes_as_the_rtc_context() {
        let provider = crypto();
        let mut sealer = GcmRtpSealer::new(provider.crypto(), &KEY, &SALT).unwrap();
        let mut reference = context();
        for (seq, extensions) in [(1u16, false), (2, true), (3, true)] {
            let plain = rtp(seq, 0xCAFE, extensions, &[7u8; 300]);
            let expected = reference.encrypt_rtp(&plain).unwrap();
            let mut in_place = plain.clone();
            sealer.seal(&mut in_place).unwrap();
            assert_eq!(in_place, expected.to_vec(), "seq {seq}");
        }
    }

    #[test]
    fn the_receiver_opens_every_packet_across_a_sequence_wrap() {
        let provider = crypto();
        let mut sealer = GcmRtpSealer::new(provider.crypto(), &KEY, &SALT).unwrap();
        let mut receiver = context();
        for seq in (65530u16..=65535).chain(0..6) {
            let plain = rtp(seq, 0xBEEF, true, b"payload");
            let mut sealed = plain.clone();
            sealer.seal(&mut sealed).unwrap();
            assert_eq!(receiver.decrypt_rtp(&sealed).unwrap().to_vec(), plain, "seq {seq}");
        }
        assert_eq!(sealer.streams[&0xBEEF], (5, 1));
    }

    #[test]
    fn rollover_counts_wraps_and_places_late_packets_before_them() {
        let provider = crypto();
        let mut sealer = GcmRtpSealer::new(provider.crypto(), &KEY, &SALT).unwrap();
        assert_eq!(sealer.rollover(1, 65000), 0);
        assert_eq!(sealer.rollover(1, 10), 1);
        assert_eq!(sealer.rollover(1, 65500), 0, "a retransmission from before the wrap");
        assert_eq!(sealer.rollover(1, 20), 1);
        assert_eq!(sealer.rollover(2, 5), 0, "each SSRC has its own counter");
    }

    #[test]
    fn bad_keys_and_non_rtp_are_refused() {
        let provider = crypto();
        assert!(GcmRtpSealer::new(provider.crypto(), &KEY[..15], &SALT).is_err());
        assert!(GcmRtpSealer::new(provider.crypto(), &KEY, &SALT[..11]).is_err());
        let mut sealer = GcmRtpSealer::new(provider.crypto(), &KEY, &SALT).unwrap();
        assert_eq!(sealer.seal(&mut vec![0x80, 96, 0]), Err(SrtpError::NotRtp));
    }
}
