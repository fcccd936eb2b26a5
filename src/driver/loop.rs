//! The `loop` driver: each volume is a sparse image file holding a real file system (ext4 by
//! default), attached as a real block device through a loop device (`losetup`).
//!
//! Layout under `root` (the same crash-safety scheme as `vfs`):
//! - `ids.json`: the last volume and snapshot ids handed out, durable before an id is used, so
//!   ids are never reused.
//! - `volumes/<id>/volume.json` + `volumes/<id>/disk.img`: one volume; `volume.json` also
//!   records the attachments (instance id and loop device), replaced atomically.
//! - `snapshots/<id>/snapshot.json` + `snapshots/<id>/disk.img`: one snapshot (a sparse or
//!   reflinked copy of the image).
//! - `tmp/`: volumes and snapshots being built or torn down; cleared on open.
//!
//! Needs root, loop devices and the file system's tools (`mkfs.<fs>`, `e2fsck`, `resize2fs`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::vfs::{
    check_id, create_dir, fsync_dir, holders, id_order, max_id, parse_json, read_dir, rename,
    statvfs, write_json_atomic,
};
use super::{
    AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error, PoolCapacity,
    Result, Snapshot,
};

const VOLUME_META: &str = "volume.json";
const SNAPSHOT_META: &str = "snapshot.json";
const IDS_FILE: &str = "ids.json";
const IMAGE: &str = "disk.img";
const VOLUME_PREFIX: &str = "loop-";
const SNAPSHOT_PREFIX: &str = "snap-";

/// File systems the driver can create and grow (grow uses `resize2fs`).
pub const FILESYSTEMS: &[&str] = &["ext2", "ext3", "ext4"];

fn default_pool() -> String {
    "default".to_string()
}

fn default_filesystem() -> String {
    "ext4".to_string()
}

/// Configuration of one `loop` back-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Directory that holds every image file, snapshot and the id counter.
    pub root: PathBuf,
    /// Caps the capacity reported and the sum of volume sizes; `None` = the file system's size.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// The single pool this back-end serves.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// The availability zone this back-end serves, if any.
    #[serde(default)]
    pub zone: Option<String>,
    /// File system created in each new volume: one of [`FILESYSTEMS`].
    #[serde(default = "default_filesystem")]
    pub filesystem: String,
}

impl LoopConfig {
    /// A config with the default pool, ext4, no quota and no zone.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LoopConfig {
            root: root.into(),
            quota_bytes: None,
            pool: default_pool(),
            zone: None,
            filesystem: default_filesystem(),
        }
    }
}

/// Whether this host can run the loop driver: root, a free loop device and `mkfs.ext4`.
/// `Err` says what is missing.
pub fn host_supports_loop() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    match Command::new("losetup").arg("-f").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(format!(
                "losetup -f failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(e) => return Err(format!("cannot run losetup: {e}")),
    }
    match Command::new("mkfs.ext4").arg("-V").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot run mkfs.ext4: {e}")),
    }
}

/// Last ids handed out, persisted in `ids.json`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct IdCounters {
    volume: u64,
    snapshot: u64,
}

/// The `loop` driver. Mutations are serialized by one lock and run on blocking threads (they
/// call `mkfs`, `losetup` and `resize2fs`); reads go straight to disk.
pub struct LoopDriver {
    inner: Arc<Inner>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for LoopDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopDriver")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: LoopConfig,
}

impl LoopDriver {
    /// Opens (creating if needed) the root layout, clears leftovers of interrupted work and
    /// releases loop devices of this root that no volume records (an attach cut short).
    pub fn open(cfg: LoopConfig) -> Result<LoopDriver> {
        if !FILESYSTEMS.contains(&cfg.filesystem.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "loop filesystem {:?} is not supported; use one of {FILESYSTEMS:?}",
                cfg.filesystem
            )));
        }
        let inner = Inner { cfg };
        inner.init()?;
        Ok(LoopDriver {
            inner: Arc::new(inner),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The config this driver was opened with.
    pub fn config(&self) -> &LoopConfig {
        &self.inner.cfg
    }

    async fn mutate<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let guard = self.lock.clone().lock_owned().await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            f(&inner)
        })
        .await
        .map_err(|e| Error::Io(format!("loop worker task failed: {e}")))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Io(format!("loop worker task failed: {e}")))?
    }
}

