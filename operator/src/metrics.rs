//! Prometheus metrics of the operator, served at `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
}

pub struct Metrics {
    pub registry: Mutex<Registry>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub scheduling_decisions: Family<OutcomeLabels, Counter>,
    /// Seconds from a scheduling attempt's start to its status being written.
    pub scheduling_latency: Histogram,
    pub rooms_per_worker: Family<PodLabels, Gauge>,
    pub is_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fanout_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let scheduling_decisions = Family::<OutcomeLabels, Counter>::default();
        let scheduling_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let rooms_per_worker = Family::<PodLabels, Gauge>::default();
        let is_leader = Gauge::default();
        registry.register("reconciles", "Reconcile passes, by controller", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconcile passes, by controller and error", reconcile_errors.clone());
        registry.register(
            "scheduling_decisions",
            "Room scheduling attempts, by outcome (scheduled, rescheduled, unschedulable)",
            scheduling_decisions.clone(),
        );
        registry.register("scheduling_latency_seconds", "Time to place a room, status write included", scheduling_latency.clone());
        registry.register("rooms_per_worker", "Rooms placed on each worker pod", rooms_per_worker.clone());
        registry.register("leader", "1 while this replica holds the leader lease", is_leader.clone());
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            reconcile_errors,
            scheduling_decisions,
            scheduling_latency,
            rooms_per_worker,
            is_leader,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}
