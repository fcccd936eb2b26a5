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

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{CreateRequest, DriverVolume, Error, Listed, PoolCapacity, Result, Snapshot};

const VOLUME_META: &str = "volume.json";
const SNAPSHOT_META: &str = "snapshot.json";
pub(super) const IDS_FILE: &str = "ids.json";
const SNAPSHOT_PREFIX: &str = "snap-";

/// Ids are leased from `ids.json` in blocks of this many (see [`Dirs::next_volume_id`]).
const ID_LEASE: u64 = 64;

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
struct IdLease {
    /// Last id handed out, per kind.
    used: IdCounters,
    /// Highest id the file allows, per kind.
    leased: IdCounters,
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

/// The index and whether it is loaded. Loading reads every `volume.json` (100,000 files
/// for 100,000 volumes), so [`Dirs::open`] starts it on a thread of its own and returns:
/// Polly binds and serves from its store meanwhile, and the calls that need the index (a
/// create, remove or metadata write, a quota check, the inventory) wait for it.
#[derive(Default)]
struct IndexCell {
    state: std::sync::Mutex<Loading>,
    loaded: std::sync::Condvar,
}

#[derive(Default)]
enum Loading {
    #[default]
    Pending,
    Ready(Index),
    /// Reading the volumes failed (an unreadable or corrupt `volume.json`): every call that
    /// needs the index fails with this until a reload succeeds.
    Failed(String),
}

impl IndexCell {
    fn set(&self, index: Result<Index>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = match index {
            Ok(index) => Loading::Ready(index),
            Err(e) => Loading::Failed(e.to_string()),
        };
        self.loaded.notify_all();
    }

    /// The index, once loaded.
    fn get(&self) -> Result<IndexGuard<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(*state, Loading::Pending) {
            state = self.loaded.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match &*state {
            Loading::Failed(e) => Err(Error::Io(format!("volume index: {e}"))),
            _ => Ok(IndexGuard(state)),
        }
    }
}

/// A locked, loaded index.
struct IndexGuard<'a>(std::sync::MutexGuard<'a, Loading>);

impl std::ops::Deref for IndexGuard<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        match &*self.0 {
            Loading::Ready(index) => index,
            // `IndexCell::get` hands out guards of a loaded index only.
            _ => unreachable!("index guard of an index not loaded"),
        }
    }
}

impl std::ops::DerefMut for IndexGuard<'_> {
    fn deref_mut(&mut self) -> &mut Index {
        match &mut *self.0 {
            Loading::Ready(index) => index,
            _ => unreachable!("index guard of an index not loaded"),
        }
    }
}

/// The fields of a `volume.json` the index keeps.
#[derive(Deserialize)]
struct IndexedMeta {
    id: String,
    name: String,
    size_bytes: u64,
}

/// Reads the index from every volume's metadata under `volumes` (ids `<prefix><n>`).
fn read_index(volumes: &Path, prefix: &str) -> Result<Index> {
    let mut index = Index::default();
    for entry in read_dir(volumes)? {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if check_id(id, prefix, "volume").is_err() {
            continue;
        }
        let path = entry.path().join(VOLUME_META);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let meta: IndexedMeta = parse_json(&path, &bytes)?;
        index.put(&meta.id, &meta.name, meta.size_bytes);
    }
    Ok(index)
}

/// What [`Dirs`] keeps in memory about the volumes in `volumes/`, so that a create finds an
/// existing name, a quota check sums the sizes and the reconciler's inventory names every
/// volume without reading 100,000 `volume.json` files each time.
#[derive(Default)]
struct Index {
    /// Volume id → its name and size, as last written or read.
    by_id: HashMap<Arc<str>, Indexed>,
    /// Volume name → id. Keys and values are the same allocations as in `by_id`: with
    /// 100,000 volumes, four strings per volume instead of two would be megabytes.
    by_name: HashMap<Arc<str>, Arc<str>>,
    /// The sum of the sizes.
    used: u64,
}

struct Indexed {
    name: Arc<str>,
    size_bytes: u64,
}

