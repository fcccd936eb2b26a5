//! GROW_VOLUME: a held volume grown by a slice of its own pool's RAW share. The target size
//! is recorded before the driver is asked, so a resumed grow aims at the same size.

use super::{volume_pool, Done, Operation};
use crate::failpoints::crash_point;
use crate::offer_endpoint::wire::{disk_resource, reserved_to};
use crate::offer_endpoint::{Endpoint, OpError};
use crate::store::Op;

impl Endpoint {
    pub(super) async fn grow_volume(
        &self,
        op: &Operation,
        volume_id: &str,
        from: &str,
        mb: u64,
    ) -> Result<Done, OpError> {
        let m = self.manager();
        let (fw, rec) = (op.fw.as_str(), op.rec.as_ref());
        self.held(fw, volume_id)?;
        let v = m.volume(volume_id)?;
        let (pid, pool) = volume_pool(&v);
        if from != pid {
            return Err(OpError::WrongPool {
                volume: volume_id.to_string(),
                pool: pid,
                from: from.to_string(),
            });
        }
        // The target size is recorded before the driver is asked: a resumed grow
        // aims at the same size, never at size + addition twice.
        let target = match rec.and_then(|r| r.target_bytes) {
            Some(t) => t,
            None => {
                let t = v.size_bytes.saturating_add(mb << 20);
                if let Some(r) = rec {
                    let mut r = r.clone();
                    r.volume_id = Some(volume_id.to_string());
                    r.target_bytes = Some(t);
                    self.store_apply(vec![Op::PutOperation(r)]).await?;
                }
                t
            }
        };
        crash_point!("mesos.grow_volume.after_target");
        let grown = if v.size_bytes >= target {
            // Grown before a restart: its bytes are known already.
            if let Some(c) = &op.claim {
                m.drop_capacity_claim(c);
            }
            v
        } else {
            m.grow_claimed(volume_id, target, op.claim)
                .await
                .map_err(|error| OpError::Grow {
                    volume: volume_id.to_string(),
                    error,
                })?
        };
        crash_point!("mesos.grow_volume.after_grow");
        // The reservation records what the framework holds now.
        if let Some(mut r) = self
            .store()
            .reservations()?
            .into_iter()
            .find(|r| r.framework_id == fw && r.volume_id == volume_id)
        {
            if r.bytes != grown.size_bytes {
                r.bytes = grown.size_bytes;
                self.store_apply(vec![Op::PutReservation(r)]).await?;
            }
        }
        let alloc = self.state().allocation_info(fw);
        let new_mb = (grown.size_bytes >> 20).max(1);
        Ok(Done {
            message: format!(
                "volume {volume_id} grown to {new_mb} MB ({} bytes)",
                grown.size_bytes
            ),
            converted: vec![disk_resource(
                &pid,
                &pool,
                Some(volume_id),
                new_mb,
                alloc,
                reserved_to(&op.role, op.principal.as_deref()),
            )],
        })
    }
}
