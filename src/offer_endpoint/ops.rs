//! Offer operations: ACCEPT checked by the offer engine, then CREATE_DISK, DESTROY_DISK,
//! RESERVE, UNRESERVE and GROW_VOLUME carried out through the volume manager. An operation
//! with an id is recorded in the store (PENDING) before anything is done, and its status is
//! kept until the framework acknowledges it; one left PENDING by a crash is resumed at
//! start-up, and every step is idempotent (the volume's name derives from the framework and
//! operation ids, attach to the same instance is a no-op, and a grow's target size is
//! recorded before the driver is asked), so a resumed operation never creates or grows twice.

use std::collections::{BTreeMap, BTreeSet};

use super::{event, lock, pool_id, v1, Endpoint, Event, State_};
use crate::failpoints::crash_point;
use crate::mesos::json;
use crate::mesos::v1::offer::operation::Type as OpType;
use crate::mesos::v1::scheduler::call;
use crate::offers::{self, AcceptError, Use};
use crate::store::{Op, OperationRecord, Reservation};
use crate::volumes::{CapacityClaim, CreateVolume};

const PENDING: &str = "OPERATION_PENDING";
const FINISHED: &str = "OPERATION_FINISHED";
const FAILED: &str = "OPERATION_FAILED";
const ERROR: &str = "OPERATION_ERROR";
const DROPPED: &str = "OPERATION_DROPPED";

/// An ACCEPT the engine took: agent id, hostname, and the framework's role and principal.
type Checked = (String, String, Option<(String, Option<String>)>);

/// What one operation of an ACCEPT asks for, checked.
#[derive(Debug, Clone)]
enum Plan {
    CreateDisk {
        pool_id: String,
        mb: u64,
    },
    DestroyDisk {
        volume_id: String,
        /// The disk as the framework named it: what it turns back into (a RAW slice of its
        /// pool) when the volume is gone already (a resumed destroy).
        source: Box<v1::Resource>,
    },
    Reserve {
        volume_id: String,
    },
    Unreserve {
        volume_id: String,
    },
    /// Grow a held volume by `mb` taken from `pool_id`'s RAW share in the offer.
    GrowVolume {
        volume_id: String,
        pool_id: String,
        mb: u64,
    },
}

impl Plan {
    /// The existing volume the operation acts on and consumes from its offer (DESTROY_DISK,
    /// RESERVE, UNRESERVE): not offered again until the operation has ended, as a Mesos
    /// master does not offer what an operation in flight consumes.
    fn acts_on(&self) -> Option<&str> {
        match self {
            Plan::DestroyDisk { volume_id, .. }
            | Plan::Reserve { volume_id }
            | Plan::Unreserve { volume_id } => Some(volume_id),
            Plan::CreateDisk { .. } | Plan::GrowVolume { .. } => None,
        }
    }

    /// The pool capacity the operation holds while it runs (a volume being created or
    /// grown), as the offer engine's reservation, and the (service, name) of the volume it
    /// creates. `key` is the operation id (a generated one without).
    fn hold(&self, fw: &str, key: &str) -> Option<(offers::Reservation, Option<(String, String)>)> {
        match self {
            Plan::CreateDisk { pool_id, mb } => Some((
                offers::Reservation {
                    framework_id: fw.to_string(),
                    pool_id: pool_id.clone(),
                    volume_id: None,
                    mb: *mb,
                    provisioned: false,
                },
                Some((
                    pool_id.split('/').next().unwrap_or_default().to_string(),
                    volume_name(fw, key),
                )),
            )),
            Plan::GrowVolume {
                volume_id,
                pool_id,
                mb,
            } => Some((
                offers::Reservation {
                    framework_id: fw.to_string(),
                    pool_id: pool_id.clone(),
                    volume_id: Some(volume_id.clone()),
                    mb: *mb,
                    provisioned: false,
                },
                None,
            )),
            _ => None,
        }
    }
}

/// Capacity an operation holds from its accept until its terminal status has been sent.
/// Its reservation counts against the pool until the volume manager has accounted for the
/// new bytes (it drops the claim then, in the same step), and for the framework until the
/// end, so every MB is counted once: by the reservation, then by the pool's known free
/// capacity.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    claim: CapacityClaim,
    res: offers::Reservation,
    /// (service, name) of the volume being created.
    creating: Option<(String, String)>,
}

/// Count the existing volume `p` acts on (if any) as taken by an operation in flight
/// (`State_::acting`), until the operation ends in `release_held`.
fn mark_acting(st: &mut State_, p: &Plan) {
    if let Some(v) = p.acts_on() {
        *st.acting.entry(v.to_string()).or_default() += 1;
    }
}

/// The engine's reservations for the operations in flight, given the claims the manager has
/// not accounted for yet.
pub(super) fn reservations(
    pending: &[Pending],
    unaccounted: &BTreeSet<CapacityClaim>,
) -> Vec<offers::Reservation> {
    pending
        .iter()
        .map(|p| offers::Reservation {
            provisioned: !unaccounted.contains(&p.claim),
            ..p.res.clone()
        })
        .collect()
}

