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

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{Overrides, ParseError};

use crate::admin::AdminConfig;
use crate::broker::{BrokerConfig, BrokerConfigError};
use crate::csi::{CsiConfig, CsiConfigError};
use crate::driver::{DriverKind, ServiceConfig, ServiceConfigError};
use crate::fencing::{FencingConfig, FencingConfigError};
use crate::ha::{HaConfig, HaConfigError};
use crate::libstorage::{LibStorageConfig, LibStorageConfigError};
use crate::mesos::client::{MesosConfig, MesosConfigError};
pub use crate::offer_endpoint::config::{OffersConfig, ShareConfig};
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
    /// The CSI Identity and Controller services (`[csi]`).
    #[serde(default)]
    pub csi: CsiConfig,
    /// The Open Service Broker (`[broker]`), off until it has credentials.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// The limits of every HTTP listener (`[http]`): request deadlines, connections.
    #[serde(default)]
    pub http: crate::listener::HttpLimits,
    /// `[node]`, read by `polly node` (`crate::node::NodeSection`): the server accepts it
    /// and leaves it alone, so one file can configure both on a host that runs both.
    #[serde(default, skip_serializing)]
    pub node: Option<toml::Table>,
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
            csi: CsiConfig::default(),
            broker: BrokerConfig::default(),
            http: crate::listener::HttpLimits::default(),
            node: None,
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
    #[error("invalid config: {0}")]
    Offers(#[from] crate::offer_endpoint::config::Invalid),
    #[error("invalid config: {0}")]
    Csi(#[from] CsiConfigError),
    #[error("invalid config: {0}")]
    Broker(#[from] BrokerConfigError),
    #[error("invalid config: {0}")]
    Http(#[from] crate::listener::HttpLimitsError),
}

#[cfg(test)]
mod tests;
