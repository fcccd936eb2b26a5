//! The file-system steps the layout's crash safety rests on: directory listings and creates,
//! renames, fsync of a directory, and metadata files replaced atomically (tmp file, fsync,
//! rename, fsync of the directory).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;

use super::{Error, Result};

pub(in crate::driver) fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))
}

pub(in crate::driver) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

pub(super) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))
}

pub(in crate::driver) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Io(format!("parse {}: {e}", path.display())))
}

/// Replaces `path` so that a crash leaves either the old or the new contents, never a mix.
pub(super) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Io(format!("encode {}: {e}", path.display())))?;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Io(format!("{} has no parent directory", path.display())))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    rename(&tmp, path)?;
    fsync_dir(dir)
}
