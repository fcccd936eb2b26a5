//! The volume manager: runs every volume operation against the store and the drivers with
//! crash safety. An operation persists an intent (and the record it is about to change)
//! before any driver side effect, calls the driver with a timeout, then commits the outcome
//! and drops the intent in one durable batch. Intents left by a crash, a timeout or an
//! uncertain driver error are resolved by [`Manager::resolve`], which asks the back-end
//! what actually happened and makes the store agree with it.
//!
//! This file holds the manager itself, its lock, write and driver-call helpers and the
//! intent bookkeeping every operation shares; each operation lives in a file named for it.

mod attach;
mod capacity;
pub mod config;
mod create;
mod delete;
mod error;
mod grow;
mod idents;
mod instances;
mod labels;
mod lookup;
mod orphans;
mod reconcile;
mod restrictions;
mod services;
mod size;
mod snapshots;
mod source;
mod zones;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::driver::{self, DynDriver};
use crate::keyed_lock::{KeyGuard, KeyedLocks};
use crate::metrics::Metrics;
use crate::store::{Intent, IntentOp, Op, Store, Volume, VolumeStatus};

use error::{is_definite, map_driver_error};

pub(crate) use capacity::now_ms;
pub use capacity::{backoff as capacity_backoff, CapacityClaim, CapacityReading};
pub use config::{ReconcilerConfig, ReconcilerConfigError};
pub use create::CreateVolume;
pub use error::{Error, Result};
pub use idents::{check as check_ident, MAX_IDENT_BYTES};
pub use instances::INSTANCE_SEEN_REFRESH_SECS;
pub use reconcile::{Missing, Orphan, ReconcileReport, ReconcilerStatus};
pub use restrictions::Restriction;
pub use services::ServiceInfo;
pub use size::{human_size, parse_docker_size};
pub use snapshots::{SnapshotInfo, Source};
pub use zones::InstanceZones;

/// Largest volume Polly accepts: 1 PiB.
pub const MAX_SIZE_BYTES: u64 = 1 << 50;

/// Whether `s` is a valid volume, service or label-key name.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A configured service and its driver.
pub struct Service {
    pub name: String,
    pub driver: DynDriver,
}

struct Inner {
    store: Store,
    services: BTreeMap<String, Service>,
    locks: KeyedLocks,
    driver_timeout: Duration,
    metrics: Metrics,
    /// The capacity poller's readings by service (`capacity.rs`).
    capacity: Mutex<capacity::Capacity>,
    /// The zones each configured service serves (empty: no zone; several for `ebs`);
    /// services built without a config (`with_services`) are absent and not checked.
    zones: BTreeMap<String, Vec<String>>,
    /// Where else an instance's zone may be known (Mesos agents), set by the server.
    instance_zones: std::sync::OnceLock<InstanceZones>,
    /// When each instance last reported, in memory (the store's `last_seen` is refreshed at
    /// most once a minute), and when this process started: nothing was heard before that.
    seen: Mutex<HashMap<String, u64>>,
    started_at: u64,
    /// The periodic reconciler's last pass.
    last_pass: Mutex<Option<ReconcilerStatus>>,
}

/// Shared handle to the manager.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

/// Decrements the in-flight gauge when an operation ends, however it ends.
struct InFlight<'a>(&'a Metrics);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Manager {
    /// Build the manager from the configured services (opening their drivers; vfs and loop
    /// roots default to under `data_dir`); every driver call may take `driver_timeout`.
    pub fn new(
        store: Store,
        configured: &[driver::ServiceConfig],
        data_dir: &std::path::Path,
        driver_timeout: Duration,
    ) -> Result<Manager, String> {
        let mut services = BTreeMap::new();
        for s in configured {
            let driver = driver::build(s, &s.root_in(data_dir))
                .map_err(|e| format!("service {:?}: {e}", s.name))?;
            services.insert(
                s.name.clone(),
                Service {
                    name: s.name.clone(),
                    driver,
                },
            );
        }
        // Zones a service serves: the ebs driver's `zones`, else the service's `zone`.
        let zones = configured
            .iter()
            .map(|s| {
                let served = match &s.ebs {
                    Some(e) => e.zones.clone(),
                    None => s.zone.clone().into_iter().collect(),
                };
                (s.name.clone(), served)
            })
            .collect();
        Ok(Self::build(store, services, driver_timeout, zones))
    }

    pub fn with_services(
        store: Store,
        services: BTreeMap<String, Service>,
        driver_timeout: Duration,
    ) -> Manager {
        Self::build(store, services, driver_timeout, BTreeMap::new())
    }

