//! Running the helper programs (`losetup`, `blkid`, `mkfs.<fs>`, `rbd`): stdin closed, output
//! captured, and a deadline, so a hung cluster or device fails one publish instead of holding
//! the node's worker forever.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Error, Result};

/// losetup, blkid: local and quick.
pub(super) const QUICK: Duration = Duration::from_secs(60);
/// mkfs on a large device.
pub(super) const MKFS: Duration = Duration::from_secs(600);
/// rbd map/unmap: monitors to reach, a kernel client to connect.
pub(super) const RBD: Duration = Duration::from_secs(180);

/// What a finished program left.
pub(super) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` and returns its output whatever its exit status.
pub(super) fn run_any(program: &str, args: &[OsString], timeout: Duration) -> Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.to_string(),
            source,
        })?;
    // Drain both pipes while waiting, so a chatty program never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = match wait(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            // Reap it off this thread: a program stuck in the kernel may take a while to die.
            std::thread::spawn(move || child.wait());
            return Err(Error::Timeout {
                program: program.to_string(),
                args: lossy(args),
                after: timeout,
            });
        }
        Err(e) => {
            return Err(Error::Spawn {
                program: program.to_string(),
                source: e,
            })
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `program` and returns its stdout; a non-zero exit is `Error::Command` with stderr.
pub(super) fn run(program: &str, args: &[OsString], timeout: Duration) -> Result<String> {
    let out = run_any(program, args, timeout)?;
    if !out.status.success() {
        return Err(failed(program, args, &out));
    }
    Ok(out.stdout)
}

/// The error for a program that exited unsuccessfully.
pub(super) fn failed(program: &str, args: &[OsString], out: &Output) -> Error {
    Error::Command {
        program: program.to_string(),
        args: lossy(args),
        status: out.status.to_string(),
        stderr: out.stderr.trim().to_string(),
    }
}

fn lossy(args: &[OsString]) -> Vec<String> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The child's exit status, or `None` once `timeout` has passed.
fn wait(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
