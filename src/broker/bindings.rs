//! Service bindings: a record of where an app mounts its instance's volume, answered with
//! `volume_mounts` for the platform's volume manager, which hands `device.volume_id` and
//! `device.mount_config` to `polly node`'s plugin on each cell. Binding has no back-end side
//! effect (the cell's mount attaches), so bindings are synchronous: one durable write.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::error::{BrokerError, Result};
use super::instances::check_id;
use super::wire::{self, BindParams};
use super::Broker;
use crate::driver::AccessMode;
use crate::store::{BrokerBinding, BrokerInstance, BrokerOpKind, BrokerOpState, Op};
use crate::volumes::now_secs;

impl Broker {
    /// A binding's `volume_mounts`.
    fn volume_mounts(&self, inst: &BrokerInstance, b: &BrokerBinding) -> Value {
        json!([{
            "driver": self.inner.cfg.driver,
            "container_dir": b.container_dir,
            "mode": if b.read_only { "r" } else { "rw" },
            "device_type": "shared",
            "device": {
                "volume_id": inst.volume_name,
                "mount_config": { "service": inst.service },
            },
        }])
    }

    /// The instance a binding call names, provisioned and not going away.
    fn bindable(&self, iid: &str) -> Result<BrokerInstance> {
        let inst = self
            .inner
            .manager
            .store()
            .broker_instance(iid)?
            .ok_or_else(|| BrokerError::NotFound(format!("instance {iid} does not exist")))?;
        let op = &inst.last_operation;
        match (op.kind, op.state) {
            (BrokerOpKind::Provision, BrokerOpState::Failed) => Err(BrokerError::NotFound(
                format!("instance {iid} failed to provision"),
            )),
            (BrokerOpKind::Provision | BrokerOpKind::Deprovision, BrokerOpState::InProgress) => {
                Err(BrokerError::concurrency(&format!("instance {iid}")))
            }
            _ => Ok(inst),
        }
    }

    pub(super) async fn bind(
        &self,
        iid: &str,
        bid: &str,
        body: &[u8],
        identity: Option<String>,
    ) -> Result<(StatusCode, Value)> {
        check_id("instance_id", iid)?;
        check_id("binding_id", bid)?;
        let m = wire::object(body)?;
        let service_id = wire::req_str(&m, "service_id")?;
        let plan_id = wire::req_str(&m, "plan_id")?;
        let bind_resource = wire::opt_object(&m, "bind_resource")?;
        let app_guid = match wire::opt_str(&m, "app_guid")? {
            Some(a) => Some(a),
            None => match bind_resource.get("app_guid") {
                None | Some(Value::Null) => None,
                Some(Value::String(a)) if !a.is_empty() => Some(a.clone()),
                Some(_) => {
                    return Err(BrokerError::BadRequest(
                        "bind_resource.app_guid must be a non-empty string".into(),
                    ))
                }
            },
        };
        wire::opt_object(&m, "context")?;
        let parameters = wire::opt_object(&m, "parameters")?;
        let params = BindParams::parse(&parameters)?;
        let store = self.inner.manager.store();
        let _g = self.inner.locks.lock(iid).await;
        let inst = self.bindable(iid)?;
        if service_id != inst.service_id {
            return Err(BrokerError::BadRequest(format!(
                "service_id {service_id:?} is not the service of instance {iid}"
            )));
        }
        let offering = self.inner.catalog.offering(&service_id);
        if offering.and_then(|o| o.plan(&plan_id)).is_none() {
            return Err(BrokerError::BadRequest(format!(
                "plan_id {plan_id:?} is not a plan of the instance's service"
            )));
        }
        if let Some(old) = store.broker_binding(iid, bid)? {
            if old.app_guid == app_guid && old.parameters == parameters {
                return Ok((
                    StatusCode::OK,
                    json!({ "volume_mounts": self.volume_mounts(&inst, &old) }),
                ));
            }
            return Err(BrokerError::Conflict(format!(
                "binding {bid} of instance {iid} already exists with other parameters or another app"
            )));
        }
        let b = BrokerBinding {
            id: bid.to_string(),
            instance_id: iid.to_string(),
            service_id,
            plan_id,
            app_guid,
            bind_resource,
            read_only: params.readonly || inst.access_mode == AccessMode::MultiReader,
            container_dir: params.mount.unwrap_or_else(|| {
                format!(
                    "{}/{iid}",
                    self.inner.cfg.container_dir.trim_end_matches('/')
                )
            }),
            parameters,
            originating_identity: identity,
            created_at: now_secs(),
        };
        store.commit(vec![Op::PutBrokerBinding(b.clone())]).await?;
        tracing::info!(instance = iid, binding = bid, app = ?b.app_guid, identity = ?b.originating_identity, "broker: bound");
        Ok((
            StatusCode::CREATED,
            json!({ "volume_mounts": self.volume_mounts(&inst, &b) }),
        ))
    }

    pub(super) async fn unbind(
        &self,
        iid: &str,
        bid: &str,
        q: &HashMap<String, String>,
    ) -> Result<(StatusCode, Value)> {
        wire::require_ids(q)?;
        let store = self.inner.manager.store();
        let _g = self.inner.locks.lock(iid).await;
        if store.broker_binding(iid, bid)?.is_none() {
            return Err(BrokerError::Gone);
        }
        store
            .commit(vec![Op::DeleteBrokerBinding {
                instance_id: iid.to_string(),
                binding_id: bid.to_string(),
            }])
            .await?;
        tracing::info!(instance = iid, binding = bid, "broker: unbound");
        Ok((StatusCode::OK, json!({})))
    }

    pub(super) fn get_binding(&self, iid: &str, bid: &str) -> Result<(StatusCode, Value)> {
        let store = self.inner.manager.store();
        let missing =
            || BrokerError::NotFound(format!("binding {bid} of instance {iid} does not exist"));
        let b = store.broker_binding(iid, bid)?.ok_or_else(missing)?;
        let inst = store.broker_instance(iid)?.ok_or_else(missing)?;
        Ok((
            StatusCode::OK,
            json!({
                "volume_mounts": self.volume_mounts(&inst, &b),
                "parameters": if b.parameters.is_null() { json!({}) } else { b.parameters.clone() },
            }),
        ))
    }

    /// Bindings are made synchronously: one that exists has succeeded.
    pub(super) fn binding_last_operation(
        &self,
        iid: &str,
        bid: &str,
    ) -> Result<(StatusCode, Value)> {
        match self.inner.manager.store().broker_binding(iid, bid)? {
            Some(_) => Ok((StatusCode::OK, json!({ "state": "succeeded" }))),
            None => Err(BrokerError::NotFound(format!(
                "binding {bid} of instance {iid} does not exist"
            ))),
        }
    }
}
