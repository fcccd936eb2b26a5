//! `[node]`: how `polly node` finds central Polly, who it is (instance id, zone), where it
//! listens (the Docker plugin socket, the CSI endpoint, health and metrics) and where it
//! mounts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::csi::CsiEndpoint;
use crate::mount::Source;

/// Where Docker looks for legacy volume plugins; the plugin's name is the file's stem.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/polly.sock";
/// Where volumes are mounted, one directory per volume.
pub const DEFAULT_MOUNT_ROOT: &str = "/var/lib/polly/mounts";
/// Where the node keeps its small state file (mount ids per volume).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/polly/node";
/// Health and metrics.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7982";
/// Central Polly's admin API.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7978";
/// Size of a volume created without `-o size`.
pub const DEFAULT_SIZE_BYTES: u64 = 1 << 30;
/// How often the node reports itself and retries detaches central could not take.
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 30;

/// How long one call to central may take.
pub const DEFAULT_CENTRAL_TIMEOUT_SECS: u64 = 120;

/// A central path prefix and where the same files are on this node (an NFS mount of
/// central's vfs root, say).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMap {
    pub central: PathBuf,
    pub local: PathBuf,
}

/// The node agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Central Polly's admin API URL.
    pub server: String,
    /// Central's admin bearer token, if it has one.
    pub token: Option<String>,
    /// This node's instance id: what attachments, fencing and Mesos agent mapping name.
    pub instance_id: String,
    /// This node's availability zone, reported to central.
    pub zone: Option<String>,
    /// The Docker plugin socket.
    pub socket: PathBuf,
    /// Health and metrics listener.
    pub listen: SocketAddr,
    pub mount_root: PathBuf,
    pub state_dir: PathBuf,
    /// The service a volume created without `-o service` goes to (default: central's only one).
    pub service: Option<String>,
    pub default_size_bytes: u64,
    pub path_map: Vec<PathMap>,
    pub report_interval_secs: u64,
    /// How long a call to central may take (attach on a cloud back-end can take a while).
    pub central_timeout_secs: u64,
    /// Where the CSI Node service is served (off when unset).
    pub csi_endpoint: Option<CsiEndpoint>,
    /// Central's CSI endpoint, where Controller calls are forwarded (none: they are
    /// UNAVAILABLE).
    pub csi_server: Option<CsiEndpoint>,
    /// NodeGetInfo's `max_volumes_per_node` (0: no limit).
    pub csi_max_volumes: i64,
}

/// Why a `[node]` section or flag was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("[node] {0}")]
    Invalid(String),
}

/// The `[node]` table of a config file (the rest of the file, if any, is the server's).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub server: Option<String>,
    pub token: Option<String>,
    pub instance_id: Option<String>,
    pub zone: Option<String>,
    pub socket: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub mount_root: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub service: Option<String>,
    pub default_size: Option<String>,
    #[serde(default)]
    pub path_map: Vec<PathMap>,
    pub report_interval_secs: Option<u64>,
    pub central_timeout_secs: Option<u64>,
    pub csi_endpoint: Option<CsiEndpoint>,
    pub csi_server: Option<CsiEndpoint>,
    pub csi_max_volumes: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    node: Option<NodeSection>,
}

