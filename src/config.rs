//! Configuration: one serde struct read from TOML (`--config` / `POLLY_CONFIG`), then
//! `POLLY_*` environment variables and command-line flags on top (flags win). Every field's
//! default is stated next to it and repeated in the README.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::driver::ebs::EbsConfig;
use crate::driver::fault::FaultConfig;

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

/// `[ha]`: leader election among Polly instances sharing one etcd store (needs
/// `store.backend = "etcd"`). Only the leader acts; followers forward to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Take part in leader election. Default false (the instance acts alone).
    pub enabled: bool,
    /// Seconds the leader's etcd lease lives without a keep-alive: a dead leader is replaced
    /// about this long after it stopped. Default 5.
    pub lease_ttl_secs: u64,
    /// Host name or IP other instances and clients use to reach this one (written, with the
    /// bound ports, into the election key). Default: the IP each listener is bound to, which
    /// must then not be a wildcard (0.0.0.0 / ::).
    pub advertise_host: Option<String>,
    /// PEM certificates a follower trusts when it forwards libStorage calls to a leader whose
    /// façade serves TLS. Default: this instance's own `libstorage.tls.cert_file` (one
    /// certificate shared by the instances, or a chain that includes its CA).
    pub leader_ca_file: Option<PathBuf>,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            lease_ttl_secs: 5,
            advertise_host: None,
            leader_ca_file: None,
        }
    }
}

impl HaConfig {
    pub fn validate(&self, backend: StoreBackend) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if backend != StoreBackend::Etcd {
            return Err("ha.enabled needs store.backend = \"etcd\": the instances elect their leader in the shared etcd store".into());
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            return Err(format!(
                "ha.lease_ttl_secs must be between 2 and 3600, not {}",
                self.lease_ttl_secs
            ));
        }
        if self
            .advertise_host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
        {
            return Err("ha.advertise_host must be a bare host name or IP".into());
        }
        Ok(())
    }
}

/// `[store]`: the storage backend of Polly's own state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (embedded, in `<data_dir>/store`) or `etcd` (needs a polly built with the
    /// cargo feature `etcd`). Default `sled`.
    pub backend: StoreBackend,
    /// `[store.etcd]`: the cluster, when `backend = "etcd"`.
    pub etcd: EtcdConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Sled,
    Etcd,
}

/// Why `backend = "etcd"` cannot run in this build.
pub const ETCD_FEATURE_MISSING: &str = "store.backend = \"etcd\" needs a polly built with the cargo feature etcd (cargo build --features etcd; it needs protoc: apt-get install protobuf-compiler)";

/// `[store.etcd]`: the etcd cluster Polly keeps its state in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379`, or `https://` with TLS). Default
    /// `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Every key Polly writes starts with this (a `/` is added if missing), so several Polly
    /// clusters can share one etcd. Default `/polly/`.
    pub prefix: String,
    /// PEM CA certificate that signed the etcd servers' certificates. Default: none (the
    /// system's roots are not used; `https://` endpoints then need this).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd's `--client-cert-auth`, with `key_file`. Default: none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    pub key_file: Option<PathBuf>,
    /// etcd user (with `password`) when etcd has auth enabled. Default: none.
    pub user: Option<String>,
    /// Password of `user`. Default: none.
    pub password: Option<String>,
    /// Seconds one etcd request (a read or a transaction) may take. Default 10.
    pub request_timeout_secs: f64,
    /// Seconds to wait for a connection to an endpoint. Default 5.
    pub connect_timeout_secs: f64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/polly/".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            password: None,
            request_timeout_secs: 10.0,
            connect_timeout_secs: 5.0,
        }
    }
}

impl EtcdConfig {
    /// Whether the client talks TLS to etcd.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// The key prefix, ending in `/`.
    pub fn key_prefix(&self) -> String {
        if self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("store.etcd.endpoints is empty: name at least one etcd client URL".into());
        }
        for e in &self.endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return Err(format!(
                    "store.etcd.endpoints: {e:?} must start with http:// or https://"
                ));
            }
            if https != self.tls() {
                return Err(format!(
                    "store.etcd.endpoints: {e:?} {}",
                    if https {
                        "is https: set store.etcd.ca_file (and cert_file/key_file for client certificates)"
                    } else {
                        "is http, but TLS files are set: use https:// endpoints"
                    }
                ));
            }
        }
        if self.prefix.is_empty() {
            return Err("store.etcd.prefix must not be empty".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("store.etcd.cert_file and store.etcd.key_file go together".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("store.etcd.user and store.etcd.password go together".into());
        }
        positive_secs("store.etcd.request_timeout_secs", self.request_timeout_secs)?;
        positive_secs("store.etcd.connect_timeout_secs", self.connect_timeout_secs)?;
        Ok(())
    }
}

