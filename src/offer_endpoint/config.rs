//! `[offers]`: the storage-offer endpoint's config section (and the capacity poller's
//! period, which sets how fresh the capacity it offers is), with its defaults and checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mesos::agents::InstanceMap;

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
    /// Framework authentication: `auto` (default: on when `credentials` are set or `listen`
    /// is beyond loopback), `required` or `off`.
    pub authentication: super::auth::AuthMode,
    /// Framework principals and their secrets (`[[offers.credentials]]`).
    pub credentials: Vec<super::auth::FrameworkCredential>,
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
            authentication: super::auth::AuthMode::Auto,
            credentials: Vec::new(),
        }
    }
}

impl OffersConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (name, v) in [
            ("poll_interval_secs", self.poll_interval_secs),
            ("offer_timeout_secs", self.offer_timeout_secs),
            ("heartbeat_interval_secs", self.heartbeat_interval_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(Invalid::NotPositiveSecs(name));
            }
        }
        if self.allocation_interval_ms == 0 {
            return Err(Invalid::AllocationInterval);
        }
        for (name, g) in [
            ("teardown_grace_secs", self.teardown_grace_secs),
            ("operation_retention_secs", self.operation_retention_secs),
        ] {
            if !(g.is_finite() && (0.0..1e10).contains(&g)) {
                return Err(Invalid::NegativeSecs(name));
            }
        }
        for (kind, map) in [("roles", &self.roles), ("frameworks", &self.frameworks)] {
            for (name, c) in map {
                if !(c.weight.is_finite() && c.weight > 0.0) {
                    return Err(Invalid::Weight {
                        kind,
                        name: name.clone(),
                    });
                }
            }
        }
        self.validate_auth()
    }

    pub fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.poll_interval_secs)
    }

    /// How agents map to instances besides REX-Ray's reports (`instance_attribute`,
    /// `instances`), as the Mesos agent state reads it.
    pub fn instance_map(&self) -> InstanceMap {
        InstanceMap {
            attribute: self.instance_attribute.clone(),
            instances: self.instances.clone(),
        }
    }
}

/// Why an `[offers]` section is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("offers.{0} must be a positive number of seconds")]
    NotPositiveSecs(&'static str),
    #[error("offers.allocation_interval_ms must be positive")]
    AllocationInterval,
    #[error("offers.{0} must be a non-negative number of seconds")]
    NegativeSecs(&'static str),
    #[error("offers.{kind}.{name}.weight must be a positive number")]
    Weight { kind: &'static str, name: String },
    #[error("offers.listen {0} is reachable beyond loopback (or offers.authentication = \"required\"), so frameworks must authenticate: add [[offers.credentials]] (principal, secret), or set offers.authentication = \"off\" to leave the storage-offer endpoint open to anyone who can reach it")]
    NoCredentials(SocketAddr),
    #[error("offers.credentials: principal {0:?} must be 1-256 characters without ':'")]
    Principal(String),
    #[error("offers.credentials: principal {0:?} is configured twice")]
    PrincipalTwice(String),
    #[error(
        "offers.credentials: principal {0:?} needs exactly one non-empty secret or secret_file"
    )]
    OneSecret(String),
    #[error("cannot read offers.credentials secret_file {path}: {message}")]
    SecretFile { path: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_shares_and_teardown_grace_parse_and_validate() {
        let c: OffersConfig = toml::from_str(
            r#"
            teardown_grace_secs = 60
            operation_retention_secs = 120
            [roles.analytics]
            weight = 3
            quota_bytes = 10485760
            [frameworks."fw-1"]
            quota_volumes = 2
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.teardown_grace_secs, 60.0);
        assert_eq!(c.operation_retention_secs, 120.0);
        let role = &c.roles["analytics"];
        assert_eq!(role.weight, 3.0);
        assert_eq!(role.quota().max_mb, Some(10));
        let fw = &c.frameworks["fw-1"];
        assert_eq!(fw.weight, 1.0);
        assert_eq!(fw.quota().max_volumes, Some(2));
        assert_eq!(OffersConfig::default().teardown_grace_secs, 3600.0);
        assert_eq!(OffersConfig::default().operation_retention_secs, 3600.0);
        OffersConfig::default().validate().unwrap();
        for (bad, message) in [
            (
                "operation_retention_secs = -1",
                "offers.operation_retention_secs must be a non-negative number of seconds",
            ),
            (
                "[roles.r]\nweight = 0",
                "offers.roles.r.weight must be a positive number",
            ),
            (
                "[frameworks.f]\nweight = -1",
                "offers.frameworks.f.weight must be a positive number",
            ),
            (
                "teardown_grace_secs = -5",
                "offers.teardown_grace_secs must be a non-negative number of seconds",
            ),
            (
                "poll_interval_secs = 0",
                "offers.poll_interval_secs must be a positive number of seconds",
            ),
            (
                "allocation_interval_ms = 0",
                "offers.allocation_interval_ms must be positive",
            ),
        ] {
            let c: OffersConfig = toml::from_str(bad).unwrap();
            assert_eq!(c.validate().unwrap_err().to_string(), message, "{bad}");
        }
        assert!(toml::from_str::<OffersConfig>("[roles.r]\nwieght = 2").is_err());
    }
}
