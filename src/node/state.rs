//! The node's own small state file: for each volume it holds here, the Docker mount ids
//! using it and what was mounted, written durably (temp file, fsync, rename, fsync of the
//! directory) before a call is answered, so a restarted `polly node` (kill -9 included)
//! knows what to unmount and detach. It records intents: a volume enters as `Mounting`
//! before central is asked to attach, and turns `Unmounting` before the local unmount.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mount::Published;

const FILE: &str = "mounts.json";
const VERSION: u32 = 1;

/// Where a volume is in its life on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Attach asked of central, the local mount maybe made: undone at restart.
    Mounting,
    /// Mounted, used by `mount_ids`.
    Mounted,
    /// The last user left: the local unmount and central's detach are (still) to be done.
    Unmounting,
}

/// One volume this node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub volume_id: String,
    pub service: String,
    pub phase: Phase,
    /// Docker's mount ids (one per container using the volume).
    pub mount_ids: BTreeSet<String>,
    pub target: PathBuf,
    /// What the local mount did, once done.
    pub published: Option<Published>,
}

/// Everything the node remembers, by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub volumes: BTreeMap<String, Entry>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("node state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node state file {path} is not valid ({source}); move it away to start afresh, after unmounting what it lists")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("node state file {path} has version {found}, this polly reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
}

/// The state file in its directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state; empty when there is no file yet.
    pub fn load(&self) -> Result<State, StateError> {
        read_versioned(
            &self.path(),
            |s: &State| s.version,
            || State {
                version: VERSION,
                volumes: BTreeMap::new(),
            },
        )
    }

    /// Replace the file with `state`, durably: once this returns, a crash keeps it.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        save_json(&self.dir, FILE, state)
    }
}

/// A versioned JSON state file of the node's: `empty()` when there is none yet; one that
/// does not parse, or of another version, is an error naming it.
pub fn read_versioned<T: DeserializeOwned>(
    path: &Path,
    version: fn(&T) -> u32,
    empty: impl FnOnce() -> T,
) -> Result<T, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(empty()),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let state: T = serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    if version(&state) != VERSION {
        return Err(StateError::Version {
            path: path.to_path_buf(),
            found: version(&state),
        });
    }
    Ok(state)
}

/// Write `state` as `dir/name`, durably ([`write_durably`]).
pub fn save_json<T: Serialize>(dir: &Path, name: &str, state: &T) -> Result<(), StateError> {
    let path = dir.join(name);
    let bytes = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
        path: path.clone(),
        source,
    })?;
    write_durably(dir, name, &bytes).map_err(|source| StateError::Io { path, source })
}

/// Replace `dir/name` with `bytes` so that a crash leaves the old or the new content, never
/// a mix: a temp file written and fsynced, renamed over, and the directory fsynced.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(&dir.path().join("node"));
        assert!(f.load().unwrap().volumes.is_empty());
        let mut s = f.load().unwrap();
        s.volumes.insert(
            "data".into(),
            Entry {
                volume_id: "v-1".into(),
                service: "vfs".into(),
                phase: Phase::Mounted,
                mount_ids: ["m1".to_string(), "m2".to_string()].into(),
                target: "/var/lib/polly/mounts/data".into(),
                published: None,
            },
        );
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
    }

    #[test]
    fn a_corrupt_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        fs::write(f.path(), b"{not json").unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("mounts.json") && e.contains("not valid"), "{e}");
        fs::write(f.path(), br#"{"version":9,"volumes":{}}"#).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
