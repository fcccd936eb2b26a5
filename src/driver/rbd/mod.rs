//! The `rbd` driver: Ceph RBD images through the `rbd` and `ceph` command-line tools with
//! `--format json` (why the CLI and not librbd: ARCHITECTURE.md, "Drivers").
//!
//! - A volume is an image named `<prefix><volume name>` in one of the configured pools; its
//!   Polly metadata (owner prefix, name, access mode, fields) is one image-meta key,
//!   `polly.meta`, set in a single call, so an image is either fully Polly's or not at all.
//!   The key records the image name too, because `rbd cp` and `rbd clone` copy image-meta.
//! - The driver id is `<pool>:<rbd image id>`; Ceph never reuses image ids in a pool.
//! - Attachments are advisory RBD locks (`rbd lock add`) whose lock id is the instance id:
//!   exclusive for single-writer volumes, shared (tag `polly`) otherwise. Ceph refuses a
//!   second exclusive lock, so two Polly processes cannot both attach a volume.
//! - Snapshots are RBD snapshots, id `<pool>:<image id>@<snap id>`; create-from-snapshot is a
//!   clone of the (protected) snapshot; removing a snapshot flattens its clones first.
//! - Capacity per pool is `ceph df`'s `stored + max_avail` and `max_avail`, capped by
//!   `quota_bytes` minus what Polly's images provision.
//!
//! This file holds the driver and its `Driver` impl; the rest is by concern: `config.rs`,
//! `cli.rs` (running `rbd` and `ceph`, reading their output), `image.rs` (Polly's images and
//! their metadata), `create.rs`, `capacity.rs`, `attach.rs` (locks), `snapshot.rs`.

mod attach;
mod capacity;
mod cli;
mod config;
mod create;
mod image;
mod snapshot;

use std::sync::Arc;

use async_trait::async_trait;

use self::cli::bytes;
use self::create::Placement;
use self::image::Image;
use super::{
    AccessMode, AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error,
    PoolCapacity, Result, Snapshot,
};

pub use self::config::RbdConfig;

const META_KEY: &str = "polly.meta";
const SHARED_TAG: &str = "polly";

/// The `rbd` driver. Mutations are serialized in-process; across processes Ceph's own
/// exclusive locks and name uniqueness keep images consistent.
pub struct RbdDriver {
    cfg: RbdConfig,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for RbdDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdDriver")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl RbdDriver {
    pub fn new(cfg: RbdConfig) -> Result<RbdDriver> {
        if cfg.pools.is_empty() {
            return Err(Error::InvalidArgument(
                "rbd: at least one pool must be configured".into(),
            ));
        }
        if cfg.prefix.is_empty() {
            return Err(Error::InvalidArgument(
                "rbd: the image-name prefix must not be empty (it marks Polly's images)".into(),
            ));
        }
        Ok(RbdDriver {
            cfg,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

#[async_trait]
impl Driver for RbdDriver {
    fn kind(&self) -> &str {
        "rbd"
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.capacities().await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        let mut out = Vec::new();
        for (img, meta) in self.images().await? {
            out.push(self.volume(&img, &meta).await?);
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        let (img, meta) = self.get(id).await?;
        self.volume(&img, &meta).await
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let pool = match self.prepare_create(req).await? {
            Placement::New(pool) => pool,
            Placement::Existing(existing) => return Ok(existing),
        };
        let spec = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&[
            "create",
            "--size",
            &bytes(req.size_bytes),
            "--image-feature",
            "layering",
            &spec,
        ])
        .await?;
        self.finish_create(&pool, req).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some((img, _)) = self.resolve(id).await? else {
            return Ok(());
        };
        let locks = self.locks(&img).await?;
        if !locks.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders: locks.into_iter().map(|l| l.id).collect(),
            });
        }
        let snaps = self.snaps(&img).await?;
        if !snaps.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "volume {id:?} still has snapshots {:?}; remove them first",
                snaps.iter().map(|s| &s.name).collect::<Vec<_>>()
            )));
        }
        match self.rbd(&["rm", "--no-progress", &img.spec()]).await {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The device is the image spec (`pool/image`), what `rbd map` takes on the node.
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        _opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        self.lock_for(id, instance_id).await
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.unlock(id, Some(instance_id)).await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.unlock(id, None).await
    }

    /// The pool and image, with the cluster config and client id this back-end uses: the
    /// node maps it with `rbd map`, formats it only when blank, and mounts it.
    async fn node_source(&self, id: &str, _device: Option<&str>) -> Result<crate::mount::Source> {
        let (img, _) = self.get(id).await?;
        Ok(crate::mount::Source::Rbd {
            pool: img.pool,
            image: img.name,
            user: self.cfg.client_id.clone(),
            conf: Some(self.cfg.conf.clone()),
            filesystem: "ext4".to_string(),
        })
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        self.create_snapshot(volume_id, name).await
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        self.list_snapshots(volume_id).await
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        self.remove_snapshot(snapshot_id).await
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, snap) = self
            .resolve_snap(snapshot_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        if req.size_bytes < snap.size {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes {} is smaller than its source ({} bytes)",
                req.name, req.size_bytes, snap.size
            )));
        }
        let pool = match self.prepare_create(req).await? {
            Placement::New(pool) => pool,
            Placement::Existing(existing) => return Ok(existing),
        };
        let spec = format!("{}@{}", img.spec(), snap.name);
        if snap.protected != "true" {
            self.rbd(&["snap", "protect", &spec]).await?;
        }
        let dest = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&["clone", "--image-feature", "layering", &spec, &dest])
            .await?;
        self.finish_create(&pool, req).await
    }

    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, _) = self.get(volume_id).await?;
        if req.size_bytes < img.size {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes {} is smaller than its source ({} bytes)",
                req.name, req.size_bytes, img.size
            )));
        }
        let pool = match self.prepare_create(req).await? {
            Placement::New(pool) => pool,
            Placement::Existing(existing) => return Ok(existing),
        };
        let dest = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&["cp", "--no-progress", &img.spec(), &dest])
            .await?;
        self.finish_create(&pool, req).await
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, meta) = self.get(id).await?;
        if new_size_bytes < img.size {
            return Err(Error::InvalidArgument(format!(
                "volume {id:?}: cannot shrink from {} to {new_size_bytes} bytes",
                img.size
            )));
        }
        if new_size_bytes > img.size {
            self.check_quota(&img.pool, new_size_bytes - img.size)
                .await?;
            self.rbd(&[
                "resize",
                "--no-progress",
                "--size",
                &bytes(new_size_bytes),
                &img.spec(),
            ])
            .await?;
        }
        let img = Image {
            size: new_size_bytes,
            ..img
        };
        self.volume(&img, &meta).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pools_or_prefix_are_refused() {
        let mut cfg = RbdConfig::new("/c");
        cfg.pools.clear();
        assert!(RbdDriver::new(cfg).is_err());
        let mut cfg = RbdConfig::new("/c");
        cfg.prefix.clear();
        assert!(RbdDriver::new(cfg).is_err());
    }
}
