//! The driver layer: the `Driver` trait every storage back-end implements, its core types,
//! its error enum, and the registry that builds a driver from a service's config.
//!
//! Drivers know nothing of Polly's store, intents or restrictions: they manage back-end
//! volumes by *driver id* and *name*, and must be safe to call again after a crash (create is
//! idempotent by name, remove of an unknown id succeeds, attach/detach are idempotent for the
//! same instance). The volume manager (`crate::volumes`) builds crash safety on those rules.

pub mod config;
mod dirs;
pub mod ebs;
pub mod fault;
pub mod r#loop;
pub mod rbd;
pub mod vfs;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use config::{DriverKind, ServiceConfig, ServiceConfigError};

/// Capacity of one pool of a back-end in one availability zone, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCapacity {
    /// Pool (or profile) name, e.g. `default`, `gp3`, an RBD pool.
    pub pool: String,
    /// Availability zone the pool serves; `None` when the back-end has no zones.
    pub zone: Option<String>,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// How many instances may attach a volume at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// At most one instance at a time (the default, and what block devices need).
    #[default]
    SingleWriter,
    /// Several instances, all read-only.
    MultiReader,
    /// Several instances, read-write (shared file systems).
    MultiWriter,
}

impl AccessMode {
    /// Whether more than one instance may hold an attachment.
    pub fn allows_many(self) -> bool {
        !matches!(self, AccessMode::SingleWriter)
    }
}

/// What a caller asks a driver to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Caller-chosen name; the idempotency key of `create`.
    pub name: String,
    pub size_bytes: u64,
    /// Pool to create in; `None` = the driver's default pool.
    pub pool: Option<String>,
    /// Availability zone to create in; `None` = the driver's default.
    pub zone: Option<String>,
    pub access_mode: AccessMode,
    /// Free-form back-end fields (volume type, iops, tags...).
    pub fields: BTreeMap<String, String>,
}

/// One attachment of a volume to an instance, as the back-end records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverAttachment {
    /// The instance (host) id the volume is attached to.
    pub instance_id: String,
    /// Device path or token the instance sees (may be empty for file back-ends).
    pub device: String,
}

/// A volume as the back-end knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverVolume {
    /// The back-end's id; never reused for another volume.
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub pool: String,
    pub zone: Option<String>,
    pub access_mode: AccessMode,
    pub attachments: Vec<DriverAttachment>,
    pub fields: BTreeMap<String, String>,
    /// Where the volume's data lives on this host, if the back-end exposes a path.
    pub path: Option<String>,
}

/// A back-end volume as an inventory names it: what the reconciler compares with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
}

impl From<DriverVolume> for Listed {
    fn from(v: DriverVolume) -> Self {
        Listed {
            id: v.id,
            name: v.name,
            size_bytes: v.size_bytes,
        }
    }
}

/// A point-in-time snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub name: String,
    pub volume_id: String,
    pub size_bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// Options for attach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachOptions {
    /// Device name the instance proposes (libStorage's `nextDeviceName`).
    pub device_hint: Option<String>,
}

/// Expected outcomes are variants callers match on; messages name the input.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("volume {name:?} already exists with different parameters: {detail}")]
    AlreadyExists { name: String, detail: String },
    #[error("volume {volume:?} is attached to {holders:?}; detach it first or force-detach")]
    AttachedElsewhere {
        volume: String,
        holders: Vec<String>,
    },
    #[error("volume {volume:?} is attached to {holders:?}; detach it before removing it")]
    InUse {
        volume: String,
        holders: Vec<String>,
    },
    #[error("pool {pool:?} has {free_bytes} bytes free, {wanted_bytes} requested")]
    InsufficientCapacity {
        pool: String,
        free_bytes: u64,
        wanted_bytes: u64,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A transient failure: retrying later may succeed.
    #[error("back-end unavailable: {0}")]
    Unavailable(String),
    #[error("back-end i/o error: {0}")]
    Io(String),
}