impl Inner {
    fn root(&self) -> &Path {
        &self.cfg.root
    }
    fn volumes_dir(&self) -> PathBuf {
        self.root().join("volumes")
    }
    fn snapshots_dir(&self) -> PathBuf {
        self.root().join("snapshots")
    }
    fn tmp_dir(&self) -> PathBuf {
        self.root().join("tmp")
    }
    fn ids_path(&self) -> PathBuf {
        self.root().join(IDS_FILE)
    }

    fn init(&self) -> Result<()> {
        for dir in [
            self.root().to_path_buf(),
            self.volumes_dir(),
            self.snapshots_dir(),
            self.tmp_dir(),
        ] {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create loop directory {}", dir.display()), e))?;
        }
        self.release_unrecorded_devices();
        let tmp = self.tmp_dir();
        for entry in read_dir(&tmp)? {
            let path = entry.path();
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(|e| Error::io(format!("clear leftover {}", path.display()), e))?;
        }
        let mut ids = self.load_ids()?;
        let max_vol = max_id(&self.volumes_dir(), VOLUME_PREFIX)?;
        let max_snap = max_id(&self.snapshots_dir(), SNAPSHOT_PREFIX)?;
        if max_vol > ids.volume || max_snap > ids.snapshot || !self.ids_path().exists() {
            ids.volume = ids.volume.max(max_vol);
            ids.snapshot = ids.snapshot.max(max_snap);
            self.store_ids(&ids)?;
        }
        fsync_dir(self.root())
    }

    /// A crash between `losetup` and the metadata write leaves a loop device nobody records;
    /// it is released here. Best effort: a host without loop devices has none to release.
    fn release_unrecorded_devices(&self) {
        let Ok(root) = fs::canonicalize(self.root()) else {
            return;
        };
        let recorded: Vec<String> = self
            .list_volumes()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|v| v.attachments.into_iter().map(|a| a.device))
            .collect();
        for (device, backing) in loop_devices() {
            if backing.starts_with(&root) && !recorded.contains(&device) {
                if let Err(e) = run("losetup", &["-d", &device]) {
                    tracing::warn!(%device, error = %e, "could not release unrecorded loop device");
                }
            }
        }
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

    fn next_volume_id(&self) -> Result<String> {
        let mut ids = self.load_ids()?;
        ids.volume += 1;
        self.store_ids(&ids)?;
        Ok(format!("{VOLUME_PREFIX}{:06}", ids.volume))
    }

    fn next_snapshot_id(&self) -> Result<String> {
        let mut ids = self.load_ids()?;
        ids.snapshot += 1;
        self.store_ids(&ids)?;
        Ok(format!("{SNAPSHOT_PREFIX}{:06}", ids.snapshot))
    }

