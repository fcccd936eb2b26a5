//! `/proc/self/mountinfo`: its lines parsed (octal escapes, optional fields up to the ` - `
//! separator), and whether a path is a mount point.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of /proc/self/mountinfo (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    /// The device's `major:minor` as the kernel reports it (`0:N` for btrfs and pseudo file
    /// systems, whose `source` names the device instead).
    pub major: u32,
    pub minor: u32,
    /// The directory of the file system mounted here (`/` unless a bind mount of a subtree).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount source (`/dev/loop3`, `tmpfs`, …), unescaped.
    pub source: String,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Optional fields (`shared:1`, `master:2`), in order.
    pub optional: Vec<String>,
    /// Per-superblock options (`rw,errors=remount-ro`).
    pub super_options: String,
}

/// Parses the text of a mountinfo file. Empty lines are skipped; any other line that does not
/// parse is an error naming it.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountEntry>> {
    parse_bytes(text.as_bytes())
}

/// The mounts of this process's mount namespace, from /proc/self/mountinfo.
pub fn mountinfo() -> Result<Vec<MountEntry>> {
    // Bytes, not a String: the kernel escapes only space, tab, newline and backslash, so a
    // mount point may hold any other byte, UTF-8 or not.
    let bytes = std::fs::read(MOUNTINFO).map_err(|e| Error::io("read", MOUNTINFO, e))?;
    parse_bytes(&bytes)
}

/// Whether `target` (canonicalized if it exists; a missing path is not mounted) is a mount
/// point.
pub fn is_mounted(target: &Path) -> Result<bool> {
    Ok(mount_at(target)?.is_some())
}

/// The topmost mount at `target`, if `target` is a mount point.
pub(super) fn mount_at(target: &Path) -> Result<Option<MountEntry>> {
    let canonical = match std::fs::canonicalize(target) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("resolve", target, e)),
    };
    // Mounts stacked on one point are listed bottom first.
    Ok(mountinfo()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == canonical))
}

fn parse_bytes(text: &[u8]) -> Result<Vec<MountEntry>> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| {
            parse_line(line).map_err(|reason| Error::Malformed {
                line: i + 1,
                text: String::from_utf8_lossy(line).into_owned(),
                reason,
            })
        })
        .collect()
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &[u8]) -> std::result::Result<MountEntry, String> {
    // Split on single spaces: an empty source (`mount -t tmpfs "" /x`) is an empty field.
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 6 {
        return Err(format!(
            "{} fields, fewer than the 6 before ` - `",
            fields.len()
        ));
    }
    // Optional fields come after the 6th field; nothing before it is ever a lone `-`.
    let sep = fields[6..]
        .iter()
        .position(|f| *f == b"-")
        .map(|p| p + 6)
        .ok_or("no ` - ` separator")?;
    let after = &fields[sep + 1..];
    if after.len() < 2 {
        return Err("no file system type and source after ` - `".into());
    }
    let (major, minor) = text(fields[2])
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("device `{}` is not major:minor", text(fields[2])))?;
    Ok(MountEntry {
        mount_id: number(fields[0], "mount id")?,
        parent_id: number(fields[1], "parent id")?,
        major,
        minor,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        options: text(fields[5]),
        optional: fields[6..sep].iter().map(|f| text(f)).collect(),
        fs_type: text(after[0]),
        source: text(after[1]),
        super_options: after.get(2).map(|f| text(f)).unwrap_or_default(),
    })
}

fn number(field: &[u8], what: &str) -> std::result::Result<u64, String> {
    let s = text(field);
    s.parse()
        .map_err(|_| format!("{what} `{s}` is not a number"))
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash); a backslash not followed by three octal digits is kept as it is.
pub(super) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(&[a, b, c]) = field.get(i + 1..i + 4) {
                let octal = |d: u8| (b'0'..=b'7').contains(&d);
                if a <= b'3' && octal(a) && octal(b) && octal(c) {
                    out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}
