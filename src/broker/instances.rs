//! Service instances: provision, update (grow), deprovision, fetch, `last_operation`, and
//! the operations behind them. A request decides under the instance's lock and saves the
//! operation `in_progress` (durably) before the volume manager is asked; the manager call
//! runs in a task of its own, so a request that stops waiting (202, or a platform timeout)
//! never cuts it short; the task saves the outcome. Every manager call used is idempotent
//! (create by service and name, grow to a size, delete), so [`Broker::recover`] finishes an
//! operation a crash cut by running it again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::error::{BrokerError, Result};
use super::wire::{self, InstanceParams};
use super::Broker;
use crate::store::{BrokerInstance, BrokerOpKind, BrokerOpState, BrokerOperation, Op};
use crate::volumes::{now_secs, valid_name, CreateVolume};

/// Where a request waiting on an operation got to.
pub(super) enum Waited {
    /// Still running after `async_after_ms` (only when the platform accepts incomplete).
    Pending,
    /// Finished: the record now (`None` once a deprovision removed it).
    Done(Option<Box<BrokerInstance>>),
}

/// The longest instance or binding id taken (the spec recommends GUIDs).
const MAX_ID: usize = 256;

pub(super) fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
        return Err(BrokerError::BadRequest(format!(
            "{what} must be 1-{MAX_ID} printable characters"
        )));
    }
    Ok(())
}

/// The volume an instance stands for: `osb-<instance id>`, or a name derived from the id
/// when the id holds characters a volume name cannot.
fn volume_name(iid: &str) -> String {
    let direct = format!("osb-{iid}");
    if valid_name(&direct) {
        direct
    } else {
        format!(
            "osb-{}",
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, iid.as_bytes())
        )
    }
}

fn new_operation(kind: BrokerOpKind, identity: Option<String>) -> BrokerOperation {
    let prefix = match kind {
        BrokerOpKind::Provision => "provision",
        BrokerOpKind::Update => "update",
        BrokerOpKind::Deprovision => "deprovision",
    };
    BrokerOperation {
        id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        kind,
        state: BrokerOpState::InProgress,
        description: None,
        failure_status: None,
        originating_identity: identity,
        plan_id: None,
        size_bytes: None,
        parameters: None,
        started_at: now_secs(),
        finished_at: None,
    }
}

fn running(r: &BrokerInstance) -> bool {
    r.last_operation.state == BrokerOpState::InProgress
}

/// A provision that failed: the instance holds no volume.
fn provision_failed(r: &BrokerInstance) -> bool {
    r.last_operation.kind == BrokerOpKind::Provision
        && r.last_operation.state == BrokerOpState::Failed
}

/// The error a failed operation answers with.
fn failure(r: &BrokerInstance) -> BrokerError {
    let op = &r.last_operation;
    let what = match op.kind {
        BrokerOpKind::Provision => "provision",
        BrokerOpKind::Update => "update",
        BrokerOpKind::Deprovision => "deprovision",
    };
    let description = format!(
        "{what} of instance {} failed: {}",
        r.id,
        op.description.as_deref().unwrap_or("unknown error")
    );
    match op.failure_status.unwrap_or(500) {
        400 => BrokerError::BadRequest(description),
        404 => BrokerError::NotFound(description),
        422 => BrokerError::unprocessable(description),
        _ => BrokerError::Internal(description),
    }
}

