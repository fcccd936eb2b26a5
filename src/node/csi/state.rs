//! What the CSI Node service has staged and published on this node, in its own file beside
//! the Docker plugin's (`csi.json` in the state dir), saved durably before each side effect:
//! an entry enters as `Mounting` before the mount and turns `Unmounting` before the unmount,
//! so a restarted node (kill -9 included) knows what to undo or finish, and answers the
//! orchestrator's NodeUnpublish / NodeUnstage from the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mount::{Published, Source};
use crate::node::state::{read_versioned, save_json};
use crate::node::StateError;

const FILE: &str = "csi.json";
const VERSION: u32 = 1;

/// Where a mount is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// About to mount, or mounting: rolled back at restart (the orchestrator retries).
    Mounting,
    Mounted,
    /// The unmount is (still) to be done: finished at restart.
    Unmounting,
}

/// One mount the orchestrator asked for: a staging path (NodeStage) or a target path
/// (NodePublish, a bind of the staging path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub volume_id: String,
    pub phase: Phase,
    /// What is mounted there: the volume's data (staging), or the staging path (publish).
    pub source: Source,
    pub read_only: bool,
    /// For a publish, its staging path.
    #[serde(default)]
    pub staging: Option<PathBuf>,
    /// What the mount did, once done.
    pub published: Option<Published>,
}

/// The CSI mounts of this node, by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsiState {
    pub version: u32,
    pub staged: BTreeMap<PathBuf, Mount>,
    pub published: BTreeMap<PathBuf, Mount>,
}

impl Default for CsiState {
    fn default() -> Self {
        CsiState {
            version: VERSION,
            staged: BTreeMap::new(),
            published: BTreeMap::new(),
        }
    }
}

/// `csi.json` in the node's state dir.
#[derive(Debug, Clone)]
pub struct CsiStateFile {
    dir: PathBuf,
}

impl CsiStateFile {
    pub fn new(dir: &Path) -> CsiStateFile {
        CsiStateFile {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state; empty when there is no file yet.
    pub fn load(&self) -> Result<CsiState, StateError> {
        read_versioned(&self.path(), |s: &CsiState| s.version, CsiState::default)
    }

    /// Replace the file with `state`, durably.
    pub fn save(&self, state: &CsiState) -> Result<(), StateError> {
        save_json(&self.dir, FILE, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back_beside_the_plugins_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = CsiStateFile::new(dir.path());
        assert_eq!(f.load().unwrap(), CsiState::default());
        let mut s = CsiState::default();
        s.staged.insert(
            "/var/lib/kubelet/staging/v".into(),
            Mount {
                volume_id: "v-1".into(),
                phase: Phase::Mounting,
                source: Source::Directory {
                    path: "/srv/vfs/v-1".into(),
                },
                read_only: false,
                staging: None,
                published: None,
            },
        );
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
        assert!(!crate::node::StateFile::new(dir.path()).path().exists());
        std::fs::write(f.path(), br#"{"version":7,"staged":{},"published":{}}"#).unwrap();
        assert!(f.load().unwrap_err().to_string().contains("version 7"));
    }
}
