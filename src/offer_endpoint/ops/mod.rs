//! Offer operations: ACCEPT checked by the offer engine, then CREATE_DISK, DESTROY_DISK,
//! RESERVE, UNRESERVE and GROW_VOLUME carried out through the volume manager. An operation
//! with an id is recorded in the store (PENDING) before anything is done, and its status is
//! kept until the framework acknowledges it; one left PENDING by a crash is resumed at
//! start-up, and every step is idempotent (the volume's name derives from the framework and
//! operation ids, attach to the same instance is a no-op, and a grow's target size is
//! recorded before the driver is asked), so a resumed operation never creates or grows twice.
//!
//! Here: what an operation holds while it runs ([`InFlight`]), how one is carried out,
//! finished and resumed. `accept` takes an ACCEPT, `plan` checks what each operation asks
//! for, one file per kind carries it out (`reserve` has UNRESERVE too), `lookup` finds the
//! instance and pool it lands on, `status` sends and keeps the statuses.

mod accept;
mod create_disk;
mod destroy_disk;
mod grow_volume;
mod lookup;
mod plan;
mod reserve;
mod status;

use std::collections::{BTreeSet, HashMap};

use super::state::State;
use super::{pool_id, Endpoint};
use crate::failpoints::crash_point;
use crate::mesos::json;
use crate::mesos::v1::{self, OperationState};
use crate::offer_endpoint::OpError;
use crate::offers;
use crate::store::{Op, OperationRecord, Volume};
use crate::volumes::CapacityClaim;
use plan::{plan, Plan};
use status::{new_uuid, status_event};

/// What an operation holds while it runs (a volume being created or grown): pool capacity,
/// as the offer engine's reservation, and the (service, name) of the volume it creates.
#[derive(Debug, Clone)]
struct Hold {
    res: offers::Reservation,
    creating: Option<(String, String)>,
}

/// Capacity an operation holds from its accept until its terminal status has been sent.
/// Its reservation counts against the pool until the volume manager has accounted for the
/// new bytes (it drops the claim then, in the same step), and for the framework until the
/// end, so every MB is counted once: by the reservation, then by the pool's known free
/// capacity.
#[derive(Debug, Clone)]
struct Pending {
    claim: CapacityClaim,
    hold: Hold,
}

/// The operations in flight, as allocation rounds must see them (kept under the state lock).
#[derive(Default)]
pub(super) struct InFlight {
    /// Capacity held by CREATE_DISK and GROW_VOLUME operations from their accept until their
    /// terminal status has been sent.
    pending: Vec<Pending>,
    /// Operations ended so far (terminal status sent, [`InFlight::end`]): a store view read
    /// while this stayed the same cannot be missing the last writes of an operation that is
    /// no longer in `pending`.
    ended: u64,
    /// Existing volumes that operations in flight act on (DESTROY_DISK, RESERVE, UNRESERVE),
    /// with how many: not offered until their operations have ended.
    acting: HashMap<String, usize>,
}

impl InFlight {
    /// How many operations have ended so far.
    pub(super) fn ended(&self) -> u64 {
        self.ended
    }

    /// The engine's reservations for the operations in flight, given the claims the manager
    /// has not accounted for yet.
    pub(super) fn reservations(
        &self,
        unaccounted: &BTreeSet<CapacityClaim>,
    ) -> Vec<offers::Reservation> {
        self.pending
            .iter()
            .map(|p| offers::Reservation {
                provisioned: !unaccounted.contains(&p.claim),
                ..p.hold.res.clone()
            })
            .collect()
    }

    /// (service, name) of the volumes being created by operations in flight.
    pub(super) fn creating(&self) -> BTreeSet<(&str, &str)> {
        self.pending
            .iter()
            .filter_map(|p| p.hold.creating.as_ref())
            .map(|(s, n)| (s.as_str(), n.as_str()))
            .collect()
    }

    /// Whether an operation in flight acts on the existing volume.
    pub(super) fn acts_on(&self, volume_id: &str) -> bool {
        self.acting.contains_key(volume_id)
    }

    /// An operation starts: it holds what `held` says (under its claim), and the existing
    /// volume `p` acts on (if any) counts as taken until it ends.
    fn begin(&mut self, p: &Plan, held: Option<(CapacityClaim, Hold)>) {
        if let Some((claim, hold)) = held {
            self.pending.push(Pending { claim, hold });
        }
        if let Some(v) = p.acts_on() {
            *self.acting.entry(v.to_string()).or_default() += 1;
        }
    }

    /// An operation has ended: it no longer acts on its volume nor holds its claim's capacity.
    fn end(&mut self, p: &Plan, claim: Option<CapacityClaim>) {
        self.ended += 1;
        if let Some(v) = p.acts_on() {
            if let Some(n) = self.acting.get_mut(v) {
                *n -= 1;
                if *n == 0 {
                    self.acting.remove(v);
                }
            }
        }
        if let Some(claim) = claim {
            self.pending.retain(|p| p.claim != claim);
        }
    }
}

/// One operation being carried out: who asked, on which agent, what, under which record and
/// claim.
struct Operation {
    /// The framework that asked.
    fw: String,
    /// The agent its offers were on.
    agent_id: String,
    /// The framework's role and principal, recorded with the reservations it makes.
    role: String,
    principal: Option<String>,
    plan: Plan,
    /// Its record, when it has an id, as it was when the operation started.
    rec: Option<OperationRecord>,
    /// The operation id (a generated one without): names the volume a CREATE_DISK makes.
    key: String,
    /// The capacity it holds while it runs (CREATE_DISK, GROW_VOLUME).
    claim: Option<CapacityClaim>,
}

