//! The capacity poller: a background worker that asks every service's driver for capacity per
//! pool and zone every `poll_interval_secs`, records when each reading was taken, and on a
//! driver error or timeout backs off (doubling, capped) and marks the service's pools
//! unavailable, which rescinds their offers. The storage-offer endpoint builds its pools from
//! these readings, never from live driver calls.
//!
//! Between polls the manager keeps each pool's known free capacity current itself: a volume
//! created, grown or deleted through any surface changes it at once (`account`), and the next
//! reading replaces it. Consumption that a reading may have missed (recorded after its poll
//! started) is applied to that reading again; space freed meanwhile is not (it returns with the
//! next poll), so a race with a poll can only make Polly offer less, never more, than is free.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Manager;
use crate::driver::PoolCapacity;

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
/// created or grown; the manager drops the claim when it accounts for the new bytes, in the
/// same step, so the caller never counts them twice or not at all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CapacityClaim {
    /// Volume `name` is being created in `service`.
    Create { service: String, name: String },
    /// Volume `volume_id` is being grown.
    Grow { volume_id: String },
}

/// Readings plus what happened since: one lock, so a reader sees them consistently.
#[derive(Debug, Default)]
pub(super) struct Capacity {
    readings: BTreeMap<String, CapacityReading>,
    /// Bumped at the start of every poll and by every change.
    seq: u64,
    /// Per service, the `seq` at which the poll behind its current reading started.
    read_seq: BTreeMap<String, u64>,
    /// Bytes consumed, kept until a reading from a poll that started after them.
    consumed: Vec<Consumed>,
    claims: BTreeSet<CapacityClaim>,
}

#[derive(Debug)]
struct Consumed {
    seq: u64,
    service: String,
    pool: Option<String>,
    zone: Option<String>,
    bytes: u64,
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

    /// The caller counts the capacity of a create or grow itself until the manager has
    /// accounted for it (see [`CapacityClaim`]).
    pub fn claim_capacity(&self, claim: CapacityClaim) {
        self.capacity().claims.insert(claim);
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
        if delta < 0 {
            c.consumed.push(Consumed {
                seq,
                service: service.to_string(),
                pool: pool.map(str::to_string),
                zone: zone.map(str::to_string),
                bytes: delta.unsigned_abs(),
            });
        }
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
            consumed,
            ..
        } = &mut *c;
        let r = readings.entry(service.to_string()).or_default();
        let ok = res.is_ok();
        match res {
            Ok(pools) => {
                if !stale {
                    r.pools = pools;
                    read_seq.insert(service.to_string(), started);
                    // What was consumed before the poll started is in the reading; what came
                    // after may not be: count it again (at worst twice, never not at all).
                    consumed.retain(|x| x.service != service || x.seq > started);
                    for x in consumed.iter().filter(|x| x.service == service) {
                        for p in matching(&mut r.pools, x.pool.as_deref(), x.zone.as_deref()) {
                            p.free_bytes = p.free_bytes.saturating_sub(x.bytes);
                        }
                    }
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
