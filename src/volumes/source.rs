//! Where a node finds an attached volume's data: the back-end's description (a directory,
//! an image file, an RBD image, an EBS volume) of what `polly node` mounts.

use super::{Error, Manager, Result};
use crate::mount;

impl Manager {
    /// What `instance_id` mounts for volume `id`. Only the instance the volume is attached
    /// to gets an answer: a node that mounted a volume it does not hold would bypass the
    /// single-writer and zone checks that attach makes.
    pub async fn node_source(&self, id: &str, instance_id: &str) -> Result<mount::Source> {
        let v = self.volume(id)?;
        let Some(att) = v.attachments.iter().find(|a| a.instance_id == instance_id) else {
            let held = v
                .attachments
                .iter()
                .map(|a| a.instance_id.as_str())
                .collect::<Vec<_>>();
            return Err(Error::Conflict(if held.is_empty() {
                format!(
                    "volume {:?} ({}) is not attached to instance {instance_id:?}; attach it first",
                    v.name, v.id
                )
            } else {
                format!(
                    "volume {:?} ({}) is attached to {held:?}, not to instance {instance_id:?}",
                    v.name, v.id
                )
            }));
        };
        let Some(driver_id) = v.driver_id.as_deref() else {
            return Err(Error::Conflict(format!(
                "volume {:?} ({}) is still being created",
                v.name, v.id
            )));
        };
        let driver = self.service(&v.service)?.driver.clone();
        let device = Some(att.device.as_str());
        self.call(
            &v.service,
            "node_source",
            driver.node_source(driver_id, device),
        )
        .await
    }
}
