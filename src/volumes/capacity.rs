//! The capacity poller: a background worker that asks every service's driver for capacity per
//! pool and zone every `poll_interval_secs`, records when each reading was taken, and on a
//! driver error or timeout backs off (doubling, capped) and marks the service's pools
//! unavailable, which rescinds their offers. The storage-offer endpoint builds its pools from
//! these readings, never from live driver calls.
//!
//! Between polls the manager keeps each pool's known free capacity current itself: a volume
//! created, grown or deleted through any surface changes it at once (`account`), and the next
//! reading replaces it. A reading from a poll that overlapped such a change (its driver call,
//! up to its accounting) may or may not show it, so it is set aside (the known value, exact for Polly's own changes, stays)
//! unless that happened `MAX_SET_ASIDE` times in a row; then it is taken with the consumption
//! it may have missed applied again (and space freed meanwhile not), so a race with a poll can
//! only make Polly offer less, never more, than is free.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Manager;
use crate::driver::PoolCapacity;
use crate::store::Volume;

/// Readings in a row set aside because Polly changed the service's volumes during the poll;
/// the next such one is taken (conservatively), so changes made outside Polly still show.
const MAX_SET_ASIDE: u32 = 3;

/// Longest wait between two polls of a failing service.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The poller's last word on one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReading {
    /// Pools of the last successful reading (kept while unavailable, for display).
    pub pools: Vec<PoolCapacity>,
    /// Unix milliseconds of the last successful reading.
    pub read_at_ms: Option<u64>,
    /// False until the first successful reading, and after a failed one.
    pub available: bool,
    pub last_error: Option<String>,
    /// Failed polls in a row.
    pub failures: u32,
    /// Unix milliseconds of the next poll.
    pub next_poll_ms: u64,
}

/// Capacity that a caller (the storage-offer endpoint) counts itself while a volume is being
/// created or grown. Passed to that create or grow, it is dropped in the same step as the
/// manager accounts for the new bytes, so the caller never counts them twice or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapacityClaim(u64);

/// Readings plus what happened since: one lock, so a reader sees them consistently.
#[derive(Debug, Default)]
pub(super) struct Capacity {
    readings: BTreeMap<String, CapacityReading>,
    /// Bumped at the start of every poll and by every change.
    seq: u64,
    /// Per service, the `seq` at which the poll behind its current reading started.
    read_seq: BTreeMap<String, u64>,
    /// Changes, kept until a reading from a poll that started after them.
    changes: Vec<Change>,
    /// Per service, readings set aside in a row.
    set_aside: BTreeMap<String, u32>,
    claims: BTreeSet<CapacityClaim>,
    next_claim: u64,
    /// Per service, driver calls under way that may change its free space.
    busy: BTreeMap<String, u32>,
}

/// A driver call that may change a service's free space is under way while this lives.
pub(super) struct ChangeGuard {
    manager: Manager,
    service: String,
}

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        let mut c = self.manager.capacity();
        if let Some(n) = c.busy.get_mut(&self.service) {
            *n = n.saturating_sub(1);
        }
    }
}

#[derive(Debug)]
struct Change {
    seq: u64,
    service: String,
    pool: Option<String>,
    zone: Option<String>,
    /// Negative: consumed.
    delta: i64,
}

/// Pools of `pools` a volume in `pool`/`zone` may live in (`None` matches any).
fn matching<'a>(
    pools: &'a mut [PoolCapacity],
    pool: Option<&'a str>,
    zone: Option<&'a str>,
) -> impl Iterator<Item = &'a mut PoolCapacity> {
    pools.iter_mut().filter(move |p| {
        pool.is_none_or(|x| p.pool == x) && zone.is_none_or(|z| p.zone.as_deref() == Some(z))
    })
}

