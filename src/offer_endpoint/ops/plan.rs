//! What each operation of an ACCEPT asks for, checked before anything is done ([`plan`]): an
//! invalid one is answered with OPERATION_ERROR and the reason.

use super::create_disk::volume_name;
use super::Hold;
use crate::mesos::v1;
use crate::mesos::v1::offer::operation::Type as OpType;
use crate::offer_endpoint::OpError;
use crate::offers::{self, Use};

/// What one operation of an ACCEPT asks for, checked.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    CreateDisk {
        pool_id: String,
        mb: u64,
    },
    DestroyDisk {
        volume_id: String,
        /// The disk as the framework named it: what it turns back into (a RAW slice of its
        /// pool) when the volume is gone already (a resumed destroy).
        source: Box<v1::Resource>,
    },
    Reserve {
        volume_id: String,
    },
    Unreserve {
        volume_id: String,
    },
    /// Grow a held volume by `mb` taken from `pool_id`'s RAW share in the offer.
    GrowVolume {
        volume_id: String,
        pool_id: String,
        mb: u64,
    },
}

impl Plan {
    /// The existing volume the operation acts on and consumes from its offer (DESTROY_DISK,
    /// RESERVE, UNRESERVE): not offered again until the operation has ended, as a Mesos
    /// master does not offer what an operation in flight consumes.
    pub(super) fn acts_on(&self) -> Option<&str> {
        match self {
            Plan::DestroyDisk { volume_id, .. }
            | Plan::Reserve { volume_id }
            | Plan::Unreserve { volume_id } => Some(volume_id),
            Plan::CreateDisk { .. } | Plan::GrowVolume { .. } => None,
        }
    }

    /// The pool capacity the operation holds while it runs (a volume being created or
    /// grown), as the offer engine's reservation, and the (service, name) of the volume it
    /// creates. `key` is the operation id (a generated one without).
    pub(super) fn hold(&self, fw: &str, key: &str) -> Option<Hold> {
        match self {
            Plan::CreateDisk { pool_id, mb } => Some(Hold {
                res: offers::Reservation {
                    framework_id: fw.to_string(),
                    pool_id: pool_id.clone(),
                    volume_id: None,
                    mb: *mb,
                    provisioned: false,
                },
                creating: Some((
                    pool_id.split('/').next().unwrap_or_default().to_string(),
                    volume_name(fw, key),
                )),
            }),
            Plan::GrowVolume {
                volume_id,
                pool_id,
                mb,
            } => Some(Hold {
                res: offers::Reservation {
                    framework_id: fw.to_string(),
                    pool_id: pool_id.clone(),
                    volume_id: Some(volume_id.clone()),
                    mb: *mb,
                    provisioned: false,
                },
                creating: None,
            }),
            _ => None,
        }
    }

    /// What the operation takes from its offers, as the offer engine checks an ACCEPT
    /// (DESTROY_DISK and UNRESERVE take nothing the engine counts).
    pub(super) fn offer_use(&self) -> Option<Use> {
        match self {
            Plan::CreateDisk { pool_id, mb } => Some(Use::Raw {
                pool_id: pool_id.clone(),
                mb: *mb,
            }),
            Plan::Reserve { volume_id } => Some(Use::Volume {
                volume_id: volume_id.clone(),
            }),
            Plan::GrowVolume {
                volume_id,
                pool_id,
                mb,
            } => Some(Use::Grow {
                pool_id: pool_id.clone(),
                volume_id: volume_id.clone(),
                mb: *mb,
            }),
            _ => None,
        }
    }
}

/// The id of a disk resource (set for a volume, absent for a RAW slice).
pub(super) fn source_id(r: &v1::Resource) -> Option<String> {
    r.disk.as_ref()?.source.as_ref()?.id.clone()
}

