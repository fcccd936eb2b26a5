//! Creating a volume: the request, idempotency by (service, name), and the one create path
//! that empty volumes, copies and volumes from snapshots share.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::capacity::signed;
use super::labels::check_labels;
use super::{
    is_definite, now_secs, valid_name, CapacityClaim, Error, Manager, Result, Source,
    MAX_SIZE_BYTES,
};
use crate::driver::{self, AccessMode, CreateRequest};
use crate::failpoints::crash_point;
use crate::store::{Intent, IntentOp, Op, Volume, VolumeStatus};

/// What a caller asks to create.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    pub service: String,
    pub name: String,
    /// A JSON integer; `1073741824.0` is the same number (JSON and JSON Schema do not tell
    /// them apart), so a whole float is taken too.
    #[serde(deserialize_with = "super::size::whole_bytes")]
    pub size_bytes: u64,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub access_mode: AccessMode,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub restrict_services: BTreeSet<String>,
    #[serde(default)]
    pub restrict_frameworks: BTreeSet<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl Manager {
    /// Create a volume, idempotent by (service, name): the same request again returns the
    /// existing volume; the same name with another size is a conflict.
    pub async fn create(&self, req: CreateVolume) -> Result<Volume> {
        self.create_claimed(req, None).await
    }

    /// [`Manager::create`], dropping `claim` when the new volume's bytes are counted in its
    /// pool's known free capacity.
    pub async fn create_claimed(
        &self,
        req: CreateVolume,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.create_inner(req, None, claim).await;
        self.outcome("create", &res);
        res
    }

    /// Create a volume, empty or (with `source`) holding a copy of a volume's or a snapshot's
    /// data. One path for all three, so each gets the same intent and resolution.
    pub(super) async fn create_inner(
        &self,
        req: CreateVolume,
        source: Option<Source>,
        claim: Option<CapacityClaim>,
    ) -> Result<Volume> {
        let svc = self.service(&req.service)?;
        if !valid_name(&req.name) {
            return Err(Error::InvalidArgument(format!(
                "volume name {:?} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                req.name
            )));
        }
        if req.size_bytes == 0 || req.size_bytes > MAX_SIZE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "size_bytes {} must be between 1 and {MAX_SIZE_BYTES}",
                req.size_bytes
            )));
        }
        check_labels(&req.labels)?;
        self.check_zone(&req.service, req.zone.as_deref())?;
        for s in &req.restrict_services {
            self.service(s)?;
        }
        let source_driver_id = match &source {
            Some(Source::Volume(id)) => {
                let src = self.usable(id)?;
                if src.service != req.service {
                    return Err(Error::InvalidArgument(format!(
                        "volume {id} lives in service {:?}; copies stay in the same service",
                        src.service
                    )));
                }
                src.driver_id.unwrap_or_default()
            }
            Some(Source::Snapshot(s)) => s.clone(),
            None => String::new(),
        };
        let _g = self
            .lock(format!("name:{}/{}", req.service, req.name))
            .await;
        if let Some(v) = self.inner.store.volume_by_name(&req.service, &req.name)? {
            return match v.status {
                VolumeStatus::Available if v.size_bytes == req.size_bytes => {
                    // Created before: its bytes are known already.
                    if let Some(c) = &claim {
                        self.drop_capacity_claim(c);
                    }
                    Ok(v)
                }
                VolumeStatus::Available => Err(Error::Conflict(format!(
                    "volume {:?} already exists in service {:?} with size {} bytes, not {}",
                    req.name, req.service, v.size_bytes, req.size_bytes
                ))),
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
        crash_point!("volume.create.before_intent");
        self.write(vec![
            Op::PutVolume(vol.clone()),
            Op::PutIntent(intent.clone()),
        ])
        .await?;
        crash_point!("volume.create.after_intent");
        let _changing = self.begin_change(&svc.name);
        let res = match &source {
            None => {
                self.call(&svc.name, "create", svc.driver.create(&request))
                    .await
            }
            Some(Source::Volume(_)) => {
                self.call(
                    &svc.name,
                    "copy",
                    svc.driver.copy(&source_driver_id, &request),
                )
                .await
            }
            Some(Source::Snapshot(_)) => {
                self.call(
                    &svc.name,
                    "create_from_snapshot",
                    svc.driver.create_from_snapshot(&source_driver_id, &request),
                )
                .await
            }
        };
        crash_point!("volume.create.after_driver");
        match res {
            Ok(dv) => {
                let done = created(vol, dv);
                self.account_volume(&done, -signed(done.size_bytes), claim.as_ref());
                self.write(vec![
                    Op::PutVolume(done.clone()),
                    Op::DeleteIntent(intent.id),
                ])
                .await?;
                crash_point!("volume.create.after_record");
                Ok(done)
            }
            Err(e) if is_definite(&e) => {
                // The back-end refused: nothing was created.
                self.write(vec![Op::DeleteVolume(vol.id), Op::DeleteIntent(intent.id)])
                    .await?;
                Err(e)
            }
            Err(e) => {
                // Unknown outcome: ask the back-end and make the store agree.
                self.resolve_logged(&intent).await;
                match self.inner.store.volume(&vol.id)? {
                    Some(v) if v.status == VolumeStatus::Available => {
                        self.account_volume(&v, -signed(v.size_bytes), claim.as_ref());
                        Ok(v)
                    }
                    _ => Err(e),
                }
            }
        }
    }
}

/// The record of a volume whose create reached the back-end, with what the back-end reports.
pub(super) fn created(mut v: Volume, dv: driver::DriverVolume) -> Volume {
    v.status = VolumeStatus::Available;
    v.driver_id = Some(dv.id);
    v.size_bytes = dv.size_bytes;
    v.pool = Some(dv.pool);
    v.zone = dv.zone;
    v.path = dv.path;
    v
}
