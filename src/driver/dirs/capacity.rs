//! Capacity of a root: `statvfs` of its file system, capped by the configured quota minus what
//! the volumes provision; the quota checks of a create and a grow. Without a quota, volumes
//! are thin (together they may provision more than the file system holds, as directories or
//! sparse files do), but none may be larger than the file system itself.

use std::io;
use std::path::Path;

use super::{Dirs, DriverVolume, Error, PoolCapacity, Result};

impl Dirs {
    /// Capacity is `statvfs` of the root, capped by the quota.
    pub fn capacity(&self) -> Result<PoolCapacity> {
        let (fs_total, fs_free) = statvfs(self.root())?;
        let (total, free) = match self.cfg.quota_bytes {
            Some(quota) => {
                let used = self.index()?.used;
                (fs_total.min(quota), fs_free.min(quota.saturating_sub(used)))
            }
            None => (fs_total, fs_free),
        };
        Ok(PoolCapacity {
            pool: self.cfg.pool.clone(),
            zone: self.cfg.zone.clone(),
            total_bytes: total,
            free_bytes: free,
        })
    }

    /// Fails when a quota is set and `wanted` more bytes would not fit.
    pub fn check_quota(&self, wanted: u64) -> Result<()> {
        if self.cfg.quota_bytes.is_none() {
            return Ok(());
        }
        let cap = self.capacity()?;
        if wanted > cap.free_bytes {
            return Err(Error::InsufficientCapacity {
                pool: self.cfg.pool.clone(),
                free_bytes: cap.free_bytes,
                wanted_bytes: wanted,
            });
        }
        Ok(())
    }

    /// Fails when no quota is set and one volume of `size` bytes is larger than the whole
    /// file system: it could never be filled. (With a quota, [`Dirs::check_quota`] decides.)
    /// The error is the quota's, so every surface answers it as it answers a full quota.
    pub fn check_volume_size(&self, size: u64) -> Result<()> {
        if self.cfg.quota_bytes.is_some() {
            return Ok(());
        }
        let (fs_total, fs_free) = statvfs(self.root())?;
        if size > fs_total {
            return Err(Error::InsufficientCapacity {
                pool: self.cfg.pool.clone(),
                free_bytes: fs_free,
                wanted_bytes: size,
            });
        }
        Ok(())
    }

    /// Refuses a grow below the current size; `Ok(false)` when there is nothing to do.
    pub fn check_grow(&self, vol: &DriverVolume, new_size: u64) -> Result<bool> {
        if new_size < vol.size_bytes {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: cannot shrink from {} to {new_size} bytes",
                vol.id, vol.size_bytes
            )));
        }
        if new_size == vol.size_bytes {
            return Ok(false);
        }
        self.check_volume_size(new_size)?;
        self.check_quota(new_size - vol.size_bytes)?;
        Ok(true)
    }
}

/// Total and available bytes of the file system holding `path`.
fn statvfs(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::InvalidArgument(format!("driver root {} contains NUL", path.display()))
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory of the
    // right type; statvfs fills it in completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(
            format!("statvfs {}", path.display()),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: rc == 0, so statvfs initialised the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let (blocks, avail, frsize) = (st.f_blocks as u64, st.f_bavail as u64, st.f_frsize as u64);
    Ok((blocks.saturating_mul(frsize), avail.saturating_mul(frsize)))
}
