//! RBD capacity: per pool, `ceph df`'s `stored + max_avail` and `max_avail`, capped by
//! `quota_bytes` minus what Polly's images provision; the quota check of a create or a grow.

use serde_json::Value;

use super::{Error, PoolCapacity, RbdDriver, Result};

impl RbdDriver {
    async fn provisioned(&self, pool: &str) -> Result<u64> {
        Ok(self
            .images()
            .await?
            .iter()
            .filter(|(i, _)| i.pool == pool)
            .map(|(i, _)| i.size)
            .fold(0, u64::saturating_add))
    }

    pub(super) async fn capacities(&self) -> Result<Vec<PoolCapacity>> {
        let df: Value = serde_json::from_str(&self.cli("ceph", &["df", "--format", "json"]).await?)
            .map_err(|e| Error::Io(format!("ceph df: unexpected output: {e}")))?;
        let mut out = Vec::new();
        for pool in &self.cfg.pools {
            let stats = df["pools"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == pool.as_str()))
                .map(|p| &p["stats"])
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "ceph df reports no pool {pool:?} (does it exist, and is a mgr running?)"
                    ))
                })?;
            let free = stats["max_avail"].as_u64().unwrap_or(0);
            let mut total = stats["stored"].as_u64().unwrap_or(0).saturating_add(free);
            let mut free_bytes = free;
            if let Some(quota) = self.cfg.quota_bytes {
                let used = self.provisioned(pool).await?;
                total = total.min(quota);
                free_bytes = free_bytes.min(quota.saturating_sub(used));
            }
            out.push(PoolCapacity {
                pool: pool.clone(),
                zone: self.cfg.zone.clone(),
                total_bytes: total,
                free_bytes,
            });
        }
        Ok(out)
    }

    pub(super) async fn check_quota(&self, pool: &str, wanted: u64) -> Result<()> {
        let Some(quota) = self.cfg.quota_bytes else {
            return Ok(());
        };
        let free = quota.saturating_sub(self.provisioned(pool).await?);
        if wanted > free {
            return Err(Error::InsufficientCapacity {
                pool: pool.to_string(),
                free_bytes: free,
                wanted_bytes: wanted,
            });
        }
        Ok(())
    }
}
