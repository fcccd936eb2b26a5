//! RESERVE and UNRESERVE of an existing volume: reserved for the framework and attached to
//! the agent's instance (a reservation that cannot be attached is dropped again), or
//! detached and released; the volume itself stays.

use super::{release, released_before, volume_pool, Done, Operation};
use crate::failpoints::crash_point;
use crate::offer_endpoint::wire::{disk_resource, reserved_to};
use crate::offer_endpoint::{Endpoint, OpError};
use crate::store::{Op, Reservation};

impl Endpoint {
    pub(super) async fn reserve(&self, op: &Operation, volume_id: &str) -> Result<Done, OpError> {
        let m = self.manager();
        let fw = op.fw.as_str();
        let v = m.volume(volume_id)?;
        let instance = self.agent_instance_for(&op.agent_id, &v.service).await?;
        self.store_apply(vec![Op::PutReservation(Reservation {
            framework_id: fw.to_string(),
            role: op.role.clone(),
            principal: op.principal.clone(),
            volume_id: v.id.clone(),
            bytes: v.size_bytes,
            created_at: crate::volumes::now_secs(),
        })])
        .await?;
        crash_point!("mesos.reserve.after_reserve");
        if let Err(error) = m.attach(volume_id, &instance, None).await {
            let _ = self
                .store_apply(vec![Op::DeleteReservation {
                    framework_id: fw.to_string(),
                    volume_id: volume_id.to_string(),
                }])
                .await;
            return Err(OpError::Attach {
                volume: volume_id.to_string(),
                instance,
                error: Box::new(error),
            });
        }
        crash_point!("mesos.reserve.after_attach");
        let (pid, pool) = volume_pool(&v);
        Ok(Done {
            message: format!("volume {volume_id} reserved and attached to instance {instance}"),
            converted: vec![disk_resource(
                &pid,
                &pool,
                Some(volume_id),
                (v.size_bytes >> 20).max(1),
                None,
                reserved_to(&op.role, op.principal.as_deref()),
            )],
        })
    }

    pub(super) async fn unreserve(&self, op: &Operation, volume_id: &str) -> Result<Done, OpError> {
        let m = self.manager();
        let (fw, rec) = (op.fw.as_str(), op.rec.as_ref());
        if !released_before(rec, volume_id) {
            self.held(fw, volume_id)?;
        }
        let v = m.volume(volume_id)?;
        m.detach(volume_id, None)
            .await
            .map_err(|error| OpError::Detach {
                volume: volume_id.to_string(),
                error,
            })?;
        crash_point!("mesos.unreserve.after_detach");
        self.store_apply(release(fw, volume_id, rec)).await?;
        crash_point!("mesos.unreserve.after_unreserve");
        let (pid, pool) = volume_pool(&v);
        Ok(Done {
            message: format!("volume {volume_id} released (it still exists)"),
            converted: vec![disk_resource(
                &pid,
                &pool,
                Some(volume_id),
                (v.size_bytes >> 20).max(1),
                None,
                vec![],
            )],
        })
    }
}