impl Index {
    /// Volume `id` is in `volumes/` under `name` with `size_bytes`.
    fn put(&mut self, id: &str, name: &str, size_bytes: u64) {
        // A known id keeps its one allocation.
        let id: Arc<str> = match self.by_id.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => id.into(),
        };
        let name: Arc<str> = name.into();
        let old = self.by_id.insert(
            id.clone(),
            Indexed {
                name: name.clone(),
                size_bytes,
            },
        );
        if let Some(old) = &old {
            if old.name != name {
                self.forget_name(&old.name, &id);
            }
        }
        if old.as_ref().is_none_or(|o| o.name != name) {
            self.by_name.insert(name, id);
        }
        self.used = self
            .used
            .saturating_sub(old.map_or(0, |o| o.size_bytes))
            .saturating_add(size_bytes);
    }

    /// Volume `id` left `volumes/`.
    fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.forget_name(&old.name, id);
            self.used = self.used.saturating_sub(old.size_bytes);
        }
    }

    fn forget_name(&mut self, name: &str, id: &str) {
        if self.by_name.get(name).is_some_and(|held| &**held == id) {
            self.by_name.remove(name);
        }
    }
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

    /// Re-read the id counters, raising them past every id on disk.
    fn reload_ids(&self) -> Result<()> {
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

    fn next_snapshot_id(&self) -> Result<String> {
        Ok(format!("{SNAPSHOT_PREFIX}{:06}", self.next_id(false)?))
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

    /// The volume with this id, or `None` if there is none.
    pub fn load_volume(&self, id: &str) -> Result<Option<DriverVolume>> {
        let dir = match self.volume_dir(id) {
            Ok(dir) => dir,
            // An id this driver could never have made names no volume.
            Err(_) => return Ok(None),
        };
        let path = dir.join(VOLUME_META);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut vol: DriverVolume = parse_json(&path, &bytes)?;
        // The path is derived, not trusted from disk, so a moved root still reports the truth.
        vol.path = Some(dir.join(self.cfg.payload).to_string_lossy().into_owned());
        Ok(Some(vol))
    }

    pub fn get_volume(&self, id: &str) -> Result<DriverVolume> {
        self.load_volume(id)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    pub fn store_volume(&self, vol: &DriverVolume) -> Result<()> {
        let dir = self.volume_dir(&vol.id)?;
        let mut on_disk = vol.clone();
        on_disk.path = None;
        // An index that cannot be kept up to date refuses the write, before it happens.
        drop(self.index()?);
        if let Err(e) = write_json_atomic(&dir.join(VOLUME_META), &on_disk) {
            // The new metadata may be in place even so (a failed fsync after the rename):
            // the index follows whatever the disk holds now.
            if let Ok(Some(now)) = self.load_volume(&vol.id) {
                if let Ok(mut index) = self.index() {
                    index.put(&now.id, &now.name, now.size_bytes);
                }
            }
            return Err(e);
        }
        self.index()?.put(&vol.id, &vol.name, vol.size_bytes);
        Ok(())
    }

    /// The id, name and size of every volume in `volumes/`, sorted by id, from the index: one
    /// directory listing, no metadata read (a volume the index does not know, which only a
    /// writer outside this driver could make, is read from disk).
    pub fn inventory(&self) -> Result<Vec<Listed>> {
        let mut ids = Vec::new();
        for entry in read_dir(&self.volumes_dir())? {
            if let Ok(id) = entry.file_name().into_string() {
                ids.push(id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        {
            let index = self.index()?;
            for id in ids {
                match index.by_id.get(id.as_str()) {
                    Some(e) => out.push(Listed {
                        name: e.name.to_string(),
                        size_bytes: e.size_bytes,
                        id,
                    }),
                    None => unknown.push(id),
                }
            }
        }
        for id in unknown {
            // Gone since the listing (a remove), or not a volume directory: not listed.
            if let Some(vol) = self.load_volume(&id)? {
                out.push(vol.into());
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

    pub fn list_volumes(&self) -> Result<Vec<DriverVolume>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.volumes_dir())? {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            // A volume removed between read_dir and the read is simply gone.
            if let Some(vol) = self.load_volume(id)? {
                out.push(vol);
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

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

    /// Capacity is `statvfs` of the root, capped by the quota.
    pub fn capacity(&self) -> Result<PoolCapacity> {
        let (fs_total, fs_free) = statvfs(self.root())?;
        let (total, free) = match self.cfg.quota_bytes {
            Some(quota) => {
                let used = self.index()?.used;
                (fs_total.min(quota), fs_free.min(quota.saturating_sub(used)))
            }
            None => (fs_total, fs_free),
        };
        Ok(PoolCapacity {
            pool: self.cfg.pool.clone(),
            zone: self.cfg.zone.clone(),
            total_bytes: total,
            free_bytes: free,
        })
    }

    /// Fails when a quota is set and `wanted` more bytes would not fit.
    pub fn check_quota(&self, wanted: u64) -> Result<()> {
        if self.cfg.quota_bytes.is_none() {
            return Ok(());
        }
        let cap = self.capacity()?;
        if wanted > cap.free_bytes {
            return Err(Error::InsufficientCapacity {
                pool: self.cfg.pool.clone(),
                free_bytes: cap.free_bytes,
                wanted_bytes: wanted,
            });
        }
        Ok(())
    }

    /// Refuses a grow below the current size; `Ok(false)` when there is nothing to do.
    pub fn check_grow(&self, vol: &DriverVolume, new_size: u64) -> Result<bool> {
        if new_size < vol.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: cannot shrink from {} to {new_size} bytes",
                vol.id, vol.size_bytes
            )));
        }
        if new_size == vol.size_bytes {
            return Ok(false);
        }
        self.check_quota(new_size - vol.size_bytes)?;
        Ok(true)
    }

    fn check_request(&self, req: &CreateRequest) -> Result<()> {
        if req.size_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes must be greater than 0",
                req.name
            )));
        }
        if let Some(pool) = &req.pool {
            if *pool != self.cfg.pool {
                return Err(Error::NotFound {
                    kind: "pool",
                    id: pool.clone(),
                });
            }
        }
        if let Some(zone) = &req.zone {
            if self.cfg.zone.as_deref() != Some(zone.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: zone {zone:?} is not served by this back-end (it serves {:?})",
                    req.name, self.cfg.zone
                )));
            }
        }
        Ok(())
    }

    fn index(&self) -> Result<IndexGuard<'_>> {
        self.index.get()
    }

    /// The volume already created under `req.name`, if its size matches; `AlreadyExists` if it
    /// does not.
    fn existing_by_name(&self, req: &CreateRequest) -> Result<Option<DriverVolume>> {
        let id = self.index()?.by_name.get(req.name.as_str()).cloned();
        let Some(vol) = id
            .map(|id| self.load_volume(&id))
            .transpose()?
            .flatten()
            .filter(|v| v.name == req.name)
        else {
            return Ok(None);
        };
        if vol.size_bytes != req.size_bytes {
            return Err(Error::AlreadyExists {
                name: req.name.clone(),
                detail: format!(
                    "existing volume {} has {} bytes, {} requested",
                    vol.id, vol.size_bytes, req.size_bytes
                ),
            });
        }
        Ok(Some(vol))
    }

    /// The first half of a create: checks the request against the back-end and a source of
    /// `source_size` bytes. `Ok(Some(_))` is the volume an earlier create of this name made
    /// (creates are idempotent by name); `Ok(None)`: go on with [`Dirs::stage_volume`].
    pub fn check_create(
        &self,
        req: &CreateRequest,
        source_size: Option<u64>,
    ) -> Result<Option<DriverVolume>> {
        self.check_request(req)?;
        if let Some(vol) = self.existing_by_name(req)? {
            return Ok(Some(vol));
        }
        if let Some(source_size) = source_size {
            if req.size_bytes < source_size {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: size_bytes {} is smaller than its source ({source_size} bytes)",
                    req.name, req.size_bytes
                )));
            }
        }
        self.check_quota(req.size_bytes)?;
        Ok(None)
    }

    /// A new volume id and its empty staging directory under `tmp/`, where the driver builds
    /// the payload (at `staging.join(payload)`) before [`Dirs::publish_volume`].
    pub fn stage_volume(&self) -> Result<(String, PathBuf)> {
        let id = self.next_volume_id()?;
        let staging = self.tmp_dir().join(&id);
        create_dir(&staging)?;
        Ok((id, staging))
    }

    /// The last step of a create: writes the metadata into `staging` (which also makes the
    /// payload's directory entry durable) and renames it into `volumes/` in one step.
    pub fn publish_volume(
        &self,
        staging: &Path,
        id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let mut vol = DriverVolume {
            id: id.to_string(),
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: self.cfg.pool.clone(),
            zone: self.cfg.zone.clone(),
            access_mode: req.access_mode,
            attachments: Vec::new(),
            fields: req.fields.clone(),
            path: None,
        };
        write_json_atomic(&staging.join(VOLUME_META), &vol)?;
        let dest = self.volume_dir(id)?;
        rename(staging, &dest)?;
        fsync_dir(&self.volumes_dir())?;
        fsync_dir(&self.tmp_dir())?;
        self.index()?.put(id, &vol.name, vol.size_bytes);
        vol.path = Some(dest.join(self.cfg.payload).to_string_lossy().into_owned());
        Ok(vol)
    }

    /// Removes an unattached volume; an unknown id is already removed.
    pub fn remove(&self, id: &str) -> Result<()> {
        let Some(vol) = self.load_volume(id)? else {
            return Ok(());
        };
        if !vol.attachments.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders: holders(&vol),
            });
        }
        drop(self.index()?);
        self.discard(&self.volume_dir(id)?, &self.volumes_dir(), id)?;
        self.index()?.remove(id);
        Ok(())
    }

    /// Takes `dir` out of `parent`'s listing with one rename, then deletes it.
    fn discard(&self, dir: &Path, parent: &Path, id: &str) -> Result<()> {
        let doomed = self.tmp_dir().join(format!("rm-{id}"));
        rename(dir, &doomed)?;
        fsync_dir(parent)?;
        fs::remove_dir_all(&doomed)
            .map_err(|e| Error::io(format!("delete {}", doomed.display()), e))?;
        fsync_dir(&self.tmp_dir())
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

pub(super) fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))
}

pub(super) fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .map_err(|e| Error::io(format!("rename {} to {}", from.display(), to.display()), e))
}

pub(super) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Io(format!("parse {}: {e}", path.display())))
}

/// Replaces `path` so that a crash leaves either the old or the new contents, never a mix.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
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

/// Total and available bytes of the file system holding `path`.
fn statvfs(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::InvalidArgument(format!("driver root {} contains NUL", path.display()))
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory of the
    // right type; statvfs fills it in completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(
            format!("statvfs {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: rc == 0, so statvfs initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (blocks, avail, frsize) = (st.f_blocks as u64, st.f_bavail as u64, st.f_frsize as u64);
    Ok((blocks.saturating_mul(frsize), avail.saturating_mul(frsize)))
}
