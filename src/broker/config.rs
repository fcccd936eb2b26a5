//! `[broker]`: the Open Service Broker listener, its credentials, its plans, and how the
//! volumes it makes are shaped, with the section's own checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::driver::AccessMode;
use crate::volumes::{parse_docker_size, valid_name};

/// `[broker]` of `polly serve`. Off until `username` and a password are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Default `127.0.0.1:7981`.
    pub listen: SocketAddr,
    /// HTTP basic auth user the platform registers the broker with.
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file whose first line is the password (instead of `password`).
    pub password_file: Option<PathBuf>,
    /// `volume_mounts[].driver`: the name `polly node`'s plugin is known by on the cells.
    /// Default `polly`.
    pub driver: String,
    /// Where a binding mounts by default: `<container_dir>/<instance id>`. Default
    /// `/var/vcap/data`.
    pub container_dir: String,
    /// With `accepts_incomplete=true`, an operation not finished after this many
    /// milliseconds is answered 202 and finishes in the background. Default 2000.
    pub async_after_ms: u64,
    /// Restrict a broker-made volume to its Polly service. Default true.
    pub restrict: bool,
    /// The Polly services offered, one catalog service each. Default: every service.
    pub services: Option<Vec<String>>,
    /// Default: one plan `standard`, 1 GiB, multi_writer.
    pub plans: Vec<PlanConfig>,
}

/// `[[broker.plans]]`: a size class with an access mode and (optionally) a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Docker-style size: `1GiB`, `512m`, a bare number of GiB.
    pub size: String,
    /// Default `multi_writer`: every instance of an app mounts the volume.
    #[serde(default = "multi_writer")]
    pub access: AccessMode,
    #[serde(default)]
    pub pool: Option<String>,
    /// Offered for these Polly services only. Default: every offered service.
    #[serde(default)]
    pub services: Option<Vec<String>>,
}

fn multi_writer() -> AccessMode {
    AccessMode::MultiWriter
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7981)),
            username: None,
            password: None,
            password_file: None,
            driver: "polly".into(),
            container_dir: "/var/vcap/data".into(),
            async_after_ms: 2000,
            restrict: true,
            services: None,
            plans: Vec::new(),
        }
    }
}

/// What is wrong with `[broker]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BrokerConfigError {
    #[error("broker: username and a password (password or password_file) go together; set both to serve the Open Service Broker API, or neither")]
    HalfCredentials,
    #[error("broker: set password or password_file, not both")]
    TwoPasswords,
    #[error("broker: username must be non-empty and hold no ':'")]
    Username,
    #[error("broker.driver {0:?} must be 1-128 letters, digits, '.', '_' or '-'")]
    Driver(String),
    #[error("broker.container_dir {0:?} must be an absolute path")]
    ContainerDir(String),
    #[error("broker.plans: plan name {0:?} must be 1-128 letters, digits, '.', '_' or '-'")]
    PlanName(String),
    #[error("broker.plans: plan {0:?} is configured twice")]
    PlanTwice(String),
    #[error("broker.plans: plan {plan:?}: {message}")]
    PlanSize { plan: String, message: String },
    #[error("broker.{field}: no [[services]] entry is named {name:?}")]
    UnknownService { field: String, name: String },
    #[error("broker.services: empty list; leave it out to offer every service")]
    NoServices,
    #[error("cannot read broker.password_file {path}: {message}")]
    PasswordFile { path: String, message: String },
}

