//! EBS snapshots: made once per name (found again by tag), listed and removed; the transient
//! snapshot behind `copy` is made the same way.

use std::collections::BTreeMap;

use super::model::{Ec2Snapshot, Filter, Query};
use super::{api_err, valid_id, EbsDriver, Error, Result, Snapshot, GIB, TAG_OWNER, TAG_SNAPSHOT};

impl EbsDriver {
    fn snapshot_of(&self, s: &Ec2Snapshot) -> Snapshot {
        Snapshot {
            id: s.id.clone(),
            name: s.tags.get(TAG_SNAPSHOT).cloned().unwrap_or_default(),
            volume_id: s.volume_id.clone(),
            size_bytes: s.size_gib.saturating_mul(GIB),
            created_at: s.start_time,
        }
    }

    pub(super) async fn find_snapshot(&self, snapshot_id: &str) -> Result<Option<Ec2Snapshot>> {
        if !valid_id(snapshot_id, "snap-") {
            return Ok(None);
        }
        match self
            .call(
                "DescribeSnapshots",
                self.api.describe_snapshots(&Query::ids([snapshot_id])),
            )
            .await
        {
            Ok(p) => Ok(p
                .items
                .into_iter()
                .find(|s| s.id == snapshot_id && self.is_ours(&s.tags))),
            Err(e) if e.is("InvalidSnapshot.NotFound") => Ok(None),
            Err(e) => Err(api_err("DescribeSnapshots", e)),
        }
    }

    /// A snapshot of `volume_id` tagged `tag` = `value`, made once.
    pub(super) async fn snapshot_tagged(
        &self,
        volume_id: &str,
        tag: &str,
        value: &str,
    ) -> Result<Ec2Snapshot> {
        let _lock = self
            .name_locks
            .lock(&format!("{volume_id}@{tag}={value}"))
            .await;
        self.get(volume_id).await?;
        let existing = self
            .snapshots_where(vec![
                self.owner_filter(),
                Filter::new(format!("tag:{tag}"), value),
                Filter::new("volume-id", volume_id),
            ])
            .await?
            .into_iter()
            .filter(|s| {
                s.volume_id == volume_id && s.tags.get(tag).map(String::as_str) == Some(value)
            })
            .min_by(|a, b| a.id.cmp(&b.id));
        if let Some(s) = existing {
            return Ok(s);
        }
        let tags = BTreeMap::from([
            (TAG_OWNER.to_string(), self.owner.clone()),
            (tag.to_string(), value.to_string()),
        ]);
        self.call("CreateSnapshot", self.api.create_snapshot(volume_id, &tags))
            .await
            .map_err(|e| match e {
                e if e.is("InvalidVolume.NotFound") => Error::NotFound {
                    kind: "volume",
                    id: volume_id.to_string(),
                },
                e => api_err("CreateSnapshot", e),
            })
    }

    pub(super) async fn create_snapshot(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        if name.is_empty() || name.len() > 256 {
            return Err(Error::InvalidArgument(format!(
                "snapshot name {name:?} must be 1-256 characters"
            )));
        }
        let s = self.snapshot_tagged(volume_id, TAG_SNAPSHOT, name).await?;
        Ok(self.snapshot_of(&s))
    }

    pub(super) async fn list_snapshots(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let mut filters = vec![self.owner_filter()];
        if let Some(v) = volume_id {
            if !valid_id(v, "vol-") {
                return Ok(Vec::new());
            }
            filters.push(Filter::new("volume-id", v));
        }
        let mut out: Vec<Snapshot> = self
            .snapshots_where(filters)
            .await?
            .iter()
            .filter(|s| self.is_ours(&s.tags) && s.tags.contains_key(TAG_SNAPSHOT))
            .filter(|s| volume_id.is_none_or(|v| s.volume_id == v))
            .map(|s| self.snapshot_of(s))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(super) async fn remove_snapshot(&self, snapshot_id: &str) -> Result<()> {
        if self.find_snapshot(snapshot_id).await?.is_none() {
            return Ok(());
        }
        match self
            .call("DeleteSnapshot", self.api.delete_snapshot(snapshot_id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is("InvalidSnapshot.NotFound") => Ok(()),
            Err(e) if e.is("InvalidSnapshot.InUse") => Err(Error::InUse {
                volume: snapshot_id.to_string(),
                holders: Vec::new(),
            }),
            Err(e) => Err(api_err("DeleteSnapshot", e)),
        }
    }
}
