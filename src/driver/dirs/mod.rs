//! The directory layout shared by the drivers that keep volumes as files under one root
//! (`vfs` and `loop`): ids, metadata, the name index, snapshots, capacity and the crash-safety
//! scheme. Each driver adds only its payload (a data directory, an image file) and what it
//! does with it on attach, detach and grow.
//!
//! Layout under `root`:
//! - `ids.json`: the highest volume and snapshot ids that may have been handed out; raised (and
//!   fsync'd) a block of ids at a time, before any id of the block is used, so ids are never
//!   reused, even after deletes and restarts.
//! - `volumes/<id>/volume.json` + `volumes/<id>/<payload>`: one volume; `volume.json` also
//!   records its attachments, replaced atomically.
//! - `snapshots/<id>/snapshot.json` + `snapshots/<id>/<payload>`: one snapshot (a full copy).
//! - `tmp/`: volumes and snapshots being built or torn down; cleared on open.
//!
//! A volume or snapshot appears in (or leaves) the listing only by one `rename` of a complete
//! directory, so a crash never leaves half of one visible. Metadata files are replaced
//! atomically (tmp file, fsync, rename, fsync of the directory).
//!
//! This file holds the layout, its open and reload, and the paths; the rest is by concern:
//! `ids.rs`, `index.rs` (names and sizes in memory), `volumes.rs`, `snapshots.rs`,
//! `capacity.rs`, `durable.rs` (the crash-safe file-system steps).

mod capacity;
mod durable;
mod ids;
mod index;
mod snapshots;
mod volumes;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::ids::IdLease;
use self::index::{read_index, IndexCell};
use super::{CreateRequest, DriverVolume, Error, Listed, PoolCapacity, Result, Snapshot};

pub(super) use self::durable::{create_dir, fsync_dir, read_dir};

const VOLUME_META: &str = "volume.json";
const SNAPSHOT_META: &str = "snapshot.json";
pub(super) const IDS_FILE: &str = "ids.json";
const SNAPSHOT_PREFIX: &str = "snap-";

/// Copies a volume's or snapshot's payload to a new path, durably.
pub(super) type CopyPayload = fn(&Path, &Path) -> Result<()>;

/// What a driver keeps under its root, and how.
pub(super) struct Layout {
    pub root: PathBuf,
    pub pool: String,
    pub zone: Option<String>,
    pub quota_bytes: Option<u64>,
    /// The driver's name, for messages (`vfs`, `loop`).
    pub kind: &'static str,
    /// Volume ids are `<prefix><digits>`.
    pub volume_prefix: &'static str,
    /// The payload's name inside a volume or snapshot directory.
    pub payload: &'static str,
    /// How a snapshot or a copy duplicates the payload.
    pub copy: CopyPayload,
}

/// One driver root. The blocking methods run on the driver's blocking threads; the driver
/// serializes mutations of one volume (its own locking) and calls these under it.
pub(super) struct Dirs {
    pub cfg: Layout,
    /// The name and size of every volume in `volumes/`, read from disk after open (and by
    /// [`Dirs::reload`]) and kept up to date by this driver's creates, removes and metadata
    /// writes. The driver owns its root: nothing else adds volumes there while it runs (a
    /// second writer would also race for ids).
    index: Arc<IndexCell>,
    ids: std::sync::Mutex<IdLease>,
}

impl Dirs {
    /// Opens (creating if needed) the layout under `cfg.root`; `before_clear` runs once the
    /// directories exist and before leftovers in `tmp/` are removed.
    pub fn open(cfg: Layout, before_clear: impl FnOnce(&Dirs)) -> Result<Dirs> {
        let dirs = Dirs {
            cfg,
            index: Default::default(),
            ids: Default::default(),
        };
        for dir in [
            dirs.root().to_path_buf(),
            dirs.volumes_dir(),
            dirs.snapshots_dir(),
            dirs.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|e| {
                Error::io(
                    format!("create {} directory {}", dirs.cfg.kind, dir.display()),
                    e,
                )
            })?;
        }
        before_clear(&dirs);
        // Anything in tmp/ is a create that never got renamed into place or a remove that was
        // cut short; neither is visible in the listing, so both can go.
        let tmp = dirs.tmp_dir();
        for entry in read_dir(&tmp)? {
            let path = entry.path();
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(|e| Error::io(format!("clear leftover {}", path.display()), e))?;
        }
        dirs.reload_ids()?;
        fsync_dir(dirs.root())?;
        let (cell, volumes, prefix) = (
            dirs.index.clone(),
            dirs.volumes_dir(),
            dirs.cfg.volume_prefix,
        );
        let kind = dirs.cfg.kind;
        std::thread::Builder::new()
            .name(format!("{kind}-index"))
            .spawn(move || {
                let t0 = std::time::Instant::now();
                let index = read_index(&volumes, prefix);
                match &index {
                    Ok(i) => tracing::debug!(
                        driver = kind,
                        volumes = i.by_id.len(),
                        secs = t0.elapsed().as_secs_f64(),
                        "volume index loaded"
                    ),
                    Err(e) => tracing::error!(driver = kind, error = %e,
                        "cannot load the volume index; calls that need it fail until a reload"),
                }
                cell.set(index);
            })
            .map_err(|e| Error::io(format!("start the {kind} index loader"), e))?;
        Ok(dirs)
    }

    /// Re-read what this process keeps in memory about the root (the id counters and the
    /// index of names and sizes) from disk. [`Dirs::open`] does it once; a Polly that takes over as leader
    /// does it again, since the previous leader may have created volumes in a shared root
    /// meanwhile.
    pub fn reload(&self) -> Result<()> {
        // The load started by `open` must not land after (and over) this one.
        let _ = self.index();
        self.reload_ids()?;
        let index = read_index(&self.volumes_dir(), self.cfg.volume_prefix);
        let failed = index.as_ref().err().map(ToString::to_string);
        self.index.set(index);
        match failed {
            Some(e) => Err(Error::Io(format!("volume index: {e}"))),
            None => Ok(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.cfg.root
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.root().join("volumes")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root().join("snapshots")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root().join("tmp")
    }

    pub fn volume_dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id, self.cfg.volume_prefix, "volume")?;
        Ok(self.volumes_dir().join(id))
    }

    fn snapshot_dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id, SNAPSHOT_PREFIX, "snapshot")?;
        Ok(self.snapshots_dir().join(id))
    }

    /// The payload of volume `id`.
    pub fn payload(&self, id: &str) -> Result<PathBuf> {
        Ok(self.volume_dir(id)?.join(self.cfg.payload))
    }
}

pub(super) fn holders(vol: &DriverVolume) -> Vec<String> {
    vol.attachments
        .iter()
        .map(|a| a.instance_id.clone())
        .collect()
}

/// Ids are `<prefix><digits>`; anything else (e.g. `../x`) must never reach a path join.
pub(super) fn check_id(id: &str, prefix: &str, kind: &str) -> Result<u64> {
    id.strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!("{kind} id {id:?} is not a {prefix}<n> {kind} id"))
        })
}

/// Sort key that keeps numeric order once ids outgrow the zero padding.
pub(super) fn id_order(id: &str) -> (usize, &str) {
    (id.len(), id)
}
