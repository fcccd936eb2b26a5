//! `[csi]`: whether central Polly serves CSI, and where: a unix socket (the default, under
//! the data dir) or a TCP address, with the section's own checks.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `[csi]`: the CSI Identity and Controller services of `polly serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsiConfig {
    /// Serve CSI. Default true.
    pub enabled: bool,
    /// `unix://PATH` (a relative path is taken from the working directory) or
    /// `tcp://IP:PORT`. Default `unix://<data_dir>/csi.sock`, i.e.
    /// `unix://./polly-data/csi.sock`.
    pub listen: Option<CsiEndpoint>,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// Where CSI is served (and where a client dials it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CsiEndpoint {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP address (port 0: any free port).
    Tcp(SocketAddr),
}

/// What is wrong with `[csi]` or a CSI endpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsiConfigError {
    #[error("csi.listen {0:?} must be unix://PATH (e.g. unix:///run/polly/csi.sock) or tcp://IP:PORT (e.g. tcp://127.0.0.1:7981)")]
    Endpoint(String),
    #[error("csi.listen: the unix socket path {0:?} is longer than {MAX_SOCKET_PATH} bytes; choose a shorter one")]
    PathTooLong(PathBuf),
}

impl CsiConfig {
    /// The endpoint to serve on: `listen`, else `<data_dir>/csi.sock`.
    pub fn endpoint(&self, data_dir: &Path) -> CsiEndpoint {
        self.listen
            .clone()
            .unwrap_or_else(|| CsiEndpoint::Unix(data_dir.join("csi.sock")))
    }

    /// Checks the section with the data dir it defaults under.
    pub fn validate(&self, data_dir: &Path) -> Result<(), CsiConfigError> {
        if !self.enabled {
            return Ok(());
        }
        match self.endpoint(data_dir) {
            CsiEndpoint::Unix(p) if p.as_os_str().len() > MAX_SOCKET_PATH => {
                Err(CsiConfigError::PathTooLong(p))
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for CsiEndpoint {
    type Err = CsiConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CsiConfigError::Endpoint(s.to_string());
        if let Some(rest) = s.strip_prefix("unix:") {
            // `unix:///abs`, `unix://./rel`, and gRPC's `unix:path` all name a path.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() || path.contains('\0') {
                return Err(bad());
            }
            return Ok(CsiEndpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp://") {
            return rest.parse().map(CsiEndpoint::Tcp).map_err(|_| bad());
        }
        Err(bad())
    }
}

impl TryFrom<String> for CsiEndpoint {
    type Error = CsiConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CsiEndpoint> for String {
    fn from(e: CsiEndpoint) -> String {
        e.to_string()
    }
}

impl fmt::Display for CsiEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsiEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            CsiEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_endpoints_and_own_checks() {
        let c: CsiConfig = toml::from_str("").unwrap();
        assert_eq!(c, CsiConfig::default());
        assert!(c.enabled);
        let data = Path::new("./polly-data");
        assert_eq!(c.endpoint(data).to_string(), "unix://./polly-data/csi.sock");
        c.validate(data).unwrap();

        let c: CsiConfig = toml::from_str("listen = \"unix:///run/polly/csi.sock\"").unwrap();
        assert_eq!(
            c.listen,
            Some(CsiEndpoint::Unix("/run/polly/csi.sock".into()))
        );
        assert_eq!(c.endpoint(data).to_string(), "unix:///run/polly/csi.sock");
        let c: CsiConfig = toml::from_str("listen = \"tcp://127.0.0.1:0\"").unwrap();
        assert_eq!(
            c.listen,
            Some(CsiEndpoint::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            "unix:csi.sock".parse::<CsiEndpoint>().unwrap(),
            CsiEndpoint::Unix("csi.sock".into())
        );
        for bad in [
            "",
            "/run/csi.sock",
            "unix://",
            "tcp://localhost:1",
            "tcp://127.0.0.1",
            "http://127.0.0.1:1",
        ] {
            let e = bad.parse::<CsiEndpoint>().unwrap_err();
            assert!(e.to_string().contains("unix://PATH"), "{bad}: {e}");
        }
        let e = toml::from_str::<CsiConfig>("listen = \"udp://1\"").unwrap_err();
        assert!(e.to_string().contains("csi.listen"), "{e}");
        assert!(toml::from_str::<CsiConfig>("listens = \"tcp://127.0.0.1:1\"").is_err());

        let long = format!("unix:///{}", "x".repeat(120));
        let c: CsiConfig = toml::from_str(&format!("listen = \"{long}\"")).unwrap();
        assert!(matches!(
            c.validate(data),
            Err(CsiConfigError::PathTooLong(_))
        ));
        // Off: nothing to check.
        let c = CsiConfig {
            enabled: false,
            ..c
        };
        c.validate(data).unwrap();
    }
}
