//! The `ebs` driver: AWS EBS volumes through the EC2 API.
//!
//! The driver is a state machine over a small trait of EC2 calls (`model::Ec2Api`), so the
//! same code runs against the real SDK client (`sdk.rs`, cargo feature `ebs`) and against
//! the in-process fake cloud (`fake.rs`, always built; how and why: ARCHITECTURE.md).
//!
//! - Ownership: every volume and snapshot Polly makes carries the tags `polly:owner`
//!   (the service's owner string) and `polly:volume` (the Polly name), applied atomically by
//!   CreateVolume. Lists filter on them; a volume without them is never touched.
//! - Create is idempotent by name (looked up by tag) and by `ClientToken` (derived from owner,
//!   name and parameters), so a lost reply retried even before DescribeVolumes shows the new
//!   volume does not make a second one.
//! - Pools are volume types (`gp3`, `io2`, ...); zones are the configured availability
//!   zones. Capacity is the configured quota per zone and type minus what Polly's volumes
//!   provision there (EBS has no "free space").
//! - Attach checks the zone of volume and instance before any AttachVolume, picks a device
//!   name no other attachment of the instance uses (names from DescribeInstances plus those
//!   this process handed out and has not yet seen come back), then waits for `attached` up to
//!   `attach_timeout_secs`. A timed-out attach stays on the cloud; a retry waits for the same
//!   attachment and never issues a second AttachVolume. Detach always names the instance.
//! - One operation at a time per volume (in this process); every EC2 call is bounded by
//!   `call_timeout_secs`, so a hung call holds only its own volume.
//!
//! This file holds the driver, the bound on each EC2 call and the `Driver` impl; the rest is
//! by concern: `config.rs` (`[services.ebs]`), `describe.rs` (reading EC2 back), `create.rs`,
//! `capacity.rs` (quotas, grow), `attach.rs` (instances, device names, attach and detach),
//! `delete.rs`, `snapshot.rs`.

mod attach;
mod capacity;
mod config;
mod create;
mod delete;
mod describe;
pub mod fake;
pub mod model;
#[cfg(feature = "ebs")]
pub mod sdk;
mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use self::attach::Reservation;
use self::fake::FakeCloud;
use self::model::{ApiError, ApiResult, Ec2Api};
use super::{
    AccessMode, AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error,
    PoolCapacity, Result, Snapshot,
};
use crate::keyed_lock::KeyedLocks;

pub use self::config::{ConfigError, EbsConfig, EbsQuota, VOLUME_TYPES};

/// Tag naming the owner (one Polly service) of a volume or snapshot.
pub const TAG_OWNER: &str = "polly:owner";
/// Tag holding a volume's Polly name.
pub const TAG_VOLUME: &str = "polly:volume";
/// Tag holding a volume's access mode.
pub const TAG_ACCESS: &str = "polly:access-mode";
/// Tag holding a snapshot's Polly name.
pub const TAG_SNAPSHOT: &str = "polly:snapshot";
/// Tag of the transient snapshot behind `copy`, naming the copy.
pub const TAG_COPY: &str = "polly:copy-for";
/// Prefix of the tags holding a volume's free-form fields.
pub const TAG_FIELD: &str = "polly:field:";

const GIB: u64 = 1 << 30;

/// The `ebs` driver.
pub struct EbsDriver {
    cfg: EbsConfig,
    owner: String,
    api: Arc<dyn Ec2Api>,
    volume_locks: KeyedLocks,
    name_locks: KeyedLocks,
    pool_locks: KeyedLocks,
    /// instance id → device → reservation.
    devices: Mutex<HashMap<String, HashMap<String, Reservation>>>,
    /// instance id → zone (immutable for an instance's life).
    zones: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for EbsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsDriver")
            .field("owner", &self.owner)
            .field("zones", &self.cfg.zones)
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn access_tag(m: AccessMode) -> &'static str {
    match m {
        AccessMode::SingleWriter => "single_writer",
        AccessMode::MultiReader => "multi_reader",
        AccessMode::MultiWriter => "multi_writer",
    }
}

fn parse_access(s: Option<&String>) -> AccessMode {
    match s.map(String::as_str) {
        Some("multi_reader") => AccessMode::MultiReader,
        Some("multi_writer") => AccessMode::MultiWriter,
        _ => AccessMode::SingleWriter,
    }
}