impl Broker {
    pub(super) async fn provision(
        &self,
        iid: &str,
        body: &[u8],
        accepts_incomplete: bool,
        identity: Option<String>,
    ) -> Result<(StatusCode, Value)> {
        check_id("instance_id", iid)?;
        let m = wire::object(body)?;
        let service_id = wire::req_str(&m, "service_id")?;
        let plan_id = wire::req_str(&m, "plan_id")?;
        let context = wire::opt_object(&m, "context")?;
        // Required by the specification even where `context` carries them too.
        let org = wire::req_str(&m, "organization_guid")?;
        let space = wire::req_str(&m, "space_guid")?;
        let parameters = wire::opt_object(&m, "parameters")?;
        let offering = self.inner.catalog.offering(&service_id).ok_or_else(|| {
            BrokerError::BadRequest(format!("service_id {service_id:?} is not in the catalog"))
        })?;
        let plan = offering.plan(&plan_id).ok_or_else(|| {
            BrokerError::BadRequest(format!(
                "plan_id {plan_id:?} is not a plan of service {}",
                offering.name
            ))
        })?;
        let params = InstanceParams::parse(&parameters)?;
        let store = self.inner.manager.store();

        let guard = self.inner.locks.lock(iid).await;
        if let Some(old) = store.broker_instance(iid)? {
            let same = old.service_id == service_id
                && old.plan_id == plan_id
                && old.organization_guid == org
                && old.space_guid == space
                && old.parameters == parameters;
            let op = &old.last_operation;
            match (same, op.kind, op.state) {
                (true, BrokerOpKind::Provision, BrokerOpState::InProgress) => {
                    drop(guard);
                    let id = op.id.clone();
                    return self.provision_answer(iid, &id, accepts_incomplete).await;
                }
                // The same provision again after it failed: start over.
                (true, BrokerOpKind::Provision, BrokerOpState::Failed) => {}
                (false, _, _) => {
                    return Err(BrokerError::Conflict(format!(
                        "instance {iid} already exists with other attributes (service, plan, organization, space or parameters)"
                    )))
                }
                (true, _, BrokerOpState::InProgress) => {
                    return Err(BrokerError::concurrency(&format!("instance {iid}")))
                }
                (true, _, _) => return Ok((StatusCode::OK, json!({}))),
            }
        }
        let op = new_operation(BrokerOpKind::Provision, identity);
        let rec = BrokerInstance {
            id: iid.to_string(),
            service_id,
            plan_id,
            service: offering.service.clone(),
            volume_name: volume_name(iid),
            volume_id: None,
            size_bytes: params.size_bytes.unwrap_or(plan.size_bytes),
            access_mode: plan.access,
            pool: plan.pool.clone(),
            organization_guid: org,
            space_guid: space,
            context,
            parameters,
            last_operation: op.clone(),
            created_at: now_secs(),
        };
        for (k, v) in self.labels(&rec) {
            if !valid_name(&k) || v.len() > 1024 {
                return Err(BrokerError::BadRequest(format!(
                    "label {k:?}: keys are 1-128 letters, digits, '.', '_' or '-', values at most 1024 bytes"
                )));
            }
        }
        store
            .commit(vec![Op::PutBrokerInstance(rec.clone())])
            .await?;
        drop(guard);
        tracing::info!(instance = iid, volume = %rec.volume_name, operation = %op.id, identity = ?op.originating_identity, "broker: provisioning");
        self.spawn(rec);
        self.provision_answer(iid, &op.id, accepts_incomplete).await
    }

    async fn provision_answer(
        &self,
        iid: &str,
        op_id: &str,
        accepts_incomplete: bool,
    ) -> Result<(StatusCode, Value)> {
        match self.wait(iid, op_id, accepts_incomplete).await? {
            Waited::Pending => Ok((StatusCode::ACCEPTED, json!({ "operation": op_id }))),
            Waited::Done(Some(r)) if r.last_operation.state == BrokerOpState::Succeeded => {
                Ok((StatusCode::CREATED, json!({})))
            }
            Waited::Done(Some(r)) if provision_failed(&r) => {
                // A synchronous provision refused for sure (4xx: nothing was created) leaves
                // no record, so the platform's retry starts afresh. After any other failure
                // the volume may yet exist (a back-end that timed out); the failed record
                // stays, and the platform's orphan mitigation (DELETE) removes both.
                let definite = r
                    .last_operation
                    .failure_status
                    .is_some_and(|s| (400..500).contains(&s));
                let _g = self.inner.locks.lock(iid).await;
                let store = self.inner.manager.store();
                if let Some(cur) = store.broker_instance(iid)?.filter(|_| definite) {
                    if cur.last_operation.id == op_id && provision_failed(&cur) {
                        store
                            .commit(vec![Op::DeleteBrokerInstance(iid.to_string())])
                            .await?;
                    }
                }
                Err(failure(&r))
            }
            Waited::Done(_) => Err(BrokerError::Internal(format!(
                "instance {iid} changed while it was being provisioned"
            ))),
        }
    }

