//! Configuration: one serde struct read from TOML (`--config` / `POLLY_CONFIG`), then
//! `POLLY_*` environment variables and command-line flags on top (flags win). Every field's
//! default is stated next to it and repeated in the README.
//!
//! Each section's type, defaults and own checks live with the module that uses it (`[store]`
//! in `store`, `[[services]]` in `driver`, `[mesos]` in `mesos::client`, ...); this module only
//! composes them into [`Config`], loads it (`load.rs`) and checks what spans sections
//! (`validate.rs`).

mod load;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{Overrides, ParseError};

use crate::admin::AdminConfig;
use crate::driver::{DriverKind, ServiceConfig, ServiceConfigError};
use crate::fencing::{FencingConfig, FencingConfigError};
use crate::ha::{HaConfig, HaConfigError};
use crate::libstorage::{LibStorageConfig, LibStorageConfigError};
use crate::mesos::client::{MesosConfig, MesosConfigError};
use crate::store::{StoreConfig, StoreConfigError};
use crate::volumes::{ReconcilerConfig, ReconcilerConfigError};

/// Polly's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store and the default vfs volumes live. Default `./polly-data`.
    pub data_dir: PathBuf,
    pub admin: AdminConfig,
    pub libstorage: LibStorageConfig,
    /// Storage services. Default: one service `vfs` using the vfs driver in `<data_dir>/vfs`.
    pub services: Vec<ServiceConfig>,
    /// Seconds a single driver call may take before Polly gives up on it. Default 60.
    pub driver_timeout_secs: u64,
    /// The Mesos master Polly subscribes to as a framework. Default: none (embedded mode).
    #[serde(default)]
    pub mesos: MesosConfig,
    /// The capacity poller and the storage-offer endpoint (`[offers]`).
    #[serde(default)]
    pub offers: OffersConfig,
    /// Lost agents and their attachments (`[fencing]`).
    #[serde(default)]
    pub fencing: FencingConfig,
    /// The periodic reconciler (`[reconciler]`).
    #[serde(default)]
    pub reconciler: ReconcilerConfig,
    /// Where Polly's state lives (`[store]`): sled under the data dir, or etcd.
    #[serde(default)]
    pub store: StoreConfig,
    /// High availability (`[ha]`): several instances on one etcd store, one leader.
    #[serde(default)]
    pub ha: HaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./polly-data"),
            admin: AdminConfig::default(),
            libstorage: LibStorageConfig::default(),
            services: vec![ServiceConfig::new("vfs", DriverKind::Vfs)],
            store: StoreConfig::default(),
            ha: HaConfig::default(),
            driver_timeout_secs: 60,
            mesos: MesosConfig::default(),
            offers: OffersConfig::default(),
            fencing: FencingConfig::default(),
            reconciler: ReconcilerConfig::default(),
        }
    }
}

impl Config {
    /// The sled directory (unused with `store.backend = "etcd"`).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// `[offers]`: the capacity poller and the Mesos storage-offer endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OffersConfig {
    /// Storage-offer endpoint (Mesos v1 scheduler API). Default 127.0.0.1:7980 (not 5051,
    /// which a Mesos agent on the same node holds).
    pub listen: SocketAddr,
    /// Capacity poll period per service. Default 10.
    pub poll_interval_secs: f64,
    /// An offer not answered within this is rescinded. Default 60.
    pub offer_timeout_secs: f64,
    /// HEARTBEAT period on subscription streams. Default 15 (as a Mesos master).
    pub heartbeat_interval_secs: f64,
    /// Period of allocation rounds (they also run after every call). Default 1000.
    pub allocation_interval_ms: u64,
    /// Kept free in every pool, never offered. Default 0.
    pub headroom_bytes: u64,
    /// Agent attribute naming the instance id volumes are attached to. Default "polly_instance".
    pub instance_attribute: String,
    /// Static agent id (or hostname) to instance id map; used when no REX-Ray client has
    /// reported an instance for the agent's hostname and it has no instance attribute.
    pub instances: BTreeMap<String, String>,
    /// How long a framework's reservations are kept after it tears down before an admin may
    /// release them (`polly reservation release`). Default 3600 (one hour).
    pub teardown_grace_secs: f64,
    /// How long an offer operation's record is kept once its terminal status was
    /// acknowledged: until then an ACCEPT with the same operation id is reported, not run
    /// again, and RECONCILE_OPERATIONS answers with its status; after it the record is
    /// removed and the operation is unknown (`OPERATION_UNKNOWN`), as with a Mesos master,
    /// which forgets an operation once its terminal status is acknowledged. Bounds the
    /// store: every recorded operation would otherwise be kept for ever. Default 3600.
    pub operation_retention_secs: f64,
    /// Weight and quota per role (`[offers.roles.<role>]`). Default: weight 1, no quota.
    pub roles: BTreeMap<String, ShareConfig>,
    /// Weight and quota per framework id (`[offers.frameworks.<id>]`). Default: weight 1, no
    /// quota.
    pub frameworks: BTreeMap<String, ShareConfig>,
}