/// Maps an EC2 failure to a driver error; the message names the call and carries the code.
fn api_err(op: &str, e: ApiError) -> Error {
    let msg = format!("ec2 {op}: {e}");
    match e.code.as_str() {
        model::TRANSPORT
        | "RequestLimitExceeded"
        | "Throttling"
        | "ServiceUnavailable"
        | "Unavailable"
        | "InternalError"
        | "InsufficientVolumeCapacity"
        | "IncorrectState"
        | "IncorrectModificationState" => Error::Unavailable(msg),
        c if c.starts_with("InvalidParameter")
            || c == "MissingParameter"
            || c == "InvalidVolume.ZoneMismatch"
            || c == "InvalidZone.NotFound"
            || c == "IdempotentParameterMismatch"
            || c == "AttachmentLimitExceeded"
            || c == "VolumeLimitExceeded"
            || c == "MaxIOPSLimitExceeded"
            || c == "UnauthorizedOperation"
            || c == "AuthFailure" =>
        {
            Error::InvalidArgument(msg)
        }
        _ => Error::Io(msg),
    }
}

impl EbsDriver {
    /// A driver over any EC2 implementation. `service` names the default owner.
    pub fn new(cfg: EbsConfig, service: &str, api: Arc<dyn Ec2Api>) -> Result<EbsDriver> {
        cfg.validate()
            .map_err(|e| Error::InvalidArgument(format!("service {service:?}: {e}")))?;
        let owner = cfg
            .owner
            .clone()
            .unwrap_or_else(|| format!("polly-{service}"));
        if owner.is_empty() || owner.len() > 256 {
            return Err(Error::InvalidArgument(format!(
                "service {service:?}: ebs.owner must be 1-256 characters"
            )));
        }
        Ok(EbsDriver {
            cfg,
            owner,
            api,
            volume_locks: KeyedLocks::default(),
            name_locks: KeyedLocks::default(),
            pool_locks: KeyedLocks::default(),
            devices: Mutex::new(HashMap::new()),
            zones: Mutex::new(HashMap::new()),
        })
    }

    /// The driver a service's config asks for: the fake cloud when `fake_cloud` is set,
    /// else the SDK client (feature `ebs`), else an error saying how to get one.
    pub fn from_config(cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        if let Some(f) = &cfg.fake_cloud {
            let mut f = f.clone();
            if f.zones.is_empty() {
                f.zones = cfg.zones.clone();
            }
            return EbsDriver::new(cfg, service, Arc::new(FakeCloud::new(f)));
        }
        Self::sdk(cfg, service)
    }

    #[cfg(feature = "ebs")]
    fn sdk(cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        let api = sdk::SdkEc2::new(cfg.region.clone(), cfg.endpoint.clone());
        EbsDriver::new(cfg, service, Arc::new(api))
    }

    #[cfg(not(feature = "ebs"))]
    fn sdk(_cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        Err(Error::InvalidArgument(format!(
            "service {service:?}: driver ebs needs Polly built with the `ebs` feature \
             (cargo build --release --features ebs), or [services.ebs.fake_cloud] for a fake cloud"
        )))
    }

    /// The owner tag value of this driver's volumes.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The EC2 implementation behind this driver.
    pub fn api(&self) -> &Arc<dyn Ec2Api> {
        &self.api
    }

    /// One EC2 call, bounded by `call_timeout_secs`.
    async fn call<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let limit = Duration::from_secs_f64(self.cfg.call_timeout_secs);
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::transport(format!(
                "{op} got no answer within {}s",
                self.cfg.call_timeout_secs
            ))),
        }
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.attach_timeout_secs)
    }
}

#[async_trait]
impl Driver for EbsDriver {
    fn kind(&self) -> &str {
        "ebs"
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.pool_capacity().await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        Ok(self
            .owned_volumes()
            .await?
            .iter()
            .map(|v| self.to_driver(v))
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        Ok(self.to_driver(&self.get(id).await?))
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        self.create_volume(req, None).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.delete_volume(id).await
    }

    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let _lock = self.volume_locks.lock(id).await;
        self.attach_inner(id, instance_id, opts).await
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        self.detach_volume(id, instance_id).await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        self.force_detach_all(id).await
    }

    /// The EC2 volume id and the device name it was attached as; the node finds it under
    /// `/dev/disk/by-id` (NVMe instances) or that name, and formats it only when blank.
    async fn node_source(&self, id: &str, device: Option<&str>) -> Result<crate::mount::Source> {
        let vol = self.get(id).await?;
        Ok(crate::mount::Source::Ebs {
            volume_id: vol.id.clone(),
            device_hint: device.filter(|d| !d.is_empty()).map(str::to_string),
            filesystem: "ext4".to_string(),
        })
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        self.create_snapshot(volume_id, name).await
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        self.list_snapshots(volume_id).await
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        self.remove_snapshot(snapshot_id).await
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let s = self
            .find_snapshot(snapshot_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        self.create_volume(req, Some(&s)).await
    }
    /// EBS has no volume copy: a transient snapshot, a volume from it, then the snapshot goes
    /// (`create.rs`).
    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        self.copy_volume(volume_id, req).await
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        self.grow_volume(id, new_size_bytes).await
    }

    async fn resolve_instance(&self, host: &str) -> Result<Option<String>> {
        self.instance_for_host(host).await
    }
}

#[cfg(test)]
mod tests;
