//! `[[services]]`: one storage service (its name, driver kind and the driver's settings),
//! its defaults and the checks one service can make on its own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ebs::EbsConfig;
use super::fault::FaultConfig;
use super::r#loop::FILESYSTEMS;

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

/// What is wrong with one `[[services]]` entry; each message names the service.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceConfigError {
    #[error("service {service:?}: quota_bytes must be positive")]
    ZeroQuota { service: String },
    #[error(
        "service {service:?}: filesystem {filesystem:?} is not one of {:?}",
        FILESYSTEMS
    )]
    Filesystem { service: String, filesystem: String },
    #[error("service {service:?}: driver rbd needs ceph_conf and at least one of ceph_pools")]
    RbdWithoutCeph { service: String },
    #[error("service {service:?}: driver ebs needs a [services.ebs] section with zones")]
    EbsWithoutSection { service: String },
    /// The `[services.ebs]` section's own check failed.
    #[error("service {service:?}: {problem}")]
    Ebs {
        service: String,
        problem: super::ebs::ConfigError,
    },
    #[error("service {service:?}: ebs.attach_timeout_secs ({attach_timeout_secs}) must be below driver_timeout_secs ({driver_timeout_secs}), or Polly gives up before the driver does")]
    EbsAttachTimeout {
        service: String,
        attach_timeout_secs: f64,
        driver_timeout_secs: u64,
    },
    #[error("service {service:?}: [services.ebs] is only for driver ebs")]
    EbsSectionForOtherDriver { service: String },
    /// The `[services.fault]` section's own check failed.
    #[error("service {service:?}: fault: {message}")]
    Fault { service: String, message: String },
}

impl ServiceConfig {
    /// A service of `driver` named `name`, every other key at its default.
    pub fn new(name: &str, driver: DriverKind) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            driver,
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
        }
    }

    /// The vfs/loop root: `root`, else `<data_dir>/vfs/<name>`.
    pub fn root_in(&self, data_dir: &Path) -> PathBuf {
        self.root
            .clone()
            .unwrap_or_else(|| data_dir.join("vfs").join(&self.name))
    }

    /// Check the entry on its own. `driver_timeout_secs` is the bound every driver call
    /// runs under: the ebs driver's own attach timeout must stay below it.
    pub fn validate(&self, driver_timeout_secs: u64) -> Result<(), ServiceConfigError> {
        let service = || self.name.clone();
        if self.quota_bytes == Some(0) {
            return Err(ServiceConfigError::ZeroQuota { service: service() });
        }
        if !FILESYSTEMS.contains(&self.filesystem.as_str()) {
            return Err(ServiceConfigError::Filesystem {
                service: service(),
                filesystem: self.filesystem.clone(),
            });
        }
        if self.driver == DriverKind::Rbd
            && (self.ceph_conf.is_none() || self.ceph_pools.is_empty())
        {
            return Err(ServiceConfigError::RbdWithoutCeph { service: service() });
        }
        match (&self.driver, &self.ebs) {
            (DriverKind::Ebs, None) => {
                return Err(ServiceConfigError::EbsWithoutSection { service: service() })
            }
            (DriverKind::Ebs, Some(e)) => {
                e.validate().map_err(|problem| ServiceConfigError::Ebs {
                    service: service(),
                    problem,
                })?;
                if e.attach_timeout_secs >= driver_timeout_secs as f64 {
                    return Err(ServiceConfigError::EbsAttachTimeout {
                        service: service(),
                        attach_timeout_secs: e.attach_timeout_secs,
                        driver_timeout_secs,
                    });
                }
            }
            (_, Some(_)) => {
                return Err(ServiceConfigError::EbsSectionForOtherDriver { service: service() })
            }
            (_, None) => {}
        }
        if let Some(f) = &self.fault {
            f.validate().map_err(|message| ServiceConfigError::Fault {
                service: service(),
                message,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> ServiceConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn defaults_of_a_service() {
        let s = parse("name = \"a\"\ndriver = \"vfs\"");
        assert_eq!(s, ServiceConfig::new("a", DriverKind::Vfs));
        assert_eq!(s.pool, "default");
        assert_eq!(s.filesystem, "ext4");
        assert_eq!(s.ceph_pools, vec!["rbd"]);
        assert_eq!(s.root_in(Path::new("/d")), PathBuf::from("/d/vfs/a"));
        let s = parse("name = \"a\"\ndriver = \"loop\"\nroot = \"/r\"");
        assert_eq!(s.root_in(Path::new("/d")), PathBuf::from("/r"));
        s.validate(60).unwrap();
        assert!(toml::from_str::<ServiceConfig>("driver = \"vfs\"").is_err());
        assert!(toml::from_str::<ServiceConfig>("name = \"a\"\ndriver = \"floppy\"").is_err());
    }

    #[test]
    fn a_service_checks_itself() {
        for (extra, why) in [
            ("driver = \"vfs\"\nquota_bytes = 0", "service \"s\": quota_bytes must be positive"),
            (
                "driver = \"loop\"\nfilesystem = \"xfs\"",
                "service \"s\": filesystem \"xfs\" is not one of [\"ext2\", \"ext3\", \"ext4\"]",
            ),
            (
                "driver = \"rbd\"",
                "service \"s\": driver rbd needs ceph_conf and at least one of ceph_pools",
            ),
            (
                "driver = \"rbd\"\nceph_conf = \"/c\"\nceph_pools = []",
                "service \"s\": driver rbd needs ceph_conf and at least one of ceph_pools",
            ),
            (
                "driver = \"ebs\"",
                "service \"s\": driver ebs needs a [services.ebs] section with zones",
            ),
            (
                "driver = \"ebs\"\n[ebs]\nzones = [\"a\"]\nattach_timeout_secs = 60",
                "service \"s\": ebs.attach_timeout_secs (60) must be below driver_timeout_secs (60), or Polly gives up before the driver does",
            ),
            (
                "driver = \"vfs\"\n[ebs]\nzones = [\"a\"]",
                "service \"s\": [services.ebs] is only for driver ebs",
            ),
            (
                "driver = \"vfs\"\n[fault]\nerror_rate = 2.0",
                "service \"s\": fault: fault error_rate 2 must be between 0 and 1",
            ),
        ] {
            let e = parse(&format!("name = \"s\"\n{extra}"))
                .validate(60)
                .unwrap_err()
                .to_string();
            assert_eq!(e, why, "{extra}");
        }
        parse("name = \"s\"\ndriver = \"rbd\"\nceph_conf = \"/c\"")
            .validate(60)
            .unwrap();
    }
}