/// `[fencing]`: when an agent counts as lost and when its attachments are released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingConfig {
    /// An agent lost this long is fenced automatically (its attachments force-detached).
    /// Default: none (off): only an operator's `polly agent fence` releases them, because a
    /// node that merely stopped talking may still be writing to its volumes.
    pub auto_release_after_secs: Option<f64>,
    /// A REX-Ray instance that reported nothing for this long counts as lost. Default: none
    /// (off): REX-Ray clients call only when they mount or list, so silence alone is no sign
    /// of a dead node unless something on the node calls regularly.
    pub instance_lost_after_secs: Option<f64>,
    /// How often lost agents are looked for, auto-release timers checked and interrupted
    /// fences resumed. Default 5.
    pub check_interval_secs: f64,
}

impl Default for FencingConfig {
    fn default() -> Self {
        FencingConfig {
            auto_release_after_secs: None,
            instance_lost_after_secs: None,
            check_interval_secs: 5.0,
        }
    }
}

/// `[reconciler]`: the background pass that resolves intents and compares every back-end's
/// inventory with the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcilerConfig {
    /// Seconds between passes. Default 30.
    pub interval_secs: f64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            interval_secs: 30.0,
        }
    }
}

fn positive_secs(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a positive number of seconds, not {v}"
        ))
    }
}

impl FencingConfig {
    pub fn validate(&self) -> Result<(), String> {
        positive_secs("fencing.check_interval_secs", self.check_interval_secs)?;
        if let Some(v) = self.auto_release_after_secs {
            positive_secs("fencing.auto_release_after_secs", v)?;
        }
        if let Some(v) = self.instance_lost_after_secs {
            positive_secs("fencing.instance_lost_after_secs", v)?;
        }
        Ok(())
    }
}

impl ReconcilerConfig {
    pub fn validate(&self) -> Result<(), String> {
        positive_secs("reconciler.interval_secs", self.interval_secs)
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs)
    }
}

pub use crate::offer_endpoint::config::{OffersConfig, ShareConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin API listen address. Default `127.0.0.1:7978`.
    pub listen: SocketAddr,
    /// Bearer token required on every admin call except health, readiness and metrics.
    /// Default: none (no authentication; keep the listener on loopback).
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibStorageConfig {
    /// libStorage façade listen address. Default `127.0.0.1:7979`.
    pub listen: SocketAddr,
    /// `[libstorage.auth]`: JWT bearer auth checked on every façade route, `/` included.
    /// Default: none. Also supplies `key`/`alg` to per-service auth that sets none.
    pub auth: Option<AuthConfig>,
    /// `[libstorage.services.<name>]`: per-service façade settings, keyed by a name from
    /// `[[services]]`. Default: none.
    pub services: BTreeMap<String, LibStorageServiceConfig>,
    /// `[libstorage.tls]`: serve the façade over TLS. Default: none (plain HTTP).
    pub tls: Option<TlsConfig>,
    /// Milliseconds a synchronous request may run before the façade answers `408` with the
    /// Task (which keeps running; poll `GET /tasks/{id}`), like libStorage's
    /// `tasks.exeTimeout`. Default 60000.
    pub exe_timeout_ms: u64,
}

/// JWT bearer authentication (reference §3). Off unless `allow` is non-empty; when on, a
/// request needs `Authorization: Bearer <JWT>` signed with `key`/`alg`, currently valid
/// (`exp`/`nbf`, no leeway), carrying `sub`, `iat`, `exp` and `nbf`, whose `sub` matches an
/// `allow` entry and no `deny` entry (case-insensitive; deny wins).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC secret, or PEM public key (RS/PS/ES/EdDSA), or the path of a file holding either
    /// (a value naming an existing file, or starting with `/`, `./` or `../`, is a path;
    /// trailing newlines of an HMAC key file are dropped). Per-service auth without a key
    /// uses the global one. Required where `allow` is set.
    pub key: Option<String>,
    /// `HS256` (default), `HS384`, `HS512`, `RS256/384/512`, `PS256/384/512`, `ES256/384`,
    /// `EdDSA`. Per-service auth without an alg uses the global one.
    pub alg: Option<String>,
    /// Subjects let in: a bare subject, a whole JWT, or `tag:<JWT>` (the JWT's `sub` is used).
    pub allow: Vec<String>,
    /// Subjects refused even when allowed; same forms as `allow`.
    pub deny: Vec<String>,
}

