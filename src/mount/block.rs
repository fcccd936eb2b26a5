//! Block devices on a node: loop devices on image files (`losetup`, sysfs), what a device
//! holds (`blkid`), formatting a blank one (`mkfs.<fs>`), and the guard that releases a
//! device publish attached when publish fails halfway.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::command::{self, MKFS, QUICK};
use super::mountinfo::MountEntry;
use super::{rbd, Error, Result};

const SYS_BLOCK: &str = "/sys/block";

/// The file behind loop device `device` (`/sys/block/loopN/loop/backing_file`); `None` when
/// `device` is not an attached loop device. The kernel appends ` (deleted)` to a backing
/// file removed while attached.
pub fn loop_backing_file(device: &Path) -> Result<Option<PathBuf>> {
    let Some(name) = device_name(device) else {
        return Ok(None);
    };
    if !name.starts_with("loop") {
        return Ok(None);
    }
    let file = Path::new(SYS_BLOCK).join(&name).join("loop/backing_file");
    match fs::read(&file) {
        Ok(mut bytes) => {
            while bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            use std::os::unix::ffi::OsStringExt;
            Ok(Some(PathBuf::from(OsString::from_vec(bytes))))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", file, e)),
    }
}

/// A loop device already attached to `image`, the lowest-numbered if there are several.
pub fn find_loop(image: &Path) -> Result<Option<PathBuf>> {
    let entries = match fs::read_dir(SYS_BLOCK) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("list", SYS_BLOCK, e)),
    };
    let mut numbers: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("loop")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    for n in numbers {
        let device = PathBuf::from(format!("/dev/loop{n}"));
        if backs(&device, image)? {
            return Ok(Some(device));
        }
    }
    Ok(None)
}

/// Whether loop device `device` is attached to `image` (the same file, or a file of that
/// path deleted since).
pub(super) fn backs(device: &Path, image: &Path) -> Result<bool> {
    let Some(backing) = loop_backing_file(device)? else {
        return Ok(false);
    };
    if same_file(&backing, image) {
        return Ok(true);
    }
    let image = fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    let mut deleted = image.into_os_string();
    deleted.push(" (deleted)");
    Ok(backing.as_os_str() == deleted)
}

/// Attaches a new loop device to `image` and returns it.
pub(super) fn attach_loop(image: &Path) -> Result<PathBuf> {
    let args = [
        OsString::from("-f"),
        OsString::from("--show"),
        image.as_os_str().to_owned(),
    ];
    let out = command::run("losetup", &args, QUICK)?;
    let device = out.trim();
    if device.is_empty() {
        return Err(Error::invalid(
            format!("losetup output for {}", image.display()),
            "it printed no device; check `losetup -a` and free loop devices",
        ));
    }
    tracing::info!(image = %image.display(), %device, "loop device attached");
    Ok(PathBuf::from(device))
}

/// Detaches loop device `device`. Still mounted elsewhere, it goes once that mount does (the
/// kernel turns the detach into auto-clear).
pub(super) fn detach_loop(device: &Path) -> Result<()> {
    let args = [OsString::from("-d"), device.as_os_str().to_owned()];
    command::run("losetup", &args, QUICK)?;
    tracing::info!(device = %device.display(), "loop device detached");
    Ok(())
}

/// What `blkid` finds on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Probe {
    /// No signature at all.
    Blank,
    /// A file system of this type (`ext4`, `xfs`, …).
    Filesystem(String),
    /// Something else (a partition table, …), described for an error.
    Other(String),
}

/// Probes `device` with `blkid -p` (the device itself, never blkid's cache).
pub(super) fn probe(device: &Path) -> Result<Probe> {
    let args = [
        OsString::from("-p"),
        OsString::from("-o"),
        OsString::from("export"),
        device.as_os_str().to_owned(),
    ];
    let out = command::run_any("blkid", &args, QUICK)?;
    match out.status.code() {
        Some(0) => Ok(parse_probe(&out.stdout)),
        // 2: nothing found.
        Some(2) => Ok(Probe::Blank),
        _ => Err(command::failed("blkid", &args, &out)),
    }
}

