//! Growing a volume: the intent holds the target size; a retried grow to the same size is a
//! no-op and a smaller size is refused.

use super::capacity::signed;
use super::{is_definite, CapacityClaim, Error, Manager, Result, MAX_SIZE_BYTES};
use crate::failpoints::crash_point;
use crate::store::{IntentOp, Op, Volume};

impl Manager {
    /// Grow a volume to `size_bytes`. The same size again is a no-op (so a retried grow is
    /// safe); a smaller size is invalid. The intent holds the target size, and a crash or an
    /// uncertain failure is resolved by reading the back-end's size.
    pub async fn grow(&self, id: &str, size_bytes: u64) -> Result<Volume> {
        self.grow_claimed(id, size_bytes, None).await
    }

    /// [`Manager::grow`], dropping `claim` when the added bytes are counted in the pool's
    /// known free capacity.
    pub async fn grow_claimed(
        &self,
        id: &str,
        size_bytes: u64,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.grow_inner(id, size_bytes, claim).await;
        self.outcome("grow", &res);
        res
    }

    async fn grow_inner(
        &self,
        id: &str,
        size_bytes: u64,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        if size_bytes > MAX_SIZE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "size_bytes {size_bytes} is over the largest volume, {MAX_SIZE_BYTES}"
            )));
        }
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        if size_bytes == v.size_bytes {
            // Grown before: its bytes are known already.
            if let Some(c) = &claim {
                self.drop_capacity_claim(c);
            }
            return Ok(v);
        }
        if size_bytes < v.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "volume {id} has {} bytes; it cannot shrink to {size_bytes}",
                v.size_bytes
            )));
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(&v, IntentOp::Grow { size_bytes })?;
        crash_point!("volume.grow.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.grow.after_intent");
        let _changing = self.begin_change(&svc.name);
        let res = self
            .call(&svc.name, "grow", svc.driver.grow(&driver_id, size_bytes))
            .await;
        crash_point!("volume.grow.after_driver");
        let before = v.clone();
        let uncertain = matches!(&res, Err(e) if !is_definite(e));
        if let Ok(dv) = &res {
            let delta = signed(dv.size_bytes) - signed(v.size_bytes);
            self.account_volume(&v, -delta, claim.as_ref());
        }
        let out = self
            .conclude(&intent, res, |dv| {
                let mut done = v;
                done.size_bytes = dv.size_bytes;
                done
            })
            .await;
        if uncertain {
            // Resolution copied the back-end's size into the record: account what it grew.
            if let Ok(Some(now)) = self.inner.store.volume(&before.id) {
                let delta = signed(now.size_bytes) - signed(before.size_bytes);
                self.account_volume(&before, -delta.max(0), claim.as_ref());
            }
        }
        crash_point!("volume.grow.after_record");
        out
    }
}