/// Façade settings of one service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibStorageServiceConfig {
    /// JWT auth checked on routes naming this service, and on the all-services routes
    /// (`GET /services`, `GET /volumes`, `GET /snapshots`, `POST /volumes?detach`).
    pub auth: Option<AuthConfig>,
}

/// TLS on the façade listener (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Required.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: PathBuf,
}

/// Which driver a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Vfs,
    /// Sparse image files with a file system, attached through loop devices (needs root).
    Loop,
    /// Ceph RBD images through the `rbd`/`ceph` CLIs.
    Rbd,
    /// AWS EBS volumes through the EC2 API (the real API needs the `ebs` cargo feature).
    Ebs,
}

/// One storage service: a name clients use and the driver behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, unique; what libStorage clients call the service. Required.
    pub name: String,
    /// Driver: `vfs`, `loop`, `rbd` or `ebs`. Required.
    pub driver: DriverKind,
    /// vfs, loop: root directory. Default `<data_dir>/vfs/<name>`.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// vfs: cap on the bytes the service may provision. Default: none (the file system's size).
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Pool name reported for capacity. Default `default`.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Availability zone of the service's pool. Default: none.
    #[serde(default)]
    pub zone: Option<String>,
    /// Wrap the driver in the fault injector (tests and benchmarks). Default: none.
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    /// loop: file system created in each new volume (`ext2`, `ext3` or `ext4`). Default `ext4`.
    #[serde(default = "default_filesystem")]
    pub filesystem: String,
    /// rbd: path of the ceph.conf the `rbd`/`ceph` CLIs use. Required for rbd.
    #[serde(default)]
    pub ceph_conf: Option<PathBuf>,
    /// rbd: pools served (each a Polly pool; the first is the default). Default `["rbd"]`.
    #[serde(default = "default_ceph_pools")]
    pub ceph_pools: Vec<String>,
    /// rbd: Ceph client id (`--id`). Default: the CLI's (`admin`).
    #[serde(default)]
    pub ceph_client_id: Option<String>,
    /// ebs: `[services.ebs]`, the EBS back-end (zones, quotas, region, endpoint). Required
    /// for ebs.
    #[serde(default)]
    pub ebs: Option<EbsConfig>,
}

fn default_ceph_pools() -> Vec<String> {
    vec!["rbd".into()]
}

fn default_filesystem() -> String {
    "ext4".into()
}

fn default_pool() -> String {
    "default".into()
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7978)),
            token: None,
        }
    }
}

impl Default for LibStorageConfig {
    fn default() -> Self {
        LibStorageConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7979)),
            auth: None,
            services: BTreeMap::new(),
            tls: None,
            exe_timeout_ms: 60_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./polly-data"),
            admin: AdminConfig::default(),
            libstorage: LibStorageConfig::default(),
            services: vec![ServiceConfig {
                name: "vfs".into(),
                driver: DriverKind::Vfs,
                root: None,
                quota_bytes: None,
                pool: default_pool(),
                zone: None,
                fault: None,
                filesystem: default_filesystem(),
                ceph_conf: None,
                ceph_pools: default_ceph_pools(),
                ceph_client_id: None,
                ebs: None,
            }],
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

/// Wire encoding of scheduler calls and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MesosContentType {
    /// `application/json`
    Json,
    /// `application/x-protobuf`
    Protobuf,
}

/// An agent known from configuration rather than from a master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticAgent {
    /// Agent id. Required.
    pub id: String,
    /// Hostname. Required.
    pub hostname: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// `[mesos]`: the Mesos scheduler client. With no `masters` Polly runs embedded and learns
