//! What the scheduler client knows, shared with the admin API: connection status and the
//! agents learned from offers, the operator API and static config.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::config::{MesosConfig, StaticAgent};
use crate::mesos::v1;
use crate::metrics::MesosMetrics;

/// Where the client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// No master configured (embedded mode).
    Disabled,
    Connecting,
    Subscribed,
    BackingOff,
    Stopped,
}

/// `GET /admin/mesos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MesosStatus {
    pub state: ConnState,
    pub masters: Vec<String>,
    /// The master of the current or last attempt.
    pub master: Option<String>,
    pub framework_id: Option<String>,
    pub stream_id: Option<String>,
    pub content_type: String,
    pub heartbeat_interval_secs: Option<f64>,
    /// RFC 3339.
    pub last_heartbeat: Option<String>,
    pub subscriptions: u64,
    pub suppressed: bool,
    pub offers_declined: u64,
    pub last_error: Option<String>,
    /// Delay before the next attempt while backing off.
    pub backoff_ms: Option<u64>,
    pub agents_known: usize,
    pub agents_lost: usize,
}

/// Where an agent was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentSource {
    Offer,
    Operator,
    Static,
    /// A host a REX-Ray client reported (the store's instance table).
    Instance,
    /// Known now only from its stored lost/fenced record (e.g. after a restart).
    Record,
}

/// One agent, `GET /admin/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub source: AgentSource,
    /// The master reported the agent lost (FAILURE without an executor).
    pub lost: bool,
    pub lost_at: Option<String>,
    pub last_seen: String,
    /// Its fencing state when a lost/fenced record exists (`lost`, `fencing`, `fenced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<crate::store::NodeState>,
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Attribute values as Mesos prints them in `--attributes`.
fn attribute_text(a: &v1::Attribute) -> String {
    if let Some(t) = &a.text {
        return t.value.clone();
    }
    if let Some(s) = &a.scalar {
        return s.value.to_string();
    }
    if let Some(r) = &a.ranges {
        let parts: Vec<String> = r
            .range
            .iter()
            .map(|r| format!("{}-{}", r.begin, r.end))
            .collect();
        return format!("[{}]", parts.join(","));
    }
    if let Some(s) = &a.set {
        return format!("{{{}}}", s.item.join(","));
    }
    String::new()
}

impl Agent {
    fn from_parts(
        id: String,
        hostname: String,
        attrs: &[v1::Attribute],
        domain: Option<&v1::DomainInfo>,
        source: AgentSource,
    ) -> Agent {
        let fd = domain.and_then(|d| d.fault_domain.as_ref());
        Agent {
            id,
            hostname,
            region: fd.map(|f| f.region.name.clone()),
            zone: fd.map(|f| f.zone.name.clone()),
            attributes: attrs
                .iter()
                .map(|a| (a.name.clone(), attribute_text(a)))
                .collect(),
            source,
            lost: false,
            lost_at: None,
            fence: None,
            last_seen: now_rfc3339(),
        }
    }

    pub fn from_offer(o: &v1::Offer) -> Agent {
        Agent::from_parts(
            o.agent_id.value.clone(),
            o.hostname.clone(),
            &o.attributes,
            o.domain.as_ref(),
            AgentSource::Offer,
        )
    }

    /// `None` when the agent info carries no id.
    pub fn from_agent_info(a: &v1::AgentInfo) -> Option<Agent> {
        Some(Agent::from_parts(
            a.id.as_ref()?.value.clone(),
            a.hostname.clone(),
            &a.attributes,
            a.domain.as_ref(),
            AgentSource::Operator,
        ))
    }

    fn from_static(s: &StaticAgent) -> Agent {
        Agent {
            id: s.id.clone(),
            hostname: s.hostname.clone(),
            region: s.region.clone(),
            zone: s.zone.clone(),
            attributes: s.attributes.clone(),
            source: AgentSource::Static,
            lost: false,
            lost_at: None,
            fence: None,
            last_seen: now_rfc3339(),
        }
    }

    /// A host a REX-Ray client reported; its `zone`/`region` fields give its placement.
    pub fn from_instance(i: &crate::store::Instance) -> Agent {
        let field = |k: &str| i.fields.get(k).cloned();
        Agent {
            id: i.instance_id.clone(),
            hostname: i.hostname.clone().unwrap_or_default(),
            region: field("region"),
            zone: field("zone").or_else(|| field("availabilityZone")),
            attributes: i.fields.clone(),
            source: AgentSource::Instance,
            lost: false,
            lost_at: None,
            fence: None,
            last_seen: humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i.last_seen),
            )
            .to_string(),
        }
    }

    /// Same identity and placement (ignoring timestamps).
    fn same_as(&self, o: &Agent) -> bool {
        self.hostname == o.hostname
            && self.region == o.region
            && self.zone == o.zone
            && self.attributes == o.attributes
            && self.lost == o.lost
    }
}

