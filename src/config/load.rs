//! Loading: the TOML file (when given), then the overrides from `POLLY_*` environment
//! variables and command-line flags (parsed by the CLI; flags win), then validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Config, Error};

/// Overrides from the environment and the command line (`None` = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token: Option<String>,
    pub libstorage_listen: Option<SocketAddr>,
    pub offers_listen: Option<SocketAddr>,
    pub csi_listen: Option<crate::csi::CsiEndpoint>,
    pub broker_listen: Option<SocketAddr>,
}

/// Config TOML that does not parse into [`Config`]: one line naming the offending key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
}

impl Config {
    /// Read `path` (when given) and apply overrides, then validate.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, Error> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|source| Error::Parse {
                    path: p.display().to_string(),
                    source,
                })?
            }
            None => Config::default(),
        };
        overrides.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse TOML; the message is one line naming the offending key.
    pub fn from_toml(text: &str) -> Result<Config, ParseError> {
        toml::from_str(text).map_err(|e| ParseError {
            message: e.message().replace('\n', " ").trim().to_string(),
        })
    }
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(a) = self.admin_listen {
            cfg.admin.listen = a;
        }
        // An empty token (`POLLY_ADMIN_TOKEN=`) turns authentication off.
        if let Some(t) = &self.admin_token {
            cfg.admin.token = Some(t.clone()).filter(|t| !t.is_empty());
        }
        if let Some(a) = self.libstorage_listen {
            cfg.libstorage.listen = a;
        }
        if let Some(a) = self.offers_listen {
            cfg.offers.listen = a;
        }
        if let Some(e) = &self.csi_listen {
            cfg.csi.listen = Some(e.clone());
        }
        if let Some(a) = self.broker_listen {
            cfg.broker.listen = a;
        }
    }
}
