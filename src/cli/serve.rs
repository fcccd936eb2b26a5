//! `polly serve`: load the config, then hand over to the server until SIGINT or SIGTERM.

use super::ServeArgs;
use crate::config::{Config, Overrides};

/// Run the server; `token` is the global `--token`, the admin API's bearer token.
pub(super) async fn run(a: ServeArgs, token: Option<String>) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: a.data_dir,
        admin_listen: a.admin_listen,
        admin_token: token,
        libstorage_listen: a.libstorage_listen,
        offers_listen: a.offers_listen,
        csi_listen: a.csi_listen,
        broker_listen: a.broker_listen,
    };
    // Before anything slow (store open, start-up reconciliation), so SIGTERM is a
    // graceful stop from the start.
    let shutdown = shutdown_signal();
    let config = Config::load(a.config.as_deref(), &overrides)?;
    crate::failpoints::setup_from_env().map_err(anyhow::Error::msg)?;
    raise_open_files_limit();
    let prepared = crate::server::prepare(config)?;
    crate::server::run(prepared, shutdown).await
}

/// Raise the soft limit on open files to the hard limit: every client connection is a file,
/// and the usual soft limit of 1,024 is reached by a thousand idle connections, after which
/// no listener accepts, health included. Reported either way.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a plain struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(
                limit = before,
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-files limit; each connection holds one file"
            );
            return;
        }
    }
    tracing::info!(from = before, to = lim.rlim_cur, "open-files limit");
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal that arrives while the server is still opening its
/// store or reconciling at start-up (seconds with a large store) is kept for the future
/// instead of killing the process with the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
