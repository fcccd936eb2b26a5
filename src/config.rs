//! Configuration: one serde struct read from TOML (`--config` / `POLLY_CONFIG`), then
//! `POLLY_*` environment variables and command-line flags on top (flags win). Every field's
//! default is stated next to it and repeated in the README.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
}

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
}

/// One storage service: a name clients use and the driver behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, unique; what libStorage clients call the service. Required.
    pub name: String,
    /// Driver: `vfs`. Required.
    pub driver: DriverKind,
    /// vfs: root directory. Default `<data_dir>/vfs/<name>`.
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
            }],
            driver_timeout_secs: 60,
        }
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

    /// The sled directory.
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
}
