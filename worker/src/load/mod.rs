//! The media load instrument behind the `fanout-load` binary (README, "Performance").
//!
//! It drives a running worker through its REST API as signalling would: publishers send a
//! synthetic VP8-like video and opus-like audio stream ([`synthetic`]), and N subscribers, each
//! on its own worker transport with real ICE-lite, DTLS and SRTP over loopback, decrypt and
//! check what they receive ([`receiver`]). The worker's cost comes from its own CPU accounting
//! ([`procfs`]); in the same run a minimal relay ([`relay`]) measures what the unavoidable
//! work costs on this machine, and the worker is reported as a ratio to it ([`report`]).
//!
//! Subscribers share a few client sockets and are told apart by the worker port a datagram
//! comes from ([`client_transport`]), so the load program's own cost stays far below the
//! worker's. Over ICE-TCP ([`Transport::Tcp`]) each subscriber has its own connection to the
//! worker's TCP port, RFC 4571 framed, read as they become readable ([`tcp`]).
//!
//! What a run sends is its [`Media`]: one video stream per publisher, or three simulcast
//! encodings of which each subscriber's consumer gets one ([`SubscriberLayers`]).

pub mod client_transport;
pub mod net;
pub mod procfs;
pub mod publisher;
pub mod receiver;
pub mod reception;
pub mod relay;
pub mod report;
pub mod synthetic;
pub mod tcp;
pub mod worker_run;

use std::sync::OnceLock;
use std::time::Instant;

/// Receive buffer of the subscribers' socket: room for about 50 ms of the heaviest sweep.
pub const RECEIVE_BUFFER: usize = 64 << 20;

/// How subscribers reach the worker (and the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Transport {
    #[default]
    Udp,
    /// ICE-TCP: a connection per subscriber to the worker's TCP port (RFC 6544 passive
    /// candidate, RFC 4571 framing).
    Tcp,
}

/// Which simulcast encoding each subscriber's video consumer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SubscriberLayers {
    /// The top one, as every consumer whose downlink carries it (the app's default
    /// preference).
    #[default]
    Top,
    /// Low, mid and high in turn (subscriber i prefers encoding i mod 3), as in a room of
    /// thumbnails and a speaker view.
    Spread,
}

impl SubscriberLayers {
    /// The encoding subscriber `index` gets, of `layers`.
    pub fn layer_of(self, index: usize, layers: usize) -> usize {
        match self {
            SubscriberLayers::Top => layers.saturating_sub(1),
            SubscriberLayers::Spread => index % layers.max(1),
        }
    }
}

/// What publishers send and how subscribers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Media {
    /// Three simulcast encodings per publisher (None: one video stream).
    pub simulcast: Option<SubscriberLayers>,
    pub transport: Transport,
    /// The room is recorded while it runs (the worker needs `--recording-dir`).
    pub record: bool,
}

impl Media {
    /// Video encodings per publisher.
    pub fn encodings(&self) -> usize {
        if self.simulcast.is_some() { synthetic::SIMULCAST_LAYERS.len() } else { 1 }
    }

    /// The encoding subscriber `index` receives (0 for single-layer video).
    pub fn layer_of(&self, index: usize) -> usize {
        self.simulcast.map_or(0, |layers| layers.layer_of(index, self.encodings()))
    }

    /// Video packets per second a publisher sends, every encoding included.
    pub fn video_packets_per_second(&self) -> f64 {
        match self.simulcast {
            Some(_) => synthetic::SIMULCAST_LAYERS.iter().map(synthetic::LayerShape::packets_per_second).sum(),
            None => synthetic::SINGLE_LAYER.packets_per_second(),
        }
    }

    /// The slowest video stream's packets per second (it fills its buffers last).
    pub fn slowest_stream_packets_per_second(&self) -> f64 {
        match self.simulcast {
            Some(_) => synthetic::SIMULCAST_LAYERS.iter().map(synthetic::LayerShape::packets_per_second).fold(f64::MAX, f64::min),
            None => synthetic::SINGLE_LAYER.packets_per_second(),
        }
    }

    /// How the table names it: "UDP", "UDP, simulcast (top)", "TCP"...
    pub fn label(&self) -> String {
        let transport = match self.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        let label = match self.simulcast {
            None => transport.to_string(),
            Some(SubscriberLayers::Top) => format!("{transport}, simulcast (top layer)"),
            Some(SubscriberLayers::Spread) => format!("{transport}, simulcast (layers spread)"),
        };
        if self.record { format!("{label}, recorded") } else { label }
    }
}

/// Where a run is; the threads poll it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Setting up: publishers only keep their ICE consent, so the handshakes of subscribers
    /// joining later do not compete with forwarding to the earlier ones.
    Quiet = 3,
    /// Media flows, nothing is counted (keyframes reach new consumers, queues settle).
    Warmup = 0,
    /// Everything is counted.
    Measure = 1,
    Stop = 2,
}

impl From<u8> for Phase {
    fn from(v: u8) -> Self {
        match v {
            0 => Phase::Warmup,
            1 => Phase::Measure,
            3 => Phase::Quiet,
            _ => Phase::Stop,
        }
    }
}

/// Nanoseconds since the first call in this process: publishers stamp packets with it and
/// subscribers subtract it, in the same process, so no clock sync is involved.
pub fn epoch_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("SRTP: {0}")]
    Srtp(String),
    #[error("worker API: {0}")]
    Worker(String),
    #[error("{0} of {1} transports did not connect (ICE/DTLS): {2}")]
    Handshake(usize, usize, String),
    #[error("the {0} thread panicked")]
    Thread(String),
    #[error("cannot read the worker process's CPU or memory from /proc (pid {0})")]
    Proc(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_the_top_layer_or_the_layers_in_turn() {
        let top = Media { simulcast: Some(SubscriberLayers::Top), transport: Transport::Udp, record: false };
        assert_eq!((0..4).map(|i| top.layer_of(i)).collect::<Vec<_>>(), [2, 2, 2, 2]);
        let spread = Media { simulcast: Some(SubscriberLayers::Spread), transport: Transport::Tcp, record: false };
        assert_eq!((0..4).map(|i| spread.layer_of(i)).collect::<Vec<_>>(), [0, 1, 2, 0]);
        let single = Media::default();
        assert_eq!((single.encodings(), single.layer_of(5)), (1, 0));
        assert_eq!(single.label(), "UDP");
        assert_eq!(spread.label(), "TCP, simulcast (layers spread)");
    }

    #[test]
    fn a_simulcast_publisher_sends_its_three_encodings() {
        let single = Media::default();
        let simulcast = Media { simulcast: Some(SubscriberLayers::Top), ..Media::default() };
        assert!((single.video_packets_per_second() - 94.5).abs() < 0.01);
        assert!((simulcast.video_packets_per_second() - 157.0).abs() < 0.01);
        assert!((simulcast.slowest_stream_packets_per_second() - 31.0).abs() < 0.01);
    }
}
