//! Deleting an EBS volume: refused while any instance holds it, a volume already gone is
//! already deleted.

use super::model::AttachState;
use super::{api_err, EbsDriver, Error, Result};

impl EbsDriver {
    pub(super) async fn delete_volume(&self, id: &str) -> Result<()> {
        let _lock = self.volume_locks.lock(id).await;
        let Some(v) = self.find(id).await? else {
            return Ok(());
        };
        let holders: Vec<String> = v
            .attachments
            .iter()
            .filter(|a| a.state != AttachState::Detached)
            .map(|a| a.instance_id.clone())
            .collect();
        if !holders.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders,
            });
        }
        match self.call("DeleteVolume", self.api.delete_volume(id)).await {
            Ok(()) => {
                tracing::info!(volume = id, "deleted EBS volume");
                Ok(())
            }
            Err(e) if e.is("InvalidVolume.NotFound") => Ok(()),
            Err(e) if e.is("VolumeInUse") => {
                let holders = match self.find(id).await? {
                    Some(v) => v
                        .attachments
                        .iter()
                        .map(|a| a.instance_id.clone())
                        .collect(),
                    None => Vec::new(),
                };
                Err(Error::InUse {
                    volume: id.to_string(),
                    holders,
                })
            }
            Err(e) => Err(api_err("DeleteVolume", e)),
        }
    }
}
