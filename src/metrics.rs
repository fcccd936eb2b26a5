//! Prometheus metrics: operations by type and outcome, driver call latency, operations in
//! flight, durable store writes. Served at `/metrics` in the Prometheus text format 0.0.4, or
//! in OpenMetrics 1.0.0 when the scrape's `Accept` asks for it ([`Format::negotiate`]).

mod format;

pub use format::{encode, respond, Format};

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverLabels {
    pub service: String,
    pub call: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~100 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 22))
}

/// The Mesos scheduler client's gauges and counters (cheap to clone; clones share values).
#[derive(Clone, Debug, Default)]
pub struct MesosMetrics {
    /// 1 while subscribed to a master.
    pub connected: Gauge<i64, AtomicU64Compat>,
    pub agents: Gauge<i64, AtomicU64Compat>,
    pub agents_lost: Gauge<i64, AtomicU64Compat>,
    pub subscriptions: Counter,
    pub reconnects: Counter,
    pub heartbeats: Counter,
    pub offers_declined: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PollLabels {
    pub service: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub service: String,
    pub pool: String,
    pub zone: String,
}

/// The periodic reconciler's figures (cheap to clone; clones share values).
#[derive(Clone, Debug, Default)]
pub struct ReconcilerMetrics {
    /// Seconds between passes (the configured interval).
    pub interval_seconds: Gauge<f64, AtomicU64>,
    pub runs: Family<OutcomeLabels, Counter>,
    /// Unix seconds of the last finished pass.
    pub last_run_seconds: Gauge<i64, AtomicU64Compat>,
    pub orphans: Gauge<i64, AtomicU64Compat>,
    pub missing: Gauge<i64, AtomicU64Compat>,
    pub unresolved_intents: Gauge<i64, AtomicU64Compat>,
    pub unreachable_services: Gauge<i64, AtomicU64Compat>,
}

/// Lost and fenced nodes.
#[derive(Clone, Debug, Default)]
pub struct FencingMetrics {
    pub nodes: Family<StateLabels, Gauge<i64, AtomicU64Compat>>,
    /// Attachments released by fences (one per volume).
    pub released: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciler: ReconcilerMetrics,
    pub fencing: FencingMetrics,
    /// Capacity poller: polls by outcome, availability and free bytes per pool.
    pub capacity_polls: Family<PollLabels, Counter>,
    pub capacity_up: Family<ServiceLabels, Gauge<i64, AtomicU64Compat>>,
    pub capacity_free_bytes: Family<PoolLabels, Gauge<i64, AtomicU64Compat>>,
    pub mesos: MesosMetrics,
    pub operations: Family<OpLabels, Counter>,
    pub driver_seconds: Family<DriverLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge<i64, AtomicU64Compat>,
    pub store_writes: Counter,
}

/// The gauge's atomic type (prometheus-client's default for i64).
pub type AtomicU64Compat = std::sync::atomic::AtomicI64;

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("polly");
        let operations = Family::<OpLabels, Counter>::default();
        let driver_seconds =
            Family::<DriverLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let in_flight = Gauge::<i64, AtomicU64Compat>::default();
        let store_writes = Counter::<u64, AtomicU64>::default();
        registry.register(
            "operations",
            "Volume operations by type and outcome",
            operations.clone(),
        );
        registry.register(
            "driver_call_seconds",
            "Latency of driver calls by service and call",
            driver_seconds.clone(),
        );
        registry.register(
            "operations_in_flight",
            "Operations started and not yet finished (queue depth)",
            in_flight.clone(),
        );
        registry.register(
            "store_writes",
            "Durable (flushed) store batches",
            store_writes.clone(),
        );
        let mesos = MesosMetrics::default();
        registry.register(
            "mesos_connected",
            "1 while subscribed to a Mesos master",
            mesos.connected.clone(),
        );
        registry.register("mesos_agents", "Mesos agents known", mesos.agents.clone());
        registry.register(
            "mesos_agents_lost",
            "Mesos agents reported lost",
            mesos.agents_lost.clone(),
        );
        registry.register(
            "mesos_subscriptions",
            "SUBSCRIBED events received",
            mesos.subscriptions.clone(),
        );
        registry.register(
            "mesos_reconnects",
            "Subscription attempts that failed or ended",
            mesos.reconnects.clone(),
        );
        registry.register(
            "mesos_heartbeats",
            "HEARTBEAT events received",
            mesos.heartbeats.clone(),
        );
        registry.register(
            "mesos_offers_declined",
            "Offers declined",
            mesos.offers_declined.clone(),
        );
        let capacity_polls = Family::<PollLabels, Counter>::default();
        let capacity_up = Family::<ServiceLabels, Gauge<i64, AtomicU64Compat>>::default();
        let capacity_free_bytes = Family::<PoolLabels, Gauge<i64, AtomicU64Compat>>::default();
        registry.register(
            "capacity_polls",
            "Capacity polls by service and outcome",
            capacity_polls.clone(),
        );
        registry.register(
            "capacity_available",
            "1 while the service's last capacity poll succeeded",
            capacity_up.clone(),
        );
        registry.register(
            "capacity_free_bytes",
            "Free bytes per service, pool and zone at the last successful poll",
            capacity_free_bytes.clone(),
        );
        let reconciler = ReconcilerMetrics::default();
        registry.register(
            "reconcile_interval_seconds",
            "Seconds between periodic reconciler passes",
            reconciler.interval_seconds.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Periodic reconciler passes by outcome",
            reconciler.runs.clone(),
        );
        registry.register(
            "reconcile_last_run_timestamp_seconds",
            "Unix time of the last finished reconciler pass",
            reconciler.last_run_seconds.clone(),
        );
        registry.register(
            "reconcile_orphans",
            "Back-end volumes with no store record at the last pass",
            reconciler.orphans.clone(),
        );
        registry.register(
            "reconcile_missing",
            "Store records whose back-end volume was gone at the last pass",
            reconciler.missing.clone(),
        );
        registry.register(
            "reconcile_unresolved_intents",
            "Operation intents left unresolved by the last pass",
            reconciler.unresolved_intents.clone(),
        );
        registry.register(
            "reconcile_unreachable_services",
            "Services whose inventory could not be read at the last pass",
            reconciler.unreachable_services.clone(),
        );
        let fencing = FencingMetrics::default();
        registry.register(
            "nodes",
            "Lost or fenced nodes by state",
            fencing.nodes.clone(),
        );
        registry.register(
            "fence_released_volumes",
            "Volumes whose attachments a fence released",
            fencing.released.clone(),
        );
        Metrics {
            registry,
            reconciler,
            fencing,
            capacity_polls,
            capacity_up,
            capacity_free_bytes,
            mesos,
            operations,
            driver_seconds,
            in_flight,
            store_writes,
        }
    }
}

impl Metrics {
    pub fn op(&self, op: &str, outcome: &str) {
        self.operations
            .get_or_create(&OpLabels {
                op: op.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn driver_call(&self, service: &str, call: &str, secs: f64) {
        self.driver_seconds
            .get_or_create(&DriverLabels {
                service: service.to_string(),
                call: call.to_string(),
            })
            .observe(secs);
    }

    pub fn capacity_poll(&self, service: &str, ok: bool) {
        self.capacity_polls
            .get_or_create(&PollLabels {
                service: service.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn capacity_available(&self, service: &str, up: bool) {
        self.capacity_up
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .set(i64::from(up));
    }

    pub fn capacity_free(&self, service: &str, pool: &str, zone: Option<&str>, bytes: u64) {
        self.capacity_free_bytes
            .get_or_create(&PoolLabels {
                service: service.to_string(),
                pool: pool.to_string(),
                zone: zone.unwrap_or("").to_string(),
            })
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Every metric in `format`.
    pub fn render(&self, format: Format) -> String {
        encode(&self.registry, format)
    }
}
