//! Ceph RBD images on a node through the kernel client: `rbd map` / `rbd unmap`, and the
//! mappings already there (`/sys/bus/rbd/devices/<id>/{pool,name,current_snap}`).
//!
//! Not exercised against a cluster by the unit tests: the machines they run on have no `rbd`
//! kernel module. They check the arguments built and the sysfs reading (on a fake tree); the
//! commands themselves are the documented `rbd map [--id user] [-c conf] pool/image` (which
//! prints the device, and waits for udev to create it) and `rbd unmap /dev/rbdN`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::command::{self, RBD};
use super::{block, Error, Result};

const SYS_RBD: &str = "/sys/bus/rbd/devices";

/// Checks the names that become `rbd` arguments: none empty, none read as an option, and pool
/// and image free of the separators of an image spec.
pub(super) fn validate(pool: &str, image: &str, user: Option<&str>) -> Result<()> {
    let name = |what: &str, value: &str, separators: &[char]| {
        let bad = value.is_empty()
            || value.starts_with('-')
            || value.chars().any(|c| c.is_whitespace() || c.is_control())
            || value.contains(separators);
        if bad {
            Err(Error::invalid(
                format!("rbd {what} {value:?}"),
                "it must be non-empty, not start with '-', and hold no spaces, '/' or '@'",
            ))
        } else {
            Ok(())
        }
    };
    name("pool", pool, &['/', '@'])?;
    name("image", image, &['/', '@'])?;
    if let Some(user) = user {
        name("user", user, &[])?;
    }
    Ok(())
}

/// `map pool/image [--id user] [-c conf]`.
pub(super) fn map_args(
    pool: &str,
    image: &str,
    user: Option<&str>,
    conf: Option<&Path>,
) -> Vec<OsString> {
    let mut args = vec![
        OsString::from("map"),
        OsString::from(format!("{pool}/{image}")),
    ];
    if let Some(user) = user {
        args.push("--id".into());
        args.push(user.into());
    }
    if let Some(conf) = conf {
        args.push("-c".into());
        args.push(conf.as_os_str().to_owned());
    }
    args
}

/// Maps `pool/image` and returns the device `rbd` created.
pub(super) fn map(
    pool: &str,
    image: &str,
    user: Option<&str>,
    conf: Option<&Path>,
) -> Result<PathBuf> {
    let out = command::run("rbd", &map_args(pool, image, user, conf), RBD)?;
    let device = out.trim();
    if !device.starts_with("/dev/") {
        return Err(Error::invalid(
            format!("rbd map output for {pool}/{image}"),
            format!("expected a device path, got {device:?}; check `rbd showmapped`"),
        ));
    }
    tracing::info!(%pool, %image, %device, "rbd image mapped");
    Ok(PathBuf::from(device))
}

/// Unmaps `device` (needs no cluster connection: the kernel client knows it).
pub(super) fn unmap(device: &Path) -> Result<()> {
    let args = [OsString::from("unmap"), device.as_os_str().to_owned()];
    command::run("rbd", &args, RBD)?;
    tracing::info!(device = %device.display(), "rbd image unmapped");
    Ok(())
}

/// The device of an existing mapping of `pool/image` (its head, not a snapshot), if any.
pub(super) fn find_mapping(pool: &str, image: &str) -> Result<Option<PathBuf>> {
    find_mapping_in(Path::new(SYS_RBD), pool, image)
}

/// [`find_mapping`] with the sysfs directory of rbd devices given.
pub(super) fn find_mapping_in(sys: &Path, pool: &str, image: &str) -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(sys) {
        Ok(e) => e,
        // No rbd module loaded: nothing mapped.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", sys, e)),
    };
    let mut ids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    for id in ids {
        if mapping(sys, id)?.is_some_and(|(p, i)| p == pool && i == image) {
            return Ok(Some(PathBuf::from(format!("/dev/rbd{id}"))));
        }
    }
    Ok(None)
}

/// The `(pool, image)` whose head `device` (`/dev/rbdN`) maps, if it is such a mapping.
pub(super) fn mapping_of(device: &Path) -> Result<Option<(String, String)>> {
    mapping_of_in(Path::new(SYS_RBD), device)
}

/// [`mapping_of`] with the sysfs directory of rbd devices given.
pub(super) fn mapping_of_in(sys: &Path, device: &Path) -> Result<Option<(String, String)>> {
    let id = block::device_name(device).and_then(|n| n.strip_prefix("rbd")?.parse::<u32>().ok());
    match id {
        Some(id) => mapping(sys, id),
        None => Ok(None),
    }
}

/// Pool and image of mapping `id`; `None` when it is gone, is a snapshot or is in a rados
/// namespace (Polly's images never are).
fn mapping(sys: &Path, id: u32) -> Result<Option<(String, String)>> {
    let dir = sys.join(id.to_string());
    let read = |file: &str| -> Result<Option<String>> {
        let path = dir.join(file);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim_end_matches('\n').to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    };
    let (Some(pool), Some(image)) = (read("pool")?, read("name")?) else {
        return Ok(None);
    };
    let head = read("current_snap")?.is_none_or(|s| s == "-");
    let no_namespace = read("pool_ns")?.is_none_or(|s| s.is_empty());
    Ok((head && no_namespace).then_some((pool, image)))
}
