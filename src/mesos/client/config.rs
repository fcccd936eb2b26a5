//! `[mesos]`: the master Polly subscribes to as a framework (or none: embedded mode), the
//! framework's identity, the wire encoding, timers and limits, and agents known from
//! configuration; with the section's defaults and its own checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mesos::v1::framework_info::capability;

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
    pub attributes: BTreeMap<String, String>,
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

/// What is wrong with `[mesos]`; each message names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MesosConfigError {
    #[error("mesos.masters: {0:?} is not host:port")]
    Master(String),
    #[error("mesos.{0} must be a non-negative number")]
    Negative(&'static str),
    #[error("mesos.{0} must be positive")]
    NotPositive(&'static str),
    #[error("mesos.backoff_initial_ms must be positive and at most backoff_max_ms")]
    Backoff,
    #[error("mesos.missed_heartbeats and mesos.max_record_bytes must be positive")]
    Limits,
    #[error("mesos.capabilities: unknown capability {0:?}")]
    Capability(String),
    #[error("mesos.secret needs mesos.principal")]
    SecretWithoutPrincipal,
}

impl MesosConfig {
    /// Whether a master is configured (otherwise Polly runs embedded).
    pub fn enabled(&self) -> bool {
        !self.masters.is_empty()
    }

    pub fn validate(&self) -> Result<(), MesosConfigError> {
        for m in &self.masters {
            let ok = m.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok()
            });
            if !ok {
                return Err(MesosConfigError::Master(m.clone()));
            }
        }
        for (name, v) in [
            ("failover_timeout_secs", self.failover_timeout_secs),
            ("refuse_seconds", self.refuse_seconds),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(MesosConfigError::Negative(name));
            }
        }
        for (name, v) in [
            ("quiet_secs", self.quiet_secs),
            ("revive_interval_secs", self.revive_interval_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(MesosConfigError::NotPositive(name));
            }
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(MesosConfigError::Backoff);
        }
        if self.missed_heartbeats == 0 || self.max_record_bytes == 0 {
            return Err(MesosConfigError::Limits);
        }
        for c in &self.capabilities {
            if capability::Type::from_str_name(c).is_none() {
                return Err(MesosConfigError::Capability(c.clone()));
            }
        }
        if self.secret.is_some() && self.principal.is_none() {
            return Err(MesosConfigError::SecretWithoutPrincipal);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> MesosConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn mesos_section_defaults_to_embedded_and_validates() {
        let c = parse("");
        assert_eq!(c, MesosConfig::default());
        assert!(!c.enabled());
        assert_eq!(c.framework_name, "polly");
        c.validate().unwrap();
        let c = parse("masters = [\"m1:5050\", \"m2:5050\"]\ncontent_type = \"protobuf\"");
        assert!(c.enabled());
        assert_eq!(c.content_type, MesosContentType::Protobuf);
        c.validate().unwrap();
        for (bad, why) in [
            (
                "masters = [\"http://m1\"]",
                "mesos.masters: \"http://m1\" is not host:port",
            ),
            (
                "capabilities = [\"TIME_TRAVEL\"]",
                "mesos.capabilities: unknown capability \"TIME_TRAVEL\"",
            ),
            (
                "backoff_initial_ms = 0",
                "mesos.backoff_initial_ms must be positive and at most backoff_max_ms",
            ),
            (
                "refuse_seconds = -1",
                "mesos.refuse_seconds must be a non-negative number",
            ),
            ("quiet_secs = 0", "mesos.quiet_secs must be positive"),
            (
                "missed_heartbeats = 0",
                "mesos.missed_heartbeats and mesos.max_record_bytes must be positive",
            ),
            ("secret = \"s\"", "mesos.secret needs mesos.principal"),
        ] {
            let e = parse(bad).validate().unwrap_err().to_string();
            assert_eq!(e, why, "{bad}");
        }
        assert!(toml::from_str::<MesosConfig>("[[agents]]\nid = \"a\"").is_err());
    }
}
