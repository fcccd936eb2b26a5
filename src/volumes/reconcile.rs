//! Reconciliation: resolving unfinished intents against what the back-ends really hold, and
//! comparing the store with every driver's inventory (orphans and missing volumes), and the
//! periodic reconciler that does both. Adopting or removing an orphan is in `orphans.rs`.
//!
//! Rules, per intent kind (the back-end is the truth for side effects):
//! - create: a back-end volume with the intent's name exists → adopt it (Available);
//!   none → drop the record. Never a second create, never a silent delete.
//! - attach / detach: copy the back-end's attachments into the record.
//! - delete: remove again (idempotent), then drop the record.
//! - grow: copy the back-end's size.

use serde::{Deserialize, Serialize};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{now_secs, Error, Manager, Result};
use crate::driver::Listed;
use crate::store::{Attachment, Intent, IntentOp, Op, Volume, VolumeStatus};

/// How many intents [`Manager::resolve_pending`] resolves at once.
const RESOLVE_CONCURRENCY: usize = 16;

/// A back-end volume with no record in the store. Reported, never deleted by Polly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub service: String,
    pub driver_id: String,
    pub name: String,
    pub size_bytes: u64,
}

/// A record whose back-end volume is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub service: String,
    pub volume_id: String,
    pub driver_id: String,
    pub name: String,
}

/// Result of comparing the store with the back-ends.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub orphans: Vec<Orphan>,
    pub missing: Vec<Missing>,
    /// Services whose inventory could not be read, with the error.
    pub unreachable: Vec<(String, String)>,
}

/// The periodic reconciler's last pass, `GET /admin/reconciler`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcilerStatus {
    pub interval_secs: f64,
    pub runs: u64,
    /// RFC 3339 of the last finished pass.
    pub last_run: Option<String>,
    pub last_error: Option<String>,
    /// Intents the pass could not resolve (retried next pass).
    pub unresolved_intents: usize,
    pub report: ReconcileReport,
}

impl Manager {
    /// Resolve one intent while the caller holds its lock; errors leave it in the log for
    /// the next pass.
    pub(super) async fn resolve_logged(&self, intent: &Intent) {
        if let Err(e) = self.resolve_locked(intent).await {
            tracing::warn!(intent = intent.id, volume = %intent.volume_id, error = %e,
                "could not resolve operation intent; will retry");
        }
    }

    /// Make the store agree with the back-end for one unfinished operation.
    pub async fn resolve(&self, intent: &Intent) -> Result<()> {
        let _g = self.lock(lock_key(intent)).await;
        self.resolve_locked(intent).await
    }

    pub(super) async fn resolve_locked(&self, intent: &Intent) -> Result<()> {
        // The operation may have finished while this pass waited for its lock.
        if self.inner.store.intent(intent.id)?.is_none() {
            return Ok(());
        }
        let Some(v) = self.inner.store.volume(&intent.volume_id)? else {
            return self.write(vec![Op::DeleteIntent(intent.id)]).await;
        };
        let svc = self.service(&intent.service)?;
        match &intent.op {
            IntentOp::Create { request } => {
                let listed = self
                    .call(&svc.name, "list", svc.driver.inventory())
                    .await?
                    .into_iter()
                    .find(|d| d.name == request.name);
                let found = match listed {
                    Some(l) => {
                        match self
                            .call(&svc.name, "inspect", svc.driver.inspect(&l.id))
                            .await
                        {
                            Ok(d) => Some(d),
                            // Removed since the listing: as if it had not been listed.
                            Err(Error::NotFound { .. }) => None,
                            Err(e) => return Err(e),
                        }
                    }
                    None => None,
                };
                let ops = match found {
                    Some(d) => {
                        tracing::info!(volume = %v.id, driver_id = %d.id, "create finished by reconciler");
                        vec![
                            Op::PutVolume(super::create::created(v, d)),
                            Op::DeleteIntent(intent.id),
                        ]
                    }
                    None => {
                        tracing::info!(volume = %v.id, "create rolled back by reconciler");
                        vec![Op::DeleteVolume(v.id), Op::DeleteIntent(intent.id)]
                    }
                };
                self.write(ops).await
            }
            IntentOp::Attach { .. } | IntentOp::Detach { .. } | IntentOp::Grow { .. } => {
                let driver_id = v.driver_id.clone().unwrap_or_default();
                let d = match self
                    .call(&svc.name, "inspect", svc.driver.inspect(&driver_id))
                    .await
                {
                    Ok(d) => d,
                    Err(Error::NotFound { .. }) => {
                        // The back-end lost the volume; keep the record for the operator
                        // (it is reported as missing) and close the intent.
                        return self.write(vec![Op::DeleteIntent(intent.id)]).await;
                    }
                    Err(e) => return Err(e),
                };
                let mut done = v;
                let before = std::mem::take(&mut done.attachments);
                done.attachments = d
                    .attachments
                    .into_iter()
                    .map(|a| Attachment {
                        attached_at: before
                            .iter()
                            .find(|b| b.instance_id == a.instance_id)
                            .map(|b| b.attached_at)
                            .unwrap_or_else(now_secs),
                        instance_id: a.instance_id,
                        device: a.device,
                    })
                    .collect();
                done.size_bytes = d.size_bytes;
                self.write(vec![Op::PutVolume(done), Op::DeleteIntent(intent.id)])
                    .await
            }
            IntentOp::Delete => self.finish_delete(&v, intent).await,
        }
    }

