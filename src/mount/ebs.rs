//! Finding an attached EBS volume's block device: by its NVMe serial under
//! `/dev/disk/by-id` (Nitro instances), else by the `xvdX`/`sdX` name it was attached as (Xen
//! instances, or the `sdX` links amazon-ec2-utils makes).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Error, Result};

const BY_ID_PREFIX: &str = "nvme-Amazon_Elastic_Block_Store_";

/// The block device of EBS volume `volume_id` (`vol-0123…`) on this instance, resolved
/// through symlinks; `None` when it is not (yet) there.
pub fn find_ebs_device(volume_id: &str, device_hint: Option<&str>) -> Result<Option<PathBuf>> {
    find_ebs_device_in(Path::new("/dev"), volume_id, device_hint)
}

/// [`find_ebs_device`] with the device directory given (a fake `/dev` in tests).
///
/// 1. `<dev>/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123…` (the id without its dash;
///    a `_<namespace>` suffix is accepted, partitions are not).
/// 2. `<dev>/<hint>`, then its twin (`xvdf` ↔ `sdf`), unless that device is the NVMe device of
///    another EBS volume (on Nitro the attachment names say nothing about device names).
pub fn find_ebs_device_in(
    dev: &Path,
    volume_id: &str,
    device_hint: Option<&str>,
) -> Result<Option<PathBuf>> {
    validate_volume_id(volume_id)?;
    let serial = volume_id.replace('-', "");
    let by_id = dev.join("disk/by-id");
    let mut others = Vec::new();
    let entries = match fs::read_dir(&by_id) {
        Ok(e) => e.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("list", by_id, e)),
    };
    for entry in entries {
        let name = entry.file_name();
        let Some(vol) = name.to_str().and_then(|n| n.strip_prefix(BY_ID_PREFIX)) else {
            continue;
        };
        let (vol, suffix) = vol.split_at(vol.find('_').unwrap_or(vol.len()));
        let namespace = suffix.is_empty()
            || (suffix.len() > 1 && suffix[1..].bytes().all(|b| b.is_ascii_digit()));
        if !namespace || vol.contains("-part") {
            continue;
        }
        let Ok(device) = fs::canonicalize(entry.path()) else {
            continue; // a dangling link: the device is going away
        };
        if vol == serial {
            return Ok(Some(device));
        }
        others.push(device);
    }
    let Some(hint) = device_hint else {
        return Ok(None);
    };
    for name in hint_names(hint)? {
        let Ok(device) = fs::canonicalize(dev.join(&name)) else {
            continue;
        };
        if others.contains(&device) {
            tracing::warn!(volume_id, hint, device = %device.display(),
                "the hinted device is another EBS volume's; not using it");
            continue;
        }
        return Ok(Some(device));
    }
    Ok(None)
}

pub(super) fn validate_volume_id(volume_id: &str) -> Result<()> {
    let ok = volume_id.starts_with("vol-")
        && volume_id.len() > 4
        && volume_id[4..].bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("ebs volume id {volume_id:?}"),
            "expected vol- followed by letters and digits",
        ))
    }
}

/// The hint (`/dev/xvdf`, `xvdf`, `sdf`) and its twin, as names under the device directory.
pub(super) fn hint_names(hint: &str) -> Result<Vec<String>> {
    let name = hint.strip_prefix("/dev/").unwrap_or(hint);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        return Err(Error::invalid(
            format!("ebs device hint {hint:?}"),
            "expected a device name like /dev/xvdf or /dev/sdf",
        ));
    }
    let twin = if let Some(rest) = name.strip_prefix("xvd") {
        Some(format!("sd{rest}"))
    } else {
        name.strip_prefix("sd").map(|rest| format!("xvd{rest}"))
    };
    Ok(std::iter::once(name.to_string()).chain(twin).collect())
}
