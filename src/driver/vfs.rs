//! The `vfs` driver: each volume is a real directory under a root on the local file system.
//!
//! The layout under `root` (ids, `volumes/<id>/volume.json` + `volumes/<id>/data/`,
//! `snapshots/`, `tmp/`) and its crash-safety scheme are those of [`super::dirs`], shared with
//! the `loop` driver; a vfs volume's payload is the directory `data/`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::dirs::{create_dir, fsync_dir, holders, read_dir, Dirs, Layout};
use super::{
    AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error, Listed,
    PoolCapacity, Result, Snapshot,
};
use crate::keyed_lock::KeyedLocks;

const DATA_DIR: &str = "data";
const VOLUME_PREFIX: &str = "vfs-";

fn default_pool() -> String {
    "default".to_string()
}

/// Configuration of one `vfs` back-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfsConfig {
    /// Directory that holds every volume, snapshot and the id counter.
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
}

impl VfsConfig {
    /// A config with the default pool, no quota and no zone.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        VfsConfig {
            root: root.into(),
            quota_bytes: None,
            pool: default_pool(),
            zone: None,
        }
    }
}

/// The `vfs` driver. Mutations of one volume (or of one name, for creates; one snapshot) are
/// serialized by a lock for that key, so calls for different volumes run concurrently and
/// their fsyncs overlap; with a quota, creates and grows also share one "quota" key, so two
/// of them can never both fit in the last free bytes. Reads go straight to disk, which is
/// safe because every change becomes visible through a single atomic rename.
pub struct VfsDriver {
    inner: Arc<Inner>,
    /// Per-key locks, held (as owned guards) by the blocking task doing the mutation, so a
    /// caller that gives up waiting can never let a second mutation of the same key run
    /// alongside the first.
    locks: KeyedLocks,
}

impl std::fmt::Debug for VfsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfsDriver")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: VfsConfig,
    dirs: Dirs,
}

impl std::ops::Deref for Inner {
    type Target = Dirs;
    fn deref(&self) -> &Dirs {
        &self.dirs
    }
}

impl VfsDriver {
    /// Opens (creating if needed) the root layout and clears leftovers of interrupted work.
    pub fn open(cfg: VfsConfig) -> Result<VfsDriver> {
        let dirs = Dirs::open(
            Layout {
                root: cfg.root.clone(),
                pool: cfg.pool.clone(),
                zone: cfg.zone.clone(),
                quota_bytes: cfg.quota_bytes,
                kind: "vfs",
                volume_prefix: VOLUME_PREFIX,
                payload: DATA_DIR,
                copy: copy_tree,
            },
            |_| {},
        )?;
        let inner = Inner { cfg, dirs };
        Ok(VfsDriver {
            inner: Arc::new(inner),
            locks: Default::default(),
        })
    }

    /// The config this driver was opened with.
    pub fn config(&self) -> &VfsConfig {
        &self.inner.cfg
    }

    /// Run a mutation holding the locks of `keys` (taken in sorted order, so two mutations
    /// can never wait for each other).
    async fn mutate<T, F>(&self, keys: Vec<String>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let guards = self.locks.lock_all(keys).await;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guards = guards;
            f(&inner)
        })
        .await
        .map_err(|e| Error::Io(format!("vfs worker task failed: {e}")))?
    }

    /// The keys a create of `name` locks: the name, and the quota when there is one.
    fn create_keys(&self, name: &str) -> Vec<String> {
        let mut keys = vec![format!("name:{name}")];
        if self.inner.cfg.quota_bytes.is_some() {
            keys.push("quota".into());
        }
        keys
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Io(format!("vfs worker task failed: {e}")))?
    }
}

