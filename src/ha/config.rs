//! `[ha]`: leader election among Polly instances sharing one etcd store, with the section's
//! defaults and its checks (which need to know the store backend).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::StoreBackend;

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

/// What is wrong with `[ha]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HaConfigError {
    #[error("ha.enabled needs store.backend = \"etcd\": the instances elect their leader in the shared etcd store")]
    NeedsEtcd,
    #[error("ha.lease_ttl_secs must be between 2 and 3600, not {0}")]
    LeaseTtl(u64),
    #[error("ha.advertise_host must be a bare host name or IP")]
    AdvertiseHost,
}

impl HaConfig {
    /// `backend` is `store.backend`: the election lives in the shared etcd store.
    pub fn validate(&self, backend: StoreBackend) -> Result<(), HaConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if backend != StoreBackend::Etcd {
            return Err(HaConfigError::NeedsEtcd);
        }
        if !(2..=3600).contains(&self.lease_ttl_secs) {
            return Err(HaConfigError::LeaseTtl(self.lease_ttl_secs));
        }
        if self
            .advertise_host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
        {
            return Err(HaConfigError::AdvertiseHost);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha_section() {
        let c: HaConfig = toml::from_str("").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.lease_ttl_secs, 5);
        c.validate(StoreBackend::Sled).unwrap();
        let on = |extra: &str| -> HaConfig {
            toml::from_str(&format!("enabled = true\n{extra}")).unwrap()
        };
        let e = on("").validate(StoreBackend::Sled).unwrap_err().to_string();
        assert!(e.contains("store.backend = \"etcd\""), "{e}");
        on("advertise_host = \"polly-1\"")
            .validate(StoreBackend::Etcd)
            .unwrap();
        for (extra, why) in [
            ("lease_ttl_secs = 1", "between 2 and 3600"),
            ("advertise_host = \"http://x\"", "bare host"),
        ] {
            let e = on(extra)
                .validate(StoreBackend::Etcd)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
        assert!(toml::from_str::<HaConfig>("ttl = 3").is_err());
    }
}