/// agents only from REX-Ray instances and `agents` below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MesosConfig {
    /// Masters as `host:port`; probed in order, 307 redirects followed. Default: none.
    pub masters: Vec<String>,
    /// `FrameworkInfo.name`. Default `polly`.
    pub framework_name: String,
    /// `FrameworkInfo.user`. Default `root`.
    pub user: String,
    /// `FrameworkInfo.roles` (MULTI_ROLE). Default `["*"]`.
    pub roles: Vec<String>,
    /// `FrameworkInfo.principal`, also the HTTP Basic user. Default: none.
    pub principal: Option<String>,
    /// HTTP Basic password (with `principal`). Default: none.
    pub secret: Option<String>,
    /// `FrameworkInfo.failover_timeout` in seconds. Default 604800 (one week).
    pub failover_timeout_secs: f64,
    /// `FrameworkInfo.checkpoint`. Default true.
    pub checkpoint: bool,
    /// `FrameworkInfo.capabilities` by name. Default MULTI_ROLE, RESERVATION_REFINEMENT,
    /// REGION_AWARE.
    pub capabilities: Vec<String>,
    /// `json` or `protobuf`. Default `json`.
    pub content_type: MesosContentType,
    /// `Filters.refuse_seconds` sent with every DECLINE. Default 300.
    pub refuse_seconds: f64,
    /// SUPPRESS once this many seconds pass with no new agent in offers. Default 10.
    pub quiet_secs: f64,
    /// REVIVE this often so new agents are seen. Default 300.
    pub revive_interval_secs: f64,
    /// First reconnect delay in ms; doubles (with jitter) per failure. Default 500.
    pub backoff_initial_ms: u64,
    /// Reconnect delay cap in ms. Default 15000.
    pub backoff_max_ms: u64,
    /// Timeout of every call, and of the SUBSCRIBE response headers. Default 75 s.
    pub request_timeout_secs: f64,
    /// Reconnect after this many heartbeat intervals without any event. Default 5.
    pub missed_heartbeats: u32,
    /// Largest RecordIO record accepted from the master. Default 64 MiB.
    pub max_record_bytes: u64,
    /// Also poll the operator API `GET_AGENTS` for the full agent inventory. Default false.
    pub operator_agents: bool,
    /// Agents known from configuration. Default: none.
    pub agents: Vec<StaticAgent>,
}

impl Default for MesosConfig {
    fn default() -> Self {
        MesosConfig {
            masters: Vec::new(),
            framework_name: "polly".into(),
            user: "root".into(),
            roles: vec!["*".into()],
            principal: None,
            secret: None,
            failover_timeout_secs: 604800.0,
            checkpoint: true,
            capabilities: vec![
                "MULTI_ROLE".into(),
                "RESERVATION_REFINEMENT".into(),
                "REGION_AWARE".into(),
            ],
            content_type: MesosContentType::Json,
            refuse_seconds: 300.0,
            quiet_secs: 10.0,
            revive_interval_secs: 300.0,
            backoff_initial_ms: 500,
            backoff_max_ms: 15_000,
            request_timeout_secs: 75.0,
            missed_heartbeats: 5,
            max_record_bytes: 64 << 20,
            operator_agents: false,
            agents: Vec::new(),
        }
    }
}

impl MesosConfig {
    /// Whether a master is configured (otherwise Polly runs embedded).
    pub fn enabled(&self) -> bool {
        !self.masters.is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        for m in &self.masters {
            let ok = m.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok()
            });
            if !ok {
                return Err(format!("mesos.masters: {m:?} is not host:port"));
            }
        }
        for (name, v) in [
            ("failover_timeout_secs", self.failover_timeout_secs),
            ("refuse_seconds", self.refuse_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("mesos.{name} must be a non-negative number"));
            }
        }
        for (name, v) in [
            ("quiet_secs", self.quiet_secs),
            ("revive_interval_secs", self.revive_interval_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("mesos.{name} must be positive"));
            }
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(
                "mesos.backoff_initial_ms must be positive and at most backoff_max_ms".into(),
            );
        }
        if self.missed_heartbeats == 0 || self.max_record_bytes == 0 {
            return Err(
                "mesos.missed_heartbeats and mesos.max_record_bytes must be positive".into(),
            );
        }
        for c in &self.capabilities {
            if crate::mesos::v1::framework_info::capability::Type::from_str_name(c).is_none() {
                return Err(format!("mesos.capabilities: unknown capability {c:?}"));
            }
        }
        if self.secret.is_some() && self.principal.is_none() {
            return Err("mesos.secret needs mesos.principal".into());
        }
        Ok(())
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
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Overrides from the environment and the command line (`None` = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub libstorage_listen: Option<SocketAddr>,
    pub offers_listen: Option<SocketAddr>,
}

