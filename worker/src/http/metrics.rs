//! `GET /metrics`: the worker's Prometheus metrics (OpenMetrics text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::WorkerStats;

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
        Metrics {
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

    /// The exposition text, with the object gauges set from `stats`.
    pub fn render(&self, stats: &WorkerStats) -> String {
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