/// Check one operation; an `Err` is answered with OPERATION_ERROR.
pub(super) fn plan(op: &v1::offer::Operation) -> Result<Plan, OpError> {
    use OpError::Malformed;
    let t = op
        .r#type
        .and_then(|t| OpType::try_from(t).ok())
        .unwrap_or(OpType::Unknown);
    use v1::resource::disk_info::source::Type as T;
    match t {
        OpType::CreateDisk => {
            let c = op
                .create_disk
                .as_ref()
                .ok_or(Malformed("CREATE_DISK without 'create_disk'"))?;
            let src = &c.source;
            let pool = src.provider_id.as_ref().ok_or(Malformed(
                "CREATE_DISK source has no 'provider_id'; copy it from the offer",
            ))?;
            let ty = src
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if ty != Some(T::Raw as i32) || source_id(src).is_some() {
                return Err(Malformed(
                    "CREATE_DISK source must be a RAW disk of a pool (no 'id')",
                ));
            }
            if c.target_type != T::Mount as i32 && c.target_type != T::Block as i32 {
                return Err(Malformed("CREATE_DISK target_type must be MOUNT or BLOCK"));
            }
            let mb = src.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            if !(mb.is_finite() && mb >= 1.0) {
                return Err(OpError::TooSmall {
                    what: "CREATE_DISK",
                    mb,
                });
            }
            Ok(Plan::CreateDisk {
                pool_id: pool.value.clone(),
                mb: mb as u64,
            })
        }
        OpType::DestroyDisk => {
            let d = op
                .destroy_disk
                .as_ref()
                .ok_or(Malformed("DESTROY_DISK without 'destroy_disk'"))?;
            let volume_id =
                source_id(&d.source).ok_or(Malformed("DESTROY_DISK source has no 'id'"))?;
            Ok(Plan::DestroyDisk {
                volume_id,
                source: Box::new(d.source.clone()),
            })
        }
        OpType::Reserve => {
            let r = op
                .reserve
                .as_ref()
                .ok_or(Malformed("RESERVE without 'reserve'"))?;
            let volume_id = r
                .resources
                .iter()
                .chain(&r.source)
                .find_map(source_id)
                .ok_or(Malformed("RESERVE names no volume (a disk with 'id')"))?;
            Ok(Plan::Reserve { volume_id })
        }
        OpType::Unreserve => {
            let r = op
                .unreserve
                .as_ref()
                .ok_or(Malformed("UNRESERVE without 'unreserve'"))?;
            let volume_id = r
                .resources
                .iter()
                .find_map(source_id)
                .ok_or(Malformed("UNRESERVE names no volume (a disk with 'id')"))?;
            Ok(Plan::Unreserve { volume_id })
        }
        OpType::GrowVolume => {
            let g = op
                .grow_volume
                .as_ref()
                .ok_or(Malformed("GROW_VOLUME without 'grow_volume'"))?;
            let vty = g
                .volume
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if vty != Some(T::Mount as i32) && vty != Some(T::Block as i32) {
                return Err(Malformed(
                    "GROW_VOLUME 'volume' must be a MOUNT or BLOCK disk Polly offered (with 'id')",
                ));
            }
            let volume_id = source_id(&g.volume).ok_or(Malformed(
                "GROW_VOLUME 'volume' has no 'disk.source.id'; copy it from the offer",
            ))?;
            let add = &g.addition;
            let pool = add.provider_id.as_ref().ok_or(Malformed(
                "GROW_VOLUME 'addition' has no 'provider_id'; take it from the pool's RAW disk in the offer",
            ))?;
            let aty = add
                .disk
                .as_ref()
                .and_then(|d| d.source.as_ref())
                .map(|s| s.r#type);
            if aty != Some(T::Raw as i32) || source_id(add).is_some() {
                return Err(Malformed(
                    "GROW_VOLUME 'addition' must be a slice of a pool's RAW disk (no 'id')",
                ));
            }
            let mb = add.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            if !(mb.is_finite() && mb >= 1.0) {
                return Err(OpError::TooSmall {
                    what: "GROW_VOLUME addition",
                    mb,
                });
            }
            Ok(Plan::GrowVolume {
                volume_id,
                pool_id: pool.value.clone(),
                mb: mb as u64,
            })
        }
        OpType::Launch | OpType::LaunchGroup => Err(OpError::Launch),
        other => Err(OpError::Unsupported(other.as_str_name())),
    }
}
