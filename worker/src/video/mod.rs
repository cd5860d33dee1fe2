//! Adaptive video: the layers of simulcast and SVC producers, and which of them each consumer
//! gets (see `worker/docs/adaptive-video.md` for what is decided where, and why).
//!
//! - [`layers`]: spatial/temporal layers and the layer choice ([`layers::choose_layers`]),
//!   a pure function of the app's preference, the allocator's cap and what the producer sends.
//! - [`allocation`]: the allocator's caps ([`allocation::allocate`]), a pure function of a
//!   recv transport's available bitrate and its consumers' priorities, preferences and layer
//!   bitrates.
//! - [`descriptor`]: what VP8 and VP9 payload descriptors say about a packet's layers, read
//!   once per packet; the in-place rewrite of VP8 picture numbers.
//! - [`dependency`]: the dependency descriptor extension, where H264's temporal layers are.
//! - [`numbering`]: the gap-closing renumbering of VP8 picture ids and `TL0PICIDX`.
//! - [`selector`]: per consumer, packet by packet: forward, skip or drop, switching layers
//!   only where the decoder can follow.
//! - [`stats`]: per producer stream, its layers' bitrates and mediasoup's 0-10 score.

pub mod allocation;
#[cfg(feature = "media")]
pub mod dependency;
#[cfg(feature = "media")]
pub mod descriptor;
pub mod layers;
#[cfg(feature = "media")]
pub mod numbering;
#[cfg(feature = "media")]
pub mod selector;
#[cfg(feature = "media")]
pub mod stats;

#[cfg(all(test, feature = "media"))]
mod adaptation_tests;

pub use allocation::{Demand, allocate};
pub use layers::{Cap, LayerChoice, Layers, ScalabilityMode, SpatialLayer, choose_layers};
