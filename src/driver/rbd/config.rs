//! `[services.rbd]`: the rbd driver's configuration (ceph.conf, pools, client id, image-name
//! prefix, quota, zone).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

fn default_pools() -> Vec<String> {
    vec!["rbd".to_string()]
}

fn default_prefix() -> String {
    "polly-".to_string()
}

/// Configuration of one `rbd` back-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdConfig {
    /// Path of the ceph.conf the CLIs use.
    pub conf: PathBuf,
    /// Pools served, each a Polly pool; the first is the default.
    #[serde(default = "default_pools")]
    pub pools: Vec<String>,
    /// Ceph client id (`--id`); `None` = the CLI's default (`admin`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Image-name prefix that marks Polly's images.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Caps the bytes Polly's images may provision, per pool.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// The availability zone the cluster serves, if any.
    #[serde(default)]
    pub zone: Option<String>,
}

impl RbdConfig {
    pub fn new(conf: impl Into<PathBuf>) -> Self {
        RbdConfig {
            conf: conf.into(),
            pools: default_pools(),
            client_id: None,
            prefix: default_prefix(),
            quota_bytes: None,
            zone: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let cfg: RbdConfig = serde_json::from_str(r#"{"conf": "/etc/ceph/ceph.conf"}"#).unwrap();
        assert_eq!(cfg, RbdConfig::new("/etc/ceph/ceph.conf"));
        assert_eq!(cfg.pools, ["rbd"]);
    }
}
