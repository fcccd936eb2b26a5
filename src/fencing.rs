//! Fencing: nodes that are lost, and the release of what they hold.
//!
//! A node is a Mesos agent, or a host known only from REX-Ray reports (its instance id). It
//! becomes *lost* when the master reports it gone (FAILURE without an executor) or, when
//! `fencing.instance_lost_after_secs` is set, when its instance has not reported for that
//! long. A lost node keeps its attachments: Polly never force-detaches on its own say-so,
//! because a node that stopped talking may still be writing. Its held volumes are not offered
//! and it gets no offers. The attachments are released only when the node is *fenced*: an
//! operator asserts it is off (`polly agent fence`, `POST /admin/agents/{id}/fence`), or the
//! auto-release timeout (`fencing.auto_release_after_secs`, off by default) fires.
//!
//! A fence is crash-safe: the node record (state `fencing`, with the volumes to release) is
//! durable before the first detach; each volume then goes through
//! [`Manager::fence_detach`], which resolves an intent left by a crash against the back-end
//! before deciding whether a detach is still needed. So a fence interrupted at any point is
//! resumed (by the worker) and each attachment is released exactly once.

pub mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

pub use config::{FencingConfig, FencingConfigError};

use crate::mesos::agents::{agent_instance, InstanceMap};
use crate::mesos::client::{self, Agent, AgentSource};
use crate::store::{self, Instance, NodeRecord, NodeState, Op, Store, Volume};
use crate::volumes::{now_secs, Error, Manager, Result};

/// Who fenced a node.
pub const BY_OPERATOR: &str = "operator";
pub const BY_AUTO_RELEASE: &str = "auto_release";

/// What lost and fenced nodes block, read from the store: their agent ids get no offers and
/// volumes attached to their instances are not offered while they are lost or fencing.
#[derive(Debug, Clone, Default)]
pub struct Held {
    agents: BTreeSet<String>,
    instances: BTreeSet<String>,
}

impl Held {
    pub fn read(store: &Store) -> store::Result<Held> {
        let mut h = Held::default();
        for n in store.nodes()? {
            h.agents.insert(n.id.clone());
            if n.state != NodeState::Fenced {
                h.instances.extend(n.instance_ids.iter().cloned());
            }
        }
        Ok(h)
    }

    /// Whether the agent (or instance) id is a lost or fenced node.
    pub fn blocks_agent(&self, id: &str) -> bool {
        self.agents.contains(id)
    }

    /// Whether a lost node still holds an attachment of the volume.
    pub fn holds(&self, v: &Volume) -> bool {
        v.attachments
            .iter()
            .any(|a| self.instances.contains(&a.instance_id))
    }
}

struct Inner {
    manager: Manager,
    agents: client::Handle,
    /// Which instance each agent stands for (`[offers]`).
    instance_map: InstanceMap,
    cfg: FencingConfig,
    /// One fence or check at a time: records are read, changed and written whole.
    lock: tokio::sync::Mutex<()>,
}

/// Cheap-to-clone handle: the admin API fences through it, the worker checks with it.
#[derive(Clone)]
pub struct Fencing {
    inner: Arc<Inner>,
}

fn rfc3339_secs(s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
}