    fn volume_dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id, VOLUME_PREFIX, "volume")?;
        Ok(self.volumes_dir().join(id))
    }

    fn snapshot_dir(&self, id: &str) -> Result<PathBuf> {
        check_id(id, SNAPSHOT_PREFIX, "snapshot")?;
        Ok(self.snapshots_dir().join(id))
    }

    fn load_volume(&self, id: &str) -> Result<Option<DriverVolume>> {
        let Ok(dir) = self.volume_dir(id) else {
            return Ok(None);
        };
        let path = dir.join(VOLUME_META);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut vol: DriverVolume = parse_json(&path, &bytes)?;
        vol.path = Some(dir.join(IMAGE).to_string_lossy().into_owned());
        Ok(Some(vol))
    }

    fn get_volume(&self, id: &str) -> Result<DriverVolume> {
        self.load_volume(id)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    fn store_volume(&self, vol: &DriverVolume) -> Result<()> {
        let dir = self.volume_dir(&vol.id)?;
        let mut on_disk = vol.clone();
        on_disk.path = None;
        write_json_atomic(&dir.join(VOLUME_META), &on_disk)
    }

    fn list_volumes(&self) -> Result<Vec<DriverVolume>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.volumes_dir())? {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if let Some(vol) = self.load_volume(id)? {
                out.push(vol);
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

    fn load_snapshot(&self, id: &str) -> Result<Option<Snapshot>> {
        let Ok(dir) = self.snapshot_dir(id) else {
            return Ok(None);
        };
        let path = dir.join(SNAPSHOT_META);
        match fs::read(&path) {
            Ok(bytes) => parse_json(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn list_snapshots(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
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

    fn capacity(&self) -> Result<PoolCapacity> {
        let (fs_total, fs_free) = statvfs(self.root())?;
        let (total, free) = match self.cfg.quota_bytes {
            Some(quota) => {
                let used: u64 = self
                    .list_volumes()?
                    .iter()
                    .map(|v| v.size_bytes)
                    .fold(0, u64::saturating_add);
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

    fn check_quota(&self, wanted: u64) -> Result<()> {
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

    fn existing_by_name(&self, req: &CreateRequest) -> Result<Option<DriverVolume>> {
        let Some(vol) = self
            .list_volumes()?
            .into_iter()
            .find(|v| v.name == req.name)
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

    /// Creates a volume: a fresh file system, or a copy of `source` (an image file) grown to
    /// the requested size. Idempotent by name; assembled in tmp/ and renamed into place last.
    fn create(&self, req: &CreateRequest, source: Option<(&Path, u64)>) -> Result<DriverVolume> {
        self.check_request(req)?;
        if let Some(vol) = self.existing_by_name(req)? {
            return Ok(vol);
        }
        if let Some((_, source_size)) = source {
            if req.size_bytes < source_size {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: size_bytes {} is smaller than its source ({source_size} bytes)",
                    req.name, req.size_bytes
                )));
            }
        }
        self.check_quota(req.size_bytes)?;

        let id = self.next_volume_id()?;
        let staging = self.tmp_dir().join(&id);
        create_dir(&staging)?;
        let image = staging.join(IMAGE);
        match source {
            Some((src, src_size)) => {
                copy_image(src, &image)?;
                if req.size_bytes > src_size {
                    set_len(&image, req.size_bytes)?;
                    resize_fs(&image.to_string_lossy(), false)?;
                }
            }
            None => {
                set_len(&image, req.size_bytes)?;
                mkfs(&self.cfg.filesystem, &image)?;
            }
        }
        sync_file(&image)?;
        let mut vol = DriverVolume {
            id: id.clone(),
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
        fsync_dir(&staging)?;
        let dest = self.volume_dir(&id)?;
        rename(&staging, &dest)?;
        fsync_dir(&self.volumes_dir())?;
        fsync_dir(&self.tmp_dir())?;
        vol.path = Some(dest.join(IMAGE).to_string_lossy().into_owned());
        Ok(vol)
    }

    fn remove(&self, id: &str) -> Result<()> {
        let Some(vol) = self.load_volume(id)? else {
            return Ok(());
        };
        if !vol.attachments.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders: holders(&vol),
            });
        }
        self.discard(&self.volume_dir(id)?, &self.volumes_dir(), id)
    }

    fn discard(&self, dir: &Path, parent: &Path, id: &str) -> Result<()> {
        let doomed = self.tmp_dir().join(format!("rm-{id}"));
        rename(dir, &doomed)?;
        fsync_dir(parent)?;
        fs::remove_dir_all(&doomed)
            .map_err(|e| Error::io(format!("delete {}", doomed.display()), e))?;
        fsync_dir(&self.tmp_dir())
    }

    fn attach(&self, id: &str, instance_id: &str) -> Result<DriverAttachment> {
        let mut vol = self.get_volume(id)?;
        if let Some(att) = vol
            .attachments
            .iter()
            .find(|a| a.instance_id == instance_id)
        {
            return Ok(att.clone());
        }
        if !vol.access_mode.allows_many() && !vol.attachments.is_empty() {
            return Err(Error::AttachedElsewhere {
                volume: id.to_string(),
                holders: holders(&vol),
            });
        }
        let image = self.volume_dir(id)?.join(IMAGE);
        let device = run("losetup", &["-f", "--show", &image.to_string_lossy()])?
            .trim()
            .to_string();
        let att = DriverAttachment {
            instance_id: instance_id.to_string(),
            device: device.clone(),
        };
        vol.attachments.push(att.clone());
        if let Err(e) = self.store_volume(&vol) {
            // Unrecorded, the device would leak until the next open; release it now.
            let _ = run("losetup", &["-d", &device]);
            return Err(e);
        }
        Ok(att)
    }

    fn detach(&self, id: &str, instance_id: Option<&str>) -> Result<()> {
        let Some(mut vol) = self.load_volume(id)? else {
            return Ok(());
        };
        let image = self.volume_dir(id)?.join(IMAGE);
        let (gone, kept): (Vec<_>, Vec<_>) = vol
            .attachments
            .into_iter()
            .partition(|a| instance_id.is_none_or(|i| a.instance_id == i));
        vol.attachments = kept;
        if gone.is_empty() {
            return Ok(());
        }
        for att in &gone {
            // After a reboot the same loop number may back another file: only release it if
            // it still backs this volume's image.
            if backs(&att.device, &image) {
                run("losetup", &["-d", &att.device])?;
            }
        }
        self.store_volume(&vol)
    }

    /// Grows the image, then the loop devices' view of it (`losetup -c`), then the file
    /// system (online when mounted). The new size is recorded last, so a retry after a crash
    /// redoes the idempotent steps.
    fn grow(&self, id: &str, new_size: u64) -> Result<DriverVolume> {
        let mut vol = self.get_volume(id)?;
        if new_size < vol.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "volume {id:?}: cannot shrink from {} to {new_size} bytes",
                vol.size_bytes
            )));
        }
        if new_size == vol.size_bytes {
            return Ok(vol);
        }
        self.check_quota(new_size - vol.size_bytes)?;
        let image = self.volume_dir(id)?.join(IMAGE);
        set_len(&image, new_size)?;
        sync_file(&image)?;
        let mut target = image.to_string_lossy().into_owned();
        let mut mounted = false;
        for att in &vol.attachments {
            if backs(&att.device, &image) {
                run("losetup", &["-c", &att.device])?;
                target = att.device.clone();
                mounted |= is_mounted(&att.device);
            }
        }
        resize_fs(&target, mounted)?;
        vol.size_bytes = new_size;
        self.store_volume(&vol)?;
        Ok(vol)
    }

    fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        let vol = self.get_volume(volume_id)?;
        if let Some(snap) = self.find_snapshot(volume_id, name)? {
            return Ok(snap);
        }
        let image = self.volume_dir(volume_id)?.join(IMAGE);
        self.stage_snapshot(&image, volume_id, name, vol.size_bytes)
    }

    /// A second snapshot holding the same image as `snapshot_id`, of the same volume.
    fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        let src = self
            .load_snapshot(snapshot_id)?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        if let Some(snap) = self.find_snapshot(&src.volume_id, name)? {
            return Ok(snap);
        }
        let image = self.snapshot_dir(snapshot_id)?.join(IMAGE);
        self.stage_snapshot(&image, &src.volume_id, name, src.size_bytes)
    }

    fn find_snapshot(&self, volume_id: &str, name: &str) -> Result<Option<Snapshot>> {
        Ok(self
            .list_snapshots(Some(volume_id))?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Copy `image` into a snapshot built under `tmp/`, then rename it into the listing.
    fn stage_snapshot(
        &self,
        image: &Path,
        volume_id: &str,
        name: &str,
        size_bytes: u64,
    ) -> Result<Snapshot> {
        let id = self.next_snapshot_id()?;
        let staging = self.tmp_dir().join(&id);
        create_dir(&staging)?;
        copy_image(image, &staging.join(IMAGE))?;
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
        fsync_dir(&staging)?;
        rename(&staging, &self.snapshot_dir(&id)?)?;
        fsync_dir(&self.snapshots_dir())?;
        fsync_dir(&self.tmp_dir())?;
        Ok(snap)
    }

    fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        if self.load_snapshot(snapshot_id)?.is_none() {
            return Ok(());
        }
        self.discard(
            &self.snapshot_dir(snapshot_id)?,
            &self.snapshots_dir(),
            snapshot_id,
        )
    }

    fn create_from_snapshot(&self, snapshot_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let snap = self
            .load_snapshot(snapshot_id)?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        let src = self.snapshot_dir(snapshot_id)?.join(IMAGE);
        self.create(req, Some((&src, snap.size_bytes)))
    }

    fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let vol = self.get_volume(volume_id)?;
        let src = self.volume_dir(volume_id)?.join(IMAGE);
        self.create(req, Some((&src, vol.size_bytes)))
    }
}

