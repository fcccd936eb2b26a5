//! Failpoints for the crash matrix (`tests/crash_matrix.rs`). Every step of every volume and
//! offer operation has a named point, `<area>.<op>.<step>`; with the cargo feature
//! `failpoints`, `polly serve` arms the points the `FAILPOINTS` environment variable names
//! (`name=return;name2=return`) and an armed point kills the process with SIGKILL, as a real
//! crash would: no destructor runs, nothing is flushed. Without the feature `crash_point!`
//! expands to nothing, and `FAILPOINTS` is ignored.

/// A crash point: `crash_point!("volume.create.after_intent")`. The name may be any `&str`
/// expression; it is only evaluated when the feature is on and a scenario is armed.
macro_rules! crash_point {
    ($name:expr) => {
        fail::fail_point!($name, |_| $crate::failpoints::crash($name))
    };
}
pub(crate) use crash_point;

/// Die now, by SIGKILL on our own pid: the way a power cut or an OOM kill ends the process.
/// One line on stderr (unbuffered) names the point, so a test can tell which point it was.
pub fn crash(name: &str) -> ! {
    eprintln!("polly: crash at failpoint {name}");
    // SAFETY: kill(2) on our own pid with a constant signal has no memory-safety concerns.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    loop {
        std::thread::park();
    }
}

/// Arm the points `FAILPOINTS` names (feature `failpoints` only). A malformed entry is an
/// error naming it, reported before any socket is bound.
#[cfg(feature = "failpoints")]
pub fn setup_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, actions) = entry.split_once('=').ok_or_else(|| {
            format!("FAILPOINTS entry {entry:?} must be NAME=ACTIONS (e.g. volume.create.after_intent=return)")
        })?;
        fail::cfg(name.trim(), actions.trim())
            .map_err(|e| format!("FAILPOINTS entry {entry:?}: {e}"))?;
        tracing::warn!(
            failpoint = name.trim(),
            actions = actions.trim(),
            "failpoint armed"
        );
    }
    Ok(())
}

/// Without the feature there are no points to arm; a `FAILPOINTS` set anyway is reported,
/// so nobody believes a crash scenario is running.
#[cfg(not(feature = "failpoints"))]
pub fn setup_from_env() -> Result<(), String> {
    if std::env::var_os("FAILPOINTS").is_some() {
        tracing::warn!(
            "FAILPOINTS is set, but this polly was built without the `failpoints` feature: ignored"
        );
    }
    Ok(())
}
