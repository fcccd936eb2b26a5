//! The Node service, per the CSI specification: NodeStageVolume mounts the volume's data
//! (the mount source ControllerPublishVolume put in the publish context, path-mapped like
//! the Docker plugin's) at the staging path with the shared mount code; NodePublishVolume
//! bind-mounts the staging path at the target path. Every call is idempotent, and each
//! mount is recorded (intent first) in the CSI state file, so a restarted node still
//! unpublishes and unstages what it mounted before.

use std::path::{Path, PathBuf};

use tonic::{Request, Response, Status};

use crate::csi::v1::node_server::Node;
use crate::csi::v1::node_service_capability::{rpc, Rpc, Type as CapType};
use crate::csi::v1::volume_capability::access_mode::Mode;
use crate::csi::v1::volume_capability::AccessType;
use crate::csi::v1::volume_usage::Unit;
use crate::csi::v1::{self, NodeServiceCapability, VolumeCapability, VolumeUsage};
use crate::csi::{CsiError, PUBLISH_SOURCE_KEY, TOPOLOGY_ZONE_KEY};
use crate::mount::{self, Source};
use crate::node::NodeError;

use super::state::{Mount, Phase};
use super::{blocking, NodeCsi};

type Answer<T> = Result<Response<T>, Status>;

fn missing(field: &str) -> Status {
    CsiError::missing(field).into()
}

fn invalid(why: String) -> Status {
    CsiError::Invalid(why).into()
}

/// The gRPC code the specification gives each mount failure.
fn mount_status(e: mount::Error) -> Status {
    let err = match &e {
        mount::Error::Busy { .. } | mount::Error::NotEmpty { .. } => {
            CsiError::FailedPrecondition(e.to_string())
        }
        mount::Error::TargetInUse { .. } => CsiError::AlreadyExists(e.to_string()),
        mount::Error::NotFound { .. } => CsiError::NotFound(e.to_string()),
        mount::Error::Invalid { .. } => CsiError::Invalid(e.to_string()),
        _ => {
            tracing::warn!(error = %e, "csi: mount call failed");
            return Status::internal(e.to_string());
        }
    };
    err.into()
}

fn state_status(e: NodeError) -> Status {
    tracing::warn!(error = %e, "csi: cannot save the node's state");
    Status::internal(e.to_string())
}

/// A required absolute path field.
fn path_field(value: &str, field: &str) -> Result<PathBuf, Status> {
    if value.is_empty() {
        return Err(missing(field));
    }
    let p = PathBuf::from(value);
    if !p.is_absolute() {
        return Err(invalid(format!(
            "{field} {value:?} must be an absolute path"
        )));
    }
    Ok(p)
}

/// Checks a capability the node is asked to honour; true when it is read-only.
fn read_only_of(cap: Option<&VolumeCapability>) -> Result<bool, Status> {
    let Some(cap) = cap else {
        return Err(missing("volume_capability"));
    };
    match cap.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(invalid(
                "volume_capability: block access is not supported; polly volumes are mounted file systems".into(),
            ))
        }
        None => return Err(missing("volume_capability.access_type")),
    }
    let Some(mode) = cap.access_mode.as_ref() else {
        return Err(missing("volume_capability.access_mode"));
    };
    match Mode::try_from(mode.mode) {
        Ok(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly) => Ok(true),
        Ok(Mode::Unknown) | Err(_) => Err(invalid(format!(
            "volume_capability.access_mode {} is not a known access mode",
            mode.mode
        ))),
        Ok(_) => Ok(false),
    }
}

impl NodeCsi {
    /// The mount `kind` (staged or published) at `path`.
    async fn mount_at(&self, published: bool, path: &Path) -> Option<Mount> {
        let s = self.inner.state.lock().await;
        let map = if published { &s.published } else { &s.staged };
        map.get(path).cloned()
    }

    async fn set(&self, published: bool, path: &Path, m: Option<Mount>) -> Result<(), Status> {
        self.update(|s| {
            let map = if published {
                &mut s.published
            } else {
                &mut s.staged
            };
            match m {
                Some(m) => map.insert(path.to_path_buf(), m),
                None => map.remove(path),
            };
        })
        .await
        .map_err(state_status)
    }