    /// Wait for operation `op_id` of `iid` to end: up to `async_after_ms` when the platform
    /// accepts incomplete answers, else until it ends.
    pub(super) async fn wait(
        &self,
        iid: &str,
        op_id: &str,
        accepts_incomplete: bool,
    ) -> Result<Waited> {
        let mut done = self.inner.done.subscribe();
        let deadline = tokio::time::Instant::now() + self.async_after();
        loop {
            match self.inner.manager.store().broker_instance(iid)? {
                Some(r) if r.last_operation.id == op_id && running(&r) => {}
                other => return Ok(Waited::Done(other.map(Box::new))),
            }
            if accepts_incomplete {
                match tokio::time::timeout_at(deadline, done.changed()).await {
                    Err(_) => return Ok(Waited::Pending),
                    Ok(r) => r.map_err(|_| BrokerError::Internal("broker stopped".into()))?,
                }
            } else {
                done.changed()
                    .await
                    .map_err(|_| BrokerError::Internal("broker stopped".into()))?;
            }
        }
    }

    pub(super) async fn update(
        &self,
        iid: &str,
        body: &[u8],
        accepts_incomplete: bool,
        identity: Option<String>,
    ) -> Result<(StatusCode, Value)> {
        check_id("instance_id", iid)?;
        let m = wire::object(body)?;
        let service_id = wire::req_str(&m, "service_id")?;
        let plan_id = wire::opt_str(&m, "plan_id")?;
        let parameters = wire::opt_object(&m, "parameters")?;
        let params = InstanceParams::parse(&parameters)?;
        let store = self.inner.manager.store();
        let guard = self.inner.locks.lock(iid).await;
        let Some(mut rec) = store.broker_instance(iid)? else {
            return Err(BrokerError::NotFound(format!(
                "instance {iid} does not exist"
            )));
        };
        if service_id != rec.service_id {
            return Err(BrokerError::BadRequest(format!(
                "service_id {service_id:?} is not the service of instance {iid}"
            )));
        }
        let offering = self
            .inner
            .catalog
            .offering(&rec.service_id)
            .ok_or_else(|| {
                BrokerError::unprocessable(format!(
                    "the service of instance {iid} is no longer in the catalog"
                ))
            })?;
        let new_plan = match &plan_id {
            Some(p) => Some(offering.plan(p).ok_or_else(|| {
                BrokerError::BadRequest(format!(
                    "plan_id {p:?} is not a plan of service {}",
                    offering.name
                ))
            })?),
            None => None,
        };
        let target = params
            .size_bytes
            .or(new_plan.map(|p| p.size_bytes))
            .unwrap_or(rec.size_bytes);
        let op = &rec.last_operation;
        if running(&rec) {
            let same_update = op.kind == BrokerOpKind::Update
                && op.size_bytes == Some(target)
                && op.plan_id == plan_id.clone().or(Some(rec.plan_id.clone()));
            if same_update {
                let id = op.id.clone();
                drop(guard);
                return self.update_answer(iid, &id, accepts_incomplete).await;
            }
            return Err(BrokerError::concurrency(&format!("instance {iid}")));
        }
        if provision_failed(&rec) {
            return Err(BrokerError::unprocessable(format!(
                "instance {iid} failed to provision; deprovision it"
            )));
        }
        if let Some(p) = new_plan {
            if p.access != rec.access_mode || p.pool != rec.pool {
                return Err(BrokerError::unprocessable(format!(
                    "plan {} differs from the instance's in access mode or pool; only the size of a volume can change",
                    p.name
                )));
            }
        }
        if !params.labels.is_empty() {
            return Err(BrokerError::unprocessable(
                "labels are set when an instance is provisioned and cannot be updated",
            ));
        }
        if target < rec.size_bytes {
            return Err(BrokerError::unprocessable(format!(
                "instance {iid} holds {}; a volume can grow but not shrink (asked for {})",
                crate::volumes::human_size(rec.size_bytes),
                crate::volumes::human_size(target)
            )));
        }
        let plan_id = new_plan
            .map(|p| p.id.clone())
            .unwrap_or(rec.plan_id.clone());
        if target == rec.size_bytes {
            if plan_id != rec.plan_id {
                rec.plan_id = plan_id;
                store.commit(vec![Op::PutBrokerInstance(rec)]).await?;
            }
            return Ok((StatusCode::OK, json!({})));
        }
        let mut op = new_operation(BrokerOpKind::Update, identity);
        op.plan_id = Some(plan_id);
        op.size_bytes = Some(target);
        op.parameters = Some(parameters);
        rec.last_operation = op.clone();
        store
            .commit(vec![Op::PutBrokerInstance(rec.clone())])
            .await?;
        drop(guard);
        tracing::info!(instance = iid, operation = %op.id, size_bytes = target, "broker: growing");
        self.spawn(rec);
        self.update_answer(iid, &op.id, accepts_incomplete).await
    }

