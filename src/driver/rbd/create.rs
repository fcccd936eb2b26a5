//! The steps every create shares (a new image, a clone of a snapshot, a copy): where the image
//! goes or which volume an earlier create of the name made, and, once the image exists under
//! its final name, its size and its Polly metadata.

use super::cli::bytes;
use super::image::{Image, Lookup};
use super::{CreateRequest, DriverVolume, Error, RbdDriver, Result};

/// Where a create goes.
pub(super) enum Placement {
    /// A new image in this pool.
    New(String),
    /// The volume an earlier create of this name made (creates are idempotent by name).
    Existing(DriverVolume),
}

impl RbdDriver {
    fn pool_for(&self, req: &CreateRequest) -> Result<String> {
        match &req.pool {
            None => Ok(self.cfg.pools[0].clone()),
            Some(p) if self.cfg.pools.contains(p) => Ok(p.clone()),
            Some(p) => Err(Error::NotFound {
                kind: "pool",
                id: p.clone(),
            }),
        }
    }

    /// Where a new volume goes, or the existing volume of that name (any pool).
    pub(super) async fn prepare_create(&self, req: &CreateRequest) -> Result<Placement> {
        if req.size_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes must be greater than 0",
                req.name
            )));
        }
        let pool = self.pool_for(req)?;
        if let Some(zone) = &req.zone {
            if self.cfg.zone.as_deref() != Some(zone.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: zone {zone:?} is not served by this back-end (it serves {:?})",
                    req.name, self.cfg.zone
                )));
            }
        }
        let image = self.image_name(&req.name);
        for p in &self.cfg.pools {
            let Some(img) = self.info(p, Lookup::Name(&image)).await? else {
                continue;
            };
            let meta = match self.meta(p, &image).await? {
                Some(meta) => meta,
                // A create cut short between `rbd create` and the metadata: finish it.
                None => self.tag(&img, req).await?,
            };
            if img.size != req.size_bytes {
                return Err(Error::AlreadyExists {
                    name: req.name.clone(),
                    detail: format!(
                        "existing volume {} has {} bytes, {} requested",
                        img.driver_id(),
                        img.size,
                        req.size_bytes
                    ),
                });
            }
            return Ok(Placement::Existing(self.volume(&img, &meta).await?));
        }
        self.check_quota(&pool, req.size_bytes).await?;
        Ok(Placement::New(pool))
    }

    /// After the image exists under its final name: grow it to the size asked, tag it.
    pub(super) async fn finish_create(
        &self,
        pool: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let name = self.image_name(&req.name);
        let img = self
            .info(pool, Lookup::Name(&name))
            .await?
            .ok_or_else(|| Error::Io(format!("image {pool}/{name} vanished after create")))?;
        if img.size < req.size_bytes {
            self.rbd(&["resize", "--size", &bytes(req.size_bytes), &img.spec()])
                .await?;
        }
        let img = Image {
            size: req.size_bytes.max(img.size),
            ..img
        };
        let meta = self.tag(&img, req).await?;
        self.volume(&img, &meta).await
    }
}
