//! `[libstorage]`: the façade's listener, JWT auth (global and per service), TLS and the
//! synchronous-call timeout, with their defaults and the section's own checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// What is wrong with `[libstorage]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LibStorageConfigError {
    #[error("libstorage.exe_timeout_ms must be positive")]
    ZeroExeTimeout,
    /// A JWT policy cannot be built (its message names the key, algorithm or file).
    #[error("{0}")]
    Auth(String),
    /// The TLS files cannot be loaded (its message names the file).
    #[error("{0}")]
    Tls(String),
}

impl LibStorageConfig {
    /// Checks the section on its own, loading what it names (JWT key files, TLS PEM files)
    /// so a bad file is a config error. That `services` keys name configured services is
    /// checked where the services are known.
    pub fn validate(&self) -> Result<(), LibStorageConfigError> {
        if self.exe_timeout_ms == 0 {
            return Err(LibStorageConfigError::ZeroExeTimeout);
        }
        super::auth::Auth::from_config(self).map_err(LibStorageConfigError::Auth)?;
        if let Some(t) = &self.tls {
            super::tls::server_config(t).map_err(LibStorageConfigError::Tls)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_own_checks() {
        let c: LibStorageConfig = toml::from_str("").unwrap();
        assert_eq!(c, LibStorageConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:7979");
        assert_eq!(c.exe_timeout_ms, 60_000);
        c.validate().unwrap();
        let c: LibStorageConfig = toml::from_str("exe_timeout_ms = 0").unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "libstorage.exe_timeout_ms must be positive"
        );
        let c: LibStorageConfig = toml::from_str("[auth]\nallow = [\"a\"]").unwrap();
        assert!(matches!(c.validate(), Err(LibStorageConfigError::Auth(_))));
        let c: LibStorageConfig =
            toml::from_str("[tls]\ncert_file = \"/nonexistent/c\"\nkey_file = \"/nonexistent/k\"")
                .unwrap();
        let e = c.validate().unwrap_err();
        assert!(matches!(e, LibStorageConfigError::Tls(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/c"), "{e}");
        assert!(toml::from_str::<LibStorageConfig>("[tls]\ncert_file = \"/c\"").is_err());
        assert!(toml::from_str::<LibStorageConfig>("[services.s.auth]\nallows = []").is_err());
    }
}
