//! Congestion control, sans-IO: how much each transport can carry, measured from feedback,
//! and feedback for the browsers that send to us.
//!
//! Towards publishers ([`feedback`], [`remb`]): transport-wide feedback every 100 ms for what
//! arrives on a send transport, so the browser's own estimator (GoogCC) can work; REMB from a
//! receive-side estimate for publishers that negotiated only that.
//!
//! Towards subscribers: each forwarded copy on a recv transport gets the next transport-wide
//! sequence number and its send time goes into the transport's [`history::SendHistory`]; the
//! browser's feedback, joined with it, drives a [`send_side::SendSideBwe`] (GoogCC's
//! delay-based trendline estimator, AIMD rate control, the loss-based cap, probes). See
//! `worker/docs/adaptive-video.md` for the design and what was taken from where.
//!
//! Time: every input carries its instant (our clock) or microseconds on a stated clock;
//! nothing here reads a clock, sleeps or touches a socket, and the tests run on simulated
//! time ([`sim`]).

pub mod acked;
pub mod aimd;
pub mod delay;
pub mod feedback;
pub mod history;
pub mod inter_arrival;
pub mod loss;
pub mod probe;
pub mod remb;
pub mod send_side;
#[cfg(test)]
mod sim;
pub mod trendline;

pub use feedback::TransportCcFeedback;
pub use history::SendHistory;
pub use remb::RembEstimator;
pub use send_side::{EstimateStats, PacketResult, SendSideBwe};
