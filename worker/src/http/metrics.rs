//! `GET /metrics`: the worker's Prometheus metrics (OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Mutex;

use crate::api::WorkerStats;
use crate::engine::{EngineSnapshot, RoomMediaStats};
use crate::room::RoomId;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

/// Labels of `fanout_worker_http_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/v1/rooms/{room}/producers`), never the concrete path: room names
    /// and ids would make one series per object.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The response status code.
    pub status: String,
}

/// Labels of the per-encoding producer gauges: one series per producer encoding, gone when
/// the producer closes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EncodingLabels {
    pub room: String,
    pub producer: String,
    /// The encoding's RID, or its index when it has none.
    pub encoding: String,
}

/// The worker's metrics. Object counts are read from the control plane at scrape time, so
/// they cannot drift from the truth.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rooms: Gauge,
    peers: Gauge,
    transports: Gauge,
    producers: Gauge,
    consumers: Gauge,
    requests: Family<RequestLabels, Counter>,
    packets_received: Counter,
    bytes_received: Counter,
    packets_sent: Counter,
    bytes_sent: Counter,
    packets_forwarded: Counter,
    data_messages_forwarded: Counter,
    packets_dropped: Family<DropLabels, Counter>,
    encoding_score: Family<EncodingLabels, Gauge>,
    encoding_bitrate: Family<EncodingLabels, Gauge>,
    /// The engine snapshot last exported: counters advance by the difference.
    last: Mutex<EngineSnapshot>,
}

impl Metrics {
    /// All metrics registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fanout_worker");
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let rooms = gauge(
            &mut registry,
            "rooms",
            "Rooms (routers) open on this worker",
        );
        let peers = gauge(&mut registry, "peers", "Peers joined across all rooms");
        let transports = gauge(&mut registry, "transports", "Open WebRTC transports");
        let producers = gauge(&mut registry, "producers", "Open producers");
        let consumers = gauge(&mut registry, "consumers", "Open consumers");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "REST requests by route, method and response status",
            requests.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let packets_received = counter(&mut registry, "packets_received", "UDP datagrams received by the media engine");
        let bytes_received = counter(&mut registry, "bytes_received", "Bytes received by the media engine");
        let packets_sent = counter(&mut registry, "packets_sent", "UDP datagrams sent by the media engine");
        let bytes_sent = counter(&mut registry, "bytes_sent", "Bytes sent by the media engine");
        let packets_forwarded = counter(&mut registry, "packets_forwarded", "RTP copies routed from producers to consumers");
        let data_messages_forwarded =
            counter(&mut registry, "data_messages_forwarded", "Data channel message copies sent from DataProducers to DataConsumers");
        let packets_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "packets_dropped",
            "Datagrams dropped by the media engine, by reason (bad STUN, failed SRTP, unknown protocol...)",
            packets_dropped.clone(),
        );
        let encoding_score = Family::<EncodingLabels, Gauge>::default();
        registry.register(
            "producer_encoding_score",
            "Score (0-10, as mediasoup computes it) of what arrives of each producer encoding",
            encoding_score.clone(),
        );
        let encoding_bitrate = Family::<EncodingLabels, Gauge>::default();
        registry.register(
            "producer_encoding_bitrate_bps",
            "Bits per second received of each producer encoding, over the last second",
            encoding_bitrate.clone(),
        );
        Metrics {
            encoding_score,
            encoding_bitrate,
            packets_received,
            bytes_received,
            packets_sent,
            bytes_sent,
            packets_forwarded,
            data_messages_forwarded,
            packets_dropped,
            last: Mutex::new(EngineSnapshot::default()),
            registry,
            rooms,
            peers,
            transports,
            producers,
            consumers,
            requests,
        }
    }

    /// Counts one answered request.
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The exposition text, with the object gauges set from `stats` and the per-encoding
    /// gauges from `media` (each room's figures).
    pub fn render(&self, stats: &WorkerStats, engine: &EngineSnapshot, media: &[(RoomId, RoomMediaStats)]) -> String {
        // Only the encodings open now: closed producers' series go.
        self.encoding_score.clear();
        self.encoding_bitrate.clear();
        for (room, figures) in media {
            for producer in &figures.producers {
                for encoding in &producer.encodings {
                    let labels = EncodingLabels {
                        room: room.to_string(),
                        producer: producer.producer_id.to_string(),
                        encoding: encoding.rid.clone().unwrap_or_else(|| encoding.encoding_idx.to_string()),
                    };
                    self.encoding_score.get_or_create(&labels).set(i64::from(encoding.score));
                    self.encoding_bitrate.get_or_create(&labels).set(i64::try_from(encoding.bitrate).unwrap_or(i64::MAX));
                }
            }
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            self.packets_received.inc_by(engine.packets_received.saturating_sub(last.packets_received));
            self.bytes_received.inc_by(engine.bytes_received.saturating_sub(last.bytes_received));
            self.packets_sent.inc_by(engine.packets_sent.saturating_sub(last.packets_sent));
            self.bytes_sent.inc_by(engine.bytes_sent.saturating_sub(last.bytes_sent));
            self.packets_forwarded.inc_by(engine.packets_forwarded.saturating_sub(last.packets_forwarded));
            self.data_messages_forwarded.inc_by(engine.data_messages_forwarded.saturating_sub(last.data_messages_forwarded));
            for (reason, count) in &engine.drops_by_reason {
                let before = last.drops_by_reason.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
                self.packets_dropped.get_or_create(&DropLabels { reason: reason.to_string() }).inc_by(count.saturating_sub(before));
            }
            *last = engine.clone();
        }
        self.rooms.set(i64::from(stats.rooms));
        self.peers.set(i64::from(stats.peers));
        self.transports.set(i64::from(stats.transports));
        self.producers.set(i64::from(stats.producers));
        self.consumers.set(i64::from(stats.consumers));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
