//! Orphans (back-end volumes with no store record, found by the reconciler): adopting one
//! into the store, or removing it from its back-end.

use super::{now_secs, valid_name, Error, Manager, Result};
use crate::store::{Attachment, Op, Volume, VolumeStatus};

impl Manager {
    /// Gives an orphan (a back-end volume with no record) a store record, so Polly manages it
    /// from then on. `name` defaults to the back-end's name. Refused when the volume is not an
    /// orphan (any more), or the name is taken in the service.
    pub async fn adopt_orphan(
        &self,
        service: &str,
        driver_id: &str,
        name: Option<String>,
    ) -> Result<Volume> {
        let svc = self.service(service)?;
        let d = self
            .call(&svc.name, "inspect", svc.driver.inspect(driver_id))
            .await?;
        let name = name.unwrap_or_else(|| d.name.clone());
        if !valid_name(&name) {
            return Err(Error::InvalidArgument(format!(
                "volume name {name:?} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )));
        }
        // The lock a create of this name takes, so a create cannot slip in between.
        let _g = self.lock(format!("name:{service}/{name}")).await;
        // And the back-end name's, when it differs (the same lock twice would deadlock).
        let _d = if name != d.name {
            Some(self.lock(format!("name:{service}/{}", d.name)).await)
        } else {
            None
        };
        self.check_orphan(service, &d.id, &d.name)?;
        if let Some(v) = self.inner.store.volume_by_name(service, &name)? {
            return Err(Error::Conflict(format!(
                "service {service:?} already has a volume named {name:?} ({}); adopt under another name with --name",
                v.id
            )));
        }
        let now = now_secs();
        let vol = Volume {
            id: format!("pv-{}", uuid::Uuid::new_v4().simple()),
            service: service.to_string(),
            driver_id: Some(d.id.clone()),
            name,
            size_bytes: d.size_bytes,
            pool: Some(d.pool.clone()),
            zone: d.zone.clone(),
            access_mode: d.access_mode,
            labels: Default::default(),
            restrict_services: Default::default(),
            restrict_frameworks: Default::default(),
            status: VolumeStatus::Available,
            attachments: d
                .attachments
                .into_iter()
                .map(|a| Attachment {
                    instance_id: a.instance_id,
                    device: a.device,
                    attached_at: now,
                })
                .collect(),
            created_at: now,
            path: d.path,
        };
        self.write(vec![Op::PutVolume(vol.clone())]).await?;
        tracing::info!(volume = %vol.id, %service, driver_id, "orphan adopted");
        Ok(vol)
    }

    /// Deletes an orphan from its back-end; refused unless it is still an orphan.
    pub async fn remove_orphan(&self, service: &str, driver_id: &str) -> Result<()> {
        let svc = self.service(service)?;
        let d = self
            .call(&svc.name, "inspect", svc.driver.inspect(driver_id))
            .await?;
        let _g = self.lock(format!("name:{service}/{}", d.name)).await;
        self.check_orphan(service, &d.id, &d.name)?;
        self.call(&svc.name, "remove", svc.driver.remove(&d.id))
            .await?;
        tracing::info!(%service, driver_id, "orphan deleted from its back-end");
        Ok(())
    }

    /// The same test `reconcile_report` applies: no record holds the driver id, and no
    /// create in flight claims the name.
    fn check_orphan(&self, service: &str, driver_id: &str, name: &str) -> Result<()> {
        let claimed = self.inner.store.volumes()?.into_iter().find(|v| {
            v.service == service
                && (v.driver_id.as_deref() == Some(driver_id)
                    || (v.status == VolumeStatus::Creating && v.name == name))
        });
        match claimed {
            Some(v) => Err(Error::Conflict(format!(
                "back-end volume {driver_id:?} of service {service:?} is not an orphan: volume {} records it",
                v.id
            ))),
            None => Ok(()),
        }
    }
}
