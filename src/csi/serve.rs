//! Serving CSI: binding the endpoint (a unix socket: a stale socket file left by a process
//! that died is replaced, a live one is refused; or TCP), serving Identity and Controller
//! until shutdown (then removing the socket file), and the client side's connectors (eager,
//! and lazy for a node forwarding Controller calls), which dial a unix socket or TCP.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Server};

use super::config::CsiEndpoint;
use super::v1::controller_server::ControllerServer;
use super::v1::identity_server::IdentityServer;
use super::{Csi, MAX_REQUEST_BYTES};

/// A bound CSI endpoint.
pub enum Listener {
    /// The socket and its path (removed when serving stops).
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Where it is bound (a TCP port 0 resolved to the port taken).
    pub fn endpoint(&self) -> std::io::Result<CsiEndpoint> {
        Ok(match self {
            Listener::Unix(_, p) => CsiEndpoint::Unix(p.clone()),
            Listener::Tcp(l) => CsiEndpoint::Tcp(l.local_addr()?),
        })
    }
}

/// Why the endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot serve CSI on {path}: another process is serving on that socket; stop it or set csi.listen to another path")]
    Live { path: PathBuf },
    #[error("cannot serve CSI on {path}: it exists and is not a socket; remove it or set csi.listen to another path")]
    NotSocket { path: PathBuf },
    #[error("cannot serve CSI on {endpoint}: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
}

/// Binds the endpoint. A socket file nobody answers on (left by a process that died) is
/// replaced; one a live process serves is refused, as is a path that is not a socket.
pub async fn bind(endpoint: &CsiEndpoint) -> Result<Listener, BindError> {
    let io = |source| BindError::Io {
        endpoint: endpoint.to_string(),
        source,
    };
    match endpoint {
        CsiEndpoint::Tcp(a) => TcpListener::bind(a).await.map(Listener::Tcp).map_err(io),
        CsiEndpoint::Unix(path) => {
            remove_stale(path).await?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let l = UnixListener::bind(path).map_err(io)?;
            // Whoever may reach the socket may create and delete volumes: owner and group.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// Removes a socket file at `path` that no process answers on.
async fn remove_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Io {
                endpoint: path.display().to_string(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotSocket {
            path: path.to_path_buf(),
        });
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(BindError::Live {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "csi: removing a stale socket");
            std::fs::remove_file(path).map_err(|source| BindError::Io {
                endpoint: path.display().to_string(),
                source,
            })
        }
        Err(source) => Err(BindError::Io {
            endpoint: path.display().to_string(),
            source,
        }),
    }
}

/// Serves Identity and Controller on `listener` until `token` is cancelled, then removes the
/// socket file. Requests over [`MAX_REQUEST_BYTES`] are refused (OUT_OF_RANGE), and
/// only HTTP/2 is spoken: anything else on the socket gets its connection closed.
pub async fn serve(
    csi: Csi,
    listener: Listener,
    token: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = server()
        .add_service(IdentityServer::new(csi.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(ControllerServer::new(csi).max_decoding_message_size(MAX_REQUEST_BYTES));
    serve_router(router, listener, token).await
}

/// The gRPC server every CSI endpoint of Polly's is built on (central's and the node's).
pub fn server() -> Server {
    Server::builder().http2_keepalive_interval(Some(Duration::from_secs(60)))
}

/// Serve `router` on `listener` until `token` is cancelled, then remove the socket file.
pub async fn serve_router(
    router: Router,
    listener: Listener,
    token: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    match listener {
        Listener::Tcp(l) => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), token.cancelled_owned())
                .await
        }
        Listener::Unix(l, path) => {
            let res = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), token.cancelled_owned())
                .await;
            let _ = std::fs::remove_file(&path);
            res
        }
    }
}

/// A channel to a CSI endpoint that dials on first use and redials after a failure (a node
/// forwarding Controller calls to central, which may start later or restart).
pub fn connect_lazy(endpoint: &CsiEndpoint) -> Result<Channel, tonic::transport::Error> {
    match endpoint {
        CsiEndpoint::Tcp(a) => Ok(Endpoint::from_shared(format!("http://{a}"))?.connect_lazy()),
        CsiEndpoint::Unix(path) => {
            let path = path.clone();
            Ok(
                Endpoint::from_static("http://localhost").connect_with_connector_lazy(
                    tower::service_fn(move |_: tonic::transport::Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    }),
                ),
            )
        }
    }
}

/// A channel to a CSI endpoint (the tests' client).
pub async fn connect(endpoint: &CsiEndpoint) -> Result<Channel, tonic::transport::Error> {
    match endpoint {
        CsiEndpoint::Tcp(a) => {
            Endpoint::from_shared(format!("http://{a}"))?
                .connect()
                .await
        }
        CsiEndpoint::Unix(path) => {
            let path = path.clone();
            // The URI is not used: every connection dials the socket.
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                }))
                .await
        }
    }
}
