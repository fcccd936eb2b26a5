//! Deleting a volume: refused while attached; the record is marked deleting with its intent
//! before the back-end removes it.

use super::attach::holders;
use super::capacity::signed;
use super::{Error, Manager, Result};
use crate::failpoints::crash_point;
use crate::store::{Intent, IntentOp, Op, Volume, VolumeStatus};

impl Manager {
    /// Delete a volume from the back-end and the store. Deleting an attached volume is a
    /// conflict; deleting an unknown id is not found.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let _g = self.begin_op();
        let res = self.delete_inner(id).await;
        self.outcome("delete", &res);
        res
    }

    async fn delete_inner(&self, id: &str) -> Result<()> {
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        if !v.attachments.is_empty() {
            return Err(Error::Conflict(format!(
                "volume {} is attached to {}; detach it before deleting it",
                v.id,
                holders(&v)
            )));
        }
        let intent = self.intent(&v, IntentOp::Delete)?;
        let mut deleting = v.clone();
        deleting.status = VolumeStatus::Deleting;
        crash_point!("volume.delete.before_intent");
        self.write(vec![Op::PutVolume(deleting), Op::PutIntent(intent.clone())])
            .await?;
        crash_point!("volume.delete.after_intent");
        self.finish_delete(&v, &intent).await?;
        crash_point!("volume.delete.after_record");
        Ok(())
    }

    pub(super) async fn finish_delete(&self, v: &Volume, intent: &Intent) -> Result<()> {
        if let Some(driver_id) = &v.driver_id {
            let svc = self.service(&v.service)?;
            // Remove is idempotent: an unknown id succeeds, so retrying after a crash is safe.
            // On failure the intent stays and the reconciler retries the removal.
            let _changing = self.begin_change(&svc.name);
            self.call(&svc.name, "remove", svc.driver.remove(driver_id))
                .await?;
            crash_point!("volume.delete.after_driver");
            self.account_volume(v, signed(v.size_bytes), None);
        }
        self.write(vec![
            Op::DeleteVolume(v.id.clone()),
            Op::DeleteIntent(intent.id),
        ])
        .await
    }
}
