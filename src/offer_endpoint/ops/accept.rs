//! ACCEPT: every operation checked ([`plan`]), the offers and what the operations take from
//! them checked by the offer engine under the state lock, and the back-ends they work on
//! checked against the last capacity poll (one found down refuses the ACCEPT: DROPPED,
//! nothing done), each operation with an id recorded PENDING (and answered so) before it
//! runs; the operations then run on their own tasks.

use std::collections::BTreeSet;

use super::lookup::Target;
use super::plan::{plan, Plan};
use super::status::{new_uuid, status_event, transient_status};
use super::Operation;
use crate::failpoints::crash_point;
use crate::mesos::json;
use crate::mesos::v1::offer::operation::Type as OpType;
use crate::mesos::v1::scheduler::call;
use crate::mesos::v1::{self, OperationState};
use crate::offer_endpoint::filters::refuse_ms;
use crate::offer_endpoint::{Endpoint, OpError};
use crate::offers::{self, OfferId, Use};
use crate::store::{Op, OperationRecord};
use crate::volumes::CapacityClaim;

/// One operation of an ACCEPT that passed its checks.
struct Planned {
    op: v1::offer::Operation,
    plan: Plan,
    /// The operation id, or a generated one.
    key: String,
    /// The back-end it works on, looked up before the state lock is taken.
    target: Option<Target>,
}

/// An ACCEPT the engine took: the agent its offers were on, the framework's role and
/// principal, and per planned operation the capacity it holds.
struct Taken {
    agent_id: String,
    who: Option<(String, Option<String>)>,
    claims: Vec<Option<CapacityClaim>>,
}

/// The PENDING record of an operation with an id, before it runs.
fn pending_record(
    fw: &str,
    id: &str,
    agent_id: &str,
    role: &str,
    principal: Option<String>,
    op: &v1::offer::Operation,
) -> OperationRecord {
    OperationRecord {
        operation_id: id.to_string(),
        framework_id: fw.to_string(),
        agent_id: agent_id.to_string(),
        kind: op
            .r#type
            .and_then(|t| OpType::try_from(t).ok())
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_default(),
        state: OperationState::OperationPending.as_str_name().into(),
        message: None,
        converted_resources: None,
        acknowledged: false,
        uuid: new_uuid(),
        request: json::to_value(op)
            .map(|v| v.to_string())
            .unwrap_or_default(),
        volume_id: None,
        target_bytes: None,
        role: role.to_string(),
        principal,
        updated_at: crate::volumes::now_secs(),
    }
}

impl Endpoint {
    /// ACCEPT: check with the engine, record, answer PENDING, then run the operations.
    pub(in crate::offer_endpoint) async fn accept(&self, fw: &str, a: call::Accept) {
        let ops = a.operations;
        let ids: Vec<Option<OfferId>> = a
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
                    planned.push(Planned {
                        op: op.clone(),
                        target: self.target(&p),
                        plan: p,
                        key,
                    })
                }
                Err(e) => errors.push((op.clone(), e)),
            }
        }
        let outcome = self.take_offers(fw, &ids, &planned, a.filters.as_ref(), now);
        self.wake();
        let Taken {
            agent_id,
            who,
            claims,
        } = match outcome {
            Ok(v) => v,
            Err(e) => {
                let (state, msg) = (e.state(), e.to_string());
                for op in &ops {
                    if let Some(id) = &op.id {
                        self.send(fw, transient_status(&id.value, "", state, msg.clone()));
                    }
                }
                return;
            }
        };
        let (role, principal) = who.unwrap_or_else(|| ("*".into(), None));
        for (op, e) in errors {
            if let Some(id) = &op.id {
                self.send(
                    fw,
                    transient_status(&id.value, &agent_id, e.state(), e.to_string()),
                );
            }
        }
        for (planned, claim) in planned.into_iter().zip(claims) {
            let Planned {
                op, plan: p, key, ..
            } = planned;
            let rec = match &op.id {
                None => None,
                Some(id) => {
                    match self.store().operation(fw, &id.value) {
                        Ok(Some(old)) => {
                            // Idempotent by operation id: report, never run twice.
                            self.send(fw, status_event(&old));
                            self.end_operation(claim, &p);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read operation record"),
                    }
                    let r = pending_record(fw, &id.value, &agent_id, &role, principal.clone(), &op);
                    if let Err(e) = self.store_apply(vec![Op::PutOperation(r.clone())]).await {
                        let e = OpError::Record(e);
                        self.send(
                            fw,
                            transient_status(&id.value, &agent_id, e.state(), e.to_string()),
                        );
                        self.end_operation(claim, &p);
                        continue;
                    }
                    crash_point!(&format!("mesos.{}.after_pending", r.kind.to_lowercase()));
                    self.send_status(fw, status_event(&r));
                    Some(r)
                }
            };
            let ep = self.clone();
            let op = Operation {
                fw: fw.to_string(),
                agent_id: agent_id.clone(),
                role: role.clone(),
                principal: principal.clone(),
                plan: p,
                rec,
                key,
                claim,
            };
            tokio::spawn(async move {
                ep.execute(op).await;
            });
        }
    }

    /// Under the state lock: check the ACCEPT's offers and what its operations take from
    /// them with the engine, and that no back-end they work on is down, and, when it takes
    /// them, withdraw the offers, count the operations as in flight and keep the agent out of
    /// the framework's offers as the ACCEPT's filters ask. A refused ACCEPT changes nothing.
    fn take_offers(
        &self,
        fw: &str,
        ids: &[Option<OfferId>],
        planned: &[Planned],
        filters: Option<&v1::Filters>,
        now: u64,
    ) -> Result<Taken, OpError> {
        let (mut st, view) = self.locked_view().map_err(OpError::Check)?;
        let mine = st.offers_of(fw, ids);
        if ids.is_empty() || mine.len() != ids.len() {
            return Err(OpError::OfferGone);
        }
        let agent_id = mine[0].agent_id.clone();
        if mine.iter().any(|o| o.agent_id != agent_id) {
            return Err(OpError::ManyAgents);
        }
        let offer_ids: Vec<OfferId> = mine.iter().map(|o| o.id).collect();
        let uses: Vec<Use> = planned.iter().filter_map(|p| p.plan.offer_use()).collect();
        let snap = self.snapshot(&st, view, now).map_err(OpError::Check)?;
        let acc = offers::apply_accept_offers(&snap, fw, &offer_ids, &uses)?;
        self.check_available(planned.iter().filter_map(|p| p.target.as_ref()))?;
        let used: BTreeSet<OfferId> = ids.iter().flatten().copied().collect();
        let gone: BTreeSet<OfferId> = acc.rescinds.iter().map(|r| r.offer_id).collect();
        st.remove_offers(&used);
        st.remove_offers(&gone);
        for id in gone {
            st.send(fw, self.rescind_event(id));
        }
        // The engine's reservations are the operations' own (`Plan::hold`).
        debug_assert_eq!(
            acc.reservations.len(),
            planned
                .iter()
                .filter(|p| p.plan.hold(fw, &p.key).is_some())
                .count()
        );
        let claims = planned
            .iter()
            .map(|p| self.begin_operation(&mut st, fw, &p.key, &p.plan))
            .collect();
        let refuse_ms = refuse_ms(filters);
        let who = st.role_and_principal(fw);
        if refuse_ms > 0 {
            st.refuse(fw, agent_id.clone(), now + refuse_ms);
        }
        Ok(Taken {
            agent_id,
            who,
            claims,
        })
    }
}