/// The credentials the platform must send.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// Whether the broker is served: credentials are configured.
    pub fn enabled(&self) -> bool {
        self.username.is_some() && (self.password.is_some() || self.password_file.is_some())
    }

    /// The configured credentials (reading `password_file`), `None` when the broker is off.
    pub fn credentials(&self) -> Result<Option<Credentials>, BrokerConfigError> {
        let Some(username) = self.username.clone() else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), None) => p.clone(),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| BrokerConfigError::PasswordFile {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                let line = text.lines().next().unwrap_or("").trim().to_string();
                if line.is_empty() {
                    return Err(BrokerConfigError::PasswordFile {
                        path: path.display().to_string(),
                        message: "the file is empty".into(),
                    });
                }
                line
            }
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => return Err(BrokerConfigError::TwoPasswords),
        };
        Ok(Some(Credentials { username, password }))
    }

    /// Checks the section against the configured service names.
    pub fn validate(&self, services: &[&str]) -> Result<(), BrokerConfigError> {
        let has_password = self.password.is_some() || self.password_file.is_some();
        if self.username.is_some() != has_password {
            return Err(BrokerConfigError::HalfCredentials);
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(BrokerConfigError::TwoPasswords);
        }
        if let Some(u) = &self.username {
            if u.is_empty() || u.contains(':') {
                return Err(BrokerConfigError::Username);
            }
        }
        if !valid_name(&self.driver) {
            return Err(BrokerConfigError::Driver(self.driver.clone()));
        }
        if !self.container_dir.starts_with('/') {
            return Err(BrokerConfigError::ContainerDir(self.container_dir.clone()));
        }
        let known = |field: &str, names: &[String]| {
            for n in names {
                if !services.contains(&n.as_str()) {
                    return Err(BrokerConfigError::UnknownService {
                        field: field.to_string(),
                        name: n.clone(),
                    });
                }
            }
            Ok(())
        };
        if let Some(s) = &self.services {
            if s.is_empty() {
                return Err(BrokerConfigError::NoServices);
            }
            known("services", s)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.plans {
            if !valid_name(&p.name) {
                return Err(BrokerConfigError::PlanName(p.name.clone()));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(BrokerConfigError::PlanTwice(p.name.clone()));
            }
            parse_docker_size(&p.size).map_err(|message| BrokerConfigError::PlanSize {
                plan: p.name.clone(),
                message,
            })?;
            if let Some(s) = &p.services {
                known(&format!("plans.{}.services", p.name), s)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_half_credentials_refused() {
        let c = BrokerConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.credentials().unwrap(), None);
        c.validate(&["vfs"]).unwrap();
        let half = BrokerConfig {
            username: Some("cf".into()),
            ..BrokerConfig::default()
        };
        assert_eq!(
            half.validate(&["vfs"]),
            Err(BrokerConfigError::HalfCredentials)
        );
        let on = BrokerConfig {
            username: Some("cf".into()),
            password: Some("pw".into()),
            ..BrokerConfig::default()
        };
        assert!(on.enabled());
        on.validate(&["vfs"]).unwrap();
        assert_eq!(on.credentials().unwrap().unwrap().password, "pw");
    }

    #[test]
    fn password_file_first_line_is_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret  \nignored\n").unwrap();
        let c = BrokerConfig {
            username: Some("cf".into()),
            password_file: Some(f.clone()),
            ..BrokerConfig::default()
        };
        assert_eq!(c.credentials().unwrap().unwrap().password, "s3cret");
        std::fs::write(&f, "\n").unwrap();
        assert!(c.credentials().is_err());
    }

    #[test]
    fn plans_and_services_are_checked_by_name() {
        let plan = |name: &str, size: &str, services: Option<Vec<String>>| PlanConfig {
            name: name.into(),
            description: None,
            size: size.into(),
            access: AccessMode::MultiWriter,
            pool: None,
            services,
        };
        let with = |plans: Vec<PlanConfig>| BrokerConfig {
            plans,
            ..BrokerConfig::default()
        };
        with(vec![plan("small", "1GiB", None), plan("big", "100", None)])
            .validate(&["vfs"])
            .unwrap();
        assert!(matches!(
            with(vec![plan("small", "1GiB", None), plan("small", "2", None)]).validate(&["vfs"]),
            Err(BrokerConfigError::PlanTwice(_))
        ));
        assert!(matches!(
            with(vec![plan("x", "lots", None)]).validate(&["vfs"]),
            Err(BrokerConfigError::PlanSize { .. })
        ));
        assert!(matches!(
            with(vec![plan("x", "1", Some(vec!["nfs".into()]))]).validate(&["vfs"]),
            Err(BrokerConfigError::UnknownService { .. })
        ));
        let c = BrokerConfig {
            services: Some(vec!["nope".into()]),
            ..BrokerConfig::default()
        };
        assert!(c.validate(&["vfs"]).is_err());
        let c = BrokerConfig {
            container_dir: "data".into(),
            ..BrokerConfig::default()
        };
        assert!(c.validate(&["vfs"]).is_err());
    }
}
