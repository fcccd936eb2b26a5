//! The CSI side of `polly node`: on one socket (`--csi-endpoint`), Identity (the same plugin
//! name as central's), Node (staging and publishing volumes with the shared
//! [`crate::mount`] code, like the Docker plugin), and Controller forwarded unchanged to
//! central's CSI endpoint (`--csi-server`), so tools that expect all three on one socket
//! find them.
//!
//! Unlike the Docker plugin, the Node service never attaches or detaches at central: in
//! CSI the orchestrator does that through ControllerPublish / ControllerUnpublish, whose
//! publish context carries the mount source NodeStage mounts.
//!
//! Files: `state.rs` (the durable record of staged and published paths), `node.rs` (the
//! Node service), `forward.rs` (Controller, forwarded), `identity.rs`.

mod forward;
mod identity;
mod node;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::csi::v1::controller_client::ControllerClient;
use crate::csi::v1::controller_server::ControllerServer;
use crate::csi::v1::identity_server::IdentityServer;
use crate::csi::v1::node_server::NodeServer;
use crate::csi::{Listener, MAX_REQUEST_BYTES};
use crate::keyed_lock::KeyedLocks;
use crate::mount::{self, Published, Source};

use super::config::NodeConfig;
use super::error::NodeError;
use state::{CsiState, CsiStateFile, Phase};

/// The node's CSI services (cheap to clone).
#[derive(Clone)]
pub struct NodeCsi {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NodeConfig,
    file: CsiStateFile,
    /// The state, saved while held so that saves land in order.
    state: Mutex<CsiState>,
    /// One call per volume id at a time (the mount code wants calls serialized per volume).
    locks: KeyedLocks,
    /// Central's Controller, when `csi_server` is set.
    central: Option<ControllerClient<tonic::transport::Channel>>,
}

impl NodeCsi {
    /// Open the CSI state file; nothing is mounted or unmounted yet (see [`NodeCsi::recover`]).
    pub fn open(cfg: NodeConfig) -> Result<NodeCsi, NodeError> {
        let file = CsiStateFile::new(&cfg.state_dir);
        let state = file.load()?;
        let central = match &cfg.csi_server {
            None => None,
            Some(e) => Some(ControllerClient::new(
                crate::csi::connect_lazy(e)
                    .map_err(|err| NodeError::Internal(format!("csi_server {e}: {err}")))?,
            )),
        };
        Ok(NodeCsi {
            inner: Arc::new(Inner {
                cfg,
                file,
                state: Mutex::new(state),
                locks: KeyedLocks::default(),
                central,
            }),
        })
    }

    /// Change the state and save it before returning.
    async fn update(&self, f: impl FnOnce(&mut CsiState)) -> Result<(), NodeError> {
        let mut state = self.inner.state.lock().await;
        let mut next = state.clone();
        f(&mut next);
        let file = self.inner.file.clone();
        let saved = next.clone();
        tokio::task::spawn_blocking(move || file.save(&saved))
            .await
            .map_err(|e| NodeError::Internal(format!("state save task: {e}")))??;
        *state = next;
        Ok(())
    }

    async fn snapshot(&self) -> CsiState {
        self.inner.state.lock().await.clone()
    }

    /// At start: roll back mounts a crash interrupted, finish unmounts, and forget mounts
    /// that are gone (the host rebooted; the orchestrator stages again). Mounts still in
    /// place are kept, for the orchestrator's NodeUnpublish / NodeUnstage.
    pub async fn recover(&self) -> Result<(), NodeError> {
        let s = self.snapshot().await;
        let kinds = [(true, s.published), (false, s.staged)];
        for (publish, mounts) in kinds {
            for (path, m) in mounts {
                let _g = self.inner.locks.lock(&m.volume_id).await;
                let mounted = blocking({
                    let path = path.clone();
                    move || mount::is_mounted(&path)
                })
                .await
                .unwrap_or(false);
                if m.phase == Phase::Mounted && mounted {
                    tracing::info!(volume = %m.volume_id, path = %path.display(), "csi: kept a mount held before the restart");
                    continue;
                }
                tracing::warn!(volume = %m.volume_id, path = %path.display(), phase = ?m.phase, "csi: undoing a mount interrupted or gone");
                if let Err(e) = self.unmount(&path, &m.source, m.published.clone()).await {
                    tracing::warn!(volume = %m.volume_id, path = %path.display(), error = %e, "csi: cannot undo it now; NodeUnstage/NodeUnpublish will retry");
                    continue;
                }
                self.update(|s| {
                    if publish {
                        s.published.remove(&path);
                    } else {
                        s.staged.remove(&path);
                    }
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Undo a mount at `path` from its record, or, when the mount was never recorded (a
    /// crash before its record was saved), from what is mounted there: the mount code
    /// gives back the record of an existing mount of that source.
    async fn unmount(
        &self,
        path: &Path,
        source: &Source,
        published: Option<Published>,
    ) -> Result<(), mount::Error> {
        let path = path.to_path_buf();
        let source = source.clone();
        blocking(move || {
            let p = match published {
                Some(p) => p,
                None if mount::is_mounted(&path)? => mount::publish(&source, &path)?,
                None => Published {
                    target: path.clone(),
                    device: None,
                    attached_here: false,
                    source: Source::Directory { path: path.clone() },
                    read_only: false,
                },
            };
            mount::unpublish(&p)
        })
        .await
    }
}

/// Run blocking mount code off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, mount::Error> + Send + 'static,
) -> Result<T, mount::Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(mount::Error::Io {
            op: "run the mount task for",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

/// Serves Identity, Node and Controller (forwarded) on `listener` until `token` is
/// cancelled, then removes the socket file.
pub async fn serve(
    csi: NodeCsi,
    listener: Listener,
    token: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = crate::csi::server()
        .add_service(IdentityServer::new(csi.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(NodeServer::new(csi.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(ControllerServer::new(csi).max_decoding_message_size(MAX_REQUEST_BYTES));
    crate::csi::serve_router(router, listener, token).await
}
