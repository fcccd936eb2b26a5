//! The volume manager: runs every volume operation against the store and the drivers with
//! crash safety. An operation persists an intent (and the record it is about to change)
//! before any driver side effect, calls the driver with a timeout, then commits the outcome
//! and drops the intent in one durable batch. Intents left by a crash, a timeout or an
//! uncertain driver error are resolved by [`Manager::resolve`], which asks the back-end
//! what actually happened and makes the store agree with it.

mod capacity;
pub mod config;
mod reconcile;
mod snapshots;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::driver::{self, AccessMode, AttachOptions, CreateRequest, DynDriver, PoolCapacity};
use crate::failpoints::crash_point;
use crate::keyed_lock::{KeyGuard, KeyedLocks};
use crate::metrics::Metrics;
use crate::store::{self, Attachment, Instance, Intent, IntentOp, Op, Store, Volume, VolumeStatus};

pub(crate) use capacity::now_ms;
pub use capacity::{backoff as capacity_backoff, CapacityClaim, CapacityReading};
pub use config::{ReconcilerConfig, ReconcilerConfigError};
pub use reconcile::{Missing, Orphan, ReconcileReport};

pub use snapshots::{SnapshotInfo, Source};

/// How stale an instance's `last_seen` may get before a report from it is written again.
pub const INSTANCE_SEEN_REFRESH_SECS: u64 = 60;

/// Largest volume Polly accepts: 1 PiB.
pub const MAX_SIZE_BYTES: u64 = 1 << 50;

/// Errors of volume operations; expected outcomes are variants, not strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    #[error("service {service:?}: driver call {call} timed out after {secs} s")]
    Timeout {
        service: String,
        call: &'static str,
        secs: u64,
    },
    #[error("service {service:?}: {source}")]
    Driver {
        service: String,
        source: driver::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

/// What a caller asks to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub service: String,
    pub name: String,
    pub size_bytes: u64,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub access_mode: AccessMode,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub restrict_services: BTreeSet<String>,
    #[serde(default)]
    pub restrict_frameworks: BTreeSet<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// A configured service and its driver.
pub struct Service {
    pub name: String,
    pub driver: DynDriver,
}

/// A service with its live capacity, for `polly service ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub driver: String,
    pub capacity: Vec<PoolCapacity>,
    /// Set when the driver could not report capacity.
    pub capacity_error: Option<String>,
    pub volumes: usize,
    pub provisioned_bytes: u64,
    /// The capacity poller's last reading of this service (RFC 3339), if any.
    #[serde(default)]
    pub polled_at: Option<String>,
    /// The poller's verdict: false before the first good reading and after a failed one
    /// (its pools are then not offered).
    #[serde(default)]
    pub available: bool,
    /// The poller's last error, while unavailable.
    #[serde(default)]
    pub poll_error: Option<String>,
}

/// Restriction changes; empty sets change nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    #[serde(default)]
    pub services: BTreeSet<String>,
    #[serde(default)]
    pub frameworks: BTreeSet<String>,
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