fn parse_secs(t: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(t)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

impl Fencing {
    pub fn new(
        manager: Manager,
        agents: client::Handle,
        instance_map: InstanceMap,
        cfg: FencingConfig,
    ) -> Fencing {
        Fencing {
            inner: Arc::new(Inner {
                manager,
                agents,
                instance_map,
                cfg,
                lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn store(&self) -> &Store {
        self.inner.manager.store()
    }

    async fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.store().commit(ops).await?;
        Ok(())
    }

    /// The instance ids an agent stands for (itself for a REX-Ray-only host).
    fn instances_of(&self, a: &Agent, instances: &[Instance]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Some(i) = agent_instance(a, instances, &self.inner.instance_map) {
            out.insert(i);
        }
        out
    }

    fn new_record(&self, a: &Agent, instances: &[Instance], reason: String) -> NodeRecord {
        NodeRecord {
            id: a.id.clone(),
            hostname: (!a.hostname.is_empty()).then(|| a.hostname.clone()),
            zone: a.zone.clone(),
            instance_ids: self.instances_of(a, instances),
            state: NodeState::Lost,
            reason,
            lost_at: a
                .lost_at
                .as_deref()
                .and_then(parse_secs)
                .unwrap_or_else(now_secs),
            fenced_by: None,
            fence_requested_at: None,
            pending: Vec::new(),
            released: Vec::new(),
            fenced_at: None,
        }
    }

    /// Every agent with its fencing state, plus nodes known only from their records.
    pub fn agents(&self) -> Result<Vec<Agent>> {
        let instances = self.store().instances()?;
        let mut agents = self.inner.agents.agents_with_instances(&instances);
        let mut records: BTreeMap<String, NodeRecord> = self
            .store()
            .nodes()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        for a in &mut agents {
            if let Some(n) = records.remove(&a.id) {
                a.fence = Some(n.state);
                a.lost = true;
                a.lost_at.get_or_insert_with(|| rfc3339_secs(n.lost_at));
            }
        }
        for n in records.into_values() {
            agents.push(Agent {
                id: n.id.clone(),
                hostname: n.hostname.clone().unwrap_or_default(),
                region: None,
                zone: n.zone.clone(),
                attributes: BTreeMap::new(),
                source: AgentSource::Record,
                lost: true,
                lost_at: Some(rfc3339_secs(n.lost_at)),
                last_seen: rfc3339_secs(n.lost_at),
                fence: Some(n.state),
            });
        }
        Ok(agents)
    }

    /// Fence a node: the caller asserts it is off. Its attachments are released (each
    /// exactly once) and its volumes can be offered and attached elsewhere. Fencing a node
    /// that is already fenced and holds nothing changes nothing.
    pub async fn fence(&self, id: &str, by: &str) -> Result<NodeRecord> {
        let _g = self.inner.lock.lock().await;
        let res = self.fence_locked(id, by).await;
        self.recount();
        res
    }

    /// Node gauges from the store's records.
    fn recount(&self) {
        if let Ok(all) = self.store().nodes() {
            self.count(&all.into_iter().map(|n| (n.id.clone(), n)).collect());
        }
    }

    async fn fence_locked(&self, id: &str, by: &str) -> Result<NodeRecord> {
        let instances = self.store().instances()?;
        let mut known = self.inner.agents.agents_with_instances(&instances);
        // An instance listed under its Mesos agent (same hostname) can be fenced by its id.
        if !known.iter().any(|a| a.id == id) {
            if let Some(i) = instances.iter().find(|i| i.instance_id == id) {
                known.push(Agent::from_instance(i));
            }
        }
        let agent = known.iter().find(|a| a.id == id);
        let mut rec = match (self.store().node(id)?, agent) {
            (Some(r), _) => r,
            (None, Some(a)) => self.new_record(
                a,
                &instances,
                "fenced while not reported lost (operator assertion)".into(),
            ),
            (None, None) => {
                return Err(Error::NotFound {
                    kind: "agent or instance",
                    id: id.to_string(),
                })
            }
        };
        if let Some(a) = agent {
            rec.instance_ids.extend(self.instances_of(a, &instances));
        }
        // What the node holds now, plus what an interrupted fence still had to release.
        let mut pending: BTreeSet<String> = rec.pending.iter().cloned().collect();
        for v in self.store().volumes()? {
            if v.attachments
                .iter()
                .any(|a| rec.instance_ids.contains(&a.instance_id))
            {
                pending.insert(v.id);
            }
        }
        if rec.state == NodeState::Fenced && pending.is_empty() {
            return Ok(rec);
        }
        if rec.state != NodeState::Fencing {
            rec.state = NodeState::Fencing;
            rec.fenced_by = Some(by.to_string());
            rec.fence_requested_at = Some(now_secs());
        }
        rec.pending = pending.into_iter().collect();
        // Durable before any detach: a crash from here on resumes this fence.
        self.write(vec![Op::PutNode(rec.clone())]).await?;
        tracing::warn!(node = %rec.id, by, volumes = rec.pending.len(),
            "fencing node: releasing its attachments");
        self.release(rec).await
    }

    /// Release every pending volume of a fencing record, recording progress after each.
    async fn release(&self, mut rec: NodeRecord) -> Result<NodeRecord> {
        let m = &self.inner.manager;
        while let Some(vid) = rec.pending.first().cloned() {
            m.fence_detach(&vid, &rec.instance_ids).await?;
            rec.pending.remove(0);
            if !rec.released.contains(&vid) {
                rec.released.push(vid.clone());
            }
            self.write(vec![Op::PutNode(rec.clone())]).await?;
            m.metrics().fencing.released.inc();
            tracing::info!(node = %rec.id, volume = %vid, "fence released the volume");
        }
        rec.state = NodeState::Fenced;
        rec.fenced_at = Some(now_secs());
        self.write(vec![Op::PutNode(rec.clone())]).await?;
        Ok(rec)
    }

    /// One check: record newly lost nodes, forget nodes that came back, fire auto-release
    /// timers and resume interrupted fences.
    pub async fn check(&self) -> Result<()> {
        let _g = self.inner.lock.lock().await;
        let store = self.store();
        let now = now_secs();
        let instances = store.instances()?;
        let agents = self.inner.agents.agents();
        let mut records: BTreeMap<String, NodeRecord> = store
            .nodes()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let mut ops = Vec::new();

        // Lost: the master said so.
        for a in agents.iter().filter(|a| a.lost) {
            if !records.contains_key(&a.id) {
                let r = self.new_record(
                    a,
                    &instances,
                    "the Mesos master reported the agent lost".into(),
                );
                if self.seen_since(&r, r.lost_at, &agents, &instances) {
                    // Its instance reported after the loss: alive, only cut off from the
                    // master; recording it would only have it come back at once.
                    continue;
                }
                tracing::warn!(agent = %a.id, hostname = %a.hostname,
                    "agent lost: its attachments stay until it is fenced");
                records.insert(r.id.clone(), r.clone());
                ops.push(Op::PutNode(r));
            }
        }
        // Lost: an instance silent for too long.
        if let Some(after) = self.inner.cfg.instance_lost_after_secs {
            let m = &self.inner.manager;
            for i in &instances {
                let heard = m.instance_heard_at(i).max(m.started_at());
                let silent = now.saturating_sub(heard);
                let covered = records.contains_key(&i.instance_id)
                    || records
                        .values()
                        .any(|r| r.instance_ids.contains(&i.instance_id));
                if !covered && silent as f64 >= after {
                    let a = Agent::from_instance(i);
                    let r = self.new_record(
                        &a,
                        &instances,
                        format!(
                            "no report from the instance (REX-Ray or polly node) for {silent} s"
                        ),
                    );
                    // Lost since it was last heard: a later report brings it back.
                    let r = NodeRecord {
                        lost_at: heard,
                        ..r
                    };
                    tracing::warn!(instance = %i.instance_id, silent,
                        "instance lost: its attachments stay until it is fenced");
                    records.insert(r.id.clone(), r.clone());
                    ops.push(Op::PutNode(r));
                }
            }
        }
        // Back: a node seen again after it was lost (or fenced) is active again.
        for r in records.values() {
            if r.state == NodeState::Fencing {
                continue;
            }
            let since = r.fenced_at.unwrap_or(r.lost_at);
            if self.seen_since(r, since, &agents, &instances) {
                tracing::info!(node = %r.id, "lost node is back; its record is dropped");
                ops.push(Op::DeleteNode(r.id.clone()));
            }
        }
        let back: BTreeSet<String> = ops
            .iter()
            .filter_map(|o| match o {
                Op::DeleteNode(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        records.retain(|id, _| !back.contains(id));
        if !ops.is_empty() {
            self.write(ops).await?;
        }
        self.count(&records);

        let mut first_err = None;
        for r in records.into_values() {
            let res = match r.state {
                NodeState::Fencing => {
                    let by = r.fenced_by.clone().unwrap_or_else(|| BY_OPERATOR.into());
                    self.fence_locked(&r.id, &by).await.map(|_| ())
                }
                NodeState::Lost => match self.inner.cfg.auto_release_after_secs {
                    Some(after) if now.saturating_sub(r.lost_at) as f64 >= after => {
                        tracing::warn!(node = %r.id, after, "auto-release: fencing a node lost for longer than fencing.auto_release_after_secs");
                        self.fence_locked(&r.id, BY_AUTO_RELEASE).await.map(|_| ())
                    }
                    _ => Ok(()),
                },
                NodeState::Fenced => Ok(()),
            };
            if let Err(e) = res {
                tracing::warn!(node = %r.id, error = %e, "fence not finished; retrying");
                first_err.get_or_insert(e);
            }
        }
        self.recount();
        first_err.map_or(Ok(()), Err)
    }

    /// Whether a node has shown itself after `since` (unix seconds; a silent instance's
    /// `lost_at` is when it was last heard, so any later report counts): its Mesos agent in
    /// an offer or the operator API and not lost, or one of its instances reporting. Static
    /// agents and Polly's own start are no sign of life.
    fn seen_since(
        &self,
        r: &NodeRecord,
        since: u64,
        agents: &[Agent],
        instances: &[Instance],
    ) -> bool {
        let agent_back = agents.iter().any(|a| {
            a.id == r.id
                && !a.lost
                && matches!(a.source, AgentSource::Offer | AgentSource::Operator)
                && parse_secs(&a.last_seen).is_some_and(|t| t > since)
        });
        let m = &self.inner.manager;
        let instance_back = instances.iter().any(|i| {
            (i.instance_id == r.id || r.instance_ids.contains(&i.instance_id))
                && m.instance_heard_at(i) > since
        });
        agent_back || instance_back
    }

    fn count(&self, records: &BTreeMap<String, NodeRecord>) {
        let g = &self.inner.manager.metrics().fencing.nodes;
        for (state, name) in [
            (NodeState::Lost, "lost"),
            (NodeState::Fencing, "fencing"),
            (NodeState::Fenced, "fenced"),
        ] {
            g.get_or_create(&crate::metrics::StateLabels {
                state: name.to_string(),
            })
            .set(records.values().filter(|r| r.state == state).count() as i64);
        }
    }

    /// Check every `fencing.check_interval_secs` until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let every = Duration::from_secs_f64(self.inner.cfg.check_interval_secs);
        loop {
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "fencing check failed");
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
