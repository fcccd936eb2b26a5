//! `[store]`: where Polly's own state lives (sled under the data dir, or an etcd cluster),
//! the section's defaults and its own checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// What is wrong with `[store]`; each message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreConfigError {
    #[error("{}", ETCD_FEATURE_MISSING)]
    EtcdFeatureMissing,
    #[error("store.etcd.endpoints is empty: name at least one etcd client URL")]
    NoEndpoints,
    #[error("store.etcd.endpoints: {0:?} must start with http:// or https://")]
    EndpointScheme(String),
    #[error("store.etcd.endpoints: {0:?} is https: set store.etcd.ca_file (and cert_file/key_file for client certificates)")]
    HttpsWithoutTls(String),
    #[error("store.etcd.endpoints: {0:?} is http, but TLS files are set: use https:// endpoints")]
    HttpWithTls(String),
    #[error("store.etcd.prefix must not be empty")]
    EmptyPrefix,
    #[error("store.etcd.cert_file and store.etcd.key_file go together")]
    CertWithoutKey,
    #[error("store.etcd.user and store.etcd.password go together")]
    UserWithoutPassword,
    #[error("{name} must be a positive number of seconds, not {value}")]
    NotPositiveSecs { name: &'static str, value: f64 },
}

impl StoreConfig {
    /// The etcd section is checked only when it is used, and only in a build that can use it.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if self.backend == StoreBackend::Etcd {
            if !cfg!(feature = "etcd") {
                return Err(StoreConfigError::EtcdFeatureMissing);
            }
            self.etcd.validate()?;
        }
        Ok(())
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

    pub fn validate(&self) -> Result<(), StoreConfigError> {
        if self.endpoints.is_empty() {
            return Err(StoreConfigError::NoEndpoints);
        }
        for e in &self.endpoints {
            let https = e.starts_with("https://");
            if !https && !e.starts_with("http://") {
                return Err(StoreConfigError::EndpointScheme(e.clone()));
            }
            if https != self.tls() {
                return Err(if https {
                    StoreConfigError::HttpsWithoutTls(e.clone())
                } else {
                    StoreConfigError::HttpWithTls(e.clone())
                });
            }
        }
        if self.prefix.is_empty() {
            return Err(StoreConfigError::EmptyPrefix);
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(StoreConfigError::CertWithoutKey);
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(StoreConfigError::UserWithoutPassword);
        }
        positive_secs("store.etcd.request_timeout_secs", self.request_timeout_secs)?;
        positive_secs("store.etcd.connect_timeout_secs", self.connect_timeout_secs)?;
        Ok(())
    }
}

fn positive_secs(name: &'static str, value: f64) -> Result<(), StoreConfigError> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(())
    } else {
        Err(StoreConfigError::NotPositiveSecs { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> StoreConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn store_section() {
        let c = parse("");
        assert_eq!(c.backend, StoreBackend::Sled);
        c.validate().unwrap();
        let etcd = |extra: &str| parse(&format!("backend = \"etcd\"\n[etcd]\n{extra}"));
        let c = etcd("prefix = \"/a\"\nuser = \"u\"\npassword = \"p\"");
        assert_eq!(c.etcd.key_prefix(), "/a/");
        assert_eq!(c.etcd.endpoints, vec!["http://127.0.0.1:2379"]);
        let err = c.validate();
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
            let e = etcd(extra).etcd.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
        assert!(toml::from_str::<StoreConfig>("backend = \"zk\"").is_err());
        assert!(toml::from_str::<StoreConfig>("[etcd]\nendpoint = []").is_err());
    }

    #[test]
    fn etcd_errors_read_as_before() {
        let c = EtcdConfig {
            endpoints: vec!["https://e:2379".into()],
            ..EtcdConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "store.etcd.endpoints: \"https://e:2379\" is https: set store.etcd.ca_file (and cert_file/key_file for client certificates)"
        );
        let c = EtcdConfig {
            connect_timeout_secs: f64::NAN,
            ..EtcdConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "store.etcd.connect_timeout_secs must be a positive number of seconds, not NaN"
        );
    }
}
