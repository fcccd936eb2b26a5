//! `[services.ebs]`: the ebs driver's configuration (zones, quotas per volume type, owner
//! tag, timeouts) and its validation.

use serde::{Deserialize, Serialize};

use super::fake::FakeCloudConfig;

/// Volume types EBS offers.
pub const VOLUME_TYPES: &[&str] = &["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"];

fn default_type() -> String {
    "gp3".into()
}
fn default_quota_gib() -> u64 {
    // EC2's default per-region storage quota for gp3 (50 TiB).
    51_200
}
fn default_attach_timeout() -> f64 {
    45.0
}
fn default_call_timeout() -> f64 {
    20.0
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_page_size() -> u32 {
    500
}

/// A storage quota for one volume type, in one zone or in each zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsQuota {
    /// Volume type (`gp3`, `io2`, ...). Required.
    pub volume_type: String,
    /// Zone; `None` = this quota applies to each configured zone separately.
    #[serde(default)]
    pub zone: Option<String>,
    /// GiB Polly may provision of this type in the zone. Required.
    pub gib: u64,
}

/// `[services.ebs]`: one EBS back-end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsConfig {
    /// AWS region; `None` = the standard chain (`AWS_REGION`, profile, instance metadata).
    #[serde(default)]
    pub region: Option<String>,
    /// EC2 endpoint URL (moto, a VPC endpoint); `None` = the region's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Availability zones served, the first the default. Required.
    pub zones: Vec<String>,
    /// Type of volumes created without a pool. Default `gp3`.
    #[serde(default = "default_type")]
    pub default_type: String,
    /// Quotas per type and zone; a served pool without one gets `default_quota_gib`.
    #[serde(default)]
    pub quotas: Vec<EbsQuota>,
    /// Default 51200 (EC2's default regional gp3 quota, 50 TiB).
    #[serde(default = "default_quota_gib")]
    pub default_quota_gib: u64,
    /// Value of the `polly:owner` tag; default `polly-<service name>`. Never change it for
    /// a service that has volumes: they would become orphans.
    #[serde(default)]
    pub owner: Option<String>,
    /// How long attach/detach/create wait for EC2 to finish. Default 45; keep it below
    /// `driver_timeout_secs`.
    #[serde(default = "default_attach_timeout")]
    pub attach_timeout_secs: f64,
    /// Bound on any single EC2 call. Default 20.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_secs: f64,
    /// Poll period while waiting for a state. Default 1000.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// `MaxResults` of list calls (5-500). Default 500.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Run against an in-process fake cloud instead of EC2 (demos, tests). Default: none.
    #[serde(default)]
    pub fake_cloud: Option<FakeCloudConfig>,
}

impl EbsConfig {
    /// A config serving `zones` with every default.
    pub fn new(zones: Vec<String>) -> Self {
        EbsConfig {
            region: None,
            endpoint: None,
            zones,
            default_type: default_type(),
            quotas: Vec::new(),
            default_quota_gib: default_quota_gib(),
            owner: None,
            attach_timeout_secs: default_attach_timeout(),
            call_timeout_secs: default_call_timeout(),
            poll_interval_ms: default_poll_ms(),
            page_size: default_page_size(),
            fake_cloud: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.zones.is_empty() {
            return Err(ConfigError::NoZones);
        }
        let types = |t: &str| VOLUME_TYPES.contains(&t);
        if !types(&self.default_type) {
            return Err(ConfigError::DefaultType(self.default_type.clone()));
        }
        for q in &self.quotas {
            if !types(&q.volume_type) {
                return Err(ConfigError::QuotaType(q.volume_type.clone()));
            }
            if let Some(z) = &q.zone {
                if !self.zones.contains(z) {
                    return Err(ConfigError::QuotaZone {
                        zone: z.clone(),
                        zones: self.zones.clone(),
                    });
                }
            }
        }
        for (name, v) in [
            ("attach_timeout_secs", self.attach_timeout_secs),
            ("call_timeout_secs", self.call_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e6) {
                return Err(ConfigError::Timeout(name));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::PollInterval);
        }
        if !(5..=500).contains(&self.page_size) {
            return Err(ConfigError::PageSize(self.page_size));
        }
        if let Some(f) = &self.fake_cloud {
            f.validate().map_err(ConfigError::FakeCloud)?;
        }
        Ok(())
    }
}

/// What is wrong with an `[services.ebs]` section; the message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("ebs.zones must name at least one availability zone")]
    NoZones,
    #[error("ebs.default_type {0:?} is not an EBS volume type ({types})", types = VOLUME_TYPES.join(", "))]
    DefaultType(String),
    #[error("ebs.quotas: volume_type {0:?} is not an EBS volume type ({types})", types = VOLUME_TYPES.join(", "))]
    QuotaType(String),
    #[error("ebs.quotas: zone {zone:?} is not one of ebs.zones {zones:?}")]
    QuotaZone { zone: String, zones: Vec<String> },
    /// The key (`attach_timeout_secs`, `call_timeout_secs`) is not a usable number of seconds.
    #[error("ebs.{0} must be a positive number of seconds")]
    Timeout(&'static str),
    #[error("ebs.poll_interval_ms must be positive")]
    PollInterval,
    #[error("ebs.page_size {0} must be between 5 and 500 (EC2's MaxResults range)")]
    PageSize(u32),
    /// `[services.ebs.fake_cloud]`, in the fake cloud's words.
    #[error("{0}")]
    FakeCloud(String),
}
