//! `[admin]`: the admin API's listener and bearer token, with their defaults.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin API listen address. Default `127.0.0.1:7978`.
    pub listen: SocketAddr,
    /// Bearer token required on every admin call except health, readiness and metrics.
    /// Default: none (no authentication; keep the listener on loopback).
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7978)),
            token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_keys() {
        let c: AdminConfig = toml::from_str("").unwrap();
        assert_eq!(c, AdminConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:7978");
        assert_eq!(c.token, None);
        let c: AdminConfig = toml::from_str("listen = \"0.0.0.0:1\"\ntoken = \"t\"").unwrap();
        assert_eq!(c.listen.port(), 1);
        assert_eq!(c.token.as_deref(), Some("t"));
        assert!(toml::from_str::<AdminConfig>("listen = \"not an address\"").is_err());
        assert!(toml::from_str::<AdminConfig>("tokens = \"t\"").is_err());
    }
}
