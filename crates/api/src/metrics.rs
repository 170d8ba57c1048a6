//! Prometheus metrics (SPEC 8), registered once and shared.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug)]
pub struct Metrics {
    /// Attempts by the delivery state they led to.
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub attempt_duration_seconds: Histogram,
    /// From an event's commit to its delivery's first attempt.
    pub first_attempt_latency_seconds: Histogram,
    pub pending_deliveries: Gauge,
    pub registry: Registry,
    pub samples_ingested: Counter,
    pub samples_duplicate: Counter,
    pub ingest_requests_rejected: Counter,
    /// Ingest requests answered 503 because the store was not keeping up.
    pub ingest_overloaded: Counter,
    pub events_emitted: Family<EventLabels, Counter>,
    pub group_commit_seconds: Histogram,
    pub group_commit_requests: Histogram,
    /// How late the last emitted window was, past its due time, in seconds.
    pub window_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub open_windows: Gauge,
    pub open_meeting_instances: Gauge,
    /// PostgreSQL: aggregation partitions this node holds, and nodes alive (0 on SQLite).
    pub partitions_held: Gauge,
    pub live_nodes: Gauge,
    /// Requests answered 429, by rate-limit category.
    pub rate_limited: Family<CategoryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("qss");
        let latency = || {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        };
        let m = Metrics {
            deliveries: Family::default(),
            attempt_duration_seconds: latency(),
            first_attempt_latency_seconds: latency(),
            pending_deliveries: Gauge::default(),
            samples_ingested: Counter::default(),
            samples_duplicate: Counter::default(),
            ingest_requests_rejected: Counter::default(),
            ingest_overloaded: Counter::default(),
            events_emitted: Family::default(),
            group_commit_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
            group_commit_requests: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            window_lag_seconds: Gauge::default(),
            open_windows: Gauge::default(),
            open_meeting_instances: Gauge::default(),
            partitions_held: Gauge::default(),
            live_nodes: Gauge::default(),
            rate_limited: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "samples_ingested",
            "Samples durably stored",
            m.samples_ingested.clone(),
        );
        registry.register(
            "samples_duplicate",
            "Samples dropped as duplicates",
            m.samples_duplicate.clone(),
        );
        registry.register(
            "ingest_requests_rejected",
            "Ingest requests rejected by validation",
            m.ingest_requests_rejected.clone(),
        );
        registry.register(
            "ingest_overloaded",
            "Ingest requests answered 503 because the store was not keeping up",
            m.ingest_overloaded.clone(),
        );
        registry.register(
            "events_emitted",
            "Events committed, by type",
            m.events_emitted.clone(),
        );
        registry.register(
            "group_commit_seconds",
            "Duration of one group commit of the aggregation thread",
            m.group_commit_seconds.clone(),
        );
        registry.register(
            "group_commit_requests",
            "Ingest requests sharing one commit",
            m.group_commit_requests.clone(),
        );
        registry.register(
            "window_lag_seconds",
            "Delay of the last emission past its due time",
            m.window_lag_seconds.clone(),
        );
        registry.register(
            "open_windows",
            "Participant windows open",
            m.open_windows.clone(),
        );
        registry.register(
            "open_meeting_instances",
            "Meeting instances whose summary is pending",
            m.open_meeting_instances.clone(),
        );
        registry.register(
            "partitions_held",
            "Aggregation partitions this node holds (PostgreSQL; 0 on SQLite)",
            m.partitions_held.clone(),
        );
        registry.register(
            "live_nodes",
            "Nodes sharing the database, by their heartbeats (PostgreSQL; 0 on SQLite)",
            m.live_nodes.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests answered 429, by rate-limit category",
            m.rate_limited.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by the state they led to",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of one webhook attempt",
            m.attempt_duration_seconds.clone(),
        );
        registry.register(
            "delivery_first_attempt_latency_seconds",
            "From an event's commit to its first delivery attempt",
            m.first_attempt_latency_seconds.clone(),
        );
        registry.register(
            "deliveries_pending",
            "Deliveries waiting for an attempt",
            m.pending_deliveries.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn rate_limited(&self, category: &str) {
        self.rate_limited
            .get_or_create(&CategoryLabels {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