#[async_trait]
impl Driver for LoopDriver {
    fn kind(&self) -> &str {
        "loop"
    }

    fn can_copy_snapshots(&self) -> bool {
        true
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.read(|i| i.capacity().map(|c| vec![c])).await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        self.read(|i| i.list_volumes()).await
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        let id = id.to_string();
        self.read(move |i| i.get_volume(&id)).await
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        let req = req.clone();
        self.mutate(move |i| i.create(&req, None)).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.mutate(move |i| i.remove(&id)).await
    }

    /// The device is always the loop device allocated for the instance; a device hint cannot
    /// pick a loop number.
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        _opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let (id, instance_id) = (id.to_string(), instance_id.to_string());
        self.mutate(move |i| i.attach(&id, &instance_id)).await
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        let (id, instance_id) = (id.to_string(), instance_id.to_string());
        self.mutate(move |i| i.detach(&id, Some(&instance_id)))
            .await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.mutate(move |i| i.detach(&id, None)).await
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        let (volume_id, name) = (volume_id.to_string(), name.to_string());
        self.mutate(move |i| i.snapshot_create(&volume_id, &name))
            .await
    }

    async fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        let (snapshot_id, name) = (snapshot_id.to_string(), name.to_string());
        self.mutate(move |i| i.snapshot_copy(&snapshot_id, &name))
            .await
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let volume_id = volume_id.map(str::to_string);
        self.read(move |i| i.list_snapshots(volume_id.as_deref()))
            .await
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        let snapshot_id = snapshot_id.to_string();
        self.mutate(move |i| i.snapshot_remove(&snapshot_id)).await
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let (snapshot_id, req) = (snapshot_id.to_string(), req.clone());
        self.mutate(move |i| i.create_from_snapshot(&snapshot_id, &req))
            .await
    }

    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let (volume_id, req) = (volume_id.to_string(), req.clone());
        self.mutate(move |i| i.copy(&volume_id, &req)).await
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let id = id.to_string();
        self.mutate(move |i| i.grow(&id, new_size_bytes)).await
    }
}

