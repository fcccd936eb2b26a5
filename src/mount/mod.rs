//! Node-side mounting: making a volume's data (a directory, an image file, a Ceph RBD image,
//! an EBS volume) appear at a path on the node, and taking it away again. Shared by
//! `polly node` (the Docker volume plugin) and the CSI Node service; it knows nothing else of
//! Polly.
//!
//! - [`publish`] attaches what needs attaching (a loop device, an rbd mapping), formats a
//!   blank device (never one holding anything), mounts, and returns a [`Published`] record
//!   the caller persists; [`unpublish`] undoes it from that record alone, after a restart too.
//! - Both are idempotent, so a caller retries after a crash by calling again.
//! - Both block (helper programs, mount(2)): call them from a blocking thread
//!   (`tokio::task::spawn_blocking`). Callers serialize calls per volume and per target:
//!   two concurrent publishes of one image could each attach a loop device.
//! - One device per volume per node: a loop device or rbd mapping already there is shared,
//!   never doubled (two block devices on one image, mounted at once, would be two file-system
//!   instances writing the same blocks).
//!
//! Files: `mountinfo.rs` (parsing /proc/self/mountinfo), `syscall.rs` (mount(2),
//! umount2(2)), `block.rs` (loop devices, blkid, mkfs, the release guard), `rbd.rs`, `ebs.rs`,
//! `resize.rs` (growing a mounted file system, statvfs), `command.rs` (running helper
//! programs with a deadline), `error.rs`.

mod block;
mod command;
mod ebs;
mod error;
mod mountinfo;
mod rbd;
mod resize;
mod syscall;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use block::{find_loop, loop_backing_file};
use block::{Attachment, Release};
pub use ebs::{find_ebs_device, find_ebs_device_in};
pub use error::{Error, Result};
pub use mountinfo::{is_mounted, mountinfo, parse_mountinfo, MountEntry};
pub use resize::{grow, usage, Usage};

/// How long publish waits for an attached EBS volume's device to appear (udev links it
/// shortly after the attachment completes).
const EBS_WAIT: Duration = Duration::from_secs(10);

/// Where a volume's data is, as central Polly describes it to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A directory (vfs volume's data dir) reachable on this node: bind-mounted.
    Directory { path: PathBuf },
    /// An image file holding a file system (loop volume). `device`: the loop device central
    /// attached, if any; used when it exists on this node and its backing file is `path`
    /// (same host), else an existing loop device on `path` is used, else the node attaches
    /// its own.
    Image {
        path: PathBuf,
        filesystem: String,
        device: Option<PathBuf>,
    },
    /// A Ceph RBD image: `rbd map pool/image` (with optional `--id user`, `-c conf`),
    /// formatted when blank, mounted. An existing mapping of the image is used instead.
    Rbd {
        pool: String,
        image: String,
        user: Option<String>,
        conf: Option<PathBuf>,
        filesystem: String,
    },
    /// An EBS volume attached to this instance: found under /dev/disk/by-id (NVMe name
    /// `nvme-Amazon_Elastic_Block_Store_vol0123…`, the volume id without its dash) or as the
    /// xvd/sd device `device_hint` central attached it as (xvdf ↔ sdf); formatted only when
    /// blank.
    Ebs {
        volume_id: String,
        device_hint: Option<String>,
        filesystem: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Directory { path } => write!(f, "directory {}", path.display()),
            Source::Image { path, .. } => write!(f, "image {}", path.display()),
            Source::Rbd { pool, image, .. } => write!(f, "rbd image {pool}/{image}"),
            Source::Ebs { volume_id, .. } => write!(f, "ebs volume {volume_id}"),
        }
    }
}

impl Source {
    /// Refuses what cannot be acted on safely: relative paths, file-system names that are not
    /// plain names, rbd names that would read as options, malformed EBS ids and hints.
    fn validate(&self) -> Result<()> {
        match self {
            Source::Directory { path } => absolute("directory", path),
            Source::Image {
                path, filesystem, ..
            } => {
                absolute("image file", path)?;
                block::validate_filesystem(filesystem)
            }
            Source::Rbd {
                pool,
                image,
                user,
                filesystem,
                ..
            } => {
                rbd::validate(pool, image, user.as_deref())?;
                block::validate_filesystem(filesystem)
            }
            Source::Ebs {
                volume_id,
                device_hint,
                filesystem,
            } => {
                ebs::validate_volume_id(volume_id)?;
                if let Some(hint) = device_hint {
                    ebs::hint_names(hint)?;
                }
                block::validate_filesystem(filesystem)
            }
        }
    }
}

/// What `publish` did, enough to undo it after a restart (the node persists it as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub target: PathBuf,
    /// The block device mounted (None for a bind mount).
    pub device: Option<PathBuf>,
    /// True when publish itself attached a loop device / mapped an rbd image, which
    /// unpublish must then release.
    pub attached_here: bool,
    pub source: Source,
    /// Mounted read-only (a multi-reader volume).
    #[serde(default)]
    pub read_only: bool,
}

