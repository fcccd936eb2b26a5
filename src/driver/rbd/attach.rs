//! Attachments as advisory RBD locks whose lock id is the instance id: exclusive for
//! single-writer volumes, shared (tag `polly`) otherwise, so Ceph itself refuses a second
//! writer; detach removes the instance's lock, force-detach every lock.

use serde::Deserialize;

use super::image::Image;
use super::{DriverAttachment, Error, RbdDriver, Result, SHARED_TAG};

/// One entry of `rbd lock ls`.
#[derive(Debug, Deserialize)]
pub(super) struct Lock {
    pub(super) id: String,
    locker: String,
}

impl RbdDriver {
    pub(super) async fn locks(&self, img: &Image) -> Result<Vec<Lock>> {
        let out = self
            .rbd(&["lock", "ls", &img.spec(), "--format", "json"])
            .await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|e| Error::Io(format!("rbd lock ls: {e}")))
    }

    /// Lock the volume for the instance (see `Driver::attach`).
    pub(super) async fn lock_for(&self, id: &str, instance_id: &str) -> Result<DriverAttachment> {
        let _guard = self.lock.lock().await;
        let (img, meta) = self.get(id).await?;
        let att = DriverAttachment {
            instance_id: instance_id.to_string(),
            device: img.spec(),
        };
        let locks = self.locks(&img).await?;
        if locks.iter().any(|l| l.id == instance_id) {
            return Ok(att);
        }
        let elsewhere = |holders: Vec<String>| Error::AttachedElsewhere {
            volume: id.to_string(),
            holders,
        };
        if !meta.access_mode.allows_many() && !locks.is_empty() {
            return Err(elsewhere(locks.into_iter().map(|l| l.id).collect()));
        }
        let spec = img.spec();
        let mut args = vec!["lock", "add"];
        if meta.access_mode.allows_many() {
            args.extend(["--shared", SHARED_TAG]);
        }
        args.extend([spec.as_str(), instance_id]);
        match self.rbd(&args).await {
            Ok(_) => Ok(att),
            // Another process took it between our look and our lock.
            Err(e) if e.busy() => {
                let holders = self.locks(&img).await?.into_iter().map(|l| l.id).collect();
                Err(elsewhere(holders))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn unlock(&self, id: &str, instance_id: Option<&str>) -> Result<()> {
        let Some((img, _)) = self.resolve(id).await? else {
            return Ok(());
        };
        for l in self.locks(&img).await? {
            if instance_id.is_some_and(|i| i != l.id) {
                continue;
            }
            match self
                .rbd(&["lock", "rm", &img.spec(), &l.id, &l.locker])
                .await
            {
                Ok(_) => {}
                Err(e) if e.not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
