//! Volume capabilities: what Polly serves (mounted file systems; no raw block), how CSI's
//! access modes map onto Polly's, which file system a service's volumes carry, and the
//! capabilities Polly advertises for its Controller service.

use super::error::{CsiError, Result};
use super::v1::controller_service_capability::{self as csc, rpc::Type as Rpc};
use super::v1::volume_capability::access_mode::Mode;
use super::v1::volume_capability::AccessType;
use super::v1::{ControllerServiceCapability, VolumeCapability};
use crate::driver::AccessMode;

/// Exactly the Controller calls implemented (anything else answers UNIMPLEMENTED).
pub const CONTROLLER_RPCS: &[Rpc] = &[
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::ListVolumes,
    Rpc::GetCapacity,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::ExpandVolume,
    Rpc::ListVolumesPublishedNodes,
    Rpc::GetVolume,
    // SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER are single-writer volumes.
    Rpc::SingleNodeMultiWriter,
];

pub fn controller_capabilities() -> Vec<ControllerServiceCapability> {
    CONTROLLER_RPCS
        .iter()
        .map(|&t| ControllerServiceCapability {
            r#type: Some(csc::Type::Rpc(csc::Rpc { r#type: t as i32 })),
        })
        .collect()
}

/// A checked capability: its access mode and the file system it names ("" when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub mode: Mode,
    pub fs_type: String,
}

/// Checks one capability's shape: a mount with a known access mode. A missing access type or
/// mode is a missing field; a block volume is not served.
pub fn check(cap: &VolumeCapability, field: &str) -> Result<Wanted> {
    let fs_type = match &cap.access_type {
        None => return Err(CsiError::missing(&format!("{field}.access_type"))),
        Some(AccessType::Block(_)) => {
            return Err(CsiError::Invalid(format!(
                "{field}: raw block volumes are not supported; ask for a mount (access_type mount)"
            )))
        }
        Some(AccessType::Mount(m)) => m.fs_type.clone(),
    };
    let mode = cap
        .access_mode
        .as_ref()
        .map(|a| Mode::try_from(a.mode).unwrap_or(Mode::Unknown))
        .unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Err(CsiError::missing(&format!("{field}.access_mode.mode")));
    }
    Ok(Wanted { mode, fs_type })
}

/// Checks a non-empty list of capabilities.
pub fn check_all(caps: &[VolumeCapability], field: &str) -> Result<Vec<Wanted>> {
    if caps.is_empty() {
        return Err(CsiError::missing(field));
    }
    caps.iter()
        .enumerate()
        .map(|(i, c)| check(c, &format!("{field}[{i}]")))
        .collect()
}

/// Whether a Polly volume of `volume` access serves CSI access mode `mode`.
pub fn supports(volume: AccessMode, mode: Mode) -> bool {
    use Mode::*;
    match volume {
        AccessMode::SingleWriter => matches!(
            mode,
            SingleNodeWriter
                | SingleNodeReaderOnly
                | SingleNodeSingleWriter
                | SingleNodeMultiWriter
        ),
        AccessMode::MultiReader => matches!(mode, MultiNodeReaderOnly | SingleNodeReaderOnly),
        AccessMode::MultiWriter => !matches!(mode, Unknown | MultiNodeSingleWriter),
    }
}

/// The Polly access mode a new volume gets for the capabilities asked: single writer for the
/// single-node modes, multi reader for MULTI_NODE_READER_ONLY, multi writer for
/// MULTI_NODE_MULTI_WRITER.
pub fn access_mode_for(wanted: &[Wanted]) -> Result<AccessMode> {
    let has = |m: Mode| wanted.iter().any(|w| w.mode == m);
    if has(Mode::MultiNodeSingleWriter) {
        return Err(CsiError::Invalid(
            "access mode MULTI_NODE_SINGLE_WRITER is not supported: Polly volumes are single-writer (one node), multi-reader or multi-writer".into(),
        ));
    }
    if has(Mode::MultiNodeMultiWriter) {
        return Ok(AccessMode::MultiWriter);
    }
    if has(Mode::MultiNodeReaderOnly) {
        if wanted.iter().all(|w| {
            matches!(
                w.mode,
                Mode::MultiNodeReaderOnly | Mode::SingleNodeReaderOnly
            )
        }) {
            return Ok(AccessMode::MultiReader);
        }
        return Err(CsiError::Invalid(
            "access modes MULTI_NODE_READER_ONLY and a writer mode together need a volume written on one node and read on many, which Polly does not have; ask for MULTI_NODE_MULTI_WRITER".into(),
        ));
    }
    Ok(AccessMode::SingleWriter)
}