    async fn update_answer(
        &self,
        iid: &str,
        op_id: &str,
        accepts_incomplete: bool,
    ) -> Result<(StatusCode, Value)> {
        match self.wait(iid, op_id, accepts_incomplete).await? {
            Waited::Pending => Ok((StatusCode::ACCEPTED, json!({ "operation": op_id }))),
            Waited::Done(Some(r)) if r.last_operation.state == BrokerOpState::Succeeded => {
                Ok((StatusCode::OK, json!({})))
            }
            Waited::Done(Some(r)) => Err(failure(&r)),
            Waited::Done(None) => Err(BrokerError::NotFound(format!(
                "instance {iid} was deprovisioned"
            ))),
        }
    }

    pub(super) async fn deprovision(
        &self,
        iid: &str,
        q: &HashMap<String, String>,
        identity: Option<String>,
    ) -> Result<(StatusCode, Value)> {
        check_id("instance_id", iid)?;
        wire::require_ids(q)?;
        let accepts_incomplete = super::accepts_incomplete(q);
        let store = self.inner.manager.store();
        let guard = self.inner.locks.lock(iid).await;
        let Some(mut rec) = store.broker_instance(iid)? else {
            return Err(BrokerError::Gone);
        };
        if running(&rec) {
            if rec.last_operation.kind == BrokerOpKind::Deprovision {
                let id = rec.last_operation.id.clone();
                drop(guard);
                return self.deprovision_answer(iid, &id, accepts_incomplete).await;
            }
            return Err(BrokerError::concurrency(&format!("instance {iid}")));
        }
        let bindings = store.broker_bindings(Some(iid))?;
        if !bindings.is_empty() {
            let ids: Vec<&str> = bindings.iter().map(|b| b.id.as_str()).collect();
            return Err(BrokerError::unprocessable(format!(
                "instance {iid} has {} binding(s) ({}); unbind them before deprovisioning",
                ids.len(),
                ids.join(", ")
            )));
        }
        // A failed provision whose volume does not exist leaves only the record; one whose
        // volume was made after all (a back-end that answered late) is deprovisioned below.
        let volume_exists = self
            .inner
            .manager
            .find(Some(&rec.service), &rec.volume_name)
            .is_ok();
        if provision_failed(&rec) && !volume_exists {
            store
                .commit(vec![Op::DeleteBrokerInstance(iid.to_string())])
                .await?;
            return Ok((StatusCode::OK, json!({})));
        }
        let op = new_operation(BrokerOpKind::Deprovision, identity);
        rec.last_operation = op.clone();
        store
            .commit(vec![Op::PutBrokerInstance(rec.clone())])
            .await?;
        drop(guard);
        tracing::info!(instance = iid, operation = %op.id, "broker: deprovisioning");
        self.spawn(rec);
        self.deprovision_answer(iid, &op.id, accepts_incomplete)
            .await
    }

    async fn deprovision_answer(
        &self,
        iid: &str,
        op_id: &str,
        accepts_incomplete: bool,
    ) -> Result<(StatusCode, Value)> {
        match self.wait(iid, op_id, accepts_incomplete).await? {
            Waited::Pending => Ok((StatusCode::ACCEPTED, json!({ "operation": op_id }))),
            Waited::Done(None) => Ok((StatusCode::OK, json!({}))),
            Waited::Done(Some(r)) if r.last_operation.id == op_id => Err(failure(&r)),
            Waited::Done(Some(_)) => Err(BrokerError::Internal(format!(
                "instance {iid} changed while it was being deprovisioned"
            ))),
        }
    }