impl Capacity {
    /// Apply `delta` bytes (negative: consumed) to a service's known pools. Consumption goes to
    /// every pool the volume may live in; freed space only to a single certain pool.
    fn apply(&mut self, service: &str, pool: Option<&str>, zone: Option<&str>, delta: i64) {
        let Some(r) = self.readings.get_mut(service) else {
            return;
        };
        let bytes = delta.unsigned_abs();
        if delta < 0 {
            for p in matching(&mut r.pools, pool, zone) {
                p.free_bytes = p.free_bytes.saturating_sub(bytes);
            }
        } else {
            let mut m: Vec<_> = matching(&mut r.pools, pool, zone).collect();
            if let [p] = m.as_mut_slice() {
                p.free_bytes = p.free_bytes.saturating_add(bytes).min(p.total_bytes);
            }
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Delay before the next poll after `failures` failed polls in a row.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let factor = 1u32 << failures.min(16);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

/// Bytes as a signed delta (sizes are at most `MAX_SIZE_BYTES`, far below `i64::MAX`).
pub(super) fn signed(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Manager {
    fn capacity(&self) -> std::sync::MutexGuard<'_, Capacity> {
        self.inner
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The poller's readings, by service name, with the volumes created, grown and deleted
    /// since each reading accounted for.
    pub fn capacity_readings(&self) -> BTreeMap<String, CapacityReading> {
        self.capacity().readings.clone()
    }

    /// [`Manager::capacity_readings`] and the claims not yet accounted for in them, read
    /// together.
    pub fn capacity_view(&self) -> (BTreeMap<String, CapacityReading>, BTreeSet<CapacityClaim>) {
        let c = self.capacity();
        (c.readings.clone(), c.claims.clone())
    }

    /// Call before a driver call that may change `service`'s free space (create, grow,
    /// remove), and keep the guard until its change is accounted: a reading taken meanwhile
    /// may or may not show the change.
    pub(super) fn begin_change(&self, service: &str) -> ChangeGuard {
        *self.capacity().busy.entry(service.to_string()).or_default() += 1;
        ChangeGuard {
            manager: self.clone(),
            service: service.to_string(),
        }
    }

    /// A new claim: the caller counts the capacity of a create or grow itself until the
    /// manager has accounted for it (see [`CapacityClaim`]).
    pub fn claim_capacity(&self) -> CapacityClaim {
        let mut c = self.capacity();
        c.next_claim += 1;
        let claim = CapacityClaim(c.next_claim);
        c.claims.insert(claim);
        claim
    }

    /// The operation behind `claim` has ended (or never ran); forget it.
    pub fn drop_capacity_claim(&self, claim: &CapacityClaim) {
        self.capacity().claims.remove(claim);
    }

    /// A volume in `service`/`pool`/`zone` changed the back-end's free space by `delta` bytes
    /// (negative: consumed): update the known capacity now, and drop `claim`, in one step.
    pub(super) fn account(
        &self,
        service: &str,
        pool: Option<&str>,
        zone: Option<&str>,
        delta: i64,
        claim: Option<&CapacityClaim>,
    ) {
        let mut c = self.capacity();
        if let Some(claim) = claim {
            c.claims.remove(claim);
        }
        if delta == 0 {
            return;
        }
        c.seq += 1;
        let seq = c.seq;
        c.apply(service, pool, zone, delta);
        c.changes.push(Change {
            seq,
            service: service.to_string(),
            pool: pool.map(str::to_string),
            zone: zone.map(str::to_string),
            delta,
        });
    }

    /// Tell the capacity ledger (`capacity.rs`) that `v` changed its pool's free space.
    pub(super) fn account_volume(&self, v: &Volume, delta: i64, claim: Option<&CapacityClaim>) {
        self.account(
            &v.service,
            v.pool.as_deref(),
            v.zone.as_deref(),
            delta,
            claim,
        );
    }

    /// Poll one service now and record the outcome; true when it answered.
    pub async fn poll_capacity(&self, service: &str, interval: Duration) -> bool {
        let Ok(svc) = self.service(service) else {
            return false;
        };
        let started = {
            let mut c = self.capacity();
            c.seq += 1;
            c.seq
        };
        let res = self
            .call(&svc.name, "capacity", svc.driver.capacity())
            .await;
        let now = now_ms();
        let mut c = self.capacity();
        // A reading from a poll that started before the current one's is older: keep ours.
        let stale = c.read_seq.get(service).is_some_and(|&s| s > started);
        let Capacity {
            readings,
            read_seq,
            changes,
            set_aside,
            busy,
            ..
        } = &mut *c;
        let r = readings.entry(service.to_string()).or_default();
        let ok = res.is_ok();
        match res {
            Ok(pools) => {
                // What changed before the poll started is in the reading; what changed while
                // it ran may or may not be.
                changes.retain(|x| x.service != service || x.seq > started);
                let during = changes.iter().filter(|x| x.service == service);
                let unsure =
                    during.clone().next().is_some() || busy.get(service).is_some_and(|&n| n > 0);
                let aside = set_aside.entry(service.to_string()).or_default();
                if unsure && !r.pools.is_empty() && *aside < MAX_SET_ASIDE {
                    *aside += 1;
                } else if !stale {
                    r.pools = pools;
                    // Consumption it may have missed counts again (at worst twice, never
                    // not at all); space freed meanwhile waits for the next reading.
                    for x in during.filter(|x| x.delta < 0) {
                        let bytes = x.delta.unsigned_abs();
                        for p in matching(&mut r.pools, x.pool.as_deref(), x.zone.as_deref()) {
                            p.free_bytes = p.free_bytes.saturating_sub(bytes);
                        }
                    }
                    *aside = 0;
                    read_seq.insert(service.to_string(), started);
                    r.read_at_ms = Some(now);
                }
                r.available = true;
                r.last_error = None;
                r.failures = 0;
            }
            Err(e) => {
                if r.available || r.failures == 0 {
                    tracing::warn!(service, error = %e, "capacity poll failed; pools marked unavailable");
                }
                r.available = false;
                r.last_error = Some(e.to_string());
                r.failures = r.failures.saturating_add(1);
            }
        }
        r.next_poll_ms = now + backoff(interval, r.failures).as_millis() as u64;
        let r = r.clone();
        drop(c);
        let m = &self.inner.metrics;
        m.capacity_poll(service, ok);
        m.capacity_available(service, r.available);
        for p in &r.pools {
            m.capacity_free(service, &p.pool, p.zone.as_deref(), p.free_bytes);
        }
        ok
    }

    /// Poll every service that is due; returns how many were polled.
    pub async fn poll_due_capacity(&self, interval: Duration) -> usize {
        let now = now_ms();
        let due: Vec<String> = {
            let readings = self.capacity_readings();
            self.inner
                .services
                .keys()
                .filter(|s| readings.get(*s).is_none_or(|r| r.next_poll_ms <= now))
                .cloned()
                .collect()
        };
        let polls = due.iter().map(|s| self.poll_capacity(s, interval));
        futures::future::join_all(polls).await;
        due.len()
    }

    /// Run the poller until `token` is cancelled. The first pass runs at once.
    pub async fn run_capacity_poller(self, interval: Duration, token: CancellationToken) {
        // Wake often enough to honour each service's own schedule (backoff differs per service).
        let tick = interval
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(50));
        loop {
            self.poll_due_capacity(interval).await;
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let i = Duration::from_secs(10);
        assert_eq!(backoff(i, 0), i);
        assert_eq!(backoff(i, 1), Duration::from_secs(20));
        assert_eq!(backoff(i, 2), Duration::from_secs(40));
        assert_eq!(backoff(i, 30), MAX_BACKOFF);
        // An interval above the cap is never shortened by a failure.
        assert_eq!(
            backoff(Duration::from_secs(900), 3),
            Duration::from_secs(900)
        );
    }
}