/// Looks up the zone of an instance id from outside the store (e.g. Mesos agents' domains).
pub type InstanceZones = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The periodic reconciler's last pass, `GET /admin/reconciler`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcilerStatus {
    pub interval_secs: f64,
    pub runs: u64,
    /// RFC 3339 of the last finished pass.
    pub last_run: Option<String>,
    pub last_error: Option<String>,
    /// Intents the pass could not resolve (retried next pass).
    pub unresolved_intents: usize,
    pub report: ReconcileReport,
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

    /// Refuses, before any driver call, a create in a zone the service does not serve.
    fn check_zone(&self, service: &str, zone: Option<&str>) -> Result<()> {
        let (Some(want), Some(served)) = (zone, self.inner.zones.get(service)) else {
            return Ok(());
        };
        match served.as_slice() {
            s if s.iter().any(|z| z == want) => Ok(()),
            [] => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which has no zone configured"
            ))),
            [one] => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which serves zone {one:?}"
            ))),
            many => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which serves zones {many:?}"
            ))),
        }
    }

    /// Install the outside source of instance zones (once; later calls are ignored).
    pub fn set_instance_zones(&self, f: InstanceZones) {
        let _ = self.inner.instance_zones.set(f);
    }

    /// The zone a volume lives in: its own, else its service's when the service serves one.
    pub fn volume_zone(&self, v: &Volume) -> Option<String> {
        v.zone
            .clone()
            .or_else(|| match self.inner.zones.get(&v.service) {
                Some(served) if served.len() == 1 => Some(served[0].clone()),
                _ => None,
            })
    }

    /// The zone an instance is in: from its REX-Ray reports (`zone`/`availabilityZone`),
    /// else from the outside source (the Mesos agent standing for it).
    ///
    /// Instance records are keyed by (driver, instance id), so this is one point read per
    /// driver kind the configured services use, not a scan of every instance: with 1,000
    /// REX-Ray agents a scan decoded 1,000 records on every attach.
    pub fn instance_zone(&self, instance_id: &str) -> Result<Option<String>> {
        let mut kinds: Vec<&str> = self
            .inner
            .services
            .values()
            .map(|s| s.driver.kind())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            if let Some(i) = self.inner.store.instance(kind, instance_id)? {
                if let Some(z) = i
                    .fields
                    .get("zone")
                    .or_else(|| i.fields.get("availabilityZone"))
                    .filter(|z| !z.is_empty())
                {
                    return Ok(Some(z.clone()));
                }
            }
        }
        Ok(self.inner.instance_zones.get().and_then(|f| f(instance_id)))
    }

    /// Refuses, before any intent or driver call, an attach across zones (the message names
    /// both). Callers that act before attaching (the façade's pre-empt) check it first too.
    pub fn check_attach_zone(&self, v: &Volume, instance_id: &str) -> Result<()> {
        // A volume without a zone attaches anywhere: the instance's zone is not even read.
        let Some(vz) = self.volume_zone(v) else {
            return Ok(());
        };
        let Some(iz) = self.instance_zone(instance_id)? else {
            return Ok(());
        };
        if vz == iz {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "volume {} ({}) is in zone {vz:?} but instance {instance_id:?} is in zone {iz:?}; a volume attaches only to instances in its own zone",
            v.id, v.name
        )))
    }

    /// Unix seconds this process started: no report could be heard before.
    pub fn started_at(&self) -> u64 {
        self.inner.started_at
    }

    /// When an instance was last heard from (unix seconds): the later of its stored
    /// `last_seen` (refreshed at most once a minute) and this process's in-memory note.
    pub fn instance_heard_at(&self, i: &Instance) -> u64 {
        let mem = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&i.instance_id)
            .copied()
            .unwrap_or(0);
        i.last_seen.max(mem)
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

    pub fn volume(&self, id: &str) -> Result<Volume> {
        self.inner.store.volume(id)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    /// Look a volume up by Polly id, or by name: within `service` when given, else in
    /// whichever service has a volume of that name (ambiguous names are a conflict).
    pub fn find(&self, service: Option<&str>, id_or_name: &str) -> Result<Volume> {
        if let Some(v) = self.inner.store.volume(id_or_name)? {
            return Ok(v);
        }
        let not_found = || Error::NotFound {
            kind: "volume",
            id: id_or_name.to_string(),
        };
        if let Some(s) = service {
            return self
                .inner
                .store
                .volume_by_name(s, id_or_name)?
                .ok_or_else(not_found);
        }
        let mut hits = Vec::new();
        for s in self.inner.services.keys() {
            if let Some(v) = self.inner.store.volume_by_name(s, id_or_name)? {
                hits.push(v);
            }
        }
        match hits.len() {
            0 => Err(not_found()),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::Conflict(format!(
                "volume name {id_or_name:?} exists in several services; name the service"
            ))),
        }
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        Ok(self.inner.store.volumes()?)
    }

    /// Create a volume, idempotent by (service, name): the same request again returns the
    /// existing volume; the same name with another size is a conflict.
    pub async fn create(&self, req: CreateVolume) -> Result<Volume> {
        self.create_claimed(req, None).await
    }

    /// [`Manager::create`], dropping `claim` when the new volume's bytes are counted in its
    /// pool's known free capacity.
    pub async fn create_claimed(
        &self,
        req: CreateVolume,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.create_inner(req, None, claim).await;
        self.outcome("create", &res);
        res
    }

    /// Create a volume, empty or (with `source`) holding a copy of a volume's or a snapshot's
    /// data. One path for all three, so each gets the same intent and resolution.
    pub(super) async fn create_inner(
        &self,
        req: CreateVolume,
        source: Option<Source>,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let svc = self.service(&req.service)?;
        if !valid_name(&req.name) {
            return Err(Error::InvalidArgument(format!(
                "volume name {:?} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                req.name
            )));
        }
        if req.size_bytes == 0 || req.size_bytes > MAX_SIZE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "size_bytes {} must be between 1 and {MAX_SIZE_BYTES}",
                req.size_bytes
            )));
        }
        check_labels(&req.labels)?;
        self.check_zone(&req.service, req.zone.as_deref())?;
        for s in &req.restrict_services {
            self.service(s)?;
        }
        let source_driver_id = match &source {
            Some(Source::Volume(id)) => {
                let src = self.usable(id)?;
                if src.service != req.service {
                    return Err(Error::InvalidArgument(format!(
                        "volume {id} lives in service {:?}; copies stay in the same service",
                        src.service
                    )));
                }
                src.driver_id.unwrap_or_default()
            }
            Some(Source::Snapshot(s)) => s.clone(),
            None => String::new(),
        };
        let _g = self
            .lock(format!("name:{}/{}", req.service, req.name))
            .await;
        if let Some(v) = self.inner.store.volume_by_name(&req.service, &req.name)? {
            return match v.status {
                VolumeStatus::Available if v.size_bytes == req.size_bytes => {
                    // Created before: its bytes are known already.
                    if let Some(c) = &claim {
                        self.drop_capacity_claim(c);
                    }
                    Ok(v)
                }
                VolumeStatus::Available => Err(Error::Conflict(format!(
                    "volume {:?} already exists in service {:?} with size {} bytes, not {}",
                    req.name, req.service, v.size_bytes, req.size_bytes
                ))),
                _ => Err(Error::Conflict(format!(
                    "volume {:?} in service {:?} is {:?}; retry shortly",
                    req.name, req.service, v.status
                ))),
            };
        }
        let request = CreateRequest {
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: req.pool.clone(),
            zone: req.zone.clone(),
            access_mode: req.access_mode,
            fields: req.fields.clone(),
        };
        let vol = Volume {
            id: format!("pv-{}", uuid::Uuid::new_v4().simple()),
            service: req.service.clone(),
            driver_id: None,
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: req.pool.clone(),
            zone: req.zone.clone(),
            access_mode: req.access_mode,
            labels: req.labels,
            restrict_services: req.restrict_services,
            restrict_frameworks: req.restrict_frameworks,
            status: VolumeStatus::Creating,
            attachments: vec![],
            created_at: now_secs(),
            path: None,
        };
        let intent = Intent {
            id: self.inner.store.next_id()?,
            volume_id: vol.id.clone(),
            service: req.service.clone(),
            op: IntentOp::Create {
                request: request.clone(),
            },
            created_at: now_secs(),
        };
        crash_point!("volume.create.before_intent");
        self.write(vec![
            Op::PutVolume(vol.clone()),
            Op::PutIntent(intent.clone()),
        ])
        .await?;
        crash_point!("volume.create.after_intent");
        let _changing = self.begin_change(&svc.name);
        let res = match &source {
            None => {
                self.call(&svc.name, "create", svc.driver.create(&request))
                    .await
            }
            Some(Source::Volume(_)) => {
                self.call(
                    &svc.name,
                    "copy",
                    svc.driver.copy(&source_driver_id, &request),
                )
                .await
            }
            Some(Source::Snapshot(_)) => {
                self.call(
                    &svc.name,
                    "create_from_snapshot",
                    svc.driver.create_from_snapshot(&source_driver_id, &request),
                )
                .await
            }
        };
        crash_point!("volume.create.after_driver");
        match res {
            Ok(dv) => {
                let done = created(vol, dv);
                self.account_volume(&done, -signed(done.size_bytes), claim.as_ref());
                self.write(vec![
                    Op::PutVolume(done.clone()),
                    Op::DeleteIntent(intent.id),
                ])
                .await?;
                crash_point!("volume.create.after_record");
                Ok(done)
            }
            Err(e) if is_definite(&e) => {
                // The back-end refused: nothing was created.
                self.write(vec![Op::DeleteVolume(vol.id), Op::DeleteIntent(intent.id)])
                    .await?;
                Err(e)
            }
            Err(e) => {
                // Unknown outcome: ask the back-end and make the store agree.
                self.resolve_logged(&intent).await;
                match self.inner.store.volume(&vol.id)? {
                    Some(v) if v.status == VolumeStatus::Available => {
                        self.account_volume(&v, -signed(v.size_bytes), claim.as_ref());
                        Ok(v)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Attach a volume to an instance. Attaching to the instance that holds it already
    /// returns that attachment; a single-writer volume held elsewhere is a conflict.
    pub async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.attach_inner(id, instance_id, device_hint, false).await;
        self.outcome("attach", &res);
        res
    }

    /// Attach a volume to an instance, first detaching it from every other instance (the
    /// libStorage `force` attach), all under the volume's lock: no other attach can slip in
    /// between the pre-emption and the attach, so the caller ends up holding the volume.
    pub async fn attach_preempting(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.attach_inner(id, instance_id, device_hint, true).await;
        self.outcome("attach", &res);
        res
    }

    async fn attach_inner(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
        preempt: bool,
    ) -> Result<Volume> {
        if instance_id.is_empty() || instance_id.len() > 256 {
            return Err(Error::InvalidArgument(
                "instance_id must be 1-256 characters".into(),
            ));
        }
        let _g = self.lock(format!("id:{id}")).await;
        let mut v = self.usable(id)?;
        if preempt {
            // A cross-zone attach is refused before anything happens, pre-empting included.
            self.check_attach_zone(&v, instance_id)?;
            let others: Vec<String> = v
                .attachments
                .iter()
                .filter(|a| a.instance_id != instance_id)
                .map(|a| a.instance_id.clone())
                .collect();
            for other in others {
                let _op = self.begin_op();
                let res = self.detach_locked(v, Some(&other)).await;
                self.outcome("detach", &res);
                v = res?;
            }
        }
        if v.attachments.iter().any(|a| a.instance_id == instance_id) {
            return Ok(v);
        }
        self.check_attach_zone(&v, instance_id)?;
        if !v.access_mode.allows_many() && !v.attachments.is_empty() {
            return Err(Error::Conflict(format!(
                "volume {} is attached to {}; detach it first or force-detach",
                v.id,
                holders(&v)
            )));
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(
            &v,
            IntentOp::Attach {
                instance_id: instance_id.to_string(),
            },
        )?;
        crash_point!("volume.attach.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.attach.after_intent");
        let opts = AttachOptions { device_hint };
        let res = self
            .call(
                &svc.name,
                "attach",
                svc.driver.attach(&driver_id, instance_id, &opts),
            )
            .await;
        crash_point!("volume.attach.after_driver");
        let out = self
            .conclude(&intent, res, |a| {
                let mut done = v;
                done.attachments.push(Attachment {
                    instance_id: a.instance_id,
                    device: a.device,
                    attached_at: now_secs(),
                });
                done
            })
            .await;
        crash_point!("volume.attach.after_record");
        out
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

    /// Detach a volume from one instance, or from all (`instance_id: None`, force-detach).
    /// Detaching an instance that holds no attachment succeeds.
    pub async fn detach(&self, id: &str, instance_id: Option<&str>) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.detach_inner(id, instance_id).await;
        self.outcome(
            if instance_id.is_some() {
                "detach"
            } else {
                "force_detach"
            },
            &res,
        );
        res
    }

    async fn detach_inner(&self, id: &str, instance_id: Option<&str>) -> Result<Volume> {
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        self.detach_locked(v, instance_id).await
    }

    /// Release the attachments `instances` hold on a volume, for a fence: a force-detach
    /// when they hold every attachment, else a detach per instance (other holders of a
    /// shared volume keep theirs). An intent this volume still has (a crash or an uncertain
    /// failure) is resolved against the back-end first, so a detach that already happened is
    /// never sent again. Returns the volume, or `None` when it no longer exists.
    pub async fn fence_detach(
        &self,
        id: &str,
        instances: &BTreeSet<String>,
    ) -> Result<Option<Volume>> {
        let _g = self.lock(format!("id:{id}")).await;
        for i in self.inner.store.intents()? {
            if i.volume_id == id {
                self.resolve_locked(&i).await?;
            }
        }
        let Some(mut v) = self.inner.store.volume(id)? else {
            return Ok(None);
        };
        if v.status != VolumeStatus::Available {
            return Err(Error::Conflict(format!(
                "volume {id} is {:?}; retry shortly",
                v.status
            )));
        }
        let held: Vec<String> = v
            .attachments
            .iter()
            .filter(|a| instances.contains(&a.instance_id))
            .map(|a| a.instance_id.clone())
            .collect();
        if held.is_empty() {
            return Ok(Some(v));
        }
        if held.len() == v.attachments.len() {
            let _g = self.begin_op();
            let res = self.detach_locked(v, None).await;
            self.outcome("force_detach", &res);
            return res.map(Some);
        }
        for i in held {
            let _g = self.begin_op();
            let res = self.detach_locked(v, Some(&i)).await;
            self.outcome("detach", &res);
            v = res?;
        }
        Ok(Some(v))
    }

    async fn detach_locked(&self, v: Volume, instance_id: Option<&str>) -> Result<Volume> {
        let held = match instance_id {
            Some(i) => v.attachments.iter().any(|a| a.instance_id == i),
            None => !v.attachments.is_empty(),
        };
        if !held {
            return Ok(v);
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(
            &v,
            IntentOp::Detach {
                instance_id: instance_id.map(str::to_string),
            },
        )?;
        crash_point!("volume.detach.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.detach.after_intent");
        let res = match instance_id {
            Some(i) => {
                self.call(&svc.name, "detach", svc.driver.detach(&driver_id, i))
                    .await
            }
            None => {
                self.call(
                    &svc.name,
                    "force_detach",
                    svc.driver.force_detach(&driver_id),
                )
                .await
            }
        };
        crash_point!("volume.detach.after_driver");
        let out = self
            .conclude(&intent, res, |()| {
                let mut done = v;
                done.attachments
                    .retain(|a| instance_id.is_some_and(|i| a.instance_id != i));
                done
            })
            .await;
        crash_point!("volume.detach.after_record");
        out
    }

    /// Delete a volume from the back-end and the store. Deleting an attached volume is a
    /// conflict; deleting an unknown id is not found.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let _g = self.begin_op();
        let res = self.delete_inner(id).await;
        self.outcome("delete", &res);
        res
    }

    async fn delete_inner(&self, id: &str) -> Result<()> {
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        if !v.attachments.is_empty() {
            return Err(Error::Conflict(format!(
                "volume {} is attached to {}; detach it before deleting it",
                v.id,
                holders(&v)
            )));
        }
        let intent = self.intent(&v, IntentOp::Delete)?;
        let mut deleting = v.clone();
        deleting.status = VolumeStatus::Deleting;
        crash_point!("volume.delete.before_intent");
        self.write(vec![Op::PutVolume(deleting), Op::PutIntent(intent.clone())])
            .await?;
        crash_point!("volume.delete.after_intent");
        self.finish_delete(&v, &intent).await?;
        crash_point!("volume.delete.after_record");
        Ok(())
    }

    async fn finish_delete(&self, v: &Volume, intent: &Intent) -> Result<()> {
        if let Some(driver_id) = &v.driver_id {
            let svc = self.service(&v.service)?;
            // Remove is idempotent: an unknown id succeeds, so retrying after a crash is safe.
            // On failure the intent stays and the reconciler retries the removal.
            let _changing = self.begin_change(&svc.name);
            self.call(&svc.name, "remove", svc.driver.remove(driver_id))
                .await?;
            crash_point!("volume.delete.after_driver");
            self.account_volume(v, signed(v.size_bytes), None);
        }
        self.write(vec![
            Op::DeleteVolume(v.id.clone()),
            Op::DeleteIntent(intent.id),
        ])
        .await
    }

    /// Grow a volume to `size_bytes`. The same size again is a no-op (so a retried grow is
    /// safe); a smaller size is invalid. The intent holds the target size, and a crash or an
    /// uncertain failure is resolved by reading the back-end's size.
    pub async fn grow(&self, id: &str, size_bytes: u64) -> Result<Volume> {
        self.grow_claimed(id, size_bytes, None).await
    }

    /// [`Manager::grow`], dropping `claim` when the added bytes are counted in the pool's
    /// known free capacity.
    pub async fn grow_claimed(
        &self,
        id: &str,
        size_bytes: u64,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.grow_inner(id, size_bytes, claim).await;
        self.outcome("grow", &res);
        res
    }

    async fn grow_inner(
        &self,
        id: &str,
        size_bytes: u64,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        if size_bytes > MAX_SIZE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "size_bytes {size_bytes} is over the largest volume, {MAX_SIZE_BYTES}"
            )));
        }
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        if size_bytes == v.size_bytes {
            // Grown before: its bytes are known already.
            if let Some(c) = &claim {
                self.drop_capacity_claim(c);
            }
            return Ok(v);
        }
        if size_bytes < v.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "volume {id} has {} bytes; it cannot shrink to {size_bytes}",
                v.size_bytes
            )));
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(&v, IntentOp::Grow { size_bytes })?;
        crash_point!("volume.grow.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.grow.after_intent");
        let _changing = self.begin_change(&svc.name);
        let res = self
            .call(&svc.name, "grow", svc.driver.grow(&driver_id, size_bytes))
            .await;
        crash_point!("volume.grow.after_driver");
        let before = v.clone();
        let uncertain = matches!(&res, Err(e) if !is_definite(e));
        if let Ok(dv) = &res {
            let delta = signed(dv.size_bytes) - signed(v.size_bytes);
            self.account_volume(&v, -delta, claim.as_ref());
        }
        let out = self
            .conclude(&intent, res, |dv| {
                let mut done = v;
                done.size_bytes = dv.size_bytes;
                done
            })
            .await;
        if uncertain {
            // Resolution copied the back-end's size into the record: account what it grew.
            if let Ok(Some(now)) = self.inner.store.volume(&before.id) {
                let delta = signed(now.size_bytes) - signed(before.size_bytes);
                self.account_volume(&before, -delta.max(0), claim.as_ref());
            }
        }
        crash_point!("volume.grow.after_record");
        out
    }

    /// Tell the capacity ledger (`capacity.rs`) that `v` changed its pool's free space.
    fn account_volume(&self, v: &Volume, delta: i64, claim: Option<&CapacityClaim>) {
        self.account(
            &v.service,
            v.pool.as_deref(),
            v.zone.as_deref(),
            delta,
            claim,
        );
    }

    /// Add restrictions (the volume becomes visible only to these services / frameworks).
    pub async fn restrict(&self, id: &str, r: &Restriction) -> Result<Volume> {
        for s in &r.services {
            self.service(s)?;
        }
        self.update(id, |v| {
            v.restrict_services.extend(r.services.iter().cloned());
            v.restrict_frameworks.extend(r.frameworks.iter().cloned());
            Ok(())
        })
        .await
    }

    /// Remove restrictions; with both sets empty, remove them all.
    pub async fn unrestrict(&self, id: &str, r: &Restriction) -> Result<Volume> {
        self.update(id, |v| {
            if r.services.is_empty() && r.frameworks.is_empty() {
                v.restrict_services.clear();
                v.restrict_frameworks.clear();
            }
            v.restrict_services.retain(|s| !r.services.contains(s));
            v.restrict_frameworks.retain(|f| !r.frameworks.contains(f));
            Ok(())
        })
        .await
    }

    pub async fn label(&self, id: &str, labels: &BTreeMap<String, String>) -> Result<Volume> {
        check_labels(labels)?;
        self.update(id, |v| {
            v.labels
                .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })
        .await
    }

    pub async fn unlabel(&self, id: &str, keys: &[String]) -> Result<Volume> {
        self.update(id, |v| {
            v.labels.retain(|k, _| !keys.contains(k));
            Ok(())
        })
        .await
    }

    async fn update(&self, id: &str, f: impl FnOnce(&mut Volume) -> Result<()>) -> Result<Volume> {
        let _g = self.lock(format!("id:{id}")).await;
        let mut v = self.usable(id)?;
        f(&mut v)?;
        self.write(vec![Op::PutVolume(v.clone())]).await?;
        Ok(v)
    }

    /// Record an instance a client reported (libStorage header, admin attach).
    pub async fn record_instance(
        &self,
        driver: &str,
        instance_id: &str,
        hostname: Option<String>,
        fields: BTreeMap<String, String>,
    ) -> Result<()> {
        let inst = Instance {
            driver: driver.to_string(),
            instance_id: instance_id.to_string(),
            hostname,
            last_seen: now_secs(),
            fields,
        };
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance_id.to_string(), inst.last_seen);
        if let Some(known) = self.inner.store.instance(driver, instance_id)? {
            // REX-Ray agents send their instance id on nearly every request: refresh
            // `last_seen` at most once a minute rather than pay a durable write each time.
            let fresh = inst.last_seen.saturating_sub(known.last_seen) < INSTANCE_SEEN_REFRESH_SECS;
            let same = Instance {
                last_seen: known.last_seen,
                ..inst.clone()
            } == known;
            if same && fresh {
                return Ok(());
            }
        }
        self.write(vec![Op::PutInstance(inst)]).await
    }

    /// Services with their live capacity.
    pub async fn service_infos(&self) -> Result<Vec<ServiceInfo>> {
        let vols = self.inner.store.volumes()?;
        let readings = self.capacity_readings();
        let mut out = Vec::new();
        for s in self.inner.services.values() {
            let (capacity, capacity_error) =
                match self.call(&s.name, "capacity", s.driver.capacity()).await {
                    Ok(c) => (c, None),
                    Err(e) => (vec![], Some(e.to_string())),
                };
            let mine: Vec<_> = vols.iter().filter(|v| v.service == s.name).collect();
            let reading = readings.get(&s.name);
            out.push(ServiceInfo {
                polled_at: reading.and_then(|r| r.read_at_ms).map(|ms| {
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                        .to_string()
                }),
                available: reading.is_some_and(|r| r.available),
                poll_error: reading.and_then(|r| r.last_error.clone()),
                name: s.name.clone(),
                driver: s.driver.kind().to_string(),
                capacity,
                capacity_error,
                volumes: mine.len(),
                provisioned_bytes: mine.iter().map(|v| v.size_bytes).sum(),
            });
        }
        Ok(out)
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

/// The record of a volume whose create reached the back-end, with what the back-end reports.
fn created(mut v: Volume, dv: driver::DriverVolume) -> Volume {
    v.status = VolumeStatus::Available;
    v.driver_id = Some(dv.id);
    v.size_bytes = dv.size_bytes;
    v.pool = Some(dv.pool);
    v.zone = dv.zone;
    v.path = dv.path;
    v
}

/// Bytes as a signed delta (sizes are at most `MAX_SIZE_BYTES`, far below `i64::MAX`).
fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn holders(v: &Volume) -> String {
    v.attachments
        .iter()
        .map(|a| a.instance_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if !valid_name(k) {
            return Err(Error::InvalidArgument(format!(
                "label key {k:?} must be 1-128 letters, digits, '.', '_' or '-'"
            )));
        }
        if v.len() > 1024 {
            return Err(Error::InvalidArgument(format!(
                "label {k:?}: value longer than 1024 bytes"
            )));
        }
    }
    Ok(())
}

/// An error that says for sure the side effect did not happen.
fn is_definite(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::Conflict(_)
            | Error::InvalidArgument(_)
            | Error::InsufficientCapacity(_)
    )
}

/// Expected driver outcomes become the manager's own variants; the rest stay driver errors.
fn map_driver_error(service: &str, e: driver::Error) -> Error {
    match e {
        driver::Error::NotFound { kind, id } => Error::NotFound { kind, id },
        driver::Error::InsufficientCapacity { .. } => {
            Error::InsufficientCapacity(format!("service {service:?}: {e}"))
        }
        driver::Error::AlreadyExists { .. }
        | driver::Error::AttachedElsewhere { .. }
        | driver::Error::InUse { .. } => Error::Conflict(format!("service {service:?}: {e}")),
        driver::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        source => Error::Driver {
            service: service.to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests;