    pub(super) fn get_instance(&self, iid: &str) -> Result<(StatusCode, Value)> {
        let missing = || BrokerError::NotFound(format!("instance {iid} does not exist"));
        let rec = self
            .inner
            .manager
            .store()
            .broker_instance(iid)?
            .ok_or_else(missing)?;
        let op = &rec.last_operation;
        if op.kind == BrokerOpKind::Provision && op.state != BrokerOpState::Succeeded {
            return Err(BrokerError::NotFound(format!(
                "instance {iid} is not provisioned (its provision is {})",
                if running(&rec) {
                    "in progress"
                } else {
                    "failed"
                }
            )));
        }
        if op.kind == BrokerOpKind::Update && running(&rec) {
            return Err(BrokerError::concurrency(&format!("instance {iid}")));
        }
        Ok((
            StatusCode::OK,
            json!({
                "service_id": rec.service_id,
                "plan_id": rec.plan_id,
                "parameters": if rec.parameters.is_null() { json!({}) } else { rec.parameters.clone() },
            }),
        ))
    }

    pub(super) fn instance_last_operation(
        &self,
        iid: &str,
        q: &HashMap<String, String>,
    ) -> Result<(StatusCode, Value)> {
        let asked = q.get("operation").filter(|o| !o.is_empty());
        let Some(rec) = self.inner.manager.store().broker_instance(iid)? else {
            // A finished deprovision removes the record: the platform polling it is told
            // the instance is gone; an instance never known is not found.
            return match asked {
                Some(o) if o.starts_with("deprovision-") => Err(BrokerError::Gone),
                _ => Err(BrokerError::NotFound(format!(
                    "instance {iid} does not exist"
                ))),
            };
        };
        let op = &rec.last_operation;
        if let Some(o) = asked {
            if *o != op.id {
                return Err(BrokerError::BadRequest(format!(
                    "operation {o:?} is not the last operation of instance {iid} ({})",
                    op.id
                )));
            }
        }
        let state = match op.state {
            BrokerOpState::InProgress => "in progress",
            BrokerOpState::Succeeded => "succeeded",
            BrokerOpState::Failed => "failed",
        };
        let mut body = json!({ "state": state });
        if let Some(d) = &op.description {
            body["description"] = json!(d);
        }
        if op.state == BrokerOpState::Failed && op.kind != BrokerOpKind::Provision {
            body["instance_usable"] = json!(true);
            if op.kind == BrokerOpKind::Update {
                body["update_repeatable"] = json!(true);
            }
        }
        Ok((StatusCode::OK, body))
    }

    /// A broker-made volume's labels: the provision's `labels` parameter, and the
    /// instance, organization, space and plan it was made for.
    fn labels(&self, rec: &BrokerInstance) -> BTreeMap<String, String> {
        let mut labels = InstanceParams::parse(&rec.parameters)
            .map(|p| p.labels)
            .unwrap_or_default();
        labels.insert("osb.instance_id".into(), rec.id.clone());
        labels.insert(
            "osb.organization_guid".into(),
            rec.organization_guid.clone(),
        );
        labels.insert("osb.space_guid".into(), rec.space_guid.clone());
        if let Some(plan) = self
            .inner
            .catalog
            .offering(&rec.service_id)
            .and_then(|o| o.plan(&rec.plan_id))
        {
            labels.insert("osb.plan".into(), plan.name.clone());
        }
        labels
    }

    /// Run `rec`'s operation in the background and save its outcome.
    pub(super) fn spawn(&self, rec: BrokerInstance) {
        let b = self.clone();
        tokio::spawn(async move {
            let outcome = b.run(&rec).await;
            if let Err(e) = b.finish(&rec, outcome).await {
                tracing::warn!(instance = %rec.id, error = %e, "broker: cannot save an operation's outcome; it is finished at the next start");
            }
            b.inner.done.send_modify(|n| *n = n.wrapping_add(1));
        });
    }