/// Runs a command and returns its stdout; a failure names the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("run {program}"), e))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn set_len(path: &Path, len: u64) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .map_err(|e| Error::io(format!("size {} to {len} bytes", path.display()), e))
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", path.display()), e))
}

fn mkfs(filesystem: &str, image: &Path) -> Result<()> {
    run(
        &format!("mkfs.{filesystem}"),
        &["-q", "-F", &image.to_string_lossy()],
    )
    .map(drop)
}

/// Sparse (or reflinked, where the file system can) copy of an image file.
fn copy_image(src: &Path, dst: &Path) -> Result<()> {
    run(
        "cp",
        &[
            "--sparse=always",
            "--reflink=auto",
            &src.to_string_lossy(),
            &dst.to_string_lossy(),
        ],
    )?;
    sync_file(dst)
}

/// Grows the file system on `target` (an image file or a loop device) to fill it. Offline,
/// `resize2fs` insists on a fresh `e2fsck -f` first.
fn resize_fs(target: &str, mounted: bool) -> Result<()> {
    if !mounted {
        let out = Command::new("e2fsck")
            .args(["-f", "-p", target])
            .output()
            .map_err(|e| Error::io("run e2fsck", e))?;
        // 0 = clean, 1 = errors corrected; anything else leaves the file system unsafe to grow.
        if !matches!(out.status.code(), Some(0 | 1)) {
            return Err(Error::Io(format!(
                "e2fsck -f -p {target} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    run("resize2fs", &[target]).map(drop)
}

/// Every loop device in use and the file behind it.
fn loop_devices() -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((format!("/dev/{name}"), PathBuf::from(backing.trim())))
        })
        .collect()
}

/// Whether loop device `device` is currently backed by `image`.
fn backs(device: &str, image: &Path) -> bool {
    let Some(name) = device.strip_prefix("/dev/") else {
        return false;
    };
    let Ok(backing) = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) else {
        return false;
    };
    let image = fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    Path::new(backing.trim()) == image
}

fn is_mounted(device: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').next() == Some(device)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_pool_and_filesystem() {
        let cfg: LoopConfig = serde_json::from_str(r#"{"root": "/x"}"#).unwrap();
        assert_eq!(cfg, LoopConfig::new("/x"));
        assert_eq!(cfg.filesystem, "ext4");
    }

    #[test]
    fn unsupported_filesystem_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LoopConfig::new(dir.path());
        cfg.filesystem = "xfs".into();
        let err = LoopDriver::open(cfg).unwrap_err();
        assert!(err.to_string().contains("xfs"), "{err}");
    }
}