/// What a finished operation reports: its message and the resources it converted into.
struct Done {
    message: String,
    converted: Vec<v1::Resource>,
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

/// A volume's pool id and pool name (a volume without a pool is in "default").
fn volume_pool(v: &Volume) -> (String, String) {
    let pool = v.pool.clone().unwrap_or_else(|| "default".into());
    (pool_id(&v.service, &pool, v.zone.as_deref()), pool)
}

impl Endpoint {
    /// One durable store batch, off the async workers (a flush and an fdatasync: long enough
    /// that many operations at once would otherwise stall every other request).
    async fn store_apply(&self, ops: Vec<Op>) -> Result<(), crate::store::Error> {
        self.store().commit(ops).await
    }

    /// Count an operation as in flight (under the state lock): the capacity it holds, under
    /// a new claim that releases it, and the existing volume it acts on.
    fn begin_operation(
        &self,
        st: &mut State,
        fw: &str,
        key: &str,
        p: &Plan,
    ) -> Option<CapacityClaim> {
        let held = p
            .hold(fw, key)
            .map(|hold| (self.manager().claim_capacity(), hold));
        let claim = held.as_ref().map(|(claim, _)| *claim);
        st.in_flight.begin(p, held);
        claim
    }

    /// The operation holding `claim` has ended (its terminal status is sent): what it created
    /// or grew now counts as the framework's volume and in the pool's known free capacity.
    /// Every operation ends here, with or without a claim: its store writes are all done, and
    /// a snapshot's store view read meanwhile is read again ([`InFlight::ended`]).
    fn end_operation(&self, claim: Option<CapacityClaim>, p: &Plan) {
        let mut st = self.state();
        st.in_flight.end(p, claim);
        if let Some(claim) = claim {
            // Not accounted (the operation failed before its driver call): nothing to count.
            self.manager().drop_capacity_claim(&claim);
        }
        drop(st);
    }

    /// Operations a previous run recorded and did not finish: run them again (every step is
    /// idempotent), after start-up reconciliation has settled the volume manager's intents.
    pub(super) fn resume_operations(&self) {
        let recs = match self.store().operations() {
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
            let claim = p.as_ref().and_then(|p| {
                self.begin_operation(&mut self.state(), &rec.framework_id, &rec.operation_id, p)
            });
            let ep = self.clone();
            tokio::spawn(async move {
                let Some(p) = p else {
                    let e = OpError::Unreadable;
                    ep.finish(rec, e.state(), e.to_string(), None).await;
                    return;
                };
                tracing::info!(operation = %rec.operation_id, framework = %rec.framework_id, "resuming an operation left pending");
                let op = Operation {
                    fw: rec.framework_id.clone(),
                    agent_id: rec.agent_id.clone(),
                    role: rec.role.clone(),
                    principal: rec.principal.clone(),
                    plan: p,
                    key: rec.operation_id.clone(),
                    rec: Some(rec),
                    claim,
                };
                ep.execute(op).await;
            });
        }
    }

    /// Record the outcome (when the operation has a record) and tell the framework.
    async fn finish(
        &self,
        rec: OperationRecord,
        state: OperationState,
        message: String,
        converted: Option<Vec<v1::Resource>>,
    ) {
        let mut r = rec;
        r.state = state.as_str_name().to_string();
        r.message = Some(message);
        r.converted_resources = converted.map(|c| {
            serde_json::Value::Array(c.iter().filter_map(|x| json::to_value(x).ok()).collect())
                .to_string()
        });
        r.uuid = new_uuid();
        r.acknowledged = false;
        r.updated_at = crate::volumes::now_secs();
        let put = Op::PutOperation(r.clone());
        if let Err(e) = self.store().commit(vec![put]).await {
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

    /// Run one operation, then send its terminal status and only then release what it held:
    /// a new volume is offered after the framework has heard of it (FINISHED), never before.
    async fn execute(&self, op: Operation) {
        let res = self.carry_out(&op).await;
        let Operation {
            fw,
            plan,
            rec,
            claim,
            ..
        } = op;
        // The record as the steps left it (they add the volume id and a grow's target size).
        let rec = rec.map(
            |r| match self.store().operation(&r.framework_id, &r.operation_id) {
                Ok(Some(now)) => now,
                _ => r,
            },
        );
        match (rec, res) {
            (Some(r), Ok(done)) => {
                self.finish(
                    r,
                    OperationState::OperationFinished,
                    done.message,
                    Some(done.converted),
                )
                .await
            }
            (Some(r), Err(e)) => self.finish(r, e.state(), e.to_string(), None).await,
            (None, Err(e)) => {
                tracing::warn!(framework = fw.as_str(), error = %e, "operation without id failed")
            }
            (None, Ok(_)) => {}
        }
        self.end_operation(claim, &plan);
        self.wake();
    }

    /// The steps of the operation's kind.
    async fn carry_out(&self, op: &Operation) -> Result<Done, OpError> {
        match &op.plan {
            Plan::CreateDisk { pool_id, mb } => self.create_disk(op, pool_id, *mb).await,
            Plan::DestroyDisk { volume_id, source } => {
                self.destroy_disk(op, volume_id, source).await
            }
            Plan::Reserve { volume_id } => self.reserve(op, volume_id).await,
            Plan::Unreserve { volume_id } => self.unreserve(op, volume_id).await,
            Plan::GrowVolume {
                volume_id,
                pool_id,
                mb,
            } => self.grow_volume(op, volume_id, pool_id, *mb).await,
        }
    }
}
