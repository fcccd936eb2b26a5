//! Snapshots under a root: full copies of a volume's payload, made once per name, staged under
//! `tmp/` and published by one rename.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::durable::{create_dir, fsync_dir, parse_json, read_dir, rename, write_json_atomic};
use super::{id_order, Dirs, Error, Result, Snapshot, SNAPSHOT_META};

impl Dirs {
    fn load_snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        let dir = match self.snapshot_dir(id) {
            Ok(dir) => dir,
            Err(_) => return Ok(None),
        };
        let path = dir.join(SNAPSHOT_META);
        match fs::read(&path) {
            Ok(bytes) => parse_json(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    pub fn list_snapshots(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.snapshots_dir())? {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if let Some(snap) = self.load_snapshot(id)? {
                if volume_id.is_none_or(|v| v == snap.volume_id) {
                    out.push(snap);
                }
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

    pub fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        let vol = self.get_volume(volume_id)?;
        if let Some(snap) = self.find_snapshot(volume_id, name)? {
            return Ok(snap);
        }
        let payload = self.payload(volume_id)?;
        self.stage_snapshot(&payload, volume_id, name, vol.size_bytes)
    }

    /// A second snapshot holding the same data as `snapshot_id`, of the same volume.
    pub fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        let (payload, src) = self.snapshot_source(snapshot_id)?;
        if let Some(snap) = self.find_snapshot(&src.volume_id, name)? {
            return Ok(snap);
        }
        self.stage_snapshot(&payload, &src.volume_id, name, src.size_bytes)
    }

    fn find_snapshot(&self, volume_id: &str, name: &str) -> Result<Option<Snapshot>> {
        Ok(self
            .list_snapshots(Some(volume_id))?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Build a snapshot of `payload` under `tmp/` and rename it into the listing.
    fn stage_snapshot(
        &self,
        payload: &Path,
        volume_id: &str,
        name: &str,
        size_bytes: u64,
    ) -> Result<Snapshot> {
        let id = self.next_snapshot_id()?;
        let staging = self.tmp_dir().join(&id);
        create_dir(&staging)?;
        (self.cfg.copy)(payload, &staging.join(self.cfg.payload))?;
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let snap = Snapshot {
            id: id.clone(),
            name: name.to_string(),
            volume_id: volume_id.to_string(),
            size_bytes,
            created_at,
        };
        write_json_atomic(&staging.join(SNAPSHOT_META), &snap)?;
        rename(&staging, &self.snapshot_dir(&id)?)?;
        fsync_dir(&self.snapshots_dir())?;
        fsync_dir(&self.tmp_dir())?;
        Ok(snap)
    }

    pub fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        if self.load_snapshot(snapshot_id)?.is_none() {
            return Ok(());
        }
        self.discard(
            &self.snapshot_dir(snapshot_id)?,
            &self.snapshots_dir(),
            snapshot_id,
        )
    }

    /// A snapshot's payload and record, for a create from it.
    pub fn snapshot_source(&self, snapshot_id: &str) -> Result<(PathBuf, Snapshot)> {
        let snap = self
            .load_snapshot(snapshot_id)?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        let payload = self.snapshot_dir(snapshot_id)?.join(self.cfg.payload);
        Ok((payload, snap))
    }
}