/// Makes `source`'s data appear at `target` (an absolute path; created if missing, mode 0755).
///
/// Idempotent: if `target` is already a mount point of that same source, returns the existing
/// mount's record without mounting again. Its `attached_here` is then inferred (true for a
/// loop device other than the one central named, and for an rbd mapping); the record the
/// first call returned is the one to keep. A target mounted with anything else is
/// `Error::TargetInUse`.
///
/// A device with no file system is formatted with the source's `filesystem` (only when blkid
/// finds no signature at all: never reformat); one holding a different file system is mounted
/// as what it holds. Anything half done (a loop device attached, an rbd image mapped, the
/// target directory created) is released before an error returns.
pub fn publish(source: &Source, target: &Path) -> Result<Published> {
    publish_with(source, target, false)
}

/// [`publish`], read-only when `read_only` (a multi-reader volume): the bind mount or the
/// file system is mounted `MS_RDONLY`, and a blank device is refused rather than formatted
/// (formatting is a write).
pub fn publish_with(source: &Source, target: &Path, read_only: bool) -> Result<Published> {
    source.validate()?;
    absolute("target", target)?;
    let created = prepare_target(target)?;
    let result = publish_at(source, target, read_only);
    if result.is_err() && created {
        // Nothing is mounted on it: leave no trace of the failed publish.
        let _ = fs::remove_dir(target);
    }
    result
}

/// Undoes `publish`: unmounts the target (not mounted is fine), releases a device publish
/// attached (loop detach / rbd unmap) when `attached_here` and the device still is that
/// source's, and removes the (now empty) target directory. Idempotent: calling it twice, or
/// after a crash halfway, succeeds.
///
/// In use, the target is `Error::Busy` and stays mounted: never a lazy unmount, which would
/// hide that something still writes to the volume. A target directory with files of its own
/// is `Error::NotEmpty` (the device is released first).
pub fn unpublish(p: &Published) -> Result<()> {
    if syscall::unmount(&p.target)? {
        tracing::info!(target = %p.target.display(), source = %p.source, "unmounted");
    }
    if p.attached_here {
        if let Some(device) = &p.device {
            release(&p.source, device)?;
        }
    }
    remove_target(&p.target)
}

fn publish_at(source: &Source, target: &Path, read_only: bool) -> Result<Published> {
    if let Some(entry) = mountinfo::mount_at(target)? {
        return already_published(source, target, &entry);
    }
    let published = |device, attached_here| Published {
        target: target.to_path_buf(),
        device,
        attached_here,
        source: source.clone(),
        read_only,
    };
    let (attachment, filesystem) = match source {
        Source::Directory { path } => {
            require(path, true)?;
            syscall::bind(path, target, read_only)?;
            tracing::info!(%source, target = %target.display(), "bind-mounted");
            return Ok(published(None, false));
        }
        Source::Image {
            path,
            device,
            filesystem,
        } => (image_device(path, device.as_deref())?, filesystem),
        Source::Rbd {
            pool,
            image,
            user,
            conf,
            filesystem,
        } => {
            let attachment = match rbd::find_mapping(pool, image)? {
                Some(device) => Attachment::borrowed(device),
                None => Attachment::owned(
                    rbd::map(pool, image, user.as_deref(), conf.as_deref())?,
                    Release::Rbd,
                ),
            };
            (attachment, filesystem)
        }
        Source::Ebs {
            volume_id,
            device_hint,
            filesystem,
        } => (
            Attachment::borrowed(wait_for_ebs(volume_id, device_hint.as_deref())?),
            filesystem,
        ),
    };
    // On an error below, dropping `attachment` releases what this call attached.
    let fs_type = block::ensure_filesystem(attachment.device(), filesystem, read_only)?;
    syscall::mount_device(attachment.device(), target, &fs_type, read_only)?;
    let (device, attached_here) = attachment.keep();
    tracing::info!(%source, device = %device.display(), %fs_type, target = %target.display(),
        attached_here, "mounted");
    Ok(published(Some(device), attached_here))
}

/// The device to mount an image from: central's loop device when it is on this host and
/// backs the image, else one already on the image, else a new one.
fn image_device(image: &Path, central: Option<&Path>) -> Result<Attachment> {
    require(image, false)?;
    if let Some(device) = central {
        if block::backs(device, image)? {
            return Ok(Attachment::borrowed(device.to_path_buf()));
        }
    }
    if let Some(device) = block::find_loop(image)? {
        return Ok(Attachment::borrowed(device));
    }
    Ok(Attachment::owned(block::attach_loop(image)?, Release::Loop))
}