    /// Mount `source` at `path` for `volume_id`: the same mount there already is success,
    /// a different one ALREADY_EXISTS, a half-done one is undone first.
    async fn mount(&self, published: bool, path: &Path, mut wanted: Mount) -> Result<(), Status> {
        if let Some(m) = self.mount_at(published, path).await {
            let same = m.volume_id == wanted.volume_id
                && m.source == wanted.source
                && m.read_only == wanted.read_only;
            if m.phase == Phase::Mounted && same {
                return Ok(());
            }
            if m.volume_id != wanted.volume_id || m.phase == Phase::Mounted {
                return Err(CsiError::AlreadyExists(format!(
                    "{} holds volume {} ({}{}), incompatible with this request; unpublish or unstage it first",
                    path.display(),
                    m.volume_id,
                    m.source,
                    if m.read_only { ", read-only" } else { "" }
                ))
                .into());
            }
            // Interrupted before: undo, then mount afresh.
            self.unmount(path, &m.source, m.published.clone())
                .await
                .map_err(mount_status)?;
            self.set(published, path, None).await?;
        }
        wanted.phase = Phase::Mounting;
        wanted.published = None;
        self.set(published, path, Some(wanted.clone())).await?;
        let (source, target, ro) = (wanted.source.clone(), path.to_path_buf(), wanted.read_only);
        match blocking(move || mount::publish_with(&source, &target, ro)).await {
            Ok(p) => {
                wanted.phase = Phase::Mounted;
                wanted.published = Some(p);
                self.set(published, path, Some(wanted)).await
            }
            Err(e) => {
                // publish_with left nothing behind.
                self.set(published, path, None).await?;
                Err(mount_status(e))
            }
        }
    }

    /// Unmount what `volume_id` has at `path`: nothing there is success (a repeated call),
    /// another volume's mount NOT_FOUND.
    async fn release(&self, published: bool, path: &Path, volume_id: &str) -> Result<(), Status> {
        let Some(m) = self.mount_at(published, path).await else {
            return Ok(());
        };
        if m.volume_id != volume_id {
            return Err(CsiError::NotFound(format!(
                "{} holds volume {}, not {volume_id}",
                path.display(),
                m.volume_id
            ))
            .into());
        }
        if m.phase != Phase::Unmounting {
            let mut next = m.clone();
            next.phase = Phase::Unmounting;
            self.set(published, path, Some(next)).await?;
        }
        self.unmount(path, &m.source, m.published.clone())
            .await
            .map_err(mount_status)?;
        self.set(published, path, None).await
    }

    /// The mounted volume at `path` (published, else staged), NOT_FOUND otherwise.
    async fn mounted(&self, volume_id: &str, path: &Path) -> Result<Mount, Status> {
        let found = match self.mount_at(true, path).await {
            Some(m) => Some(m),
            None => self.mount_at(false, path).await,
        };
        let not_found = || {
            Status::from(CsiError::NotFound(format!(
                "volume {volume_id} is not staged or published at {}",
                path.display()
            )))
        };
        let m = found
            .filter(|m| m.volume_id == volume_id && m.phase == Phase::Mounted)
            .ok_or_else(not_found)?;
        let p = path.to_path_buf();
        if !blocking(move || mount::is_mounted(&p))
            .await
            .map_err(mount_status)?
        {
            return Err(not_found());
        }
        Ok(m)
    }
}

