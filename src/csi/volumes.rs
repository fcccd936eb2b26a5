//! CreateVolume, DeleteVolume, ValidateVolumeCapabilities, ControllerGetVolume and
//! ControllerExpandVolume as volume-manager calls. A create is idempotent by name: an
//! existing volume of that name compatible with the request is the answer, an incompatible
//! one is ALREADY_EXISTS.

use std::collections::{BTreeMap, HashMap};

use super::capabilities::{self, Wanted};
use super::error::{Conflict, CsiError, Result};
use super::params::{self, Params};
use super::v1::volume_content_source::Type as SourceType;
use super::v1::{self, VolumeContentSource};
use super::{csi_volume, published_nodes, Csi};
use crate::store::{Volume, VolumeStatus};
use crate::volumes::{self, CreateVolume, Source};

impl Csi {
    pub(super) async fn create_volume(
        &self,
        req: v1::CreateVolumeRequest,
    ) -> Result<v1::CreateVolumeResponse> {
        if req.name.is_empty() {
            return Err(CsiError::missing("name"));
        }
        let wanted = capabilities::check_all(&req.volume_capabilities, "volume_capabilities")?;
        if !req.mutable_parameters.is_empty() {
            return Err(CsiError::Invalid(
                "mutable_parameters are not supported (Polly has no MODIFY_VOLUME)".into(),
            ));
        }
        let m = &self.manager;
        let p = params::parse(m, &req.parameters)?;
        let kind = m
            .service(&p.service)
            .map_err(|e| CsiError::volume(e, Conflict::Pending))?
            .driver
            .kind()
            .to_string();
        let access_mode = capabilities::access_mode_for(&wanted)?;
        // One file system for the volume: `fsType`, or the capabilities' (which must agree).
        let mut fs_type = p.fs_type.clone();
        for w in &wanted {
            if !w.fs_type.is_empty() && !fs_type.is_empty() && w.fs_type != fs_type {
                return Err(CsiError::Invalid(format!(
                    "file systems {fs_type:?} and {:?} asked for one volume",
                    w.fs_type
                )));
            }
            if fs_type.is_empty() {
                fs_type = w.fs_type.clone();
            }
        }
        let filesystem = capabilities::filesystem_field(&kind, &p.service, &fs_type)?;
        let (required, limit) = params::bounds(req.capacity_range.as_ref())?;
        // A name that exists answers by its compatibility with the request, before anything
        // about a new volume (its zone, its source) is looked at.
        if let Some(v) = m
            .store()
            .volume_by_name(&p.service, &req.name)
            .map_err(|e| CsiError::volume(e.into(), Conflict::Pending))?
        {
            return self.existing(&req, v, &p, &wanted, required, limit);
        }
        let zone = params::pick_zone(
            req.accessibility_requirements.as_ref(),
            &m.service_zones(&p.service),
            &p.service,
        )?;
        let source = self
            .content_source(req.volume_content_source.as_ref(), &p.service)
            .await?;
        // A copy starts at its source's size unless more is asked for.
        let default = source
            .as_ref()
            .map_or(params::DEFAULT_SIZE_BYTES, |(_, size)| *size);
        let min = source.as_ref().map_or(0, |(_, size)| *size);
        if limit > 0 && limit < min {
            return Err(CsiError::OutOfRange(format!(
                "limit_bytes {limit} is smaller than the source's {min} bytes"
            )));
        }
        let size = params::size_for(
            required.max(min),
            limit,
            default,
            params::granularity(&kind),
        )?;
        let create = CreateVolume {
            service: p.service.clone(),
            name: req.name.clone(),
            size_bytes: size,
            pool: p.pool.clone(),
            zone,
            access_mode,
            labels: p.labels.clone(),
            fields: filesystem
                .map(|fs| BTreeMap::from([("filesystem".to_string(), fs)]))
                .unwrap_or_default(),
            ..CreateVolume::default()
        };
        let res = match source {
            None => m.create(create).await,
            Some((s, _)) => m.create_from(create, s).await,
        };
        match res {
            Ok(v) => Ok(self.created(&v, req.volume_content_source)),
            // Another create of that name got there first (or is still under way).
            Err(volumes::Error::Conflict(msg)) => {
                match m.store().volume_by_name(&p.service, &req.name) {
                    Ok(Some(v)) if v.status == VolumeStatus::Available => {
                        self.existing(&req, v, &p, &wanted, required, limit)
                    }
                    _ => Err(CsiError::Aborted(msg)),
                }
            }
            Err(e) => Err(CsiError::volume(e, Conflict::Pending)),
        }
    }

