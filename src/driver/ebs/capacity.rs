//! EBS capacity: the configured quota per zone and volume type minus what Polly's volumes
//! provision there (EBS has no "free space"), the quota check of a create or a grow, and the
//! grow itself.

use tokio::time::Instant;

use super::{api_err, DriverVolume, EbsDriver, EbsQuota, Error, PoolCapacity, Result, GIB};

impl EbsDriver {
    fn quota_gib(&self, zone: &str, volume_type: &str) -> u64 {
        let for_type = |q: &&EbsQuota| q.volume_type == volume_type;
        self.cfg
            .quotas
            .iter()
            .filter(for_type)
            .find(|q| q.zone.as_deref() == Some(zone))
            .or_else(|| {
                self.cfg
                    .quotas
                    .iter()
                    .filter(for_type)
                    .find(|q| q.zone.is_none())
            })
            .map_or(self.cfg.default_quota_gib, |q| q.gib)
    }

    /// Pools served: the default type, then every type with a quota.
    fn pool_types(&self) -> Vec<String> {
        let mut out = vec![self.cfg.default_type.clone()];
        for q in &self.cfg.quotas {
            if !out.contains(&q.volume_type) {
                out.push(q.volume_type.clone());
            }
        }
        out
    }

    async fn provisioned_gib(&self, zone: &str, volume_type: &str) -> Result<u64> {
        // Filtered here rather than by EC2 filters: moto lacks some (`volume-type`).
        Ok(self
            .owned_volumes()
            .await?
            .iter()
            .filter(|v| v.zone == zone && v.volume_type == volume_type)
            .map(|v| v.size_gib)
            .fold(0, u64::saturating_add))
    }

    pub(super) async fn check_quota(
        &self,
        zone: &str,
        volume_type: &str,
        more_gib: u64,
    ) -> Result<()> {
        let quota = self.quota_gib(zone, volume_type);
        let free = quota.saturating_sub(self.provisioned_gib(zone, volume_type).await?);
        if more_gib > free {
            return Err(Error::InsufficientCapacity {
                pool: volume_type.to_string(),
                free_bytes: free.saturating_mul(GIB),
                wanted_bytes: more_gib.saturating_mul(GIB),
            });
        }
        Ok(())
    }

    /// Every served pool (volume type) in every zone, with its quota and what is left of it.
    pub(super) async fn pool_capacity(&self) -> Result<Vec<PoolCapacity>> {
        let vols = self.owned_volumes().await?;
        let mut out = Vec::new();
        for t in self.pool_types() {
            for z in &self.cfg.zones {
                let total = self.quota_gib(z, &t);
                let used = vols
                    .iter()
                    .filter(|v| &v.zone == z && v.volume_type == t)
                    .map(|v| v.size_gib)
                    .fold(0, u64::saturating_add);
                out.push(PoolCapacity {
                    pool: t.clone(),
                    zone: Some(z.clone()),
                    total_bytes: total.saturating_mul(GIB),
                    free_bytes: total.saturating_sub(used).saturating_mul(GIB),
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn grow_volume(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let _lock = self.volume_locks.lock(id).await;
        let v = self.get(id).await?;
        let gib = new_size_bytes.div_ceil(GIB);
        if gib < v.size_gib {
            return Err(Error::InvalidArgument(format!(
                "volume {id}: cannot shrink an EBS volume from {} to {gib} GiB",
                v.size_gib
            )));
        }
        if gib == v.size_gib {
            return Ok(self.to_driver(&v));
        }
        {
            let _pool = self
                .pool_locks
                .lock(&format!("{}/{}", v.zone, v.volume_type))
                .await;
            self.check_quota(&v.zone, &v.volume_type, gib - v.size_gib)
                .await?;
            self.call("ModifyVolume", self.api.modify_volume(id, gib))
                .await
                .map_err(|e| api_err("ModifyVolume", e))?;
        }
        let deadline = Instant::now() + self.wait_limit();
        loop {
            let now = self.get(id).await?;
            if now.size_gib >= gib {
                return Ok(self.to_driver(&now));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "EBS volume {id} still shows {} GiB after {}s of modification to {gib} GiB",
                    now.size_gib, self.cfg.attach_timeout_secs
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }
}
