//! mount(2) and umount2(2), called directly: no `mount(8)` process per volume, and the
//! kernel's own errno in every error.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use super::{Error, Result};

/// umount2 tries on EBUSY, 20 ms apart and doubling (about 0.3 s in all).
const BUSY_ATTEMPTS: u32 = 5;

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {}", path.display()), "it holds a NUL byte"))
}

/// Bind-mounts the directory `source` on `target` (`MS_BIND`; mounts below `source` are not
/// carried along); read-only takes a second call, a bind remount with `MS_RDONLY`, as the
/// kernel ignores `MS_RDONLY` on the first.
pub(super) fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let (src, dst) = (c_path(source)?, c_path(target)?);
    // SAFETY: both strings are NUL-terminated and outlive the call; for MS_BIND the kernel
    // ignores the file system type and data, so null is allowed for both.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Mount {
            from: source.display().to_string(),
            fs_type: "bind".into(),
            target: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    if read_only {
        // SAFETY: as above; a remount of the bind just made, no source or data needed.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let _ = unmount(target);
            return Err(Error::Mount {
                from: source.display().to_string(),
                fs_type: "bind (read-only remount)".into(),
                target: target.to_path_buf(),
                source: err,
            });
        }
    }
    Ok(())
}

/// Mounts the file system of type `fs_type` on block device `device` at `target`
/// (`MS_RDONLY` when `read_only`).
pub(super) fn mount_device(
    device: &Path,
    target: &Path,
    fs_type: &str,
    read_only: bool,
) -> Result<()> {
    let (src, dst) = (c_path(device)?, c_path(target)?);
    let fs = CString::new(fs_type).map_err(|_| {
        Error::invalid(
            format!("file system type {fs_type:?}"),
            "it holds a NUL byte",
        )
    })?;
    // SAFETY: all three strings are NUL-terminated and outlive the call; no mount data.
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fs.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::Mount {
            from: device.display().to_string(),
            fs_type: fs_type.to_string(),
            target: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Unmounts the topmost mount at `target`. `Ok(false)` when there was nothing to unmount
/// (`target` missing or not a mount point); `Error::Busy` when it is in use: never a lazy
/// unmount, which would hide that something still writes to the volume.
///
/// "Busy" is retried for a moment first: a process that just closed its last file there may
/// not have let go yet, and a child another thread forks holds a copy of every open file
/// until it execs.
pub(super) fn unmount(target: &Path) -> Result<bool> {
    let dst = c_path(target)?;
    let mut pause = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        attempt += 1;
        // SAFETY: the string is NUL-terminated and outlives the call.
        if unsafe { libc::umount2(dst.as_ptr(), 0) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // EINVAL: not a mount point (flags are 0, so not a flag error).
            Some(libc::EINVAL | libc::ENOENT | libc::ENOTDIR) => return Ok(false),
            Some(libc::EBUSY) if attempt < BUSY_ATTEMPTS => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            Some(libc::EBUSY) => {
                return Err(Error::Busy {
                    target: target.to_path_buf(),
                })
            }
            _ => {
                return Err(Error::Unmount {
                    target: target.to_path_buf(),
                    source: err,
                })
            }
        }
    }
}