    /// The answer for a name that exists: the volume when it is compatible with the request.
    fn existing(
        &self,
        req: &v1::CreateVolumeRequest,
        v: Volume,
        p: &Params,
        wanted: &[Wanted],
        required: u64,
        limit: u64,
    ) -> Result<v1::CreateVolumeResponse> {
        if v.status != VolumeStatus::Available {
            return Err(CsiError::Aborted(format!(
                "volume {:?} is {:?}; retry shortly",
                v.name, v.status
            )));
        }
        let clash = |why: String| {
            Err(CsiError::AlreadyExists(format!(
                "volume {:?} exists in service {:?} ({}) with {why}",
                v.name, v.service, v.id
            )))
        };
        if !params::in_range(v.size_bytes, required, limit) {
            return clash(format!(
                "{} bytes, outside the capacity range asked",
                v.size_bytes
            ));
        }
        let kind = self.kind(&v.service);
        if let Some(why) = wanted
            .iter()
            .find_map(|w| capabilities::unsupported(v.access_mode, &kind, &v.service, w))
        {
            return clash(why);
        }
        if p.pool.is_some() && v.pool != p.pool {
            return clash(format!("pool {:?}", v.pool));
        }
        if let Some((k, want)) = p.labels.iter().find(|(k, x)| v.labels.get(*k) != Some(x)) {
            return clash(format!("label {k:?} = {:?}, not {want:?}", v.labels.get(k)));
        }
        let zone = self.manager.volume_zone(&v);
        if let Some(zones) = params::requisite_zones(req.accessibility_requirements.as_ref())? {
            if zone.as_ref().is_some_and(|z| !zones.contains(z)) {
                return clash(format!("zone {zone:?}, not one of {zones:?}"));
            }
        }
        Ok(self.created(&v, req.volume_content_source.clone()))
    }

    fn created(&self, v: &Volume, source: Option<VolumeContentSource>) -> v1::CreateVolumeResponse {
        let mut volume = csi_volume(&self.manager, v);
        volume.content_source = source;
        v1::CreateVolumeResponse {
            volume: Some(volume),
        }
    }

    /// The driver kind of a service ("" for one no longer configured).
    pub(super) fn kind(&self, service: &str) -> String {
        self.manager
            .service(service)
            .map(|s| s.driver.kind().to_string())
            .unwrap_or_default()
    }

    /// A content source as the manager's, with the source's size. A source that does not
    /// exist is NOT_FOUND; one in another service (its data lives in another back-end) is
    /// INVALID_ARGUMENT.
    async fn content_source(
        &self,
        source: Option<&VolumeContentSource>,
        service: &str,
    ) -> Result<Option<(Source, u64)>> {
        let Some(t) = source.and_then(|s| s.r#type.as_ref()) else {
            return Ok(None);
        };
        let m = &self.manager;
        match t {
            SourceType::Volume(s) => {
                if s.volume_id.is_empty() {
                    return Err(CsiError::missing("volume_content_source.volume.volume_id"));
                }
                let v = m
                    .volume(&s.volume_id)
                    .map_err(|e| CsiError::volume(e, Conflict::Pending))?;
                if v.service != service {
                    return Err(CsiError::Invalid(format!(
                        "source volume {} lives in service {:?}; a clone stays in its source's service, not {service:?}",
                        v.id, v.service
                    )));
                }
                Ok(Some((Source::Volume(v.id), v.size_bytes)))
            }
            SourceType::Snapshot(s) => {
                if s.snapshot_id.is_empty() {
                    return Err(CsiError::missing(
                        "volume_content_source.snapshot.snapshot_id",
                    ));
                }
                let not_found =
                    || CsiError::NotFound(format!("snapshot {:?} not found", s.snapshot_id));
                let (snap_service, _) = super::snapshots::split_id(&s.snapshot_id)
                    .filter(|(svc, _)| m.service(svc).is_ok())
                    .ok_or_else(not_found)?;
                if snap_service != service {
                    return Err(CsiError::Invalid(format!(
                        "snapshot {:?} lives in service {snap_service:?}; a volume made from it stays there, not in {service:?}",
                        s.snapshot_id
                    )));
                }
                let snap = self
                    .find_snapshot(&s.snapshot_id)
                    .await?
                    .ok_or_else(not_found)?;
                Ok(Some((
                    Source::Snapshot(snap.snapshot.id.clone()),
                    snap.snapshot.size_bytes,
                )))
            }
        }
    }

