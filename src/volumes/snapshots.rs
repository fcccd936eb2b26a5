//! Snapshots and volume copies. Snapshots live only in the back-ends (the store keeps no
//! record of them); a volume made from a snapshot or a copy of a volume is created like any
//! other volume: a `Create` intent first, so a crash mid-copy is finished or rolled back by
//! the resolver (which finds the new volume by name).

use crate::driver::{CreateRequest, Snapshot};
use crate::store::{Intent, IntentOp, Op, Volume, VolumeStatus};

use super::{is_definite, now_secs, valid_name, CreateVolume, Error, Manager, Result};

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
        let snapshot = self
            .call(
                &svc.name,
                "snapshot_create",
                svc.driver.snapshot_create(&driver_id, name),
            )
            .await?;
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
        let res = self.create_from_inner(req, source).await;
        self.outcome("create_from", &res);
        res
    }

    async fn create_from_inner(&self, req: CreateVolume, source: Source) -> Result<Volume> {
        let svc = self.service(&req.service)?;
        if !valid_name(&req.name) {
            return Err(Error::InvalidArgument(format!(
                "volume name {:?} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                req.name
            )));
        }
        super::check_labels(&req.labels)?;
        let source_driver_id = match &source {
            Source::Volume(id) => {
                let src = self.usable(id)?;
                if src.service != req.service {
                    return Err(Error::InvalidArgument(format!(
                        "volume {id} lives in service {:?}; copies stay in the same service",
                        src.service
                    )));
                }
                src.driver_id.unwrap_or_default()
            }
            Source::Snapshot(s) => s.clone(),
        };
        let _g = self
            .lock(format!("name:{}/{}", req.service, req.name))
            .await;
        if let Some(v) = self.inner.store.volume_by_name(&req.service, &req.name)? {
            return match v.status {
                VolumeStatus::Available => Ok(v),
                _ => Err(Error::Conflict(format!(
                    "volume {:?} in service {:?} is {:?}; retry shortly",
                    req.name, req.service, v.status
                ))),
            };
        }
        let request = CreateRequest {
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: req.pool.clone(),
            zone: req.zone.clone(),
            access_mode: req.access_mode,
            fields: req.fields.clone(),
        };
        let vol = Volume {
            id: format!("pv-{}", uuid::Uuid::new_v4().simple()),
            service: req.service.clone(),
            driver_id: None,
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: req.pool.clone(),
            zone: req.zone.clone(),
            access_mode: req.access_mode,
            labels: req.labels,
            restrict_services: req.restrict_services,
            restrict_frameworks: req.restrict_frameworks,
            status: VolumeStatus::Creating,
            attachments: vec![],
            created_at: now_secs(),
            path: None,
        };
        let intent = Intent {
            id: self.inner.store.next_id()?,
            volume_id: vol.id.clone(),
            service: req.service.clone(),
            op: IntentOp::Create {
                request: request.clone(),
            },
            created_at: now_secs(),
        };
        self.write(vec![
            Op::PutVolume(vol.clone()),
            Op::PutIntent(intent.clone()),
        ])
        .await?;
        let res = match &source {
            Source::Volume(_) => {
                self.call(
                    &svc.name,
                    "copy",
                    svc.driver.copy(&source_driver_id, &request),
                )
                .await
            }
            Source::Snapshot(_) => {
                self.call(
                    &svc.name,
                    "create_from_snapshot",
                    svc.driver.create_from_snapshot(&source_driver_id, &request),
                )
                .await
            }
        };
        match res {
            Ok(dv) => {
                let mut done = vol;
                done.status = VolumeStatus::Available;
                done.driver_id = Some(dv.id);
                done.size_bytes = dv.size_bytes;
                done.pool = Some(dv.pool);
                done.zone = dv.zone;
                done.path = dv.path;
                self.write(vec![
                    Op::PutVolume(done.clone()),
                    Op::DeleteIntent(intent.id),
                ])
                .await?;
                Ok(done)
            }
            Err(e) if is_definite(&e) => {
                self.write(vec![Op::DeleteVolume(vol.id), Op::DeleteIntent(intent.id)])
                    .await?;
                Err(e)
            }
            Err(e) => {
                self.resolve_logged(&intent).await;
                match self.inner.store.volume(&vol.id)? {
                    Some(v) if v.status == VolumeStatus::Available => Ok(v),
                    _ => Err(e),
                }
            }
        }
    }
}