impl Inner {
    /// Creates a volume, filling its data directory from `source` when given. Idempotent by
    /// name. The volume is assembled in tmp/ and renamed into volumes/ as the last step.
    fn create(&self, req: &CreateRequest, source: Option<(&Path, u64)>) -> Result<DriverVolume> {
        if let Some(vol) = self.check_create(req, source.map(|(_, size)| size))? {
            return Ok(vol);
        }
        let (id, staging) = self.stage_volume()?;
        let data = staging.join(DATA_DIR);
        match source {
            Some((src, _)) => copy_tree(src, &data)?,
            None => create_dir(&data)?,
        }
        // Publishing fsyncs the staging directory, which makes `data/` durable too.
        self.publish_volume(&staging, &id, req)
    }

    fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
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
        let att = DriverAttachment {
            instance_id: instance_id.to_string(),
            device: opts.device_hint.clone().unwrap_or_default(),
        };
        vol.attachments.push(att.clone());
        self.store_volume(&vol)?;
        Ok(att)
    }

    fn detach(&self, id: &str, instance_id: Option<&str>) -> Result<()> {
        // Detaching a volume that is gone leaves it detached, which is what was asked.
        let Some(mut vol) = self.load_volume(id)? else {
            return Ok(());
        };
        let before = vol.attachments.len();
        vol.attachments
            .retain(|a| instance_id.is_some_and(|i| a.instance_id != i));
        if vol.attachments.len() != before {
            self.store_volume(&vol)?;
        }
        Ok(())
    }

    fn grow(&self, id: &str, new_size: u64) -> Result<DriverVolume> {
        let mut vol = self.get_volume(id)?;
        if !self.check_grow(&vol, new_size)? {
            return Ok(vol);
        }
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
impl Driver for VfsDriver {
    fn kind(&self) -> &str {
        "vfs"
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
        self.mutate(self.create_keys(&req.name), move |i| i.create(&req, None))
            .await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.mutate(vec![format!("vol:{id}")], move |i| i.remove(&id))
            .await
    }

    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let (id, instance_id, opts) = (id.to_string(), instance_id.to_string(), opts.clone());
        self.mutate(vec![format!("vol:{id}")], move |i| {
            i.attach(&id, &instance_id, &opts)
        })
        .await
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        let (id, instance_id) = (id.to_string(), instance_id.to_string());
        self.mutate(vec![format!("vol:{id}")], move |i| {
            i.detach(&id, Some(&instance_id))
        })
        .await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.mutate(vec![format!("vol:{id}")], move |i| i.detach(&id, None))
            .await
    }

    /// The volume's data directory, bind-mounted by the node (which reaches it on the same
    /// host or through an NFS export of the vfs root).
    async fn node_source(&self, id: &str, _device: Option<&str>) -> Result<crate::mount::Source> {
        let id = id.to_string();
        let path = self
            .read(move |i| {
                i.get_volume(&id)?;
                i.payload(&id)
            })
            .await?;
        Ok(crate::mount::Source::Directory { path })
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        let (volume_id, name) = (volume_id.to_string(), name.to_string());
        self.mutate(vec![format!("vol:{volume_id}")], move |i| {
            i.snapshot_create(&volume_id, &name)
        })
        .await
    }

    async fn snapshot_copy(&self, snapshot_id: &str, name: &str) -> Result<Snapshot> {
        let (snapshot_id, name) = (snapshot_id.to_string(), name.to_string());
        self.mutate(vec![format!("snap:{snapshot_id}")], move |i| {
            i.snapshot_copy(&snapshot_id, &name)
        })
        .await
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let volume_id = volume_id.map(str::to_string);
        self.read(move |i| i.list_snapshots(volume_id.as_deref()))
            .await
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        let snapshot_id = snapshot_id.to_string();
        self.mutate(vec![format!("snap:{snapshot_id}")], move |i| {
            i.snapshot_remove(&snapshot_id)
        })
        .await
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let (snapshot_id, req) = (snapshot_id.to_string(), req.clone());
        let mut keys = self.create_keys(&req.name);
        keys.push(format!("snap:{snapshot_id}"));
        self.mutate(keys, move |i| i.create_from_snapshot(&snapshot_id, &req))
            .await
    }

    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let (volume_id, req) = (volume_id.to_string(), req.clone());
        let mut keys = self.create_keys(&req.name);
        keys.push(format!("vol:{volume_id}"));
        self.mutate(keys, move |i| i.copy(&volume_id, &req)).await
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let id = id.to_string();
        let mut keys = vec![format!("vol:{id}")];
        if self.inner.cfg.quota_bytes.is_some() {
            keys.push("quota".into());
        }
        self.mutate(keys, move |i| i.grow(&id, new_size_bytes))
            .await
    }
}