impl NodeSection {
    /// The `[node]` table of `path` (empty when the file has none).
    pub fn load(path: &Path) -> Result<NodeSection, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(file.node.unwrap_or_default())
    }

    /// Flags win over the file, the file over the defaults.
    pub fn overlay(mut self, flags: NodeSection) -> NodeSection {
        macro_rules! take {
            ($($f:ident),*) => { $( if flags.$f.is_some() { self.$f = flags.$f; } )* };
        }
        take!(
            server,
            token,
            instance_id,
            zone,
            socket,
            listen,
            mount_root,
            state_dir,
            service,
            default_size,
            report_interval_secs,
            central_timeout_secs,
            csi_endpoint,
            csi_server,
            csi_max_volumes
        );
        if !flags.path_map.is_empty() {
            self.path_map = flags.path_map;
        }
        self
    }

    /// The defaults filled in and every value checked.
    pub fn resolve(self) -> Result<NodeConfig, ConfigError> {
        let instance_id = match self.instance_id {
            Some(i) => i,
            None => hostname().ok_or_else(|| {
                ConfigError::Invalid(
                    "instance_id is not set and the hostname cannot be read; pass --instance-id"
                        .into(),
                )
            })?,
        };
        if instance_id.is_empty() || instance_id.len() > 256 {
            return Err(ConfigError::Invalid(format!(
                "instance_id {instance_id:?} must be 1-256 characters"
            )));
        }
        let server = self.server.unwrap_or_else(|| DEFAULT_SERVER.to_string());
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "server {server:?} must be an http:// or https:// URL of central polly's admin API"
            )));
        }
        let default_size_bytes = match self.default_size.as_deref() {
            None => DEFAULT_SIZE_BYTES,
            Some(s) => super::docker::parse_docker_size(s)
                .map_err(|e| ConfigError::Invalid(format!("default_size: {e}")))?,
        };
        for m in &self.path_map {
            if !m.central.is_absolute() || !m.local.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "path_map {} -> {}: both paths must be absolute",
                    m.central.display(),
                    m.local.display()
                )));
            }
        }
        let report_interval_secs = self
            .report_interval_secs
            .unwrap_or(DEFAULT_REPORT_INTERVAL_SECS);
        if report_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "report_interval_secs must be at least 1".into(),
            ));
        }
        let central_timeout_secs = self
            .central_timeout_secs
            .unwrap_or(DEFAULT_CENTRAL_TIMEOUT_SECS);
        if central_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "central_timeout_secs must be at least 1".into(),
            ));
        }
        let csi_max_volumes = self.csi_max_volumes.unwrap_or(0);
        if csi_max_volumes < 0 {
            return Err(ConfigError::Invalid(format!(
                "csi_max_volumes {csi_max_volumes} must be 0 (no limit) or more"
            )));
        }
        #[allow(clippy::unwrap_used)] // a constant that parses
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().unwrap();
        Ok(NodeConfig {
            server,
            token: self.token.filter(|t| !t.is_empty()),
            instance_id,
            zone: self.zone.filter(|z| !z.is_empty()),
            socket: self.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            listen: self.listen.unwrap_or(default_listen),
            mount_root: self.mount_root.unwrap_or_else(|| DEFAULT_MOUNT_ROOT.into()),
            state_dir: self.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            service: self.service.filter(|s| !s.is_empty()),
            default_size_bytes,
            path_map: self.path_map,
            report_interval_secs,
            central_timeout_secs,
            csi_endpoint: self.csi_endpoint,
            csi_server: self.csi_server,
            csi_max_volumes,
        })
    }
}

impl NodeConfig {
    /// Where a central path is on this node: the longest matching `path_map` prefix
    /// replaced, else the same path (central on this host).
    pub fn local_path(&self, central: &Path) -> PathBuf {
        self.path_map
            .iter()
            .filter_map(|m| {
                central
                    .strip_prefix(&m.central)
                    .ok()
                    .map(|rest| (m.central.components().count(), m.local.join(rest)))
            })
            .max_by_key(|(depth, _)| *depth)
            .map(|(_, p)| p)
            .unwrap_or_else(|| central.to_path_buf())
    }

    /// Central's description of a volume's data with its paths as this node sees them.
    pub fn localize(&self, source: Source) -> Source {
        match source {
            Source::Directory { path } => Source::Directory {
                path: self.local_path(&path),
            },
            Source::Image {
                path,
                filesystem,
                device,
            } => Source::Image {
                path: self.local_path(&path),
                filesystem,
                device,
            },
            other => other,
        }
    }
}

/// This host's name, the default instance id.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = NodeSection {
            instance_id: Some("node-a".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/docker/plugins/polly.sock"));
        assert_eq!(c.mount_root, PathBuf::from("/var/lib/polly/mounts"));
        assert_eq!(c.server, "http://127.0.0.1:7978");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7982");
        assert_eq!(c.default_size_bytes, 1 << 30);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: File = toml::from_str(
            "[node]\nserver = \"http://central:7978\"\nzone = \"a\"\n[[node.path_map]]\ncentral = \"/srv/vfs\"\nlocal = \"/mnt/vfs\"\n",
        )
        .unwrap();
        let flags = NodeSection {
            zone: Some("b".into()),
            instance_id: Some("n1".into()),
            ..Default::default()
        };
        let c = file.node.unwrap().overlay(flags).resolve().unwrap();
        assert_eq!(c.server, "http://central:7978");
        assert_eq!(c.zone.as_deref(), Some("b"));
        assert_eq!(
            c.local_path(Path::new("/srv/vfs/volumes/vfs-1/data")),
            PathBuf::from("/mnt/vfs/volumes/vfs-1/data")
        );
        assert_eq!(
            c.local_path(Path::new("/srv/other")),
            PathBuf::from("/srv/other")
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let e = NodeSection {
            instance_id: Some("n".into()),
            server: Some("central:7978".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("server \"central:7978\""), "{e}");
        let e = toml::from_str::<File>("[node]\nsockett = \"/x\"\n").unwrap_err();
        assert!(e.to_string().contains("sockett"), "{e}");
        let e = NodeSection {
            instance_id: Some("n".into()),
            default_size: Some("lots".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("default_size"), "{e}");
    }
}
