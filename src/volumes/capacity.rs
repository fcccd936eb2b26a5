//! The capacity poller: a background worker that asks every service's driver for capacity per
//! pool and zone every `poll_interval_secs`, records when each reading was taken, and on a
//! driver error or timeout backs off (doubling, capped) and marks the service's pools
//! unavailable, which rescinds their offers. The storage-offer endpoint builds its pools from
//! these readings, never from live driver calls.

use std::collections::BTreeMap;
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
    /// The poller's readings, by service name.
    pub fn capacity_readings(&self) -> BTreeMap<String, CapacityReading> {
        self.inner
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Poll one service now and record the outcome; true when it answered.
    pub async fn poll_capacity(&self, service: &str, interval: Duration) -> bool {
        let Ok(svc) = self.service(service) else {
            return false;
        };
        let res = self
            .call(&svc.name, "capacity", svc.driver.capacity())
            .await;
        let now = now_ms();
        let mut readings = self
            .inner
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let r = readings.entry(service.to_string()).or_default();
        let ok = res.is_ok();
        match res {
            Ok(pools) => {
                r.pools = pools;
                r.read_at_ms = Some(now);
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
