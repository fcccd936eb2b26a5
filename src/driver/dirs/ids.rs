//! Volume and snapshot ids: leased from `ids.json` a block at a time, never reused, and raised
//! past every id on disk when the root is (re)opened.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::durable::{parse_json, read_dir, write_json_atomic};
use super::{check_id, Dirs, Error, Result, IDS_FILE, SNAPSHOT_PREFIX};

/// Ids are leased from `ids.json` in blocks of this many (see [`Dirs::next_volume_id`]).
const ID_LEASE: u64 = 64;

/// Last ids handed out, persisted in `ids.json`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct IdCounters {
    volume: u64,
    snapshot: u64,
}

/// Ids handed out from the current lease: the file is raised by `ID_LEASE` (and fsynced)
/// before the first id of a block is used, so one fsync serves a whole block; ids of a block
/// not used before a restart are skipped, never reused.
#[derive(Default)]
pub(super) struct IdLease {
    /// Last id handed out, per kind.
    used: IdCounters,
    /// Highest id the file allows, per kind.
    leased: IdCounters,
}

impl Dirs {
    /// Re-read the id counters, raising them past every id on disk.
    pub(super) fn reload_ids(&self) -> Result<()> {
        // The counter must never fall behind an id already on disk (e.g. if ids.json was lost),
        // or a new volume could take an old one's id.
        let mut ids = self.load_ids()?;
        let max_vol = max_id(&self.volumes_dir(), self.cfg.volume_prefix)?;
        let max_snap = max_id(&self.snapshots_dir(), SNAPSHOT_PREFIX)?;
        if max_vol > ids.volume || max_snap > ids.snapshot || !self.ids_path().exists() {
            ids.volume = ids.volume.max(max_vol);
            ids.snapshot = ids.snapshot.max(max_snap);
            self.store_ids(&ids)?;
        }
        *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = IdLease {
            used: ids,
            leased: ids,
        };
        Ok(())
    }

    fn ids_path(&self) -> PathBuf {
        self.root().join(IDS_FILE)
    }

    fn load_ids(&self) -> Result<IdCounters> {
        let path = self.ids_path();
        match fs::read(&path) {
            Ok(bytes) => parse_json(&path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IdCounters::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn store_ids(&self, ids: &IdCounters) -> Result<()> {
        write_json_atomic(&self.ids_path(), ids)
    }

    /// The next id of a kind (`true`: volume, `false`: snapshot); the file already allows it
    /// (durably) when it is returned.
    fn next_id(&self, volume: bool) -> Result<u64> {
        let mut lease = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        fn pick(c: &mut IdCounters, volume: bool) -> &mut u64 {
            if volume {
                &mut c.volume
            } else {
                &mut c.snapshot
            }
        }
        let next = *pick(&mut lease.used, volume) + 1;
        if next > *pick(&mut lease.leased, volume) {
            let mut file = lease.leased;
            *pick(&mut file, volume) = next - 1 + ID_LEASE;
            self.store_ids(&file)?;
            lease.leased = file;
        }
        *pick(&mut lease.used, volume) = next;
        Ok(next)
    }

    pub fn next_volume_id(&self) -> Result<String> {
        Ok(format!(
            "{}{:06}",
            self.cfg.volume_prefix,
            self.next_id(true)?
        ))
    }

    pub(super) fn next_snapshot_id(&self) -> Result<String> {
        Ok(format!("{SNAPSHOT_PREFIX}{:06}", self.next_id(false)?))
    }
}

fn max_id(dir: &Path, prefix: &str) -> Result<u64> {
    let mut max = 0;
    for entry in read_dir(dir)? {
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|name| check_id(name, prefix, "").ok())
        {
            max = max.max(n);
        }
    }
    Ok(max)
}
