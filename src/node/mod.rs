//! `polly node`: Polly on every node. The agent owns no volume state: it asks central
//! Polly (its admin API) to attach or detach volumes for its instance id and mounts them
//! locally ([`crate::mount`]), keeping only mount ids and mount points in a small state
//! file. Docker reaches it through the volume plugin socket ([`docker`]); orchestrators
//! through its CSI socket ([`csi`]: Identity, Node, and Controller forwarded to central);
//! operators and Prometheus through its health and metrics endpoint.
//!
//! It reports itself to central as an instance (id, hostname, zone) at start and every
//! `report_interval_secs`, as a REX-Ray agent does, so zones, Mesos agent mapping and
//! fencing treat it like one.

mod agent;
pub mod config;
pub mod csi;
pub mod docker;
mod error;
mod health;
mod metrics;
mod state;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use agent::{check_name, Agent, CreateOptions, VolumeInfo};
pub use config::{ConfigError, NodeConfig, NodeSection, PathMap};
pub use error::NodeError;
pub use metrics::NodeMetrics;
pub use state::{Entry, Phase, State, StateError, StateFile};

/// Why `polly node` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another process is serving the plugin socket {path}; stop it or pass --socket")]
    SocketInUse { path: PathBuf },
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("[node] csi_endpoint: {0}")]
    Csi(#[from] crate::csi::BindError),
}

/// Listen on the plugin socket: its directory created, a stale socket file (left by a
/// killed node) replaced, a live one refused.
pub async fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, StartError> {
    let bind_err = |source| StartError::Bind {
        what: "plugin socket",
        addr: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(bind_err)?;
    }
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(StartError::SocketInUse {
                path: path.to_path_buf(),
            });
        }
        tokio::fs::remove_file(path).await.map_err(bind_err)?;
    }
    tokio::net::UnixListener::bind(path).map_err(bind_err)
}

/// Run the node agent until `shutdown` resolves: recover what a previous run left, then
/// serve the plugin socket and the health endpoint, and report to central in the
/// background. Mounts stay in place when it stops (containers keep running); the next
/// start picks them up.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = NodeMetrics::default();
    let agent = Agent::open(cfg.clone(), metrics)?;
    // Before the socket is served, so Docker's first call sees the recovered state.
    agent.recover().await?;
    let plugin = bind_socket(&cfg.socket).await?;
    let health = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "health endpoint",
            addr: cfg.listen.to_string(),
            source,
        })?;
    // The CSI side, when asked for: its own state recovered before its socket is served.
    let csi = match &cfg.csi_endpoint {
        None => None,
        Some(endpoint) => {
            let node_csi = csi::NodeCsi::open(cfg.clone())?;
            node_csi.recover().await?;
            let listener = crate::csi::bind(endpoint).await?;
            let at = listener
                .endpoint()
                .map(|e| e.to_string())
                .unwrap_or_else(|_| endpoint.to_string());
            Some((node_csi, listener, at))
        }
    };
    let central = Arc::new(health::CentralStatus::default());
    let health_addr = health
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // What scripts and tests wait for, as `polly serve` prints its addresses.
    announce(&format!(
        "polly node: plugin socket {}",
        cfg.socket.display()
    ));
    announce(&format!("polly node: health on http://{health_addr}"));
    announce(&format!(
        "polly node: instance {} of {}",
        cfg.instance_id, cfg.server
    ));
    let csi_token = tokio_util::sync::CancellationToken::new();
    let csi_task = csi.map(|(node_csi, listener, at)| {
        announce(&format!("polly node: CSI on {at}"));
        let token = csi_token.clone();
        tokio::spawn(async move {
            if let Err(e) = csi::serve(node_csi, listener, token).await {
                tracing::error!(error = %e, "csi: serving stopped");
            }
        })
    });
    announce("polly node: ready");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let reporter = tokio::spawn(report_loop(
        agent.clone(),
        central.clone(),
        Duration::from_secs(cfg.report_interval_secs),
        stopped(stop_rx.clone()),
    ));
    let plugin_srv = axum::serve(plugin, docker::router(agent.clone()))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let health_srv = axum::serve(health, health::router(agent.clone(), central))
        .with_graceful_shutdown(stopped(stop_rx.clone()));
    let plugin_task = tokio::spawn(async move { plugin_srv.await });
    let health_task = tokio::spawn(async move { health_srv.await });
    shutdown.await;
    tracing::info!("polly node stopping; volumes stay mounted");
    let _ = stop_tx.send(true);
    csi_token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        if let Some(t) = csi_task {
            let _ = t.await;
        }
        let _ = plugin_task.await;
        let _ = health_task.await;
        let _ = reporter.await;
    })
    .await;
    let _ = tokio::fs::remove_file(&cfg.socket).await;
    Ok(())
}

/// One status line on stdout. A closed stdout (the reader went away) must not stop the
/// agent, so write errors are ignored (`println!` would panic).
fn announce(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Report to central now and every `every`, and retry detaches it could not take.
async fn report_loop(
    agent: Agent,
    central: Arc<health::CentralStatus>,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        match agent.report().await {
            Ok(()) => {
                central.set(None);
            }
            Err(e) => {
                if central.set(Some(e.to_string())) {
                    tracing::warn!(error = %e, "cannot report to central polly; retrying");
                }
            }
        }
        agent.retry_pending().await;
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
