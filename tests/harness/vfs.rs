//! What the vfs driver leaves on disk under a server's data dir, to check the back-end
//! against the store.

use std::path::{Path, PathBuf};

/// The vfs back-end's volume directories of the default service in `data_dir`.
pub fn vfs_volume_dirs(data_dir: &Path, service: &str) -> Vec<PathBuf> {
    let dir = data_dir.join("vfs").join(service).join("volumes");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}