/// (service, name) of the volumes being created by operations in flight.
pub(super) fn creating(pending: &[Pending]) -> BTreeSet<(&str, &str)> {
    pending
        .iter()
        .filter_map(|p| p.creating.as_ref())
        .map(|(s, n)| (s.as_str(), n.as_str()))
        .collect()
}

/// The name of the volume an operation creates: stable, so a resumed create finds it.
pub fn volume_name(framework_id: &str, operation_id: &str) -> String {
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

fn source_id(r: &v1::Resource) -> Option<String> {
    r.disk.as_ref()?.source.as_ref()?.id.clone()
}

/// Whether this operation's record says it dropped the volume's reservation already: an
/// UNRESERVE or DESTROY_DISK resumed after a crash. The drop and that mark are one batch
/// ([`release`]), so a resumed operation neither fails for holding nothing any more nor
/// runs for a framework that never held the volume.
fn released_before(rec: Option<&OperationRecord>, volume_id: &str) -> bool {
    rec.is_some_and(|r| r.volume_id.as_deref() == Some(volume_id))
}

/// One batch: drop the framework's reservation of the volume and, when the operation has a
/// record, mark in it that this operation released the volume.
fn release(fw: &str, volume_id: &str, rec: Option<&OperationRecord>) -> Vec<Op> {
    let mut ops = vec![Op::DeleteReservation {
        framework_id: fw.to_string(),
        volume_id: volume_id.to_string(),
    }];
    if let Some(r) = rec {
        let mut r = r.clone();
        r.volume_id = Some(volume_id.to_string());
        ops.push(Op::PutOperation(r));
    }
    ops
}

/// Check one operation; `Err` is the OPERATION_ERROR message.
fn plan(op: &v1::offer::Operation) -> Result<Plan, String> {
    let t = op
        .r#type
        .and_then(|t| OpType::try_from(t).ok())
        .unwrap_or(OpType::Unknown);
    use v1::resource::disk_info::source::Type as T;
    match t {
        OpType::CreateDisk => {
            let c = op
                .create_disk
                .as_ref()
                .ok_or("CREATE_DISK without 'create_disk'")?;
            let src = &c.source;
            let pool = src
                .provider_id
                .as_ref()
                .ok_or("CREATE_DISK source has no 'provider_id'; copy it from the offer")?;
            let ty = src
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if ty != Some(T::Raw as i32) || source_id(src).is_some() {
                return Err("CREATE_DISK source must be a RAW disk of a pool (no 'id')".into());
            }
            if c.target_type != T::Mount as i32 && c.target_type != T::Block as i32 {
                return Err("CREATE_DISK target_type must be MOUNT or BLOCK".into());
            }
            let mb = src.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            if !(mb.is_finite() && mb >= 1.0) {
                return Err(format!("CREATE_DISK of {mb} MB: at least 1 MB is needed"));
            }
            Ok(Plan::CreateDisk {
                pool_id: pool.value.clone(),
                mb: mb as u64,
            })
        }
        OpType::DestroyDisk => {
            let d = op
                .destroy_disk
                .as_ref()
                .ok_or("DESTROY_DISK without 'destroy_disk'")?;
            let volume_id = source_id(&d.source).ok_or("DESTROY_DISK source has no 'id'")?;
            Ok(Plan::DestroyDisk {
                volume_id,
                source: Box::new(d.source.clone()),
            })
        }
        OpType::Reserve => {
            let r = op.reserve.as_ref().ok_or("RESERVE without 'reserve'")?;
            let volume_id = r
                .resources
                .iter()
                .chain(&r.source)
                .find_map(source_id)
                .ok_or("RESERVE names no volume (a disk with 'id')")?;
            Ok(Plan::Reserve { volume_id })
        }
        OpType::Unreserve => {
            let r = op
                .unreserve
                .as_ref()
                .ok_or("UNRESERVE without 'unreserve'")?;
            let volume_id = r
                .resources
                .iter()
                .find_map(source_id)
                .ok_or("UNRESERVE names no volume (a disk with 'id')")?;
            Ok(Plan::Unreserve { volume_id })
        }
        OpType::GrowVolume => {
            let g = op
                .grow_volume
                .as_ref()
                .ok_or("GROW_VOLUME without 'grow_volume'")?;
            let vty = g
                .volume
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if vty != Some(T::Mount as i32) && vty != Some(T::Block as i32) {
                return Err(
                    "GROW_VOLUME 'volume' must be a MOUNT or BLOCK disk Polly offered (with 'id')"
                        .into(),
                );
            }
            let volume_id = source_id(&g.volume)
                .ok_or("GROW_VOLUME 'volume' has no 'disk.source.id'; copy it from the offer")?;
            let add = &g.addition;
            let pool = add.provider_id.as_ref().ok_or(
                "GROW_VOLUME 'addition' has no 'provider_id'; take it from the pool's RAW disk in the offer",
            )?;
            let aty = add
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if aty != Some(T::Raw as i32) || source_id(add).is_some() {
                return Err(
                    "GROW_VOLUME 'addition' must be a slice of a pool's RAW disk (no 'id')".into(),
                );
            }
            let mb = add.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            if !(mb.is_finite() && mb >= 1.0) {
                return Err(format!(
                    "GROW_VOLUME addition of {mb} MB: at least 1 MB is needed"
                ));
            }
            Ok(Plan::GrowVolume {
                volume_id,
                pool_id: pool.value.clone(),
                mb: mb as u64,
            })
        }
        OpType::Launch | OpType::LaunchGroup => {
            Err("Polly offers storage only: launch tasks through your Mesos master".into())
        }
        other => Err(format!(
            "operation {} is not supported by Polly",
            other.as_str_name()
        )),
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// UPDATE_OPERATION_STATUS for a record; `uuid` only when it still awaits acknowledgement.
fn status_event(rec: &OperationRecord) -> Event {
    let converted = rec
        .converted_resources
        .as_deref()
        .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(s).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| json::from_value::<v1::Resource>(v).ok())
        .collect();
    let uuid = (!rec.acknowledged)
        .then(|| uuid::Uuid::parse_str(&rec.uuid).ok())
        .flatten()
        .map(|u| v1::Uuid {
            value: u.as_bytes().to_vec(),
        });
    Event {
        r#type: Some(event::Type::UpdateOperationStatus as i32),
        update_operation_status: Some(event::UpdateOperationStatus {
            status: v1::OperationStatus {
                operation_id: Some(v1::OperationId {
                    value: rec.operation_id.clone(),
                }),
                state: v1::OperationState::from_str_name(&rec.state)
                    .unwrap_or(v1::OperationState::OperationUnknown) as i32,
                message: rec.message.clone(),
                converted_resources: converted,
                uuid,
                agent_id: Some(v1::AgentId {
                    value: rec.agent_id.clone(),
                }),
                resource_provider_id: None,
            },
        }),
        ..Default::default()
    }
}

/// A status for an operation nobody asked to record (no uuid: nothing to acknowledge).
fn transient_status(operation_id: &str, agent_id: &str, state: &str, message: String) -> Event {
    status_event(&OperationRecord {
        operation_id: operation_id.to_string(),
        framework_id: String::new(),
        agent_id: agent_id.to_string(),
        kind: String::new(),
        state: state.to_string(),
        message: Some(message),
        converted_resources: None,
        acknowledged: true,
        uuid: String::new(),
        request: String::new(),
        volume_id: None,
        target_bytes: None,
        role: String::new(),
        principal: None,
        updated_at: 0,
    })
}

impl Endpoint {
    /// One durable store batch, off the async workers (a flush and an fdatasync: long enough
    /// that many operations at once would otherwise stall every other request).
    async fn store_apply(&self, ops: Vec<Op>) -> Result<(), crate::store::Error> {
        self.inner.manager.store().commit(ops).await
    }

    /// Remove the records of operations whose terminal status was acknowledged and is older
    /// than `offers.operation_retention_secs` (by the time of that status); returns how many.
    /// Unacknowledged statuses are kept, whatever their age: they are resent until
    /// acknowledged.
    pub(super) async fn prune_operations(&self) -> Result<usize, crate::store::Error> {
        /// Records deleted per store batch.
        const BATCH: usize = 1000;
        let retention = self.inner.cfg.operation_retention_secs;
        let store = self.inner.manager.store();
        store
            .blocking(move |store| {
                let now = crate::volumes::now_secs();
                let stale: Vec<Op> = store
                    .operations()?
                    .into_iter()
                    .filter(|r| {
                        r.acknowledged
                            && r.is_terminal()
                            && now.saturating_sub(r.updated_at) as f64 >= retention
                    })
                    .map(|r| Op::DeleteOperation {
                        framework_id: r.framework_id,
                        operation_id: r.operation_id,
                        // Not a record the same operation id got again since it was read.
                        if_status: Some(r.uuid),
                    })
                    .collect();
                for batch in stale.chunks(BATCH) {
                    store.apply(batch)?;
                }
                Ok(stale.len())
            })
            .await
    }

    /// Statuses not yet acknowledged, sent again on a new subscription's stream.
    pub(super) fn resend_unacknowledged(&self, fw: &str) {
        match self.inner.manager.store().operations() {
            Ok(all) => {
                for r in all
                    .iter()
                    .filter(|r| r.framework_id == fw && !r.acknowledged)
                {
                    self.send_status(fw, status_event(r));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read operation records"),
        }
    }

    pub(super) fn reconcile(&self, fw: &str, ids: &[String]) {
        let all = self.inner.manager.store().operations().unwrap_or_default();
        let mine: Vec<&OperationRecord> = all.iter().filter(|r| r.framework_id == fw).collect();
        if ids.is_empty() {
            for r in mine {
                self.send(fw, status_event(r));
            }
            return;
        }
        for id in ids {
            match mine.iter().find(|r| &r.operation_id == id) {
                Some(r) => self.send(fw, status_event(r)),
                None => self.send(
                    fw,
                    transient_status(id, "", "OPERATION_UNKNOWN", "operation unknown".into()),
                ),
            }
        }
    }

    pub(super) async fn acknowledge(
        &self,
        fw: &str,
        a: &call::AcknowledgeOperationStatus,
    ) -> Result<(), String> {
        let uuid = uuid::Uuid::from_slice(&a.uuid)
            .map_err(|_| "'uuid' must be 16 bytes (the status uuid, base64 in JSON)".to_string())?;
        let store = self.inner.manager.store();
        let rec = store
            .operation(fw, &a.operation_id.value)
            .map_err(|e| e.to_string())?;
        if let Some(mut r) = rec {
            if !r.acknowledged && uuid::Uuid::parse_str(&r.uuid).ok() == Some(uuid) {
                // Only a terminal status ends the record's retries; a PENDING ack just
                // confirms delivery.
                if r.is_terminal() {
                    r.acknowledged = true;
                    store
                        .commit(vec![Op::PutOperation(r)])
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        // The framework has this status: its stream need not remember sending it (the set
        // stays as small as the statuses in flight, not as large as the stream is old).
        if let Some(f) = lock(&self.inner.state).frameworks.get_mut(fw) {
            f.statuses_sent.remove(&a.uuid);
        }
        Ok(())
    }

    /// ACCEPT: check with the engine, record, answer PENDING, then run the operations.
    pub(super) async fn accept(&self, fw: &str, a: call::Accept) {
        let ops = a.operations;
        let ids: Vec<Option<offers::OfferId>> = a
            .offer_ids
            .iter()
            .map(|o| self.parse_offer_id(&o.value))
            .collect();
        let now = crate::volumes::now_ms();
        // Plan every operation first; invalid ones are answered with OPERATION_ERROR.
        let mut planned = Vec::new();
        let mut errors = Vec::new();
        for op in &ops {
            match plan(op) {
                Ok(p) => {
                    let key = op
                        .id
                        .as_ref()
                        .map(|i| i.value.clone())
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                    planned.push((op.clone(), p, key))
                }
                Err(m) => errors.push((op.clone(), m)),
            }
        }
        // Per planned operation, the capacity it holds (see `Pending`).
        let mut claims: Vec<Option<CapacityClaim>> = Vec::new();
        let outcome: Result<Checked, (String, String)> = (|| {
            let (mut st, view) = self
                .locked_view()
                .map_err(|e| (ERROR.to_string(), e.to_string()))?;
            let mine: Vec<offers::Offer> = ids
                .iter()
                .filter_map(|id| {
                    st.outstanding
                        .iter()
                        .find(|o| Some(o.id) == *id && o.framework_id == fw)
                        .cloned()
                })
                .collect();
            if ids.is_empty() || mine.len() != ids.len() {
                return Err((
                    DROPPED.to_string(),
                    "offer is unknown, expired, rescinded, already used or not made to this framework; nothing was done".to_string(),
                ));
            }
            let agent_id = mine[0].agent_id.clone();
            if mine.iter().any(|o| o.agent_id != agent_id) {
                return Err((
                    ERROR.into(),
                    "all offers of one ACCEPT must be on one agent".into(),
                ));
            }
            let offer_ids: Vec<offers::OfferId> = mine.iter().map(|o| o.id).collect();
            let uses: Vec<Use> = planned
                .iter()
                .filter_map(|(_, p, _)| match p {
                    Plan::CreateDisk { pool_id, mb } => Some(Use::Raw {
                        pool_id: pool_id.clone(),
                        mb: *mb,
                    }),
                    Plan::Reserve { volume_id } => Some(Use::Volume {
                        volume_id: volume_id.clone(),
                    }),
                    Plan::GrowVolume {
                        volume_id,
                        pool_id,
                        mb,
                    } => Some(Use::Grow {
                        pool_id: pool_id.clone(),
                        volume_id: volume_id.clone(),
                        mb: *mb,
                    }),
                    _ => None,
                })
                .collect();
            let snap = self
                .snapshot(&st, view, now)
                .map_err(|e| (ERROR.into(), e.to_string()))?;
            let acc =
                offers::apply_accept_offers(&snap, fw, &offer_ids, &uses).map_err(|e| match e {
                    AcceptError::UnknownOffer(_) | AcceptError::WrongFramework { .. } => {
                        (DROPPED.to_string(), e.to_string())
                    }
                    _ => (ERROR.to_string(), e.to_string()),
                })?;
            let used: BTreeSet<offers::OfferId> = ids.iter().flatten().copied().collect();
            let gone: BTreeSet<offers::OfferId> = acc.rescinds.iter().map(|r| r.offer_id).collect();
            st.outstanding
                .retain(|o| !used.contains(&o.id) && !gone.contains(&o.id));
            for id in gone {
                self.send_locked(&st, fw, self.rescind_event(id));
            }
            // The engine's reservations are the operations' own (`Plan::hold`).
            debug_assert_eq!(
                acc.reservations.len(),
                planned
                    .iter()
                    .filter(|(_, p, k)| p.hold(fw, k).is_some())
                    .count()
            );
            for (_, p, key) in &planned {
                let held = p
                    .hold(fw, key)
                    .map(|(res, creating)| self.hold_locked(&mut st, res, creating));
                claims.push(held);
                mark_acting(&mut st, p);
            }
            let refuse_ms = super::refuse_ms(a.filters.as_ref());
            let f = st.frameworks.get_mut(fw);
            let who = f.as_ref().map(|f| (f.role.clone(), f.principal.clone()));
            if let Some(f) = f {
                if refuse_ms > 0 {
                    f.filters.push(offers::Filter {
                        agent_id: agent_id.clone(),
                        pool_id: None,
                        until_ms: now + refuse_ms,
                    });
                }
            }
            let hostname = mine[0].hostname.clone();
            Ok((agent_id, hostname, who))
        })();
        self.wake();
        let (agent_id, _hostname, who) = match outcome {
            Ok(v) => v,
            Err((state, msg)) => {
                for op in &ops {
                    if let Some(id) = &op.id {
                        self.send(fw, transient_status(&id.value, "", &state, msg.clone()));
                    }
                }
                return;
            }
        };
        let (role, principal) = who.unwrap_or_else(|| ("*".into(), None));
        for (op, msg) in errors {
            if let Some(id) = &op.id {
                self.send(fw, transient_status(&id.value, &agent_id, ERROR, msg));
            }
        }
        for ((op, p, key), claim) in planned.into_iter().zip(claims) {
            let rec = match &op.id {
                None => None,
                Some(id) => {
                    let store = self.inner.manager.store();
                    match store.operation(fw, &id.value) {
                        Ok(Some(old)) => {
                            // Idempotent by operation id: report, never run twice.
                            self.send(fw, status_event(&old));
                            self.release_held(claim, &p);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read operation record"),
                    }
                    let r = OperationRecord {
                        operation_id: id.value.clone(),
                        framework_id: fw.to_string(),
                        agent_id: agent_id.clone(),
                        kind: op
                            .r#type
                            .and_then(|t| OpType::try_from(t).ok())
                            .map(|t| t.as_str_name().to_string())
                            .unwrap_or_default(),
                        state: PENDING.into(),
                        message: None,
                        converted_resources: None,
                        acknowledged: false,
                        uuid: new_uuid(),
                        request: json::to_value(&op)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        volume_id: None,
                        target_bytes: None,
                        role: role.clone(),
                        principal: principal.clone(),
                        updated_at: crate::volumes::now_secs(),
                    };
                    if let Err(e) = self.store_apply(vec![Op::PutOperation(r.clone())]).await {
                        self.send(
                            fw,
                            transient_status(
                                &id.value,
                                &agent_id,
                                ERROR,
                                format!("cannot record the operation: {e}"),
                            ),
                        );
                        self.release_held(claim, &p);
                        continue;
                    }
                    crash_point!(&format!("mesos.{}.after_pending", r.kind.to_lowercase()));
                    self.send_status(fw, status_event(&r));
                    Some(r)
                }
            };
            let ep = self.clone();
            let (fw, agent_id, role, principal) = (
                fw.to_string(),
                agent_id.clone(),
                role.clone(),
                principal.clone(),
            );
            tokio::spawn(async move {
                ep.execute(&fw, &agent_id, &role, principal, p, rec, &key, claim)
                    .await;
            });
        }
    }

    /// Hold capacity for an operation in flight, under a new claim that releases it.
    fn hold_locked(
        &self,
        st: &mut State_,
        res: offers::Reservation,
        creating: Option<(String, String)>,
    ) -> CapacityClaim {
        let claim = self.inner.manager.claim_capacity();
        st.pending.push(Pending {
            claim,
            res,
            creating,
        });
        claim
    }

    /// The operation holding `claim` has ended (its terminal status is sent): what it created
    /// or grew now counts as the framework's volume and in the pool's known free capacity.
    /// Every operation ends here, with or without a claim: its store writes are all done, and
    /// a snapshot's store view read meanwhile is read again (`State_::ended`).
    fn release_held(&self, claim: Option<CapacityClaim>, p: &Plan) {
        let mut st = lock(&self.inner.state);
        st.ended += 1;
        if let Some(v) = p.acts_on() {
            if let Some(n) = st.acting.get_mut(v) {
                *n -= 1;
                if *n == 0 {
                    st.acting.remove(v);
                }
            }
        }
        let Some(claim) = claim else {
            return;
        };
        st.pending.retain(|p| p.claim != claim);
        // Not accounted (the operation failed before its driver call): nothing to count.
        self.inner.manager.drop_capacity_claim(&claim);
    }

    /// Operations a previous run recorded and did not finish: run them again (every step is
    /// idempotent), after start-up reconciliation has settled the volume manager's intents.
    pub(super) fn resume_operations(&self) {
        let recs = match self.inner.manager.store().operations() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read operation records");
                return;
            }
        };
        for rec in recs.into_iter().filter(|r| !r.is_terminal()) {
            let op = serde_json::from_str::<serde_json::Value>(&rec.request)
                .ok()
                .and_then(|v| json::from_value::<v1::offer::Operation>(&v).ok());
            let p = op.as_ref().and_then(|o| plan(o).ok());
            // Held before the first round, which must neither offer the volume nor its MB.
            let claim = p
                .as_ref()
                .and_then(|p| p.hold(&rec.framework_id, &rec.operation_id))
                .map(|(res, creating)| {
                    self.hold_locked(&mut lock(&self.inner.state), res, creating)
                });
            if let Some(p) = &p {
                mark_acting(&mut lock(&self.inner.state), p);
            }
            let ep = self.clone();
            tokio::spawn(async move {
                let Some(p) = p else {
                    ep.finish(
                        rec,
                        FAILED,
                        "the recorded operation cannot be read back".into(),
                        None,
                    )
                    .await;
                    return;
                };
                tracing::info!(operation = %rec.operation_id, framework = %rec.framework_id, "resuming an operation left pending");
                let (fw, agent, role, principal) = (
                    rec.framework_id.clone(),
                    rec.agent_id.clone(),
                    rec.role.clone(),
                    rec.principal.clone(),
                );
                let key = rec.operation_id.clone();
                ep.execute(&fw, &agent, &role, principal, p, Some(rec), &key, claim)
                    .await;
            });
        }
    }

    /// Record the outcome (when the operation has a record) and tell the framework.
    async fn finish(
        &self,
        rec: OperationRecord,
        state: &str,
        message: String,
        converted: Option<Vec<v1::Resource>>,
    ) {
        let mut r = rec;
        r.state = state.to_string();
        r.message = Some(message);
        r.converted_resources = converted.map(|c| {
            serde_json::Value::Array(c.iter().filter_map(|x| json::to_value(x).ok()).collect())
                .to_string()
        });
        r.uuid = new_uuid();
        r.acknowledged = false;
        r.updated_at = crate::volumes::now_secs();
        let put = Op::PutOperation(r.clone());
        if let Err(e) = self.inner.manager.store().commit(vec![put]).await {
            tracing::warn!(error = %e, operation = %r.operation_id, "cannot record the operation status")
        }
        crash_point!(&format!(
            "mesos.{}.after_status_stored",
            r.kind.to_lowercase()
        ));
        self.send_status(&r.framework_id.clone(), status_event(&r));
        crash_point!(&format!(
            "mesos.{}.after_status_sent",
            r.kind.to_lowercase()
        ));
    }

    fn agent_instance(&self, agent_id: &str) -> Result<String, String> {
        let instances = self
            .inner
            .manager
            .store()
            .instances()
            .map_err(|e| e.to_string())?;
        let agents = self.inner.agents.agents_with_instances(&instances);
        let Some(a) = agents.iter().find(|a| a.id == agent_id) else {
            return self
                .inner
                .cfg
                .instances
                .get(agent_id)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "agent {agent_id} is not known, and [offers.instances] does not name it"
                    )
                });
        };
        self.instance_for(a, &instances).ok_or_else(|| {
            format!(
                "no instance id is known for agent {agent_id} (hostname {:?}): no REX-Ray client reported one for that host, the agent has no {:?} attribute, and [offers.instances] does not name it",
                a.hostname, self.inner.cfg.instance_attribute
            )
        })
    }

    /// Run one operation, then send its terminal status and only then release what it held:
    /// a new volume is offered after the framework has heard of it (FINISHED), never before.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        fw: &str,
        agent_id: &str,
        role: &str,
        principal: Option<String>,
        p: Plan,
        rec: Option<OperationRecord>,
        key: &str,
        claim: Option<CapacityClaim>,
    ) {
        let res = self
            .run_plan(fw, agent_id, role, principal, &p, rec.as_ref(), key, claim)
            .await;
        // The record as the steps left it (they add the volume id and a grow's target size).
        let rec = rec.map(|r| {
            match self
                .inner
                .manager
                .store()
                .operation(&r.framework_id, &r.operation_id)
            {
                Ok(Some(now)) => now,
                _ => r,
            }
        });
        match (rec, res) {
            (Some(r), Ok((msg, converted))) => self.finish(r, FINISHED, msg, Some(converted)).await,
            (Some(r), Err(msg)) => self.finish(r, FAILED, msg, None).await,
            (None, Err(msg)) => {
                tracing::warn!(framework = fw, error = %msg, "operation without id failed")
            }
            (None, Ok(_)) => {}
        }
        self.release_held(claim, &p);
        self.wake();
    }

    /// A pool's service, pool name and zone; reads the service's capacity first when the
    /// poller has not yet (an operation resumed at start-up).
    async fn pool_parts(&self, pool_id: &str) -> Result<(String, String, Option<String>), String> {
        if let Ok(p) = self.known_pool(pool_id) {
            return Ok(p);
        }
        if let Some(service) = pool_id.split('/').next() {
            let interval = self.inner.cfg.poll_interval();
            self.inner.manager.poll_capacity(service, interval).await;
        }
        self.known_pool(pool_id)
    }

    fn known_pool(&self, pool_id: &str) -> Result<(String, String, Option<String>), String> {
        let readings = self.inner.manager.capacity_readings();
        for (service, r) in &readings {
            for pc in &r.pools {
                if pool_id == super::pool_id(service, &pc.pool, pc.zone.as_deref()) {
                    return Ok((service.clone(), pc.pool.clone(), pc.zone.clone()));
                }
            }
        }
        Err(format!("pool {pool_id} is not known"))
    }

    /// `agent_instance`, else the volume service's back-end asked by the agent's hostname
    /// (the `ebs` driver looks it up with DescribeInstances).
    async fn agent_instance_for(&self, agent_id: &str, service: &str) -> Result<String, String> {
        let err = match self.agent_instance(agent_id) {
            Ok(i) => return Ok(i),
            Err(e) => e,
        };
        let instances = self
            .inner
            .manager
            .store()
            .instances()
            .map_err(|e| e.to_string())?;
        let hostname = self
            .inner
            .agents
            .agents_with_instances(&instances)
            .into_iter()
            .find(|a| a.id == agent_id)
            .map(|a| a.hostname)
            .filter(|h| !h.is_empty());
        let Some(hostname) = hostname else {
            return Err(err);
        };
        let driver = self
            .inner
            .manager
            .service(service)
            .map_err(|e| e.to_string())?
            .driver
            .clone();
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            driver.resolve_instance(&hostname),
        )
        .await;
        match asked {
            Ok(Ok(Some(i))) => Ok(i),
            Ok(Ok(None)) => Err(err),
            Ok(Err(e)) => Err(format!(
                "{err}; service {service:?} could not look up host {hostname:?}: {e}"
            )),
            Err(_) => Err(format!(
                "{err}; service {service:?} did not answer a lookup of host {hostname:?} within 30 s"
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_plan(
        &self,
        fw: &str,
        agent_id: &str,
        role: &str,
        principal: Option<String>,
        p: &Plan,
        rec: Option<&OperationRecord>,
        key: &str,
        claim: Option<CapacityClaim>,
    ) -> Result<(String, Vec<v1::Resource>), String> {
        let m = &self.inner.manager;
        match p {
            Plan::CreateDisk { pool_id, mb } => {
                let (service, pool, zone) = self.pool_parts(pool_id).await?;
                let instance = self.agent_instance_for(agent_id, &service).await?;
                let op_id = key.to_string();
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
                        claim,
                    )
                    .await
                    .map_err(|e| format!("cannot create the volume: {e}"))?;
                crash_point!("mesos.create_disk.after_create");
                let mut ops = vec![Op::PutReservation(Reservation {
                    framework_id: fw.to_string(),
                    role: role.to_string(),
                    principal,
                    volume_id: v.id.clone(),
                    bytes: v.size_bytes,
                    created_at: crate::volumes::now_secs(),
                })];
                if let Some(r) = rec {
                    let mut r = r.clone();
                    r.volume_id = Some(v.id.clone());
                    ops.push(Op::PutOperation(r));
                }
                self.store_apply(ops).await.map_err(|e| e.to_string())?;
                crash_point!("mesos.create_disk.after_reserve");
                if let Err(e) = m.attach(&v.id, &instance, None).await {
                    // Not mapped: roll back, so a FAILED operation leaves nothing behind.
                    let _ = m.detach(&v.id, None).await;
                    let undo = m.delete(&v.id).await;
                    let _ = self
                        .store_apply(vec![Op::DeleteReservation {
                            framework_id: fw.to_string(),
                            volume_id: v.id.clone(),
                        }])
                        .await;
                    return Err(format!(
                        "volume {} could not be attached to instance {instance} of agent {agent_id}: {e}{}",
                        v.id,
                        match undo {
                            Ok(()) => "; it was deleted again".to_string(),
                            Err(u) => format!("; deleting it failed too: {u}"),
                        }
                    ));
                }
                crash_point!("mesos.create_disk.after_attach");
                let alloc = lock(&self.inner.state)
                    .frameworks
                    .get(fw)
                    .filter(|f| f.multi_role)
                    .map(|f| v1::resource::AllocationInfo {
                        role: Some(f.role.clone()),
                    });
                let converted = super::disk_resource(pool_id, &pool, Some(&v.id), *mb, alloc);
                Ok((
                    format!(
                        "volume {} created and attached to instance {instance}",
                        v.id
                    ),
                    vec![converted],
                ))
            }
            Plan::DestroyDisk { volume_id, source } => {
                if !released_before(rec, volume_id) {
                    self.held(fw, volume_id)?;
                }
                // Gone already: deleted by this operation before a crash (its reservation
                // is still to be dropped), or by an operator; either way nothing to delete.
                let v = match m.volume(volume_id) {
                    Ok(v) => Some(v),
                    Err(crate::volumes::Error::NotFound { .. }) => None,
                    Err(e) => return Err(e.to_string()),
                };
                if v.is_some() {
                    m.detach(volume_id, None)
                        .await
                        .map_err(|e| format!("cannot detach volume {volume_id}: {e}"))?;
                    crash_point!("mesos.destroy_disk.after_detach");
                    m.delete(volume_id)
                        .await
                        .map_err(|e| format!("cannot delete volume {volume_id}: {e}"))?;
                    crash_point!("mesos.destroy_disk.after_delete");
                }
                self.store_apply(release(fw, volume_id, rec))
                    .await
                    .map_err(|e| e.to_string())?;
                crash_point!("mesos.destroy_disk.after_unreserve");
                let raw = match &v {
                    Some(v) => {
                        let pool = v.pool.clone().unwrap_or_else(|| "default".into());
                        let pid = pool_id(&v.service, &pool, v.zone.as_deref());
                        super::disk_resource(&pid, &pool, None, (v.size_bytes >> 20).max(1), None)
                    }
                    None => super::disk_resource(
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
                    ),
                };
                Ok((format!("volume {volume_id} destroyed"), vec![raw]))
            }
            Plan::Reserve { volume_id } => {
                let v = m.volume(volume_id).map_err(|e| e.to_string())?;
                let instance = self.agent_instance_for(agent_id, &v.service).await?;
                self.store_apply(vec![Op::PutReservation(Reservation {
                    framework_id: fw.to_string(),
                    role: role.to_string(),
                    principal,
                    volume_id: v.id.clone(),
                    bytes: v.size_bytes,
                    created_at: crate::volumes::now_secs(),
                })])
                .await
                .map_err(|e| e.to_string())?;
                crash_point!("mesos.reserve.after_reserve");
                if let Err(e) = m.attach(volume_id, &instance, None).await {
                    let _ = self
                        .store_apply(vec![Op::DeleteReservation {
                            framework_id: fw.to_string(),
                            volume_id: volume_id.clone(),
                        }])
                        .await;
                    return Err(format!(
                        "volume {volume_id} could not be attached to instance {instance}: {e}"
                    ));
                }
                crash_point!("mesos.reserve.after_attach");
                let pool = v.pool.clone().unwrap_or_else(|| "default".into());
                let pid = pool_id(&v.service, &pool, v.zone.as_deref());
                Ok((
                    format!("volume {volume_id} reserved and attached to instance {instance}"),
                    vec![super::disk_resource(
                        &pid,
                        &pool,
                        Some(volume_id),
                        (v.size_bytes >> 20).max(1),
                        None,
                    )],
                ))
            }
            Plan::GrowVolume {
                volume_id,
                pool_id: from,
                mb,
            } => {
                self.held(fw, volume_id)?;
                let v = m.volume(volume_id).map_err(|e| e.to_string())?;
                let pool = v.pool.clone().unwrap_or_else(|| "default".into());
                let pid = pool_id(&v.service, &pool, v.zone.as_deref());
                if *from != pid {
                    return Err(format!(
                        "volume {volume_id} lives in pool {pid}; it can only grow from that pool's share, not from {from}"
                    ));
                }
                // The target size is recorded before the driver is asked: a resumed grow
                // aims at the same size, never at size + addition twice.
                let target = match rec.and_then(|r| r.target_bytes) {
                    Some(t) => t,
                    None => {
                        let t = v.size_bytes.saturating_add(mb << 20);
                        if let Some(r) = rec {
                            let mut r = r.clone();
                            r.volume_id = Some(volume_id.clone());
                            r.target_bytes = Some(t);
                            self.store_apply(vec![Op::PutOperation(r)])
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        t
                    }
                };
                crash_point!("mesos.grow_volume.after_target");
                let grown = if v.size_bytes >= target {
                    // Grown before a restart: its bytes are known already.
                    if let Some(c) = &claim {
                        m.drop_capacity_claim(c);
                    }
                    v
                } else {
                    m.grow_claimed(volume_id, target, claim)
                        .await
                        .map_err(|e| format!("cannot grow volume {volume_id}: {e}"))?
                };
                crash_point!("mesos.grow_volume.after_grow");
                // The reservation records what the framework holds now.
                let store = m.store();
                if let Some(mut r) = store
                    .reservations()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|r| r.framework_id == fw && r.volume_id == *volume_id)
                {
                    if r.bytes != grown.size_bytes {
                        r.bytes = grown.size_bytes;
                        self.store_apply(vec![Op::PutReservation(r)])
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                let alloc = lock(&self.inner.state)
                    .frameworks
                    .get(fw)
                    .filter(|f| f.multi_role)
                    .map(|f| v1::resource::AllocationInfo {
                        role: Some(f.role.clone()),
                    });
                let new_mb = (grown.size_bytes >> 20).max(1);
                Ok((
                    format!(
                        "volume {volume_id} grown to {new_mb} MB ({} bytes)",
                        grown.size_bytes
                    ),
                    vec![super::disk_resource(
                        &pid,
                        &pool,
                        Some(volume_id),
                        new_mb,
                        alloc,
                    )],
                ))
            }
            Plan::Unreserve { volume_id } => {
                if !released_before(rec, volume_id) {
                    self.held(fw, volume_id)?;
                }
                let v = m.volume(volume_id).map_err(|e| e.to_string())?;
                m.detach(volume_id, None)
                    .await
                    .map_err(|e| format!("cannot detach volume {volume_id}: {e}"))?;
                crash_point!("mesos.unreserve.after_detach");
                self.store_apply(release(fw, volume_id, rec))
                    .await
                    .map_err(|e| e.to_string())?;
                crash_point!("mesos.unreserve.after_unreserve");
                let pool = v.pool.clone().unwrap_or_else(|| "default".into());
                let pid = pool_id(&v.service, &pool, v.zone.as_deref());
                Ok((
                    format!("volume {volume_id} released (it still exists)"),
                    vec![super::disk_resource(
                        &pid,
                        &pool,
                        Some(volume_id),
                        (v.size_bytes >> 20).max(1),
                        None,
                    )],
                ))
            }
        }
    }

    /// The volume must be reserved by this framework.
    fn held(&self, fw: &str, volume_id: &str) -> Result<(), String> {
        let held = self
            .inner
            .manager
            .store()
            .reservations()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|r| r.framework_id == fw && r.volume_id == volume_id);
        if held {
            Ok(())
        } else {
            Err(format!("framework {fw} holds no volume {volume_id}"))
        }
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
