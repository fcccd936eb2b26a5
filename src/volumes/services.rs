//! Services with their live capacity and what Polly provisioned in each, `polly service ls`.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Manager, Result};
use crate::driver::PoolCapacity;

/// A service with its live capacity, for `polly service ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub driver: String,
    pub capacity: Vec<PoolCapacity>,
    /// Set when the driver could not report capacity.
    pub capacity_error: Option<String>,
    pub volumes: usize,
    pub provisioned_bytes: u64,
    /// The capacity poller's last reading of this service (RFC 3339), if any.
    #[serde(default)]
    pub polled_at: Option<String>,
    /// The poller's verdict: false before the first good reading and after a failed one
    /// (its pools are then not offered).
    #[serde(default)]
    pub available: bool,
    /// The poller's last error, while unavailable.
    #[serde(default)]
    pub poll_error: Option<String>,
}

impl Manager {
    /// Services with their live capacity.
    pub async fn service_infos(&self) -> Result<Vec<ServiceInfo>> {
        let vols = self.inner.store.volumes()?;
        let readings = self.capacity_readings();
        let mut out = Vec::new();
        for s in self.inner.services.values() {
            let (capacity, capacity_error) =
                match self.call(&s.name, "capacity", s.driver.capacity()).await {
                    Ok(c) => (c, None),
                    Err(e) => (vec![], Some(e.to_string())),
                };
            let mine: Vec<_> = vols.iter().filter(|v| v.service == s.name).collect();
            let reading = readings.get(&s.name);
            out.push(ServiceInfo {
                polled_at: reading.and_then(|r| r.read_at_ms).map(|ms| {
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                        .to_string()
                }),
                available: reading.is_some_and(|r| r.available),
                poll_error: reading.and_then(|r| r.last_error.clone()),
                name: s.name.clone(),
                driver: s.driver.kind().to_string(),
                capacity,
                capacity_error,
                volumes: mine.len(),
                provisioned_bytes: mine.iter().map(|v| v.size_bytes).sum(),
            });
        }
        Ok(out)
    }
}