/// A role's or a framework's share of disk offers: its weight in fair sharing and its quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShareConfig {
    /// Weight in weighted fair sharing (DRF on disk). Default 1.
    pub weight: f64,
    /// Most bytes held plus offered. Default: no limit.
    pub quota_bytes: Option<u64>,
    /// Most volumes held plus offered (a RAW share counts as one). Default: no limit.
    pub quota_volumes: Option<u32>,
}

impl Default for ShareConfig {
    fn default() -> Self {
        ShareConfig {
            weight: 1.0,
            quota_bytes: None,
            quota_volumes: None,
        }
    }
}

impl ShareConfig {
    /// The engine's quota (bytes rounded down to whole MB, as offers count them).
    pub fn quota(&self) -> crate::offers::Quota {
        crate::offers::Quota {
            max_mb: self.quota_bytes.map(|b| b >> 20),
            max_volumes: self.quota_volumes,
        }
    }
}

impl Default for OffersConfig {
    fn default() -> Self {
        OffersConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7980)),
            poll_interval_secs: 10.0,
            offer_timeout_secs: 60.0,
            heartbeat_interval_secs: 15.0,
            allocation_interval_ms: 1000,
            headroom_bytes: 0,
            instance_attribute: "polly_instance".into(),
            instances: BTreeMap::new(),
            teardown_grace_secs: 3600.0,
            operation_retention_secs: 3600.0,
            roles: BTreeMap::new(),
            frameworks: BTreeMap::new(),
        }
    }
}

impl OffersConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("poll_interval_secs", self.poll_interval_secs),
            ("offer_timeout_secs", self.offer_timeout_secs),
            ("heartbeat_interval_secs", self.heartbeat_interval_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(format!(
                    "offers.{name} must be a positive number of seconds"
                ));
            }
        }
        if self.allocation_interval_ms == 0 {
            return Err("offers.allocation_interval_ms must be positive".into());
        }
        for (name, g) in [
            ("teardown_grace_secs", self.teardown_grace_secs),
            ("operation_retention_secs", self.operation_retention_secs),
        ] {
            if !(g.is_finite() && (0.0..1e10).contains(&g)) {
                return Err(format!(
                    "offers.{name} must be a non-negative number of seconds"
                ));
            }
        }
        for (kind, map) in [("roles", &self.roles), ("frameworks", &self.frameworks)] {
            for (name, c) in map {
                if !(c.weight.is_finite() && c.weight > 0.0) {
                    return Err(format!(
                        "offers.{kind}.{name}.weight must be a positive number"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.poll_interval_secs)
    }
}

/// A configuration problem, reported as one line before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error("invalid config: no services configured: add at least one [[services]] entry")]
    NoServices,
    #[error("invalid config: service name {0:?} must be 1-128 letters, digits, '.', '_' or '-'")]
    ServiceName(String),
    #[error("invalid config: service {0:?} is configured twice")]
    ServiceTwice(String),
    #[error("invalid config: driver_timeout_secs must be positive")]
    ZeroDriverTimeout,
    #[error("invalid config: libstorage.services.{0}: no [[services]] entry is named {0:?}")]
    UnknownLibStorageService(String),
    #[error("invalid config: admin and libstorage both listen on {0}")]
    SharedListener(SocketAddr),
    #[error("invalid config: {0}")]
    Service(#[from] ServiceConfigError),
    #[error("invalid config: {0}")]
    LibStorage(#[from] LibStorageConfigError),
    #[error("invalid config: {0}")]
    Mesos(#[from] MesosConfigError),
    #[error("invalid config: {0}")]
    Fencing(#[from] FencingConfigError),
    #[error("invalid config: {0}")]
    Reconciler(#[from] ReconcilerConfigError),
    #[error("invalid config: {0}")]
    Store(#[from] StoreConfigError),
    #[error("invalid config: {0}")]
    Ha(#[from] HaConfigError),
    /// `[offers]`'s own check failed.
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