/// The file system a service's volumes carry, given the driver kind: `loop` volumes hold
/// the file system they were made with (`ext2`/`ext3`/`ext4`), `rbd` and `ebs` volumes are
/// formatted ext4 by the node, `vfs` volumes are directories. Returns what a new volume's
/// `filesystem` field must say (`Some` for loop only), or why `fs_type` cannot be served.
pub fn filesystem_field(kind: &str, service: &str, fs_type: &str) -> Result<Option<String>> {
    if fs_type.is_empty() {
        return Ok(None);
    }
    match kind {
        "loop" if crate::driver::r#loop::FILESYSTEMS.contains(&fs_type) => {
            Ok(Some(fs_type.to_string()))
        }
        "loop" => Err(CsiError::Invalid(format!(
            "file system {fs_type:?} is not supported by loop volumes; use one of {:?}",
            crate::driver::r#loop::FILESYSTEMS
        ))),
        "rbd" | "ebs" if fs_type == "ext4" => Ok(None),
        "vfs" => Err(CsiError::Invalid(format!(
            "service {service:?} is vfs: its volumes are directories, with no file system to choose ({fs_type:?} asked); leave fsType empty"
        ))),
        _ => Err(CsiError::Invalid(format!(
            "service {service:?} ({kind}) formats its volumes ext4 on first mount; {fs_type:?} cannot be served"
        ))),
    }
}

/// Why a volume cannot serve a capability, if it cannot.
pub fn unsupported(volume: AccessMode, kind: &str, service: &str, w: &Wanted) -> Option<String> {
    if !supports(volume, w.mode) {
        return Some(format!(
            "access mode {} is not served by a {} volume",
            w.mode.as_str_name(),
            match volume {
                AccessMode::SingleWriter => "single-writer",
                AccessMode::MultiReader => "multi-reader",
                AccessMode::MultiWriter => "multi-writer",
            }
        ));
    }
    filesystem_field(kind, service, &w.fs_type)
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::v1::volume_capability::{self as vc, MountVolume};
    use super::*;

    fn cap(mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(vc::AccessMode { mode: mode as i32 }),
        }
    }

    fn mode_of(modes: &[Mode]) -> Result<AccessMode> {
        let caps: Vec<_> = modes.iter().map(|&m| cap(m)).collect();
        access_mode_for(&check_all(&caps, "volume_capabilities")?)
    }

    #[test]
    fn access_modes_map_onto_pollys() {
        use Mode::*;
        for m in [
            SingleNodeWriter,
            SingleNodeSingleWriter,
            SingleNodeMultiWriter,
            SingleNodeReaderOnly,
        ] {
            assert_eq!(mode_of(&[m]).unwrap(), AccessMode::SingleWriter, "{m:?}");
            assert!(supports(AccessMode::SingleWriter, m));
        }
        assert_eq!(
            mode_of(&[MultiNodeReaderOnly]).unwrap(),
            AccessMode::MultiReader
        );
        assert_eq!(
            mode_of(&[MultiNodeMultiWriter, SingleNodeWriter]).unwrap(),
            AccessMode::MultiWriter
        );
        assert!(mode_of(&[MultiNodeSingleWriter]).is_err());
        assert!(mode_of(&[MultiNodeReaderOnly, SingleNodeWriter]).is_err());
        assert!(!supports(AccessMode::SingleWriter, MultiNodeReaderOnly));
        assert!(!supports(AccessMode::MultiReader, SingleNodeWriter));
        assert!(supports(AccessMode::MultiWriter, MultiNodeReaderOnly));
        assert!(mode_of(&[]).is_err());
        assert!(mode_of(&[Unknown]).is_err());
    }

    #[test]
    fn shapes_and_file_systems() {
        let block = VolumeCapability {
            access_type: Some(AccessType::Block(vc::BlockVolume {})),
            access_mode: Some(vc::AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        assert!(check(&block, "c")
            .unwrap_err()
            .to_string()
            .contains("block"));
        let none = VolumeCapability {
            access_type: None,
            ..cap(Mode::SingleNodeWriter)
        };
        assert_eq!(
            check(&none, "c").unwrap_err().to_string(),
            "c.access_type is required"
        );
        let odd = VolumeCapability {
            access_mode: Some(vc::AccessMode { mode: 99 }),
            ..cap(Mode::SingleNodeWriter)
        };
        assert!(check(&odd, "c").is_err());
        assert_eq!(
            filesystem_field("loop", "l", "ext3").unwrap(),
            Some("ext3".into())
        );
        assert!(filesystem_field("loop", "l", "xfs").is_err());
        assert_eq!(filesystem_field("vfs", "v", "").unwrap(), None);
        assert!(filesystem_field("vfs", "v", "ext4").is_err());
        assert_eq!(filesystem_field("ebs", "e", "ext4").unwrap(), None);
        assert!(filesystem_field("rbd", "r", "xfs").is_err());
        assert_eq!(CONTROLLER_RPCS.len(), controller_capabilities().len());
    }
}