    fn build(
        store: Store,
        services: BTreeMap<String, Service>,
        driver_timeout: Duration,
        zones: BTreeMap<String, Vec<String>>,
    ) -> Manager {
        Manager {
            inner: Arc::new(Inner {
                store,
                services,
                locks: KeyedLocks::default(),
                driver_timeout,
                metrics: Metrics::default(),
                capacity: Mutex::new(capacity::Capacity::default()),
                zones,
                instance_zones: std::sync::OnceLock::new(),
                seen: Mutex::new(HashMap::new()),
                started_at: now_secs(),
                last_pass: Mutex::new(None),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.inner.services.values()
    }

    pub fn service(&self, name: &str) -> Result<&Service> {
        self.inner
            .services
            .get(name)
            .ok_or_else(|| Error::NotFound {
                kind: "service",
                id: name.to_string(),
            })
    }

    /// Serialize operations on one key (a volume id, or a service/name for creates).
    async fn lock(&self, key: String) -> KeyGuard {
        self.inner.locks.lock(&key).await
    }

    /// The lock on `key` if nobody holds it, else `None` (an operation on it is in flight).
    fn try_lock(&self, key: String) -> Option<KeyGuard> {
        self.inner.locks.try_lock(&key)
    }

    /// Commit a batch durably, off the async worker threads.
    async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.inner.store.commit(ops).await?;
        self.inner.metrics.store_writes.inc();
        Ok(())
    }

    /// Run one driver call with the configured timeout, recording its latency.
    async fn call<T, F>(&self, service: &str, call: &'static str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = driver::Result<T>>,
    {
        let start = Instant::now();
        let res = tokio::time::timeout(self.inner.driver_timeout, fut).await;
        self.inner
            .metrics
            .driver_call(service, call, start.elapsed().as_secs_f64());
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(map_driver_error(service, source)),
            Err(_) => Err(Error::Timeout {
                service: service.to_string(),
                call,
                secs: self.inner.driver_timeout.as_secs(),
            }),
        }
    }

    fn begin_op(&self) -> InFlight<'_> {
        self.inner.metrics.in_flight.inc();
        InFlight(&self.inner.metrics)
    }

    fn outcome<T>(&self, op: &str, res: &Result<T>) {
        let outcome = match res {
            Ok(_) => "ok",
            Err(Error::NotFound { .. }) => "not_found",
            Err(Error::Conflict(_)) => "conflict",
            Err(Error::InvalidArgument(_)) => "invalid",
            Err(Error::InsufficientCapacity(_)) => "no_capacity",
            Err(Error::Timeout { .. }) => "timeout",
            Err(Error::Driver { .. }) => "driver_error",
            Err(Error::Store(_)) => "store_error",
        };
        self.inner.metrics.op(op, outcome);
    }

    /// End an operation that changes an existing record: on success commit the new record
    /// and drop the intent together; on a definite refusal just drop the intent; on an
    /// uncertain failure resolve the intent against the back-end.
    async fn conclude<T>(
        &self,
        intent: &Intent,
        res: Result<T>,
        done: impl FnOnce(T) -> Volume,
    ) -> Result<Volume> {
        match res {
            Ok(t) => {
                let done = done(t);
                self.write(vec![
                    Op::PutVolume(done.clone()),
                    Op::DeleteIntent(intent.id),
                ])
                .await?;
                Ok(done)
            }
            Err(e) if is_definite(&e) => {
                self.write(vec![Op::DeleteIntent(intent.id)]).await?;
                Err(e)
            }
            Err(e) => {
                self.resolve_logged(intent).await;
                Err(e)
            }
        }
    }

    async fn update(&self, id: &str, f: impl FnOnce(&mut Volume) -> Result<()>) -> Result<Volume> {
        let _g = self.lock(format!("id:{id}")).await;
        let mut v = self.usable(id)?;
        f(&mut v)?;
        self.write(vec![Op::PutVolume(v.clone())]).await?;
        Ok(v)
    }

    /// A volume that exists and no operation is creating or deleting.
    fn usable(&self, id: &str) -> Result<Volume> {
        let v = self.volume(id)?;
        match v.status {
            VolumeStatus::Available => Ok(v),
            s => Err(Error::Conflict(format!(
                "volume {id} is {s:?}; retry shortly"
            ))),
        }
    }

    fn intent(&self, v: &Volume, op: IntentOp) -> Result<Intent> {
        Ok(Intent {
            id: self.inner.store.next_id()?,
            volume_id: v.id.clone(),
            service: v.service.clone(),
            op,
            created_at: now_secs(),
        })
    }
}

#[cfg(test)]
mod tests;
