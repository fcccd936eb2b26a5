//! DESTROY_DISK: a held volume detached and deleted, then its reservation dropped; the disk
//! turns back into a RAW slice of its pool. A volume gone already (deleted by this operation
//! before a crash, or by an operator) is only released.

use super::{release, released_before, volume_pool, Done, Operation};
use crate::failpoints::crash_point;
use crate::mesos::v1;
use crate::offer_endpoint::wire::disk_resource;
use crate::offer_endpoint::{Endpoint, OpError};

impl Endpoint {
    pub(super) async fn destroy_disk(
        &self,
        op: &Operation,
        volume_id: &str,
        source: &v1::Resource,
    ) -> Result<Done, OpError> {
        let m = self.manager();
        let (fw, rec) = (op.fw.as_str(), op.rec.as_ref());
        if !released_before(rec, volume_id) {
            self.held(fw, volume_id)?;
        }
        // Gone already: deleted by this operation before a crash (its reservation
        // is still to be dropped), or by an operator; either way nothing to delete.
        let v = match m.volume(volume_id) {
            Ok(v) => Some(v),
            Err(crate::volumes::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if v.is_some() {
            m.detach(volume_id, None)
                .await
                .map_err(|error| OpError::Detach {
                    volume: volume_id.to_string(),
                    error,
                })?;
            crash_point!("mesos.destroy_disk.after_detach");
            m.delete(volume_id).await.map_err(|error| OpError::Delete {
                volume: volume_id.to_string(),
                error,
            })?;
            crash_point!("mesos.destroy_disk.after_delete");
        }
        self.store_apply(release(fw, volume_id, rec)).await?;
        crash_point!("mesos.destroy_disk.after_unreserve");
        let raw = match &v {
            Some(v) => {
                let (pid, pool) = volume_pool(v);
                disk_resource(&pid, &pool, None, (v.size_bytes >> 20).max(1), None, vec![])
            }
            None => disk_resource(
                &source
                    .provider_id
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                source
                    .disk
                    .as_ref()
                    .and_then(|d| d.source.as_ref())
                    .and_then(|s| s.profile.as_deref())
                    .unwrap_or("default"),
                None,
                source
                    .scalar
                    .as_ref()
                    .map_or(1, |s| s.value.max(1.0) as u64),
                None,
                vec![],
            ),
        };
        Ok(Done {
            message: format!("volume {volume_id} destroyed"),
            converted: vec![raw],
        })
    }
}
