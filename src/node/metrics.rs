//! `polly node`'s Prometheus metrics: volumes mounted here, mount and unmount latency,
//! errors by call, detaches waiting for central.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~100 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 22))
}

/// The node's figures (cheap to clone; clones share values).
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    /// Volumes mounted on this node.
    pub mounts: Gauge,
    /// Volumes unmounted here whose detach central has not taken yet.
    pub pending_detaches: Gauge,
    pub seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    pub errors: Family<CallLabels, Counter>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("polly_node");
        let mounts = Gauge::default();
        let pending_detaches = Gauge::default();
        let seconds = Family::<CallLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let errors = Family::<CallLabels, Counter>::default();
        registry.register("mounts", "Volumes mounted on this node", mounts.clone());
        registry.register(
            "pending_detaches",
            "Volumes unmounted here whose detach central has not taken yet",
            pending_detaches.clone(),
        );
        registry.register(
            "call_seconds",
            "Latency of mount and unmount calls (attach/detach through central included)",
            seconds.clone(),
        );
        registry.register("errors", "Failed calls by call", errors.clone());
        NodeMetrics {
            registry: Arc::new(registry),
            mounts,
            pending_detaches,
            seconds,
            errors,
        }
    }
}

impl NodeMetrics {
    /// One finished call.
    pub fn observe(&self, call: &str, seconds: f64, ok: bool) {
        let labels = CallLabels {
            call: call.to_string(),
        };
        self.seconds.get_or_create(&labels).observe(seconds);
        if !ok {
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Count a failed call that has no latency of interest (a plugin call refused early).
    pub fn error(&self, call: &str) {
        self.errors
            .get_or_create(&CallLabels {
                call: call.to_string(),
            })
            .inc();
    }

    /// Every metric in `format`.
    pub fn render(&self, format: crate::metrics::Format) -> String {
        crate::metrics::encode(&self.registry, format)
    }
}