    /// The volume manager calls of an operation (each idempotent).
    async fn run(&self, rec: &BrokerInstance) -> std::result::Result<Option<String>, BrokerError> {
        let m = &self.inner.manager;
        let existing = || m.find(Some(&rec.service), &rec.volume_name).ok();
        match rec.last_operation.kind {
            BrokerOpKind::Provision => {
                let labels = self.labels(rec);
                let restrict_services = if self.inner.cfg.restrict {
                    BTreeSet::from([rec.service.clone()])
                } else {
                    BTreeSet::new()
                };
                let v = m
                    .create(CreateVolume {
                        service: rec.service.clone(),
                        name: rec.volume_name.clone(),
                        size_bytes: rec.size_bytes,
                        pool: rec.pool.clone(),
                        zone: None,
                        access_mode: rec.access_mode,
                        labels,
                        restrict_services,
                        restrict_frameworks: BTreeSet::new(),
                        fields: BTreeMap::new(),
                    })
                    .await?;
                Ok(Some(v.id))
            }
            BrokerOpKind::Update => {
                let v = existing().ok_or_else(|| {
                    BrokerError::NotFound(format!("volume {} is gone", rec.volume_name))
                })?;
                let target = rec.last_operation.size_bytes.unwrap_or(rec.size_bytes);
                if v.size_bytes < target {
                    m.grow(&v.id, target).await?;
                }
                Ok(Some(v.id))
            }
            BrokerOpKind::Deprovision => {
                if let Some(v) = existing() {
                    match m.delete(&v.id).await {
                        Ok(()) | Err(crate::volumes::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(None)
            }
        }
    }

    /// Save an operation's outcome, unless a newer operation took its place.
    async fn finish(
        &self,
        rec: &BrokerInstance,
        outcome: std::result::Result<Option<String>, BrokerError>,
    ) -> Result<()> {
        let _g = self.inner.locks.lock(&rec.id).await;
        let store = self.inner.manager.store();
        let Some(mut cur) = store.broker_instance(&rec.id)? else {
            return Ok(());
        };
        if cur.last_operation.id != rec.last_operation.id {
            return Ok(());
        }
        let op = &mut cur.last_operation;
        op.finished_at = Some(now_secs());
        match (op.kind, outcome) {
            (BrokerOpKind::Deprovision, Ok(_)) => {
                tracing::info!(instance = %rec.id, "broker: deprovisioned");
                return store
                    .commit(vec![Op::DeleteBrokerInstance(rec.id.clone())])
                    .await
                    .map_err(Into::into);
            }
            (kind, Ok(volume_id)) => {
                op.state = BrokerOpState::Succeeded;
                op.description = Some(match kind {
                    BrokerOpKind::Provision => format!("volume {} created", cur.volume_name),
                    _ => format!("volume {} grown", cur.volume_name),
                });
                if kind == BrokerOpKind::Update {
                    cur.plan_id = op.plan_id.clone().unwrap_or(cur.plan_id);
                    cur.size_bytes = op.size_bytes.unwrap_or(cur.size_bytes);
                }
                cur.volume_id = volume_id.or(cur.volume_id);
            }
            (_, Err(e)) => {
                tracing::warn!(instance = %rec.id, error = %e, "broker: operation failed");
                op.state = BrokerOpState::Failed;
                op.failure_status = Some(e.status().as_u16());
                op.description = Some(e.to_string());
            }
        }
        store.commit(vec![Op::PutBrokerInstance(cur)]).await?;
        Ok(())
    }

    /// Finish every operation a previous run (or a previous leader) left in progress. Called
    /// once start-up reconciliation has settled the volume records.
    pub fn recover(&self) -> Result<usize> {
        let pending: Vec<BrokerInstance> = self
            .inner
            .manager
            .store()
            .broker_instances()?
            .into_iter()
            .filter(running)
            .collect();
        for rec in &pending {
            tracing::info!(instance = %rec.id, operation = %rec.last_operation.id, "broker: finishing an operation a previous run left in progress");
            self.spawn(rec.clone());
        }
        Ok(pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_instance_ids() {
        assert_eq!(
            volume_name("6d2f0b3e-1a44-4bde-9d1f-0c1b2a3d4e5f"),
            "osb-6d2f0b3e-1a44-4bde-9d1f-0c1b2a3d4e5f"
        );
        let odd = volume_name("a~b c");
        assert!(odd.starts_with("osb-") && valid_name(&odd), "{odd}");
        assert_eq!(odd, volume_name("a~b c"));
        assert_ne!(odd, volume_name("a~b d"));
        assert!(valid_name(&volume_name(&"x".repeat(200))));
        assert!(check_id("instance_id", "").is_err());
        assert!(check_id("instance_id", "a\u{0}b").is_err());
        assert!(check_id("instance_id", &"x".repeat(257)).is_err());
    }
}
