//! `mount::Error`: what can go wrong putting a volume's data at a path on a node, each
//! message naming the path, device or command and what the user can do about it.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of publishing and unpublishing volumes on a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call on `path` failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A helper program could not be started.
    #[error("cannot run {program}: {source} (is it installed and on PATH?)")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{program} {}` failed ({status}): {stderr}", args.join(" "))]
    Command {
        program: String,
        args: Vec<String>,
        status: String,
        stderr: String,
    },
    /// A helper program did not finish in time and was killed.
    #[error("`{program} {}` did not finish within {after:?} and was killed; check that the device or cluster it talks to is reachable, then retry", args.join(" "))]
    Timeout {
        program: String,
        args: Vec<String>,
        after: Duration,
    },
    /// mount(2) failed.
    #[error("cannot mount {from} ({fs_type}) on {}: {source}; the kernel log (dmesg) usually says why", target.display())]
    Mount {
        from: String,
        fs_type: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// umount2(2) failed for a reason other than "busy" or "not mounted".
    #[error("cannot unmount {}: {source}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The target is in use: a process has files open under it, or another mount sits on it.
    #[error("{} is busy (open files, a working directory, or another mount on it); stop what uses it (`fuser -vm {}`) and retry", target.display(), target.display())]
    Busy { target: PathBuf },
    /// What the volume's data is on is not on this node.
    #[error("{what} not found on this node: {hint}")]
    NotFound { what: String, hint: &'static str },
    /// The target is already a mount point of something else than the volume.
    #[error("{} is already a mount point of {mounted}, not of this volume; unmount it or choose another target", target.display())]
    TargetInUse { target: PathBuf, mounted: String },
    /// After unmounting, the target directory still holds files of its own.
    #[error("{} is not empty after unmounting (files were written into the directory itself); move them away and retry", target.display())]
    NotEmpty { target: PathBuf },
    /// A device holds data that is not a file system; it is never formatted over.
    #[error("{} holds {found} but no file system; polly formats only blank devices: wipe it (`wipefs -a`) if its data is not needed", device.display())]
    NotBlank { device: PathBuf, found: String },
    /// A line of /proc/self/mountinfo that does not parse.
    #[error("malformed mountinfo line {line} `{text}`: {reason}")]
    Malformed {
        line: usize,
        text: String,
        reason: String,
    },
    /// A source or target description that cannot be acted on as given.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(super) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