struct Shared {
    status: Mutex<MesosStatus>,
    agents: Mutex<BTreeMap<String, Agent>>,
    metrics: MesosMetrics,
}

/// Cheap-to-clone handle on the client's state; the admin API reads it.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain assignments).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handle {
    pub fn new(cfg: &MesosConfig, metrics: MesosMetrics) -> Handle {
        let agents: BTreeMap<String, Agent> = cfg
            .agents
            .iter()
            .map(|a| (a.id.clone(), Agent::from_static(a)))
            .collect();
        let h = Handle {
            inner: Arc::new(Shared {
                status: Mutex::new(MesosStatus {
                    state: if cfg.enabled() {
                        ConnState::Connecting
                    } else {
                        ConnState::Disabled
                    },
                    masters: cfg.masters.clone(),
                    master: None,
                    framework_id: None,
                    stream_id: None,
                    content_type: super::content_type(cfg.content_type).to_string(),
                    heartbeat_interval_secs: None,
                    last_heartbeat: None,
                    subscriptions: 0,
                    suppressed: false,
                    offers_declined: 0,
                    last_error: None,
                    backoff_ms: None,
                    agents_known: 0,
                    agents_lost: 0,
                }),
                agents: Mutex::new(agents),
                metrics,
            }),
        };
        h.recount();
        h
    }

    pub fn status(&self) -> MesosStatus {
        lock(&self.inner.status).clone()
    }

    pub fn agents(&self) -> Vec<Agent> {
        lock(&self.inner.agents).values().cloned().collect()
    }

    /// Known agents plus REX-Ray instances that are not already known by id or hostname
    /// (in embedded mode these and static config are the only source).
    pub fn agents_with_instances(&self, instances: &[crate::store::Instance]) -> Vec<Agent> {
        let mut out = self.agents();
        for i in instances {
            let a = Agent::from_instance(i);
            let known = out
                .iter()
                .any(|k| k.id == a.id || (!a.hostname.is_empty() && k.hostname == a.hostname));
            if !known {
                out.push(a);
            }
        }
        out
    }

    pub fn metrics(&self) -> &MesosMetrics {
        &self.inner.metrics
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut MesosStatus)) {
        f(&mut lock(&self.inner.status));
    }

    /// Record an agent; true when it is new or changed (which keeps offers flowing).
    pub(crate) fn learn(&self, a: Agent) -> bool {
        let changed = {
            let mut agents = lock(&self.inner.agents);
            match agents.get_mut(&a.id) {
                Some(old) if old.same_as(&a) => {
                    old.last_seen = a.last_seen;
                    false
                }
                _ => {
                    agents.insert(a.id.clone(), a);
                    true
                }
            }
        };
        if changed {
            self.recount();
        }
        changed
    }

    /// The master reported the agent lost.
    pub(crate) fn mark_lost(&self, id: &str) {
        {
            let mut agents = lock(&self.inner.agents);
            let a = agents.entry(id.to_string()).or_insert_with(|| Agent {
                id: id.to_string(),
                hostname: String::new(),
                region: None,
                zone: None,
                attributes: BTreeMap::new(),
                source: AgentSource::Offer,
                lost: false,
                lost_at: None,
                last_seen: now_rfc3339(),
                fence: None,
            });
            a.lost = true;
            a.lost_at = Some(now_rfc3339());
        }
        self.recount();
    }

    /// Marks lost every agent learned from offers or the operator API before `asked` that
    /// the master's full inventory (`listed`, taken after `asked`) no longer has. Returns
    /// the ids newly marked.
    pub(crate) fn mark_unlisted_lost(
        &self,
        listed: &std::collections::BTreeSet<String>,
        asked: SystemTime,
    ) -> Vec<String> {
        let gone: Vec<String> = lock(&self.inner.agents)
            .values()
            .filter(|a| {
                !a.lost
                    && matches!(a.source, AgentSource::Offer | AgentSource::Operator)
                    && !listed.contains(&a.id)
                    && humantime::parse_rfc3339_weak(&a.last_seen).is_ok_and(|t| t < asked)
            })
            .map(|a| a.id.clone())
            .collect();
        for id in &gone {
            self.mark_lost(id);
        }
        gone
    }

    fn recount(&self) {
        // Counted and published under the agents lock: published after releasing it, two
        // concurrent learns (offers and the operator API's poll) could publish in the
        // opposite order and leave a stale count until the next change.
        let agents = lock(&self.inner.agents);
        let (known, lost) = (agents.len(), agents.values().filter(|a| a.lost).count());
        self.inner.metrics.agents.set(known as i64);
        self.inner.metrics.agents_lost.set(lost as i64);
        self.update(|s| {
            s.agents_known = known;
            s.agents_lost = lost;
        });
        drop(agents);
    }
}
