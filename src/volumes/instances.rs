//! Instances (hosts) that reported themselves: recording them (ids and hostnames checked
//! first, see `idents`) without a durable write per request, and when each was last heard from.

use std::collections::BTreeMap;

use super::idents::{check_hostname, check_instance_id};
use super::{now_secs, Manager, Result};
use crate::store::{Instance, Op};

/// How stale an instance's `last_seen` may get before a report from it is written again.
pub const INSTANCE_SEEN_REFRESH_SECS: u64 = 60;

impl Manager {
    /// Record an instance a client reported (libStorage header, admin attach).
    pub async fn record_instance(
        &self,
        driver: &str,
        instance_id: &str,
        hostname: Option<String>,
        fields: BTreeMap<String, String>,
    ) -> Result<()> {
        check_instance_id(instance_id)?;
        if let Some(h) = &hostname {
            check_hostname(h)?;
        }
        let inst = Instance {
            driver: driver.to_string(),
            instance_id: instance_id.to_string(),
            hostname,
            last_seen: now_secs(),
            fields,
        };
        self.inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance_id.to_string(), inst.last_seen);
        if let Some(known) = self.inner.store.instance(driver, instance_id)? {
            // REX-Ray agents send their instance id on nearly every request: refresh
            // `last_seen` at most once a minute rather than pay a durable write each time.
            let fresh = inst.last_seen.saturating_sub(known.last_seen) < INSTANCE_SEEN_REFRESH_SECS;
            let same = Instance {
                last_seen: known.last_seen,
                ..inst.clone()
            } == known;
            if same && fresh {
                return Ok(());
            }
        }
        self.write(vec![Op::PutInstance(inst)]).await
    }

    /// Record a `polly node` agent's report of itself, once per driver kind the services
    /// use (instance records are keyed by kind, as REX-Ray reports them), so zone checks,
    /// Mesos agent mapping and fencing see a node agent as they see a REX-Ray agent. The
    /// zone, when given, is the `zone` field.
    pub async fn record_node(
        &self,
        instance_id: &str,
        hostname: Option<String>,
        zone: Option<String>,
        mut fields: BTreeMap<String, String>,
    ) -> Result<()> {
        check_instance_id(instance_id)?;
        if let Some(h) = &hostname {
            check_hostname(h)?;
        }
        if let Some(z) = zone.filter(|z| !z.is_empty()) {
            fields.insert("zone".into(), z);
        }
        let mut kinds: Vec<String> = self
            .inner
            .services
            .values()
            .map(|s| s.driver.kind().to_string())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            self.record_instance(&kind, instance_id, hostname.clone(), fields.clone())
                .await?;
        }
        Ok(())
    }

    /// Unix seconds this process started: no report could be heard before.
    pub fn started_at(&self) -> u64 {
        self.inner.started_at
    }

    /// When an instance was last heard from (unix seconds): the later of its stored
    /// `last_seen` (refreshed at most once a minute) and this process's in-memory note.
    pub fn instance_heard_at(&self, i: &Instance) -> u64 {
        let mem = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&i.instance_id)
            .copied()
            .unwrap_or(0);
        i.last_seen.max(mem)
    }
}