#[tonic::async_trait]
impl Node for NodeCsi {
    async fn node_stage_volume(
        &self,
        r: Request<v1::NodeStageVolumeRequest>,
    ) -> Answer<v1::NodeStageVolumeResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let path = path_field(&req.staging_target_path, "staging_target_path")?;
        let read_only = read_only_of(req.volume_capability.as_ref())?;
        let Some(raw) = req.publish_context.get(PUBLISH_SOURCE_KEY) else {
            return Err(invalid(format!(
                "publish_context has no {PUBLISH_SOURCE_KEY:?}: publish volume {} to this node with ControllerPublishVolume first",
                req.volume_id
            )));
        };
        let source: Source = serde_json::from_str(raw).map_err(|e| {
            invalid(format!(
                "publish_context {PUBLISH_SOURCE_KEY:?} is not a polly mount source: {e}"
            ))
        })?;
        let source = self.inner.cfg.localize(source);
        let _g = self.inner.locks.lock(&req.volume_id).await;
        let wanted = Mount {
            volume_id: req.volume_id.clone(),
            phase: Phase::Mounting,
            source,
            read_only,
            staging: None,
            published: None,
        };
        self.mount(false, &path, wanted).await?;
        Ok(Response::new(v1::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<v1::NodeUnstageVolumeRequest>,
    ) -> Answer<v1::NodeUnstageVolumeResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let path = path_field(&req.staging_target_path, "staging_target_path")?;
        let _g = self.inner.locks.lock(&req.volume_id).await;
        let users: Vec<PathBuf> = self
            .inner
            .state
            .lock()
            .await
            .published
            .iter()
            .filter(|(_, m)| m.staging.as_deref() == Some(path.as_path()))
            .map(|(t, _)| t.clone())
            .collect();
        if let Some(t) = users.first() {
            return Err(CsiError::FailedPrecondition(format!(
                "volume {} is still published at {} from {}: NodeUnpublishVolume first",
                req.volume_id,
                t.display(),
                path.display()
            ))
            .into());
        }
        self.release(false, &path, &req.volume_id).await?;
        Ok(Response::new(v1::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<v1::NodePublishVolumeRequest>,
    ) -> Answer<v1::NodePublishVolumeResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let staging = path_field(&req.staging_target_path, "staging_target_path")?;
        let target = path_field(&req.target_path, "target_path")?;
        let cap_read_only = read_only_of(req.volume_capability.as_ref())?;
        let _g = self.inner.locks.lock(&req.volume_id).await;
        let staged = self
            .mount_at(false, &staging)
            .await
            .filter(|m| m.volume_id == req.volume_id && m.phase == Phase::Mounted)
            .ok_or_else(|| {
                Status::from(CsiError::FailedPrecondition(format!(
                    "volume {} is not staged at {}: NodeStageVolume first",
                    req.volume_id,
                    staging.display()
                )))
            })?;
        let wanted = Mount {
            volume_id: req.volume_id.clone(),
            phase: Phase::Mounting,
            source: Source::Directory {
                path: staging.clone(),
            },
            // A bind of a read-only staging mount is read-only too.
            read_only: req.readonly || cap_read_only || staged.read_only,
            staging: Some(staging),
            published: None,
        };
        self.mount(true, &target, wanted).await?;
        Ok(Response::new(v1::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<v1::NodeUnpublishVolumeRequest>,
    ) -> Answer<v1::NodeUnpublishVolumeResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let target = path_field(&req.target_path, "target_path")?;
        let _g = self.inner.locks.lock(&req.volume_id).await;
        self.release(true, &target, &req.volume_id).await?;
        Ok(Response::new(v1::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<v1::NodeGetVolumeStatsRequest>,
    ) -> Answer<v1::NodeGetVolumeStatsResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let path = path_field(&req.volume_path, "volume_path")?;
        self.mounted(&req.volume_id, &path).await?;
        let p = path.clone();
        let u = blocking(move || mount::usage(&p))
            .await
            .map_err(mount_status)?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(v1::NodeGetVolumeStatsResponse {
            usage: vec![
                VolumeUsage {
                    available: n(u.available_bytes),
                    total: n(u.total_bytes),
                    used: n(u.used_bytes),
                    unit: Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: n(u.free_inodes),
                    total: n(u.total_inodes),
                    used: n(u.used_inodes),
                    unit: Unit::Inodes as i32,
                },
            ],
            volume_condition: None,
        }))
    }

    async fn node_expand_volume(
        &self,
        r: Request<v1::NodeExpandVolumeRequest>,
    ) -> Answer<v1::NodeExpandVolumeResponse> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        let path = path_field(&req.volume_path, "volume_path")?;
        if req.volume_capability.is_some() {
            read_only_of(req.volume_capability.as_ref())?;
        }
        let required = req.capacity_range.as_ref().map_or(0, |r| r.required_bytes);
        let _g = self.inner.locks.lock(&req.volume_id).await;
        let m = self.mounted(&req.volume_id, &path).await?;
        // The file system is the staged mount's (a publish is a bind of it).
        let staged = match &m.staging {
            Some(s) => self.mount_at(false, s).await.ok_or_else(|| {
                Status::from(CsiError::NotFound(format!(
                    "volume {} is published at {} but not staged",
                    req.volume_id,
                    path.display()
                )))
            })?,
            None => m,
        };
        let Some(p) = staged.published else {
            return Err(CsiError::NotFound(format!(
                "volume {} is not mounted at {}",
                req.volume_id,
                path.display()
            ))
            .into());
        };
        let size = blocking(move || mount::grow(&p))
            .await
            .map_err(mount_status)?;
        Ok(Response::new(v1::NodeExpandVolumeResponse {
            // A directory (vfs) has no size of its own: it is what was asked.
            capacity_bytes: size.map_or(required, |s| i64::try_from(s).unwrap_or(i64::MAX)),
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<v1::NodeGetCapabilitiesRequest>,
    ) -> Answer<v1::NodeGetCapabilitiesResponse> {
        let cap = |t: rpc::Type| NodeServiceCapability {
            r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })),
        };
        Ok(Response::new(v1::NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::StageUnstageVolume),
                cap(rpc::Type::GetVolumeStats),
                cap(rpc::Type::ExpandVolume),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<v1::NodeGetInfoRequest>,
    ) -> Answer<v1::NodeGetInfoResponse> {
        let cfg = &self.inner.cfg;
        Ok(Response::new(v1::NodeGetInfoResponse {
            node_id: cfg.instance_id.clone(),
            max_volumes_per_node: cfg.csi_max_volumes,
            accessible_topology: cfg.zone.as_ref().map(|z| v1::Topology {
                segments: [(TOPOLOGY_ZONE_KEY.to_string(), z.clone())].into(),
            }),
        }))
    }
}
