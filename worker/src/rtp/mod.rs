//! RTP capabilities and parameters as `mediasoup-client` speaks them, and the ORTC rules that
//! turn a producer's parameters into what each consumer receives.
//!
//! This is a Rust rendering of mediasoup v3's `ortc.ts`. Everything here
//! is pure: no I/O, no clocks, no randomness. Where mediasoup draws a random SSRC the caller
//! passes one in, so the same inputs always give the same outputs.
//!
//! The flow, in mediasoup's terms:
//!
//! 1. [`router_capabilities`] builds a room's router capabilities from its media codecs
//!    (usually [`default_media_codecs`]); the client loads its `Device` with them.
//! 2. When a peer produces, [`validate_rtp_parameters`] and [`producer_mapping`] check its
//!    `rtpParameters` against the router and map its payload types and SSRCs onto the router's.
//! 3. [`consumable_parameters`] describes that producer in router terms, once per producer.
//! 4. For each consumer, [`can_consume`] answers whether the consuming device can decode it and
//!    [`consumer_parameters`] builds the `rtpParameters` the consumer is created with.
//!
//! Errors carry a stable [`RtpError::code`] that the REST layer puts in its error body.

mod capabilities;
mod codec;
mod error;
mod h264;
mod ortc;
mod parameters;
mod validation;

pub use capabilities::{default_media_codecs, router_capabilities, supported_capabilities};
pub use error::RtpError;
pub use ortc::{
    CodecMapping, ConsumerOptions, EncodingMapping, RtpMapping, can_consume, consumable_parameters,
    consumer_parameters, producer_mapping,
};
pub use parameters::{
    MediaKind, ParameterValue, Parameters, PayloadType, RtcpFeedback, RtcpParameters,
    RtpCapabilities, RtpCodecCapability, RtpCodecParameters, RtpEncodingParameters,
    RtpHeaderExtension, RtpHeaderExtensionDirection, RtpHeaderExtensionParameters, RtpParameters,
    RtxParameters, Ssrc,
};
pub use validation::validate_rtp_parameters;

/// Header extension URIs the router offers (mediasoup's `supportedRtpCapabilities`, reduced to
/// what this worker implements).
pub mod header_extension_uri {
    /// The BUNDLE `mid` of the m-section a packet belongs to.
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// The RID (RFC 8852) of the simulcast encoding a packet belongs to: how the worker finds
    /// the stream of a producer that signals RIDs instead of SSRCs.
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    /// The RID of the stream an RTX packet repairs (RFC 8852).
    pub const REPAIRED_RID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    /// Audio level of the packet (RFC 6464).
    pub const SSRC_AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// Absolute send time, used by REMB bandwidth estimation.
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    /// Transmission time offset (RFC 5450).
    pub const TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";
    /// Coordination of video orientation (3GPP TS 26.114).
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    /// Transport-wide sequence numbers for transport-cc feedback (draft-holmer-rmcat-
    /// transport-wide-cc-extensions-01).
    pub const TRANSPORT_WIDE_CC: &str =
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    /// The frame's layers and dependencies (the AV1 RTP spec's dependency descriptor), which
    /// libwebrtc sends for codecs whose payload does not carry them (H264 with temporal layers).
    pub const DEPENDENCY_DESCRIPTOR: &str =
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";
}
