//! CREATE_DISK: a new volume in the offered pool, named from the framework and operation
//! ids (a resumed create finds it), reserved for the framework and attached to the agent's
//! instance; a volume that cannot be attached is deleted again.

use std::collections::{BTreeMap, BTreeSet};

use super::lookup::PoolParts;
use super::{Done, Operation};
use crate::failpoints::crash_point;
use crate::offer_endpoint::wire::{disk_resource, reserved_to};
use crate::offer_endpoint::{Endpoint, OpError};
use crate::store::{Op, Reservation};
use crate::volumes::CreateVolume;

/// The name of the volume an operation creates: stable, so a resumed create finds it.
pub(super) fn volume_name(framework_id: &str, operation_id: &str) -> String {
    // FNV-1a 64: no need for a cryptographic hash, only for a stable, short one.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in framework_id.bytes().chain([0]).chain(operation_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let readable: String = operation_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    format!("mesos-{h:016x}-{readable}")
        .trim_end_matches(['-', '.'])
        .to_string()
}

impl Endpoint {
    pub(super) async fn create_disk(
        &self,
        op: &Operation,
        pool_id: &str,
        mb: u64,
    ) -> Result<Done, OpError> {
        let m = self.manager();
        let fw = op.fw.as_str();
        let PoolParts {
            service,
            pool,
            zone,
        } = self.pool_parts(pool_id).await?;
        let instance = self.agent_instance_for(&op.agent_id, &service).await?;
        let op_id = op.key.clone();
        let v = m
            .create_claimed(
                CreateVolume {
                    service: service.clone(),
                    name: volume_name(fw, &op_id),
                    size_bytes: mb << 20,
                    pool: Some(pool.clone()),
                    zone,
                    restrict_frameworks: BTreeSet::from([fw.to_string()]),
                    labels: BTreeMap::from([
                        ("mesos.framework_id".to_string(), fw.to_string()),
                        ("mesos.operation_id".to_string(), op_id.clone()),
                    ]),
                    ..Default::default()
                },
                op.claim,
            )
            .await
            .map_err(OpError::Create)?;
        crash_point!("mesos.create_disk.after_create");
        let mut ops = vec![Op::PutReservation(Reservation {
            framework_id: fw.to_string(),
            role: op.role.clone(),
            principal: op.principal.clone(),
            volume_id: v.id.clone(),
            bytes: v.size_bytes,
            created_at: crate::volumes::now_secs(),
        })];
        if let Some(r) = &op.rec {
            let mut r = r.clone();
            r.volume_id = Some(v.id.clone());
            ops.push(Op::PutOperation(r));
        }
        self.store_apply(ops).await?;
        crash_point!("mesos.create_disk.after_reserve");
        if let Err(error) = m.attach(&v.id, &instance, None).await {
            // Not mapped: roll back, so a FAILED operation leaves nothing behind.
            let _ = m.detach(&v.id, None).await;
            let undo = m.delete(&v.id).await;
            let _ = self
                .store_apply(vec![Op::DeleteReservation {
                    framework_id: fw.to_string(),
                    volume_id: v.id.clone(),
                }])
                .await;
            return Err(OpError::AttachNew {
                volume: v.id,
                instance,
                agent: op.agent_id.clone(),
                error: Box::new(error),
                undo: undo.err().map(Box::new),
            });
        }
        crash_point!("mesos.create_disk.after_attach");
        let alloc = self.state().allocation_info(fw);
        let converted = disk_resource(
            pool_id,
            &pool,
            Some(&v.id),
            mb,
            alloc,
            reserved_to(&op.role, op.principal.as_deref()),
        );
        Ok(Done {
            message: format!(
                "volume {} created and attached to instance {instance}",
                v.id
            ),
            converted: vec![converted],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_stable_valid_and_distinct() {
        let a = volume_name("fw-1", "op-1");
        assert_eq!(a, volume_name("fw-1", "op-1"));
        assert_ne!(a, volume_name("fw-2", "op-1"));
        assert_ne!(a, volume_name("fw-1", "op-2"));
        assert!(crate::volumes::valid_name(&a), "{a}");
        let long = volume_name("f", &"x/".repeat(200));
        assert!(crate::volumes::valid_name(&long), "{long}");
    }
}