/// Copies a directory tree, fsyncing files and directories so the copy is durable before
/// the caller renames it into view.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    create_dir(dst)?;
    for entry in read_dir(src)? {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| Error::io(format!("stat {}", from.display()), e))?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)
                .map_err(|e| Error::io(format!("read link {}", from.display()), e))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| Error::io(format!("create link {}", to.display()), e))?;
        } else if ft.is_file() {
            fs::copy(&from, &to)
                .and_then(|_| File::open(&to)?.sync_all())
                .map_err(|e| {
                    Error::io(format!("copy {} to {}", from.display(), to.display()), e)
                })?;
        }
        // Sockets, fifos and devices are not volume data; they are skipped.
    }
    let perms = fs::metadata(src)
        .map_err(|e| Error::io(format!("stat {}", src.display()), e))?
        .permissions();
    fs::set_permissions(dst, perms)
        .map_err(|e| Error::io(format!("set permissions of {}", dst.display()), e))?;
    fsync_dir(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::dirs::{id_order, IDS_FILE};
    use std::collections::BTreeMap;

    fn req(name: &str, size: u64) -> CreateRequest {
        CreateRequest {
            name: name.to_string(),
            size_bytes: size,
            pool: None,
            zone: None,
            access_mode: Default::default(),
            fields: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn create_by_name_finds_volumes_of_this_run_and_of_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        let y = d.create(&req("y", 1)).await.unwrap();
        assert_eq!(d.create(&req("y", 1)).await.unwrap().id, y.id);
        assert!(matches!(
            d.create(&req("y", 2)).await,
            Err(Error::AlreadyExists { .. })
        ));
        // A name freed by a remove makes a new volume.
        d.remove(&y.id).await.unwrap();
        let y2 = d.create(&req("y", 1)).await.unwrap();
        assert_ne!(y2.id, y.id);
        // After a restart (as after a crash between the back-end create and Polly's record),
        // the name is found on disk.
        drop(d);
        let d = VfsDriver::open(cfg).unwrap();
        assert_eq!(d.create(&req("y", 1)).await.unwrap().id, y2.id);
        assert_eq!(d.list().await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_get_distinct_ids_and_one_volume_per_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(VfsDriver::open(VfsConfig::new(dir.path())).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let d = d.clone();
                // Every name twice: the second create of a name returns the first's volume.
                tokio::spawn(async move { d.create(&req(&format!("v{}", i / 2), 1)).await })
            })
            .collect();
        let mut by_name = std::collections::BTreeMap::new();
        for t in tasks {
            let v = t.await.unwrap().unwrap();
            let first = by_name.entry(v.name.clone()).or_insert(v.id.clone());
            assert_eq!(*first, v.id, "two volumes named {}", v.name);
        }
        let listed = d.list().await.unwrap();
        assert_eq!(listed.len(), 100);
        let ids: std::collections::BTreeSet<_> = listed.iter().map(|v| &v.id).collect();
        assert_eq!(ids.len(), 100);
    }

    #[tokio::test]
    async fn ids_are_not_reused_after_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        let a = d.create(&req("a", 1)).await.unwrap();
        d.remove(&a.id).await.unwrap();
        drop(d);
        let d = VfsDriver::open(cfg).unwrap();
        let b = d.create(&req("b", 1)).await.unwrap();
        assert_eq!(a.id, "vfs-000001");
        // Ids are leased in blocks: the rest of the first block is skipped, never reused.
        assert!(id_order(&b.id) > id_order(&a.id), "{} <= {}", b.id, a.id);
    }

    #[tokio::test]
    async fn lost_counter_never_falls_behind_existing_ids() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        d.create(&req("a", 1)).await.unwrap();
        let b = d.create(&req("b", 1)).await.unwrap();
        drop(d);
        fs::remove_file(dir.path().join(IDS_FILE)).unwrap();
        let d = VfsDriver::open(cfg).unwrap();
        let c = d.create(&req("c", 1)).await.unwrap();
        assert!(id_order(&c.id) > id_order(&b.id), "{} <= {}", c.id, b.id);
    }

    #[tokio::test]
    async fn quota_accounting_survives_reopen_grow_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = VfsConfig::new(dir.path());
        cfg.quota_bytes = Some(10);
        let d = VfsDriver::open(cfg.clone()).unwrap();
        let a = d.create(&req("a", 4)).await.unwrap();
        d.create(&req("b", 3)).await.unwrap();
        drop(d);
        // The used bytes are counted again from disk at open.
        let d = VfsDriver::open(cfg).unwrap();
        assert_eq!(d.capacity().await.unwrap()[0].free_bytes, 3);
        assert!(matches!(
            d.create(&req("c", 4)).await,
            Err(Error::InsufficientCapacity { free_bytes: 3, .. })
        ));
        d.grow(&a.id, 6).await.unwrap();
        assert_eq!(d.capacity().await.unwrap()[0].free_bytes, 1);
        d.remove(&a.id).await.unwrap();
        assert_eq!(d.capacity().await.unwrap()[0].free_bytes, 7);
        d.create(&req("c", 7)).await.unwrap();
        assert_eq!(d.capacity().await.unwrap()[0].free_bytes, 0);
    }

    /// Without a quota, volumes are thin: together they may provision more than the file
    /// system's size, but one larger than the file system is refused (create and grow).
    #[tokio::test]
    async fn without_a_quota_no_volume_is_larger_than_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let d = VfsDriver::open(VfsConfig::new(dir.path())).unwrap();
        let fs = d.capacity().await.unwrap()[0].total_bytes;
        let a = d.create(&req("a", fs)).await.unwrap();
        d.create(&req("b", fs)).await.unwrap();
        assert!(matches!(
            d.create(&req("c", fs + 1)).await,
            Err(Error::InsufficientCapacity { wanted_bytes, .. }) if wanted_bytes == fs + 1
        ));
        assert!(matches!(
            d.grow(&a.id, fs + 1).await,
            Err(Error::InsufficientCapacity { .. })
        ));
        assert!(d.list().await.unwrap().iter().all(|v| v.size_bytes == fs));
    }

    /// The inventory (what the reconciler compares with the store) answers from the index
    /// and agrees with a full listing through creates, grows, attaches, removes and a reopen;
    /// a volume directory removed or added behind the driver's back shows in it too.
    #[tokio::test]
    async fn inventory_agrees_with_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        async fn check(d: &VfsDriver) -> Vec<Listed> {
            let listed: Vec<Listed> = d
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(Into::into)
                .collect();
            assert_eq!(d.inventory().await.unwrap(), listed);
            listed
        }
        assert!(check(&d).await.is_empty());
        let mut ids = Vec::new();
        for i in 0..12 {
            ids.push(d.create(&req(&format!("v{i}"), 10 + i)).await.unwrap().id);
        }
        d.grow(&ids[3], 100).await.unwrap();
        d.attach(&ids[4], "i-1", &AttachOptions::default())
            .await
            .unwrap();
        d.remove(&ids[5]).await.unwrap();
        d.create(&req("v5", 7)).await.unwrap();
        let before = check(&d).await;
        assert_eq!(before.len(), 12);
        assert!(before.iter().any(|l| l.id == ids[3] && l.size_bytes == 100));
        assert!(before.iter().all(|l| l.id != ids[5]));
        assert!(before.iter().any(|l| l.name == "v5" && l.size_bytes == 7));
        drop(d);
        let d = VfsDriver::open(cfg).unwrap();
        assert_eq!(check(&d).await, before);
        // Behind the driver's back: one volume directory gone, one copied in under a new id.
        fs::remove_dir_all(dir.path().join("volumes").join(&ids[0])).unwrap();
        let extra = dir.path().join("volumes").join("vfs-000999");
        fs::create_dir_all(extra.join(DATA_DIR)).unwrap();
        let meta = fs::read_to_string(dir.path().join("volumes").join(&ids[1]).join("volume.json"))
            .unwrap()
            .replace(&ids[1], "vfs-000999")
            .replace("\"v1\"", "\"extra\"");
        fs::write(extra.join("volume.json"), meta).unwrap();
        let after = check(&d).await;
        assert!(after.iter().all(|l| l.id != ids[0]));
        assert!(after
            .iter()
            .any(|l| l.id == "vfs-000999" && l.name == "extra"));
        assert_eq!(after.len(), 12);
    }

    /// The index loads after open: a corrupt `volume.json` does not stop the driver from
    /// opening, but every call that needs the index fails naming the file, and nothing is
    /// created meanwhile.
    #[tokio::test]
    async fn a_corrupt_volume_fails_the_calls_that_need_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        let a = d.create(&req("a", 1)).await.unwrap();
        drop(d);
        let meta = dir.path().join("volumes").join(&a.id).join("volume.json");
        fs::write(&meta, "{not json").unwrap();
        let d = VfsDriver::open(cfg).unwrap();
        for res in [
            d.create(&req("b", 1)).await.map(|_| ()),
            d.inventory().await.map(|_| ()),
            d.remove(&a.id).await,
        ] {
            let e = res.unwrap_err().to_string();
            assert!(e.contains("volume.json"), "{e}");
        }
        assert!(d.list().await.is_err());
        assert_eq!(fs::read_dir(dir.path().join("volumes")).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn open_clears_half_built_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VfsConfig::new(dir.path());
        let d = VfsDriver::open(cfg.clone()).unwrap();
        drop(d);
        // What a crash between "build in tmp" and "rename into volumes" leaves behind.
        let half = dir.path().join("tmp").join("vfs-000009");
        fs::create_dir_all(half.join(DATA_DIR)).unwrap();
        let d = VfsDriver::open(cfg).unwrap();
        assert!(!half.exists());
        assert!(d.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn zero_size_wrong_pool_and_wrong_zone_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = VfsConfig::new(dir.path());
        cfg.zone = Some("z1".into());
        let d = VfsDriver::open(cfg).unwrap();
        assert!(matches!(
            d.create(&req("a", 0)).await,
            Err(Error::InvalidArgument(_))
        ));
        let mut r = req("a", 1);
        r.pool = Some("other".into());
        assert!(matches!(
            d.create(&r).await,
            Err(Error::NotFound { kind: "pool", .. })
        ));
        let mut r = req("a", 1);
        r.zone = Some("z2".into());
        assert!(matches!(d.create(&r).await, Err(Error::InvalidArgument(_))));
        let mut r = req("a", 1);
        r.zone = Some("z1".into());
        r.pool = Some("default".into());
        let v = d.create(&r).await.unwrap();
        assert_eq!(v.zone.as_deref(), Some("z1"));
        let cap = d.capacity().await.unwrap();
        assert_eq!(cap[0].zone.as_deref(), Some("z1"));
    }

    #[tokio::test]
    async fn ids_from_outside_the_driver_name_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = VfsDriver::open(VfsConfig::new(dir.path())).unwrap();
        assert!(matches!(
            d.inspect("../ids.json").await,
            Err(Error::NotFound { .. })
        ));
        d.remove("../../etc").await.unwrap();
        assert!(dir.path().join(IDS_FILE).exists());
    }

    #[test]
    fn config_defaults_the_pool() {
        let cfg: VfsConfig = serde_json::from_str(r#"{"root": "/x"}"#).unwrap();
        assert_eq!(cfg, VfsConfig::new("/x"));
    }
}
