//! The `loop` driver: each volume is a sparse image file holding a real file system (ext4 by
//! default), attached as a real block device through a loop device (`losetup`).
//!
//! The layout under `root` and its crash-safety scheme are those of [`super::dirs`], shared
//! with `vfs`; a loop volume's payload is the sparse image file `disk.img`, and `volume.json`
//! records each attachment's loop device. Snapshots are sparse (or reflinked) copies of the
//! image.
//!
//! Needs root, loop devices and the file system's tools (`mkfs.<fs>`, `e2fsck`, `resize2fs`).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::dirs::{holders, Dirs, Layout};
use super::{
    AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error, Listed,
    PoolCapacity, Result, Snapshot,
};

const IMAGE: &str = "disk.img";
const VOLUME_PREFIX: &str = "loop-";

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
    dirs: Dirs,
}

impl std::ops::Deref for Inner {
    type Target = Dirs;
    fn deref(&self) -> &Dirs {
        &self.dirs
    }
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
        let dirs = Dirs::open(
            Layout {
                root: cfg.root.clone(),
                pool: cfg.pool.clone(),
                zone: cfg.zone.clone(),
                quota_bytes: cfg.quota_bytes,
                kind: "loop",
                volume_prefix: VOLUME_PREFIX,
                payload: IMAGE,
                copy: copy_image,
            },
            release_unrecorded_devices,
        )?;
        let inner = Inner { cfg, dirs };
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

/// A crash between `losetup` and the metadata write leaves a loop device nobody records;
/// it is released at open. Best effort: a host without loop devices has none to release.
fn release_unrecorded_devices(dirs: &Dirs) {
    let Ok(root) = fs::canonicalize(dirs.root()) else {
        return;
    };
    let recorded: Vec<String> = dirs
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

impl Inner {
    /// Creates a volume: a fresh file system, or a copy of `source` (an image file) grown to
    /// the requested size. Idempotent by name; assembled in tmp/ and renamed into place last.
    fn create(&self, req: &CreateRequest, source: Option<(&Path, u64)>) -> Result<DriverVolume> {
        if let Some(vol) = self.check_create(req, source.map(|(_, size)| size))? {
            return Ok(vol);
        }
        let (id, staging) = self.stage_volume()?;
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
                mkfs(self.filesystem(req)?, &image)?;
            }
        }
        sync_file(&image)?;
        self.publish_volume(&staging, &id, req)
    }

    /// The file system a new volume gets: its own `filesystem` field (`-o fs=` through
    /// `polly node`), else the service's.
    fn filesystem<'a>(&'a self, req: &'a CreateRequest) -> Result<&'a str> {
        match req.fields.get("filesystem") {
            None => Ok(&self.cfg.filesystem),
            Some(fs) if FILESYSTEMS.contains(&fs.as_str()) => Ok(fs),
            Some(fs) => Err(Error::InvalidArgument(format!(
                "file system {fs:?} is not supported by loop volumes; use one of {FILESYSTEMS:?}"
            ))),
        }
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
        let image = self.payload(id)?;
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
        let image = self.payload(id)?;
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
        if !self.check_grow(&vol, new_size)? {
            return Ok(vol);
        }
        let image = self.payload(id)?;
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

    fn create_from_snapshot(&self, snapshot_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let (src, snap) = self.snapshot_source(snapshot_id)?;
        self.create(req, Some((&src, snap.size_bytes)))
    }

    fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let vol = self.get_volume(volume_id)?;
        self.create(req, Some((&self.payload(volume_id)?, vol.size_bytes)))
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

    async fn take_over(&self) -> Result<()> {
        self.read(|i| i.reload()).await
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.read(|i| i.capacity().map(|c| vec![c])).await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        self.read(|i| i.list_volumes()).await
    }

    async fn inventory(&self) -> Result<Vec<Listed>> {
        self.read(|i| i.inventory()).await
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

    /// The image file and its file system, with the loop device attached for the node: a
    /// node on this host mounts that device; a node elsewhere (reaching the root over NFS)
    /// attaches its own.
    async fn node_source(&self, id: &str, device: Option<&str>) -> Result<crate::mount::Source> {
        let id = id.to_string();
        let (vol, path) = self
            .read(move |i| Ok((i.get_volume(&id)?, i.payload(&id)?)))
            .await?;
        // A volume created with a file system of its own (`-o fs` through `polly node`).
        let filesystem = vol
            .fields
            .get("filesystem")
            .cloned()
            .unwrap_or_else(|| self.inner.cfg.filesystem.clone());
        Ok(crate::mount::Source::Image {
            path,
            filesystem,
            device: device.filter(|d| !d.is_empty()).map(Into::into),
        })
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
