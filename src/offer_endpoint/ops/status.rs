//! Operation statuses: UPDATE_OPERATION_STATUS events built from the store's records, resent
//! on every new subscription until acknowledged, answered to RECONCILE_OPERATIONS, and the
//! records removed once acknowledged and past `operation_retention_secs`.

use crate::mesos::json;
use crate::mesos::v1::scheduler::{call, event, Event};
use crate::mesos::v1::{self, OperationState};
use crate::offer_endpoint::{AckError, Endpoint};
use crate::store::{Op, OperationRecord};

pub(super) fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// UPDATE_OPERATION_STATUS for a record; `uuid` only when it still awaits acknowledgement.
pub(super) fn status_event(rec: &OperationRecord) -> Event {
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
                // No agent is named rather than an empty one (an operation never seen).
                agent_id: (!rec.agent_id.is_empty()).then(|| v1::AgentId {
                    value: rec.agent_id.clone(),
                }),
                resource_provider_id: None,
            },
        }),
        ..Default::default()
    }
}

/// A status for an operation nobody asked to record (no uuid: nothing to acknowledge).
pub(super) fn transient_status(
    operation_id: &str,
    agent_id: &str,
    state: OperationState,
    message: String,
) -> Event {
    status_event(&OperationRecord {
        operation_id: operation_id.to_string(),
        framework_id: String::new(),
        agent_id: agent_id.to_string(),
        kind: String::new(),
        state: state.as_str_name().to_string(),
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
    /// Remove the records of operations whose terminal status was acknowledged and is older
    /// than `offers.operation_retention_secs` (by the time of that status); returns how many.
    /// Unacknowledged statuses are kept, whatever their age: they are resent until
    /// acknowledged.
    pub(in crate::offer_endpoint) async fn prune_operations(
        &self,
    ) -> Result<usize, crate::store::Error> {
        /// Records deleted per store batch.
        const BATCH: usize = 1000;
        let retention = self.config().operation_retention_secs;
        let store = self.store();
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
    pub(in crate::offer_endpoint) fn resend_unacknowledged(&self, fw: &str) {
        match self.store().operations() {
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

    /// `ids`: the operations asked about, each with the agent the framework named.
    pub(in crate::offer_endpoint) fn reconcile(&self, fw: &str, ids: &[(String, Option<String>)]) {
        let all = self.store().operations().unwrap_or_default();
        let mine: Vec<&OperationRecord> = all.iter().filter(|r| r.framework_id == fw).collect();
        if ids.is_empty() {
            for r in mine {
                self.send(fw, status_event(r));
            }
            return;
        }
        for (id, agent) in ids {
            match mine.iter().find(|r| &r.operation_id == id) {
                Some(r) => self.send(fw, status_event(r)),
                // As a master: the status of an unknown operation names the agent asked
                // about, if any.
                None => self.send(
                    fw,
                    transient_status(
                        id,
                        agent.as_deref().unwrap_or(""),
                        OperationState::OperationUnknown,
                        "operation unknown".into(),
                    ),
                ),
            }
        }
    }

    pub(in crate::offer_endpoint) async fn acknowledge(
        &self,
        fw: &str,
        a: &call::AcknowledgeOperationStatus,
    ) -> Result<(), AckError> {
        let uuid = uuid::Uuid::from_slice(&a.uuid).map_err(|_| AckError::BadUuid)?;
        let store = self.store();
        let rec = store.operation(fw, &a.operation_id.value)?;
        if let Some(mut r) = rec {
            if !r.acknowledged && uuid::Uuid::parse_str(&r.uuid).ok() == Some(uuid) {
                // Only a terminal status ends the record's retries; a PENDING ack just
                // confirms delivery.
                if r.is_terminal() {
                    r.acknowledged = true;
                    store.commit(vec![Op::PutOperation(r)]).await?;
                }
            }
        }
        // The framework has this status: its stream need not remember sending it.
        self.state().forget_status(fw, &a.uuid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::mesos::client;
    use crate::mesos::client::MesosConfig;
    use crate::offer_endpoint::config::OffersConfig;
    use crate::offer_endpoint::state::Framework;
    use crate::volumes::Manager;

    fn status(uuid: &[u8], op: &str) -> Event {
        Event {
            r#type: Some(event::Type::UpdateOperationStatus as i32),
            update_operation_status: Some(event::UpdateOperationStatus {
                status: v1::OperationStatus {
                    operation_id: Some(v1::OperationId { value: op.into() }),
                    state: v1::OperationState::OperationFinished as i32,
                    uuid: Some(v1::Uuid {
                        value: uuid.to_vec(),
                    }),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }
    }

    fn sent(ep: &Endpoint) -> usize {
        ep.state().frameworks["fw-1"].statuses_sent.len()
    }

    /// A status is delivered at most once on a stream, and the stream forgets it once the
    /// framework acknowledges it, so the set holds only the statuses in flight.
    #[tokio::test]
    async fn a_status_goes_once_per_stream_and_is_forgotten_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("store")).unwrap();
        let manager = Manager::with_services(store, BTreeMap::new(), Duration::from_secs(5));
        let agents = client::Handle::new(&MesosConfig::default(), Default::default());
        let ep = Endpoint::new(manager, agents, OffersConfig::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        ep.state().frameworks.insert(
            "fw-1".into(),
            Framework {
                name: "fw".into(),
                role: "storage".into(),
                principal: None,
                multi_role: false,
                stream_id: Some("s-1".into()),
                tx: Some(tx),
                suppressed: false,
                filters: Vec::new(),
                subscribed_at: String::new(),
                statuses_sent: HashSet::new(),
                disconnected_at_ms: None,
                failover_timeout_ms: 0,
            },
        );
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        ep.send_status("fw-1", status(a.as_bytes(), "op-a"));
        ep.send_status("fw-1", status(a.as_bytes(), "op-a"));
        ep.send_status("fw-1", status(b.as_bytes(), "op-b"));
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(
                ev.update_operation_status
                    .unwrap()
                    .status
                    .uuid
                    .unwrap()
                    .value,
            );
        }
        assert_eq!(got, vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()]);
        assert_eq!(sent(&ep), 2);
        let ack = |u: &uuid::Uuid, op: &str| call::AcknowledgeOperationStatus {
            uuid: u.as_bytes().to_vec(),
            operation_id: v1::OperationId { value: op.into() },
            ..Default::default()
        };
        ep.acknowledge("fw-1", &ack(&a, "op-a")).await.unwrap();
        assert_eq!(sent(&ep), 1, "the acknowledged status is forgotten");
        ep.acknowledge("fw-1", &ack(&b, "op-b")).await.unwrap();
        assert_eq!(sent(&ep), 0, "nothing in flight, nothing remembered");
    }
}