/// Reads `blkid -o export` output (`KEY=value` lines).
pub(super) fn parse_probe(export: &str) -> Probe {
    let value = |key: &str| {
        export
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    if let Some(fs) = value("TYPE") {
        return Probe::Filesystem(fs);
    }
    if let Some(pt) = value("PTTYPE") {
        return Probe::Other(format!("a {pt} partition table"));
    }
    Probe::Other(format!(
        "an unrecognized signature ({})",
        export.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// The file system on `device`, made first (of type `filesystem`) when the device is blank.
/// A device holding another file system keeps it (and is mounted as what it holds); one
/// holding something else is refused. Never formats over anything.
pub(super) fn ensure_filesystem(
    device: &Path,
    filesystem: &str,
    read_only: bool,
) -> Result<String> {
    match probe(device)? {
        Probe::Filesystem(found) => {
            if found != filesystem {
                tracing::info!(device = %device.display(), %found, wanted = %filesystem,
                    "device already holds another file system; mounting what it holds");
            }
            Ok(found)
        }
        Probe::Other(found) => Err(Error::NotBlank {
            device: device.to_path_buf(),
            found,
        }),
        Probe::Blank if read_only => Err(Error::invalid(
            format!("device {}", device.display()),
            "it is blank, and a read-only (multi-reader) volume is never formatted; mount it read-write once first",
        )),
        Probe::Blank => {
            mkfs(device, filesystem)?;
            Ok(filesystem.to_string())
        }
    }
}

/// The arguments of `mkfs.<filesystem>` for a blank `device`: quiet, and (ext*) no question
/// about a whole disk or an image file.
pub(super) fn mkfs_args(filesystem: &str, device: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = match filesystem {
        f if f.starts_with("ext") => vec!["-q".into(), "-F".into()],
        "xfs" | "btrfs" => vec!["-q".into()],
        _ => Vec::new(),
    };
    args.push(device.as_os_str().to_owned());
    args
}

fn mkfs(device: &Path, filesystem: &str) -> Result<()> {
    let program = format!("mkfs.{filesystem}");
    command::run(&program, &mkfs_args(filesystem, device), MKFS)?;
    tracing::info!(device = %device.display(), %filesystem, "formatted blank device");
    Ok(())
}

/// A file system type as a `mkfs.<name>` suffix and mount(2) type: lower-case letters and
/// digits only (nothing that could make the program name a path).
pub(super) fn validate_filesystem(filesystem: &str) -> Result<()> {
    let ok = !filesystem.is_empty()
        && filesystem.len() <= 32
        && filesystem
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            format!("file system {filesystem:?}"),
            "expected a name like ext4 or xfs (lower-case letters and digits)",
        ))
    }
}

/// The block device mounted by `entry`: the kernel's device for its major:minor
/// (`/sys/dev/block/M:m`), else its source when that is a device path (btrfs).
pub(super) fn device_of(entry: &MountEntry) -> Option<PathBuf> {
    let link = format!("/sys/dev/block/{}:{}", entry.major, entry.minor);
    if let Ok(target) = fs::read_link(&link) {
        if let Some(name) = target.file_name() {
            return Some(Path::new("/dev").join(name));
        }
    }
    let source = Path::new(&entry.source);
    (source.starts_with("/dev/") && source.exists())
        .then(|| fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf()))
}

/// The kernel's name of a device (`loop3` for `/dev/loop3` or a symlink to it).
pub(super) fn device_name(device: &Path) -> Option<String> {
    let real = fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
    real.file_name()?.to_str().map(str::to_string)
}

/// Whether two paths name the same inode (or, when either cannot be read, the same path).
pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// What releases a device publish attached itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    Loop,
    Rbd,
}

/// A device a publish is using; when publish attached it and fails before mounting, dropping
/// the guard releases it again.
pub(super) struct Attachment {
    device: PathBuf,
    release: Option<Release>,
}

impl Attachment {
    /// A device someone else attached: never released here.
    pub(super) fn borrowed(device: PathBuf) -> Self {
        Attachment {
            device,
            release: None,
        }
    }

    /// A device this publish attached.
    pub(super) fn owned(device: PathBuf, release: Release) -> Self {
        Attachment {
            device,
            release: Some(release),
        }
    }

    pub(super) fn device(&self) -> &Path {
        &self.device
    }

    /// Publish succeeded: keep the device; returns it and whether publish attached it.
    pub(super) fn keep(mut self) -> (PathBuf, bool) {
        let attached_here = self.release.take().is_some();
        (std::mem::take(&mut self.device), attached_here)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        let done = match release {
            Release::Loop => detach_loop(&self.device),
            Release::Rbd => rbd::unmap(&self.device),
        };
        if let Err(e) = done {
            tracing::warn!(device = %self.device.display(), error = %e,
                "could not release a device of a failed publish; release it by hand");
        }
    }
}
