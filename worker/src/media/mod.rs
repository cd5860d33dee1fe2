//! The media engine: sockets, ICE-lite, DTLS, SRTP and forwarding.
//!
//! - [`ice`]: the ICE-lite STUN responder (sans-IO).
//! - [`dtls`]: DTLS sessions and the SRTP keys they yield.
//! - [`transport`]: one WebRTC transport as a sans-IO state machine (ICE, DTLS, SRTP).
//! - [`data_router`]: where data channel messages go, and each peer's message rate.
//! - [`sctp`]: SCTP over DTLS, the association data channels run on (sans-IO).
//! - [`srtp`]: in-place AEAD_AES_128_GCM sealing for forwarded RTP.
//! - [`router`]: where a packet is forwarded (sans-IO), with [`congestion`] (feedback and
//!   estimates per transport); [`udp`]: sockets and media threads;
//!   [`egress`]: how forwarded copies leave (one segmented send per transport and batch).
//! - [`ice_tcp`]: ICE-TCP's framing, send queue and ufrag lookup (sans-IO); [`tcp`]: its
//!   listener and connections.

pub mod congestion;
pub mod data_router;
pub mod dtls;
pub mod egress;
pub mod ice;
pub mod ice_tcp;
pub mod peer;
pub mod ports;
pub mod router;
pub mod rtp_packet;
pub mod sctp;
pub mod srtp;
pub mod tcp;
pub mod transport;
pub mod udp;
