//! The reading side of one subscription: RecordIO events against a heartbeat deadline,
//! SUPPRESS when quiet and REVIVE on a timer, and what each event does (agents learned,
//! offers declined, updates acknowledged, lost agents marked, a removed framework forgotten).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::encoding::decode_event;
use super::operator::operator_agents;
use super::{state, Agent, Client, ConnState, MesosConfig, FRAMEWORK_ID_KEY};
use crate::mesos::recordio::Decoder;
use crate::mesos::v1::scheduler::{call, event, Call, Event};
use crate::mesos::v1::{self, FrameworkId};
use crate::mesos::Error;
use crate::store::Op;

/// The reading side of one subscription.
pub(super) struct Stream<'a> {
    pub(super) client: &'a Client,
    pub(super) master: &'a str,
    pub(super) calls: mpsc::UnboundedSender<Call>,
    pub(super) framework_id: Option<String>,
    pub(super) subscribed: bool,
    pub(super) suppressed: bool,
}

impl Stream<'_> {
    fn cfg(&self) -> &MesosConfig {
        &self.client.cfg
    }

    /// Read events until the stream fails (an error) or `token` is cancelled (`Ok`).
    pub(super) async fn read(
        &mut self,
        mut body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
        token: &CancellationToken,
    ) -> Result<(), Error> {
        let cfg = self.cfg().clone();
        let mut decoder = Decoder::new(cfg.max_record_bytes);
        let mut silence = Duration::from_secs_f64(cfg.request_timeout_secs);
        let mut deadline = Instant::now() + silence;
        let far = Duration::from_secs(86400 * 365);
        let quiet = Duration::from_secs_f64(cfg.quiet_secs);
        let revive_every = Duration::from_secs_f64(cfg.revive_interval_secs);
        let mut quiet_at = Instant::now() + far;
        let mut revive_at = Instant::now() + revive_every;
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::HeartbeatTimeout {
                        master: self.master.to_string(),
                        secs: silence.as_secs_f64(),
                    });
                }
                _ = tokio::time::sleep_until(quiet_at), if self.subscribed && !self.suppressed => {
                    self.send(call::Type::Suppress, |c| c.suppress = Some(call::Suppress::default()));
                    self.suppressed = true;
                    quiet_at = Instant::now() + far;
                    self.client.handle.update(|s| s.suppressed = true);
                }
                _ = tokio::time::sleep_until(revive_at), if self.subscribed => {
                    revive_at = Instant::now() + revive_every;
                    self.send(call::Type::Revive, |c| c.revive = Some(call::Revive::default()));
                    self.suppressed = false;
                    quiet_at = Instant::now() + quiet;
                    self.client.handle.update(|s| s.suppressed = false);
                    if cfg.operator_agents {
                        self.spawn_operator_poll();
                    }
                }
                chunk = body.next() => {
                    let chunk = match chunk {
                        None => {
                            decoder.finish()?;
                            return Err(Error::Http {
                                master: self.master.to_string(),
                                detail: "the master closed the event stream".into(),
                            });
                        }
                        Some(Err(e)) => return Err(Error::Http {
                            master: self.master.to_string(),
                            detail: format!("event stream broke: {e}"),
                        }),
                        Some(Ok(c)) => c,
                    };
                    decoder.push(&chunk);
                    while let Some(record) = decoder.next_record()? {
                        let ev = decode_event(cfg.content_type, &record)?;
                        deadline = Instant::now() + silence;
                        match self.on_event(ev)? {
                            Some(Learned::Subscribed(interval)) => {
                                silence = interval * cfg.missed_heartbeats;
                                deadline = Instant::now() + silence;
                                quiet_at = Instant::now() + quiet;
                                revive_at = Instant::now() + revive_every;
                            }
                            Some(Learned::NewAgents) => quiet_at = Instant::now() + quiet,
                            None => {}
                        }
                    }
                }
            }
        }
    }

    /// Queue a call for the sender task.
    fn send(&self, t: call::Type, fill: impl FnOnce(&mut Call)) {
        let mut c = Call {
            framework_id: self.framework_id.clone().map(|value| FrameworkId { value }),
            r#type: Some(t as i32),
            ..Default::default()
        };
        fill(&mut c);
        // The receiver lives as long as the stream; a send error means we are ending anyway.
        let _ = self.calls.send(c);
    }

    fn spawn_operator_poll(&self) {
        let http = self.client.call_http.clone();
        let handle = self.client.handle.clone();
        let master = self.master.to_string();
        let cfg = self.cfg().clone();
        tokio::spawn(async move {
            let asked = std::time::SystemTime::now();
            match operator_agents(&http, &master, &cfg).await {
                Ok((agents, recovered)) => {
                    let mut listed: std::collections::BTreeSet<String> = recovered;
                    for a in agents {
                        listed.insert(a.id.clone());
                        handle.learn(a);
                    }
                    // The full inventory no longer lists them: removed or unreachable while
                    // this client may have missed the FAILURE (e.g. while disconnected).
                    for id in handle.mark_unlisted_lost(&listed, asked) {
                        tracing::warn!(agent = %id, "mesos: agent lost (absent from GET_AGENTS)");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "mesos: GET_AGENTS failed"),
            }
        });
    }

    fn on_event(&mut self, ev: Event) -> Result<Option<Learned>, Error> {
        let handle = &self.client.handle;
        let t = ev.r#type.and_then(|t| event::Type::try_from(t).ok());
        match t {
            Some(event::Type::Subscribed) => {
                let Some(s) = ev.subscribed else {
                    return Err(self.malformed("SUBSCRIBED without `subscribed`"));
                };
                let fid = s.framework_id.value.clone();
                if self.client.stored_framework_id()?.as_deref() != Some(fid.as_str()) {
                    self.client
                        .store
                        .apply(&[Op::PutMeta(FRAMEWORK_ID_KEY.to_string(), fid.clone())])?;
                }
                let interval = s
                    .heartbeat_interval_seconds
                    .filter(|i| i.is_finite() && *i > 0.0)
                    .unwrap_or(15.0);
                tracing::info!(master = %self.master, framework_id = %fid, "mesos: subscribed");
                self.framework_id = Some(fid.clone());
                self.subscribed = true;
                self.suppressed = false;
                handle.metrics().subscriptions.inc();
                handle.metrics().connected.set(1);
                handle.update(|st| {
                    st.state = ConnState::Subscribed;
                    st.framework_id = Some(fid);
                    st.heartbeat_interval_secs = Some(interval);
                    st.subscriptions += 1;
                    st.suppressed = false;
                    st.backoff_ms = None;
                });
                if self.cfg().operator_agents {
                    self.spawn_operator_poll();
                }
                return Ok(Some(Learned::Subscribed(Duration::from_secs_f64(
                    interval.min(3600.0),
                ))));
            }
            Some(event::Type::Heartbeat) => {
                handle.metrics().heartbeats.inc();
                handle.update(|st| st.last_heartbeat = Some(state::now_rfc3339()));
            }
            Some(event::Type::Offers) => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                let mut new = false;
                for o in &offers {
                    new |= handle.learn(Agent::from_offer(o));
                }
                if !offers.is_empty() {
                    let ids: Vec<v1::OfferId> = offers.into_iter().map(|o| o.id).collect();
                    let n = ids.len() as u64;
                    let refuse = self.cfg().refuse_seconds;
                    self.send(call::Type::Decline, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: ids,
                            filters: Some(v1::Filters {
                                refuse_seconds: Some(refuse),
                            }),
                        })
                    });
                    handle.metrics().offers_declined.inc_by(n);
                    handle.update(|st| st.offers_declined += n);
                }
                if new {
                    return Ok(Some(Learned::NewAgents));
                }
            }
            Some(event::Type::Rescind) => {
                tracing::debug!("mesos: offer rescinded (already declined)");
            }
            Some(event::Type::Update) => {
                if let Some(st) = ev.update.map(|u| u.status) {
                    if let (Some(uuid), Some(agent_id)) = (st.uuid, st.agent_id) {
                        self.send(call::Type::Acknowledge, |c| {
                            c.acknowledge = Some(call::Acknowledge {
                                agent_id,
                                task_id: st.task_id,
                                uuid,
                            })
                        });
                    }
                }
            }
            Some(event::Type::UpdateOperationStatus) => {
                if let Some(st) = ev.update_operation_status.map(|u| u.status) {
                    if let (Some(uuid), Some(operation_id)) = (st.uuid, st.operation_id) {
                        self.send(call::Type::AcknowledgeOperationStatus, |c| {
                            c.acknowledge_operation_status =
                                Some(call::AcknowledgeOperationStatus {
                                    agent_id: st.agent_id,
                                    resource_provider_id: st.resource_provider_id,
                                    uuid: uuid.value,
                                    operation_id,
                                })
                        });
                    }
                }
            }
            Some(event::Type::Failure) => {
                if let Some(f) = ev.failure {
                    match (f.agent_id, f.executor_id) {
                        (Some(agent), None) => {
                            tracing::warn!(agent = %agent.value, "mesos: agent lost");
                            handle.mark_lost(&agent.value);
                        }
                        (agent, Some(exec)) => tracing::info!(
                            agent = ?agent.map(|a| a.value), executor = %exec.value,
                            status = ?f.status, "mesos: executor exited"),
                        (None, None) => {}
                    }
                }
            }
            Some(event::Type::Error) => {
                let message = ev.error.map(|e| e.message).unwrap_or_default();
                tracing::error!(master = %self.master, %message, "mesos: ERROR event");
                if framework_removed(&message) {
                    // Only a removed framework starts over under a new id.
                    self.client
                        .store
                        .apply(&[Op::PutMeta(FRAMEWORK_ID_KEY.to_string(), String::new())])?;
                    handle.update(|st| st.framework_id = None);
                }
                return Err(Error::Refused {
                    master: self.master.to_string(),
                    message,
                });
            }
            _ => {}
        }
        Ok(None)
    }

    fn malformed(&self, what: &str) -> Error {
        Error::Http {
            master: self.master.to_string(),
            detail: format!("malformed event: {what}"),
        }
    }
}

enum Learned {
    Subscribed(Duration),
    NewAgents,
}

/// Whether an ERROR message means the master removed (tore down) this framework.
pub fn framework_removed(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("framework") && (m.contains("removed") || m.contains("torn down"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_framework_errors_are_recognised() {
        assert!(framework_removed("Framework has been removed"));
        assert!(!framework_removed("Role 'x' is not valid"));
    }
}