impl Error {
    pub fn io(context: impl std::fmt::Display, err: std::io::Error) -> Self {
        Error::Io(format!("{context}: {err}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage back-end. Every method is safe to retry:
/// - `create` with a name that exists and the same size returns the existing volume;
///   a different size is `AlreadyExists`.
/// - `remove` of an unknown id succeeds; of an attached volume is `InUse`.
/// - `attach` to the instance that already holds it returns that attachment; to another
///   instance of a `SingleWriter` volume is `AttachedElsewhere`.
/// - `detach` of an instance that holds no attachment succeeds.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The driver kind (`vfs`, `fault`, ...), as libStorage clients know it.
    fn kind(&self) -> &str;
    /// Total and free bytes per pool and zone.
    async fn capacity(&self) -> Result<Vec<PoolCapacity>>;
    /// Every volume on the back-end that this driver owns, sorted by id.
    async fn list(&self) -> Result<Vec<DriverVolume>>;
    /// The id, name and size of every volume `list` returns, sorted by id: what the
    /// reconciler compares with the store. A driver that keeps an index of its volumes in
    /// memory answers from it instead of reading every volume's metadata again.
    async fn inventory(&self) -> Result<Vec<Listed>> {
        Ok(self.list().await?.into_iter().map(Listed::from).collect())
    }
    async fn inspect(&self, id: &str) -> Result<DriverVolume>;
    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume>;
    async fn remove(&self, id: &str) -> Result<()>;
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment>;
    async fn detach(&self, id: &str, instance_id: &str) -> Result<()>;
    /// Remove every attachment of the volume, whoever holds it.
    async fn force_detach(&self, id: &str) -> Result<()>;
    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot>;
    /// Whether `snapshot_copy` is supported (RBD snapshots belong to their image and cannot be
    /// copied into a second snapshot of it).
    fn can_copy_snapshots(&self) -> bool {
        false
    }
    /// A new snapshot of the same volume holding the same data as `snapshot_id`; idempotent
    /// by (volume, name) like `snapshot_create`. Back-ends that cannot copy snapshots say so.
    async fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        let _ = name;
        Err(Error::InvalidArgument(format!(
            "driver {:?} cannot copy snapshots (asked to copy {snapshot_id:?}); create a volume from the snapshot and snapshot that",
            self.kind()
        )))
    }
    /// Snapshots of one volume, or of all volumes when `volume_id` is `None`.
    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>>;
    /// Removing an unknown snapshot succeeds.
    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()>;
    /// A new volume holding the snapshot's data; idempotent by `req.name` like `create`.
    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume>;
    /// A new volume holding a copy of `volume_id`'s data; idempotent by `req.name`.
    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume>;
    /// Grow a volume; shrinking is `InvalidArgument`, the same size is a no-op.
    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume>;
    /// The back-end's instance id for an agent known only by hostname or IP address (the
    /// `ebs` driver asks EC2's DescribeInstances); `None` when the back-end cannot tell or
    /// does not know the host. Back-ends whose instance ids are free-form keep the default.
    async fn resolve_instance(&self, host: &str) -> Result<Option<String>> {
        let _ = host;
        Ok(None)
    }
    /// This Polly just became the leader (`[ha]`): another process may have driven the
    /// back-end since the driver was opened, so drop or reload any in-memory view of it.
    /// Back-ends that keep none keep the default.
    async fn take_over(&self) -> Result<()> {
        Ok(())
    }
    /// Where a node finds the data of volume `id` once it is attached there: what
    /// `polly node` mounts. `device` is the device or token of the node's attachment, as
    /// the back-end recorded it. Back-ends whose volumes no node can mount keep the default.
    async fn node_source(&self, id: &str, device: Option<&str>) -> Result<crate::mount::Source> {
        let _ = device;
        Err(Error::InvalidArgument(format!(
            "volume {id:?} lives on a {:?} back-end, which nodes cannot mount",
            self.kind()
        )))
    }
}

pub type DynDriver = Arc<dyn Driver>;

/// The driver registry: build a service's driver from its config (wrapped in the fault
/// injector when the service has a `fault` section).
pub fn build(s: &ServiceConfig, root: &std::path::Path) -> Result<DynDriver> {
    let base: DynDriver = match s.driver {
        DriverKind::Vfs => Arc::new(vfs::VfsDriver::open(vfs::VfsConfig {
            root: root.to_path_buf(),
            quota_bytes: s.quota_bytes,
            pool: s.pool.clone(),
            zone: s.zone.clone(),
        })?),
        DriverKind::Loop => Arc::new(r#loop::LoopDriver::open(r#loop::LoopConfig {
            root: root.to_path_buf(),
            quota_bytes: s.quota_bytes,
            pool: s.pool.clone(),
            zone: s.zone.clone(),
            filesystem: s.filesystem.clone(),
        })?),
        DriverKind::Rbd => Arc::new(rbd::RbdDriver::new(rbd::RbdConfig {
            conf: s.ceph_conf.clone().ok_or_else(|| {
                Error::InvalidArgument(format!("service {:?}: rbd needs ceph_conf", s.name))
            })?,
            pools: s.ceph_pools.clone(),
            client_id: s.ceph_client_id.clone(),
            prefix: format!("polly-{}-", s.name),
            quota_bytes: s.quota_bytes,
            zone: s.zone.clone(),
        })?),
        DriverKind::Ebs => {
            let cfg = s.ebs.clone().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "service {:?}: driver ebs needs an [services.ebs] section",
                    s.name
                ))
            })?;
            Arc::new(ebs::EbsDriver::from_config(cfg, &s.name)?)
        }
    };
    Ok(match &s.fault {
        Some(f) => Arc::new(fault::FaultDriver::new(base, f.clone())),
        None => base,
    })
}