    /// Resolve every intent in the log (at start-up, and periodically for retries).
    /// Returns how many remain unresolved. An intent whose lock is held belongs to an
    /// operation in flight, which concludes it itself (or its driver call times out and it
    /// is resolved then): it is skipped, not waited for, so a back-end call that hangs on one
    /// volume never stalls the pass for every other intent.
    ///
    /// Intents on different keys (volumes, or names for creates) are resolved concurrently,
    /// up to [`RESOLVE_CONCURRENCY`] at once; those on one key in log order under its lock.
    /// After a leader dies in a burst, every operation it had in flight left an intent, and
    /// the new leader serves only once they are resolved: one back-end round trip after
    /// another, its failover time would grow with the size of the burst.
    pub async fn resolve_pending(&self) -> Result<usize> {
        use futures::StreamExt;
        let intents = self.inner.store.intents()?;
        let mut keys: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<&Intent>> = HashMap::new();
        for i in &intents {
            let key = lock_key(i);
            if !groups.contains_key(&key) {
                keys.push(key.clone());
            }
            groups.entry(key).or_default().push(i);
        }
        let left = futures::stream::iter(keys.into_iter().map(|key| {
            let group = groups.remove(&key).unwrap_or_default();
            async move {
                let Some(_g) = self.try_lock(key) else {
                    for i in &group {
                        tracing::debug!(intent = i.id, volume = %i.volume_id,
                            "operation in flight; its intent is left to it");
                    }
                    return 0;
                };
                let mut left = 0;
                for i in group {
                    if let Err(e) = self.resolve_locked(i).await {
                        tracing::warn!(intent = i.id, volume = %i.volume_id, error = %e,
                            "could not resolve operation intent; will retry");
                        left += 1;
                    }
                }
                left
            }
        }))
        .buffer_unordered(RESOLVE_CONCURRENCY)
        .fold(0, |sum, n| async move { sum + n })
        .await;
        Ok(left)
    }

    /// Compare the store with every driver's inventory.
    ///
    /// Creates and deletes go on while a back-end is listed, so the store is read before and
    /// after the listing. A record claims a back-end volume from before the volume exists
    /// (intent first) until after it is gone, so a listed volume that no record claims after
    /// the listing is either an orphan or was deleted meanwhile: it is reported only if a
    /// second listing still has it and still no record claims it. A record is missing its
    /// back-end volume only if it was available both before and after a listing that lacks
    /// it (one created or deleted meanwhile is not).
    ///
    /// Services are listed concurrently (the report is merged in service order), so a pass
    /// (and with it a new leader's readiness) takes the slowest back-end's listing, not the
    /// sum of them. The store is read through its shared decoded list: with no write between
    /// two reads they are one list, not three copies of 100,000 records at start-up.
    pub async fn reconcile_report(&self) -> Result<ReconcileReport> {
        let parts =
            futures::future::join_all(self.services().map(|s| self.service_report(s))).await;
        let mut report = ReconcileReport::default();
        for part in parts {
            let part = part?;
            report.orphans.extend(part.orphans);
            report.missing.extend(part.missing);
            report.unreachable.extend(part.unreachable);
        }
        Ok(report)
    }

