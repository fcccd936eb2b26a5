//! Snapshots and volume copies. Snapshots live only in the back-ends (the store keeps no
//! record of them); a volume made from a snapshot or a copy of a volume is created like any
//! other volume: a `Create` intent first, so a crash mid-copy is finished or rolled back by
//! the resolver (which finds the new volume by name).

use crate::driver::Snapshot;
use crate::failpoints::crash_point;
use crate::store::Volume;

use super::{valid_name, CreateVolume, Error, Manager, Result};

/// Where the data of a new volume comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A copy of this Polly volume (same service).
    Volume(String),
    /// The data of this snapshot, held by the back-end of the request's service.
    Snapshot(String),
}

/// A back-end snapshot with the Polly volume it was taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub service: String,
    pub snapshot: Snapshot,
    /// The Polly id of the source volume, when Polly still manages it.
    pub volume_id: Option<String>,
}

impl Manager {
    /// Snapshot a volume (idempotent by volume and snapshot name in the back-end).
    pub async fn snapshot(&self, id: &str, name: &str) -> Result<SnapshotInfo> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument(format!(
                "snapshot name {name:?} must be 1-128 letters, digits, '.', '_' or '-'"
            )));
        }
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        crash_point!("volume.snapshot.before_driver");
        let snapshot = self
            .call(
                &svc.name,
                "snapshot_create",
                svc.driver.snapshot_create(&driver_id, name),
            )
            .await?;
        crash_point!("volume.snapshot.after_driver");
        Ok(SnapshotInfo {
            service: v.service,
            snapshot,
            volume_id: Some(v.id),
        })
    }

    /// Every snapshot of every service's back-end.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let vols = self.volumes()?;
        let mut out = Vec::new();
        for s in self.services() {
            let snaps = self
                .call(&s.name, "snapshot_list", s.driver.snapshot_list(None))
                .await?;
            for snapshot in snaps {
                let volume_id = vols
                    .iter()
                    .find(|v| {
                        v.service == s.name
                            && v.driver_id.as_deref() == Some(snapshot.volume_id.as_str())
                    })
                    .map(|v| v.id.clone());
                out.push(SnapshotInfo {
                    service: s.name.clone(),
                    snapshot,
                    volume_id,
                });
            }
        }
        Ok(out)
    }

    /// Copy a snapshot within its service's back-end (idempotent by volume and name).
    pub async fn snapshot_copy(&self, src: &SnapshotInfo, name: &str) -> Result<SnapshotInfo> {
        if !valid_name(name) {
            return Err(Error::InvalidArgument(format!(
                "snapshot name {name:?} must be 1-128 letters, digits, '.', '_' or '-'"
            )));
        }
        let svc = self.service(&src.service)?;
        let snapshot = self
            .call(
                &svc.name,
                "snapshot_copy",
                svc.driver.snapshot_copy(&src.snapshot.id, name),
            )
            .await?;
        Ok(SnapshotInfo {
            service: src.service.clone(),
            snapshot,
            volume_id: src.volume_id.clone(),
        })
    }

    /// Remove a snapshot from a service's back-end (unknown ids succeed).
    pub async fn snapshot_remove(&self, service: &str, snapshot_id: &str) -> Result<()> {
        let svc = self.service(service)?;
        self.call(
            &svc.name,
            "snapshot_remove",
            svc.driver.snapshot_remove(snapshot_id),
        )
        .await
    }

    /// Create a volume holding a copy of a volume's or a snapshot's data. Idempotent by
    /// (service, name) like [`Manager::create`].
    pub async fn create_from(&self, req: CreateVolume, source: Source) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.create_inner(req, Some(source), None).await;
        self.outcome("create_from", &res);
        res
    }
}