/// The record of a mount already at `target`, if it is of `source`.
fn already_published(source: &Source, target: &Path, entry: &MountEntry) -> Result<Published> {
    // A device mount of the whole file system (not a bind of a subtree of it).
    let device = (entry.root == Path::new("/"))
        .then(|| block::device_of(entry))
        .flatten();
    let same_name = |a: &Path, b: &Path| {
        block::device_name(a).is_some_and(|n| Some(n) == block::device_name(b))
    };
    // (device, attached_here) when the mount is of `source`.
    let found = match (source, device) {
        (Source::Directory { path }, _) => (fs::metadata(path).is_ok_and(|m| m.is_dir())
            && block::same_file(target, path))
        .then_some((None, false)),
        (
            Source::Image {
                path,
                device: central,
                ..
            },
            Some(device),
        ) => block::backs(&device, path)?.then(|| {
            let here = !central.as_deref().is_some_and(|c| same_name(c, &device));
            (Some(device), here)
        }),
        (Source::Rbd { pool, image, .. }, Some(device)) => rbd::mapping_of(&device)?
            .is_some_and(|(p, i)| p == *pool && i == *image)
            .then_some((Some(device), true)),
        (
            Source::Ebs {
                volume_id,
                device_hint,
                ..
            },
            Some(device),
        ) => find_ebs_device(volume_id, device_hint.as_deref())?
            .is_some_and(|d| same_name(&d, &device))
            .then_some((Some(device), false)),
        _ => None,
    };
    match found {
        Some((device, attached_here)) => Ok(Published {
            target: target.to_path_buf(),
            device,
            attached_here,
            source: source.clone(),
            read_only: entry.options.split(',').any(|o| o == "ro"),
        }),
        None => Err(Error::TargetInUse {
            target: target.to_path_buf(),
            mounted: format!("{} ({})", entry.source, entry.fs_type),
        }),
    }
}

/// Releases `device` if it still is `source`'s: after a crash or a first unpublish it may be
/// gone, or reused by someone else, and then it is left alone.
fn release(source: &Source, device: &Path) -> Result<()> {
    match source {
        Source::Image { path, .. } => {
            if block::backs(device, path)? {
                block::detach_loop(device)?;
            }
        }
        Source::Rbd { pool, image, .. } => {
            if rbd::mapping_of(device)?.is_some_and(|(p, i)| p == *pool && i == *image) {
                rbd::unmap(device)?;
            }
        }
        // Never attached by publish.
        Source::Directory { .. } | Source::Ebs { .. } => {}
    }
    Ok(())
}

fn wait_for_ebs(volume_id: &str, hint: Option<&str>) -> Result<PathBuf> {
    let deadline = Instant::now() + EBS_WAIT;
    loop {
        if let Some(device) = find_ebs_device(volume_id, hint)? {
            return Ok(device);
        }
        if Instant::now() >= deadline {
            let hinted = hint.map(|h| format!(" nor as {h}")).unwrap_or_default();
            return Err(Error::NotFound {
                what: format!("ebs volume {volume_id} (not under /dev/disk/by-id{hinted})"),
                hint: "attach it to this instance first (its device appears within seconds)",
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn absolute(what: &str, path: &Path) -> Result<()> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("{what} {}", path.display()),
            "it must be an absolute path",
        ))
    }
}

/// Checks that `path` exists and is a directory (`dir`) or a regular file.
fn require(path: &Path, dir: bool) -> Result<()> {
    let (what, hint) = if dir {
        (
            "directory",
            "the vfs service's root must be reachable on this node at the same path",
        )
    } else {
        (
            "image file",
            "the loop service's root must be reachable on this node at the same path",
        )
    };
    match fs::metadata(path) {
        Ok(m) if (dir && m.is_dir()) || (!dir && m.is_file()) => Ok(()),
        Ok(_) => Err(Error::invalid(
            format!("{what} {}", path.display()),
            format!("it exists but is not a {what}"),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound {
            what: format!("{what} {}", path.display()),
            hint,
        }),
        Err(e) => Err(Error::io("inspect", path, e)),
    }
}

/// Creates `target` (and its parents) with mode 0755 if missing; true when it did.
fn prepare_target(target: &Path) -> Result<bool> {
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(Error::invalid(
                format!("target {}", target.display()),
                "it exists and is not a directory",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("inspect", target, e)),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(target)
        .map_err(|e| Error::io("create directory", target, e))?;
    // The umask may have taken bits off.
    fs::set_permissions(target, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("set the mode of", target, e))?;
    Ok(true)
}

fn remove_target(target: &Path) -> Result<()> {
    match fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Err(Error::NotEmpty {
            target: target.to_path_buf(),
        }),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Error::Busy {
            target: target.to_path_buf(),
        }),
        Err(e) => Err(Error::io("remove directory", target, e)),
    }
}