    /// [`Manager::reconcile_report`] for one service.
    async fn service_report(&self, s: &super::Service) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        {
            let before = self.inner.store.volumes_shared()?;
            let inventory = match self.call(&s.name, "list", s.driver.inventory()).await {
                Ok(l) => l,
                Err(e) => {
                    report.unreachable.push((s.name.clone(), e.to_string()));
                    return Ok(report);
                }
            };
            let after = self.inner.store.volumes_shared()?;
            let mut orphans = unclaimed(&s.name, &inventory, &after);
            if !orphans.is_empty() {
                let again = match self.call(&s.name, "list", s.driver.inventory()).await {
                    Ok(l) => l,
                    Err(e) => {
                        report.unreachable.push((s.name.clone(), e.to_string()));
                        return Ok(report);
                    }
                };
                let latest = self.inner.store.volumes_shared()?;
                let still = unclaimed(&s.name, &again, &latest);
                orphans.retain(|o| still.contains(o));
            }
            report.orphans.extend(orphans);
            let available = |vols: &[Arc<Volume>], id: &str, did: &str| {
                vols.iter().any(|v| {
                    v.id == id
                        && v.status == VolumeStatus::Available
                        && v.driver_id.as_deref() == Some(did)
                })
            };
            // Sets, not scans: with 100,000 volumes a scan per volume was 10^10 comparisons
            // per pass (minutes at start-up, before readiness).
            let present: HashSet<&str> = inventory.iter().map(|d| d.id.as_str()).collect();
            for v in before.iter().filter(|v| v.service == s.name) {
                if let Some(did) = &v.driver_id {
                    if !present.contains(did.as_str())
                        && available(&before, &v.id, did)
                        && available(&after, &v.id, did)
                    {
                        report.missing.push(Missing {
                            service: s.name.clone(),
                            volume_id: v.id.clone(),
                            driver_id: did.clone(),
                            name: v.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(report)
    }
}

/// The volumes of `inventory` (service `service`'s back-end) that no record of `vols` claims:
/// by driver id, or by name for a create in flight (no driver id yet).
fn unclaimed(service: &str, inventory: &[Listed], vols: &[Arc<Volume>]) -> Vec<Orphan> {
    let mine: Vec<_> = vols.iter().filter(|v| v.service == service).collect();
    let known_ids: HashSet<&str> = mine.iter().filter_map(|v| v.driver_id.as_deref()).collect();
    let creating: HashSet<&str> = mine
        .iter()
        .filter(|v| v.status == VolumeStatus::Creating)
        .map(|v| v.name.as_str())
        .collect();
    inventory
        .iter()
        .filter(|d| !known_ids.contains(d.id.as_str()) && !creating.contains(d.name.as_str()))
        .map(|d| Orphan {
            service: service.to_string(),
            driver_id: d.id.clone(),
            name: d.name.clone(),
            size_bytes: d.size_bytes,
        })
        .collect()
}

impl Manager {
    /// This Polly just became the leader (`[ha]`): forget cached store reads and let every
    /// driver reload its in-memory view of its back-end, which the previous leader may have
    /// changed. Run before [`Manager::reconcile_pass`].
    pub async fn take_over(&self) -> Result<()> {
        self.inner.store.forget_cache();
        for s in self.inner.services.values() {
            s.driver.take_over().await.map_err(|e| Error::Driver {
                service: s.name.clone(),
                source: e,
            })?;
        }
        Ok(())
    }

    /// One pass of the periodic reconciler: resolve every intent, then compare the store
    /// with every back-end's inventory. Nothing is deleted or adopted: orphans and missing
    /// volumes are recorded (status, metrics, log) for an operator.
    pub async fn reconcile_pass(&self, interval: Duration) -> Result<ReconcilerStatus> {
        let m = &self.inner.metrics.reconciler;
        m.interval_seconds.set(interval.as_secs_f64());
        let res = async {
            let left = self.resolve_pending().await?;
            Ok::<_, Error>((left, self.reconcile_report().await?))
        }
        .await;
        let mut st = self.reconciler_status().unwrap_or_default();
        st.interval_secs = interval.as_secs_f64();
        st.runs += 1;
        st.last_run =
            Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
        let outcome = match &res {
            Ok((left, report)) => {
                for o in &report.orphans {
                    if !st.report.orphans.contains(o) {
                        tracing::warn!(service = %o.service, driver_id = %o.driver_id, name = %o.name,
                            "orphan: back-end volume with no record (not deleted; see `polly orphan ls`)");
                    }
                }
                for x in &report.missing {
                    if !st.report.missing.contains(x) {
                        tracing::warn!(service = %x.service, volume = %x.volume_id, driver_id = %x.driver_id,
                            "missing: record whose back-end volume is gone");
                    }
                }
                for (service, e) in &report.unreachable {
                    tracing::warn!(%service, error = %e, "reconciler could not list the service's volumes");
                }
                st.unresolved_intents = *left;
                st.report = report.clone();
                st.last_error = (*left > 0)
                    .then(|| format!("{left} operation intents unresolved; retrying next pass"));
                if *left > 0 || !report.unreachable.is_empty() {
                    "partial"
                } else {
                    "ok"
                }
            }
            Err(e) => {
                st.last_error = Some(e.to_string());
                "error"
            }
        };
        m.runs
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        m.last_run_seconds.set(now_secs() as i64);
        m.orphans.set(st.report.orphans.len() as i64);
        m.missing.set(st.report.missing.len() as i64);
        m.unresolved_intents.set(st.unresolved_intents as i64);
        m.unreachable_services
            .set(st.report.unreachable.len() as i64);
        *self
            .inner
            .last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(st.clone());
        res.map(|_| st)
    }

    /// The periodic reconciler's last pass, if one ran.
    pub fn reconciler_status(&self) -> Option<ReconcilerStatus> {
        self.inner
            .last_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Run a pass every `interval` until `token` is cancelled (the first one at once: the
    /// caller runs it at start-up before readiness).
    pub async fn run_reconciler(self, interval: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(interval) => {
                    match self.reconcile_pass(interval).await {
                        Ok(st) => if let Some(e) = &st.last_error {
                            tracing::warn!(error = %e, "reconciler pass incomplete");
                        },
                        Err(e) => tracing::warn!(error = %e, "reconciler pass failed"),
                    }
                }
            }
        }
    }
}

/// The same lock the operation itself takes: creates by name, the rest by volume id.
fn lock_key(intent: &Intent) -> String {
    match &intent.op {
        IntentOp::Create { request } => format!("name:{}/{}", intent.service, request.name),
        _ => format!("id:{}", intent.volume_id),
    }
}
