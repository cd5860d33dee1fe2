//! Prometheus metrics of the signalling server, served at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{code}`: why a connection was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The refusal's stable code.
    pub code: String,
}

/// `{event, outcome}`: a request event and `ok` or its error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The request event.
    pub event: String,
    /// `ok`, or the error code.
    pub outcome: String,
}

/// `{event}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventNameLabels {
    /// The request event.
    pub event: String,
}

/// Every metric of the process; shared by the Socket.IO handlers and the HTTP routes.
pub struct Metrics {
    registry: Registry,
    /// Connected, authenticated sockets.
    pub connections: Gauge,
    /// Connections refused by the auth middleware, by code.
    pub refused: Family<RefusalLabels, Counter>,
    /// Successful room joins.
    pub joins: Counter,
    /// Request events handled, by event and outcome.
    pub events: Family<EventLabels, Counter>,
    /// Time from a request's arrival to its answer, by event; dominated by the worker call,
    /// so it is the proxy latency to workers.
    pub request_seconds: Family<EventNameLabels, Histogram>,
    /// Connections closed because their client stopped reading (a full outgoing queue).
    pub slow_clients: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fanout_signalling");
        let connections = Gauge::default();
        let refused = Family::<RefusalLabels, Counter>::default();
        let joins = Counter::default();
        let slow_clients = Counter::default();
        let events = Family::<EventLabels, Counter>::default();
        let request_seconds = Family::<EventNameLabels, Histogram>::new_with_constructor(
            request_histogram as fn() -> Histogram,
        );
        registry.register(
            "connections",
            "Connected, authenticated sockets",
            connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at authentication, by code",
            refused.clone(),
        );
        registry.register("joins", "Successful room joins", joins.clone());
        registry.register(
            "events",
            "Request events handled, by event and outcome",
            events.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request event (worker call included), by event",
            request_seconds.clone(),
        );
        registry.register(
            "slow_clients_closed",
            "Connections closed because their client did not read what the server sent",
            slow_clients.clone(),
        );
        Metrics {
            registry,
            slow_clients,
            connections,
            refused,
            joins,
            events,
            request_seconds,
        }
    }
}

fn request_histogram() -> Histogram {
    // 0.25 ms to ~4 s: loopback joins take well under a millisecond, a struggling worker seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Metrics {
    /// Counts a handled request and its latency.
    pub fn observe(&self, event: &str, outcome: &str, elapsed: Duration) {
        self.events
            .get_or_create(&EventLabels {
                event: event.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&EventNameLabels {
                event: event.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_events_show_up_by_event_and_outcome() {
        let metrics = Metrics::default();
        metrics.observe("produce", "ok", Duration::from_millis(2));
        metrics.observe("produce", "PUBLISH_NOT_ALLOWED", Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains(r#"fanout_signalling_events_total{event="produce",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("fanout_signalling_request_duration_seconds_count{event=\"produce\"} 2"),
            "{text}"
        );
    }
}
