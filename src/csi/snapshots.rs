//! CreateSnapshot and DeleteSnapshot. Snapshots live in the back-ends (the store keeps no
//! record of them), so a CSI snapshot id names the service with the back-end's id:
//! `<service>:<snapshot id>`. A snapshot name is unique across Polly: the same name for the
//! same volume is the same snapshot, for another volume ALREADY_EXISTS.

use super::error::{Conflict, CsiError, Result};
use super::v1;
use super::{bytes_i64, Csi};
use crate::volumes::{self, SnapshotInfo};

/// A snapshot's CSI id.
pub fn csi_id(s: &SnapshotInfo) -> String {
    format!("{}:{}", s.service, s.snapshot.id)
}

/// A CSI snapshot id as (service, back-end id); `None` when it is not of that form.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
        .filter(|(svc, snap)| !svc.is_empty() && !snap.is_empty())
}

/// A snapshot as CSI names it. Its source is the Polly volume it was taken from, or the
/// back-end's volume id when Polly no longer has that volume.
pub fn csi_snapshot(s: &SnapshotInfo) -> v1::Snapshot {
    v1::Snapshot {
        size_bytes: bytes_i64(s.snapshot.size_bytes),
        snapshot_id: csi_id(s),
        source_volume_id: s
            .volume_id
            .clone()
            .unwrap_or_else(|| s.snapshot.volume_id.clone()),
        creation_time: Some(prost_types::Timestamp {
            seconds: i64::try_from(s.snapshot.created_at).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        // Back-ends answer a snapshot call once the snapshot holds its data.
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

impl Csi {
    /// Every back-end's snapshots.
    pub(super) async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.manager
            .snapshots()
            .await
            .map_err(|e| CsiError::volume(e, Conflict::Pending))
    }

    /// The snapshot a CSI id names, if it exists.
    pub(super) async fn find_snapshot(&self, id: &str) -> Result<Option<SnapshotInfo>> {
        Ok(self
            .snapshots()
            .await?
            .into_iter()
            .find(|s| csi_id(s) == id))
    }

    pub(super) async fn create_snapshot(
        &self,
        req: v1::CreateSnapshotRequest,
    ) -> Result<v1::CreateSnapshotResponse> {
        if req.source_volume_id.is_empty() {
            return Err(CsiError::missing("source_volume_id"));
        }
        if req.name.is_empty() {
            return Err(CsiError::missing("name"));
        }
        if let Some(k) = req.parameters.keys().next() {
            return Err(CsiError::Invalid(format!(
                "unknown parameter {k:?}: snapshots take no parameters"
            )));
        }
        let v = self.volume(&req.source_volume_id)?;
        let answer = |s: &SnapshotInfo| v1::CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(s)),
        };
        if let Some(s) = self
            .snapshots()
            .await?
            .into_iter()
            .find(|s| s.snapshot.name == req.name)
        {
            if s.volume_id.as_deref() == Some(v.id.as_str()) {
                return Ok(answer(&s));
            }
            return Err(CsiError::AlreadyExists(format!(
                "snapshot {:?} exists, of volume {}, not {}",
                req.name,
                s.volume_id.as_deref().unwrap_or(&s.snapshot.volume_id),
                v.id
            )));
        }
        match self.manager.snapshot(&v.id, &req.name).await {
            Ok(s) => Ok(answer(&s)),
            Err(e) => Err(CsiError::volume(e, Conflict::Pending)),
        }
    }

    pub(super) async fn delete_snapshot(&self, req: v1::DeleteSnapshotRequest) -> Result<()> {
        if req.snapshot_id.is_empty() {
            return Err(CsiError::missing("snapshot_id"));
        }
        // An id Polly could not have given names no snapshot: deleting it succeeds.
        let Some((service, id)) = split_id(&req.snapshot_id) else {
            return Ok(());
        };
        if self.manager.service(service).is_err() {
            return Ok(());
        }
        match self.manager.snapshot_remove(service, id).await {
            Ok(()) | Err(volumes::Error::NotFound { .. }) => Ok(()),
            // Volumes made from it still need it (rbd clones).
            Err(e) => Err(CsiError::volume(e, Conflict::InUse)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_the_service() {
        assert_eq!(split_id("vfs:snap-1"), Some(("vfs", "snap-1")));
        assert_eq!(split_id("rbd:pool:img@s"), Some(("rbd", "pool:img@s")));
        assert_eq!(split_id("invalid-token"), None);
        assert_eq!(split_id(":x"), None);
    }
}
