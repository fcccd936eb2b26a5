//! A mounted volume's size and use: growing the file system on a published device to fill
//! it (after the back-end grew the volume), and statvfs(3) of a mount point, for the CSI
//! Node service's expand and stats calls.

use std::ffi::OsString;
use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::block::device_name;
use super::command::{self, MKFS, QUICK};
use super::{mountinfo, Error, Published, Result, Source};

/// Space and inodes of a mounted file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// statvfs(3) of `path`.
// The statvfs fields are u64 on 64-bit Linux but narrower elsewhere.
#[allow(clippy::useless_conversion)]
pub fn usage(path: &Path) -> Result<Usage> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {}", path.display()), "it holds a NUL byte"))?;
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and outlives the call; `st` is written by the kernel on
    // success and read only then.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io("statvfs", path, std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    let total_bytes = u64::from(st.f_blocks) * frsize;
    let free_bytes = u64::from(st.f_bfree) * frsize;
    Ok(Usage {
        total_bytes,
        available_bytes: u64::from(st.f_bavail) * frsize,
        used_bytes: total_bytes.saturating_sub(free_bytes),
        total_inodes: u64::from(st.f_files),
        free_inodes: u64::from(st.f_ffree),
        used_inodes: u64::from(st.f_files).saturating_sub(u64::from(st.f_ffree)),
    })
}

/// Grows the file system mounted at `p.target` to fill its device, online, and returns the
/// device's size in bytes; `None` for a bind mount (a directory has no size of its own).
/// An image's loop device is told to re-read the image's size first (`losetup -c`), as the
/// back-end grew the file, not the device. Idempotent: a file system filling its device
/// already is left as it is.
pub fn grow(p: &Published) -> Result<Option<u64>> {
    let Some(device) = &p.device else {
        return Ok(None);
    };
    let Some(entry) = mountinfo::mount_at(&p.target)? else {
        return Err(Error::NotFound {
            what: format!("a mount at {}", p.target.display()),
            hint: "stage the volume on this node first",
        });
    };
    let dev = OsString::from(device.as_os_str());
    if matches!(p.source, Source::Image { .. }) {
        command::run("losetup", &["-c".into(), dev.clone()], QUICK)?;
    }
    match entry.fs_type.as_str() {
        "ext2" | "ext3" | "ext4" => command::run("resize2fs", &[dev], MKFS)?,
        "xfs" => command::run("xfs_growfs", &[p.target.clone().into_os_string()], MKFS)?,
        other => {
            return Err(Error::invalid(
                format!("file system {other} on {}", device.display()),
                "polly grows ext2/3/4 and xfs only",
            ))
        }
    };
    device_size(device).map(Some)
}

/// A block device's size from /sys/class/block/NAME/size (512-byte sectors).
fn device_size(device: &Path) -> Result<u64> {
    let name = device_name(device).ok_or_else(|| {
        Error::invalid(
            format!("device {}", device.display()),
            "it has no kernel name",
        )
    })?;
    let path = Path::new("/sys/class/block").join(name).join("size");
    let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    text.trim()
        .parse::<u64>()
        .map(|sectors| sectors * 512)
        .map_err(|_| Error::invalid(format!("{}", path.display()), "not a number"))
}
