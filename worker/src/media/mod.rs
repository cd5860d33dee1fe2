//! The media engine: sockets, ICE-lite, DTLS, SRTP and forwarding.
//!
//! - [`ice`]: the ICE-lite STUN responder (sans-IO).
//! - [`dtls`]: DTLS sessions and the SRTP keys they yield.
//! - [`transport`]: one WebRTC transport as a sans-IO state machine (ICE, DTLS, SRTP).

pub mod dtls;
pub mod ice;
pub mod peer;
pub mod ports;
pub mod router;
pub mod rtp_packet;
pub mod transport;
pub mod udp;