impl Config {
    /// Read `path` (when given) and apply overrides, then validate.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, Error> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|message| Error::Parse {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => Config::default(),
        };
        if let Some(d) = &overrides.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(a) = overrides.admin_listen {
            cfg.admin.listen = a;
        }
        if let Some(t) = &overrides.admin_token {
            cfg.admin.token = Some(t.clone()).filter(|t| !t.is_empty());
        }
        if let Some(a) = overrides.libstorage_listen {
            cfg.libstorage.listen = a;
        }
        if let Some(a) = overrides.offers_listen {
            cfg.offers.listen = a;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse TOML; the message is one line naming the offending key.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().replace('\n', " ").trim().to_string())
    }

    pub fn validate(&self) -> Result<(), Error> {
        if self.services.is_empty() {
            return Err(Error::Invalid(
                "no services configured: add at least one [[services]] entry".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.services {
            if !crate::volumes::valid_name(&s.name) {
                return Err(Error::Invalid(format!(
                    "service name {:?} must be 1-128 letters, digits, '.', '_' or '-'",
                    s.name
                )));
            }
            if !seen.insert(s.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "service {:?} is configured twice",
                    s.name
                )));
            }
            if s.quota_bytes == Some(0) {
                return Err(Error::Invalid(format!(
                    "service {:?}: quota_bytes must be positive",
                    s.name
                )));
            }
            if !crate::driver::r#loop::FILESYSTEMS.contains(&s.filesystem.as_str()) {
                return Err(Error::Invalid(format!(
                    "service {:?}: filesystem {:?} is not one of {:?}",
                    s.name,
                    s.filesystem,
                    crate::driver::r#loop::FILESYSTEMS
                )));
            }
            if s.driver == DriverKind::Rbd && (s.ceph_conf.is_none() || s.ceph_pools.is_empty()) {
                return Err(Error::Invalid(format!(
                    "service {:?}: driver rbd needs ceph_conf and at least one of ceph_pools",
                    s.name
                )));
            }
            match (&s.driver, &s.ebs) {
                (DriverKind::Ebs, None) => {
                    return Err(Error::Invalid(format!(
                        "service {:?}: driver ebs needs a [services.ebs] section with zones",
                        s.name
                    )))
                }
                (DriverKind::Ebs, Some(e)) => {
                    e.validate()
                        .map_err(|e| Error::Invalid(format!("service {:?}: {e}", s.name)))?;
                    if e.attach_timeout_secs >= self.driver_timeout_secs as f64 {
                        return Err(Error::Invalid(format!(
                            "service {:?}: ebs.attach_timeout_secs ({}) must be below driver_timeout_secs ({}), or Polly gives up before the driver does",
                            s.name, e.attach_timeout_secs, self.driver_timeout_secs
                        )));
                    }
                }
                (_, Some(_)) => {
                    return Err(Error::Invalid(format!(
                        "service {:?}: [services.ebs] is only for driver ebs",
                        s.name
                    )))
                }
                (_, None) => {}
            }
            if let Some(f) = &s.fault {
                f.validate()
                    .map_err(|e| Error::Invalid(format!("service {:?}: fault: {e}", s.name)))?;
            }
        }
        if self.driver_timeout_secs == 0 {
            return Err(Error::Invalid(
                "driver_timeout_secs must be positive".into(),
            ));
        }
        for name in self.libstorage.services.keys() {
            if !self.services.iter().any(|s| &s.name == name) {
                return Err(Error::Invalid(format!(
                    "libstorage.services.{name}: no [[services]] entry is named {name:?}"
                )));
            }
        }
        if self.libstorage.exe_timeout_ms == 0 {
            return Err(Error::Invalid(
                "libstorage.exe_timeout_ms must be positive".into(),
            ));
        }
        crate::libstorage::auth::Auth::from_config(&self.libstorage).map_err(Error::Invalid)?;
        if let Some(t) = &self.libstorage.tls {
            crate::libstorage::tls::server_config(t).map_err(Error::Invalid)?;
        }
        self.mesos.validate().map_err(Error::Invalid)?;
        self.offers
            .validate()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.fencing.validate().map_err(Error::Invalid)?;
        self.reconciler.validate().map_err(Error::Invalid)?;
        if self.store.backend == StoreBackend::Etcd {
            if !cfg!(feature = "etcd") {
                return Err(Error::Invalid(ETCD_FEATURE_MISSING.into()));
            }
            self.store.etcd.validate().map_err(Error::Invalid)?;
        }
        self.ha
            .validate(self.store.backend)
            .map_err(Error::Invalid)?;
        if self.admin.listen == self.libstorage.listen && self.admin.listen.port() != 0 {
            return Err(Error::Invalid(format!(
                "admin and libstorage both listen on {}",
                self.admin.listen
            )));
        }
        Ok(())
    }

    /// The vfs root of a service.
    pub fn service_root(&self, s: &ServiceConfig) -> PathBuf {
        s.root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("vfs").join(&s.name))
    }

    /// The sled directory (unused with `store.backend = "etcd"`).
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = Config::default();
        assert_eq!(c.data_dir, PathBuf::from("./polly-data"));
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7978");
        assert_eq!(c.libstorage.listen.to_string(), "127.0.0.1:7979");
        assert_eq!(c.offers.listen.to_string(), "127.0.0.1:7980");
        assert_eq!(c.offers.poll_interval_secs, 10.0);
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].name, "vfs");
        assert_eq!(c.services[0].driver, DriverKind::Vfs);
        c.validate().unwrap();
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn file_and_overrides() {
        let c = Config::from_toml(
            r#"
            data_dir = "/tmp/x"
            [admin]
            listen = "127.0.0.1:1"
            [[services]]
            name = "fast"
            driver = "vfs"
            quota_bytes = 1000
            [services.fault]
            latency_ms = 5
            "#,
        )
        .unwrap();
        assert_eq!(c.services[0].quota_bytes, Some(1000));
        assert_eq!(c.services[0].fault.as_ref().unwrap().latency_ms, 5);
        assert_eq!(c.libstorage.listen.port(), 7979);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_one_line_errors() {
        for bad in [
            "nope = 1",
            "[admin]\nlisten = \"not an address\"",
            "[[services]]\nname = \"a\"\ndriver = \"floppy\"",
        ] {
            let e = Config::from_toml(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{e:?}");
        }
        let mut c = Config::default();
        c.services.push(c.services[0].clone());
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        c.services.clear();
        assert!(c.validate().is_err());
    }

    #[test]
    fn mesos_section_defaults_to_embedded_and_validates() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.mesos.enabled());
        assert_eq!(c.mesos.framework_name, "polly");
        let c = Config::from_toml(
            "[mesos]\nmasters = [\"m1:5050\", \"m2:5050\"]\ncontent_type = \"protobuf\"",
        )
        .unwrap();
        assert!(c.mesos.enabled());
        assert_eq!(c.mesos.content_type, MesosContentType::Protobuf);
        c.validate().unwrap();
        for bad in [
            "[mesos]\nmasters = [\"http://m1\"]",
            "[mesos]\ncapabilities = [\"TIME_TRAVEL\"]",
            "[mesos]\nbackoff_initial_ms = 0",
        ] {
            let c = Config::from_toml(bad).unwrap();
            assert!(
                c.validate().unwrap_err().to_string().contains("mesos"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ebs_service_parses_validates_and_builds_on_the_fake_cloud() {
        let c = Config::from_toml(
            r#"
            [[services]]
            name = "ebs"
            driver = "ebs"
            [services.ebs]
            region = "us-east-1"
            zones = ["us-east-1a", "us-east-1b"]
            [[services.ebs.quotas]]
            volume_type = "gp3"
            gib = 10240
            [[services.ebs.quotas]]
            volume_type = "io2"
            zone = "us-east-1a"
            gib = 2048
            [services.ebs.fake_cloud]
            instances = [{ zone = "us-east-1a", hostname = "node1" }]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let e = c.services[0].ebs.as_ref().unwrap();
        assert_eq!(e.default_type, "gp3");
        assert_eq!(e.attach_timeout_secs, 45.0);
        let d = crate::driver::build(&c.services[0], Path::new("/nonexistent")).unwrap();
        assert_eq!(d.kind(), "ebs");

        for (bad, needle) in [
            ("[[services]]\nname = \"e\"\ndriver = \"ebs\"", "[services.ebs]"),
            (
                "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = []",
                "zones",
            ),
            (
                "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]\ndefault_type = \"gp9\"",
                "gp9",
            ),
            (
                "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]\nattach_timeout_secs = 90",
                "driver_timeout_secs",
            ),
            (
                "[[services]]\nname = \"v\"\ndriver = \"vfs\"\n[services.ebs]\nzones = [\"a\"]",
                "only for driver ebs",
            ),
        ] {
            let c = Config::from_toml(bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "ebs"))]
    #[test]
    fn ebs_without_the_feature_or_a_fake_cloud_says_how_to_get_it() {
        let c = Config::from_toml(
            "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]",
        )
        .unwrap();
        c.validate().unwrap();
        let Err(e) = crate::driver::build(&c.services[0], Path::new("/x")) else {
            panic!("built an ebs driver with neither the SDK nor a fake cloud");
        };
        assert!(e.to_string().contains("--features ebs"), "{e}");
    }

    #[test]
    fn ha_section() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.ha.enabled);
        assert_eq!(c.ha.lease_ttl_secs, 5);
        let c = Config::from_toml("[ha]\nenabled = true").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("store.backend = \"etcd\""), "{e}");
        let on = |extra: &str| {
            Config::from_toml(&format!(
                "[store]\nbackend = \"etcd\"\n[ha]\nenabled = true\n{extra}"
            ))
            .unwrap()
        };
        on("advertise_host = \"polly-1\"")
            .ha
            .validate(StoreBackend::Etcd)
            .unwrap();
        for (extra, why) in [
            ("lease_ttl_secs = 1", "between 2 and 3600"),
            ("advertise_host = \"http://x\"", "bare host"),
        ] {
            let e = on(extra).ha.validate(StoreBackend::Etcd).unwrap_err();
            assert!(e.contains(why), "{extra}: {e}");
        }
        assert!(Config::from_toml("[ha]\nttl = 3").is_err());
    }

    #[test]
    fn store_section() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sled);
        let etcd = |extra: &str| {
            Config::from_toml(&format!(
                "[store]\nbackend = \"etcd\"\n[store.etcd]\n{extra}"
            ))
            .unwrap()
        };
        let c = etcd("prefix = \"/a\"\nuser = \"u\"\npassword = \"p\"");
        assert_eq!(c.store.etcd.key_prefix(), "/a/");
        assert_eq!(c.store.etcd.endpoints, vec!["http://127.0.0.1:2379"]);
        let err = c.validate().map(|_| ());
        if cfg!(feature = "etcd") {
            err.unwrap();
        } else {
            let e = err.unwrap_err().to_string();
            assert!(e.contains("--features etcd"), "{e}");
        }
        for (extra, why) in [
            ("endpoints = []", "empty"),
            ("endpoints = [\"127.0.0.1:2379\"]", "http://"),
            ("endpoints = [\"https://e:2379\"]", "ca_file"),
            ("ca_file = \"/ca.pem\"", "https:// endpoints"),
            ("user = \"u\"", "go together"),
            (
                "endpoints = [\"https://e:2379\"]\ncert_file = \"/c.pem\"",
                "go together",
            ),
            ("prefix = \"\"", "prefix"),
            ("request_timeout_secs = 0", "request_timeout_secs"),
        ] {
            let e = etcd(extra).store.etcd.validate().unwrap_err();
            assert!(e.contains(why), "{extra}: {e}");
        }
        assert!(Config::from_toml("[store]\nbackend = \"zk\"").is_err());
        assert!(Config::from_toml("[store.etcd]\nendpoint = []").is_err());
    }
}