    pub(super) async fn delete_volume(&self, req: v1::DeleteVolumeRequest) -> Result<()> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        let m = &self.manager;
        match m.delete(&req.volume_id).await {
            Ok(()) | Err(volumes::Error::NotFound { .. }) => Ok(()),
            Err(e @ volumes::Error::Conflict(_)) => Err(CsiError::volume(
                e,
                match m.store().volume(&req.volume_id) {
                    Ok(Some(v)) if v.status == VolumeStatus::Available => Conflict::InUse,
                    // Gone meanwhile: deleted by the call that held it.
                    Ok(None) => return Ok(()),
                    _ => Conflict::Pending,
                },
            )),
            Err(e) => Err(CsiError::volume(e, Conflict::Pending)),
        }
    }

    pub(super) fn validate_volume_capabilities(
        &self,
        req: v1::ValidateVolumeCapabilitiesRequest,
    ) -> Result<v1::ValidateVolumeCapabilitiesResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::missing("volume_capabilities"));
        }
        let v = self.volume(&req.volume_id)?;
        let kind = self.kind(&v.service);
        let not = |message: String| v1::ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        };
        for (i, c) in req.volume_capabilities.iter().enumerate() {
            let w = match capabilities::check(c, &format!("volume_capabilities[{i}]")) {
                Ok(w) => w,
                Err(CsiError::Invalid(why)) => return Ok(not(why)),
                Err(e) => return Err(e),
            };
            if let Some(why) = capabilities::unsupported(v.access_mode, &kind, &v.service, &w) {
                return Ok(not(format!("volume_capabilities[{i}]: {why}")));
            }
        }
        if !req.mutable_parameters.is_empty() {
            return Ok(not("mutable_parameters are not supported".into()));
        }
        if !req.parameters.is_empty() {
            let p = match params::parse(&self.manager, &req.parameters) {
                Ok(p) => p,
                Err(e) => return Ok(not(e.to_string())),
            };
            let fits = p.service == v.service
                && p.pool.as_ref().is_none_or(|x| v.pool.as_ref() == Some(x))
                && p.labels.iter().all(|(k, x)| v.labels.get(k) == Some(x));
            if !fits {
                return Ok(not(format!(
                    "volume {} (service {:?}, pool {:?}) does not match the parameters",
                    v.id, v.service, v.pool
                )));
            }
        }
        Ok(v1::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(v1::validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: HashMap::new(),
            }),
            message: String::new(),
        })
    }

    /// A volume by id: NOT_FOUND when Polly has none.
    pub(super) fn volume(&self, id: &str) -> Result<Volume> {
        self.manager
            .volume(id)
            .map_err(|e| CsiError::volume(e, Conflict::Pending))
    }

    pub(super) fn controller_get_volume(
        &self,
        req: v1::ControllerGetVolumeRequest,
    ) -> Result<v1::ControllerGetVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        let v = self.volume(&req.volume_id)?;
        Ok(v1::ControllerGetVolumeResponse {
            volume: Some(csi_volume(&self.manager, &v)),
            status: Some(v1::controller_get_volume_response::VolumeStatus {
                published_node_ids: published_nodes(&v),
                volume_condition: None,
            }),
        })
    }

    pub(super) async fn controller_expand_volume(
        &self,
        req: v1::ControllerExpandVolumeRequest,
    ) -> Result<v1::ControllerExpandVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        let (required, limit) = match req.capacity_range.as_ref() {
            None => return Err(CsiError::missing("capacity_range")),
            r => params::bounds(r)?,
        };
        if required == 0 {
            return Err(CsiError::missing("capacity_range.required_bytes"));
        }
        let v = self.volume(&req.volume_id)?;
        let kind = self.kind(&v.service);
        if let Some(c) = &req.volume_capability {
            let w = capabilities::check(c, "volume_capability")?;
            if let Some(why) = capabilities::unsupported(v.access_mode, &kind, &v.service, &w) {
                return Err(CsiError::Invalid(why));
            }
        }
        // rbd and ebs volumes hold a file system the node made: the node grows it.
        let node_expansion_required = matches!(kind.as_str(), "rbd" | "ebs");
        let done = |size: u64| v1::ControllerExpandVolumeResponse {
            capacity_bytes: super::bytes_i64(size),
            node_expansion_required,
        };
        if v.size_bytes >= required {
            // Grown before (a retry), or big enough already: never shrunk.
            return Ok(done(v.size_bytes));
        }
        let size = params::size_for(required, limit, required, params::granularity(&kind))?;
        match self.manager.grow(&v.id, size).await {
            Ok(v) => Ok(done(v.size_bytes)),
            Err(e) => Err(CsiError::volume(e, Conflict::Pending)),
        }
    }
}
