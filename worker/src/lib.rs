//! Fanout's SFU worker.
//!
//! The media plane (ICE-lite, DTLS, SRTP, RTP/RTCP routing) and the REST server arrive with the
//! worker issue. What lives here already is the part other crates depend on: the REST API's
//! types ([`api`]) and a typed client for it ([`client`]), which the operator and signalling use.

pub mod api;
#[cfg(feature = "media")]
pub mod bwe;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "media")]
pub mod control;
pub mod engine;
#[cfg(feature = "media")]
pub mod http;
#[cfg(all(feature = "media", feature = "client"))]
pub mod load;
#[cfg(feature = "media")]
pub mod logging;
#[cfg(feature = "media")]
pub mod media;
#[cfg(feature = "media")]
pub mod os;
#[cfg(feature = "media")]
pub mod record;
pub mod room;
#[cfg(feature = "media")]
pub mod rtcp;
pub mod rtp;
#[cfg(feature = "media")]
pub mod server;
#[doc(hidden)]
pub mod testing;
pub mod video;

/// Defaults of the `fanout-worker` binary's flags. The operator's SfuWorker defaults use them,
/// and a test checks the Helm chart's values against them.
pub mod defaults {
    /// TCP port of the REST API and `/healthz`.
    pub const HTTP_PORT: u16 = 3000;
    /// First UDP port for WebRTC transports.
    pub const RTC_MIN_PORT: u16 = 40000;
    /// Last UDP port for WebRTC transports (inclusive).
    pub const RTC_MAX_PORT: u16 = 49999;
    /// The TCP port every transport's ICE-TCP candidate shares: one hole for firewalls that
    /// let no UDP through.
    pub const RTC_TCP_PORT: u16 = 50000;
}
