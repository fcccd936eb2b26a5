//! High availability (`[ha]`, etcd store only): this instance's role (leader or follower),
//! what the leader announces in the election key, and what a follower does with requests:
//! the storage-offer endpoint answers 307 to the leader (as a non-leading Mesos master does),
//! the libStorage façade and the admin API forward each request to the leader and relay its
//! answer (see ARCHITECTURE.md, "High availability", for why they proxy).

pub mod config;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

pub use config::{HaConfig, HaConfigError};

/// Exit code of `polly serve` when it stopped because it lost leadership; a supervisor
/// restarts it and it rejoins as a follower.
pub const EXIT_LOST_LEADERSHIP: u8 = 3;

/// Largest request body a follower forwards.
const PROXY_BODY_LIMIT: usize = 64 << 20;

/// What the leader writes into the election key: where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// `host:port` of the admin API.
    pub admin: String,
    /// `host:port` of the libStorage façade.
    pub libstorage: String,
    /// `http` or `https` (the façade's scheme).
    pub libstorage_scheme: String,
    /// `host:port` of the storage-offer endpoint.
    pub offers: String,
}

impl LeaderInfo {
    /// The announcement for listeners bound at these addresses; `host` replaces their IP
    /// (required when they are bound to a wildcard address).
    pub fn new(
        host: Option<&str>,
        admin: SocketAddr,
        libstorage: SocketAddr,
        tls: bool,
        offers: SocketAddr,
    ) -> Result<LeaderInfo, String> {
        let at = |a: SocketAddr| -> Result<String, String> {
            match host {
                Some(h) if h.contains(':') => Ok(format!("[{h}]:{}", a.port())),
                Some(h) => Ok(format!("{h}:{}", a.port())),
                None if a.ip().is_unspecified() => Err(format!(
                    "ha: a listener is bound to {a}; set ha.advertise_host to the address other instances reach this one at"
                )),
                None => Ok(a.to_string()),
            }
        };
        Ok(LeaderInfo {
            admin: at(admin)?,
            libstorage: at(libstorage)?,
            libstorage_scheme: if tls { "https" } else { "http" }.into(),
            offers: at(offers)?,
        })
    }
}

/// This instance's part in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// Not elected yet and no leader known.
    Candidate,
    Leader,
    /// Another instance leads (`None`: it announced nothing readable).
    Follower(Option<LeaderInfo>),
}

impl RoleState {
    pub fn name(&self) -> &'static str {
        match self {
            RoleState::Candidate => "candidate",
            RoleState::Leader => "leader",
            RoleState::Follower(_) => "follower",
        }
    }
}

/// Shared, cheap to clone: the role every request checks.
#[derive(Clone)]
pub struct Role {
    state: Arc<RwLock<RoleState>>,
    http: reqwest::Client,
    /// For a leader whose façade serves TLS: trusts what `[ha] leader_ca_file` (or the
    /// instance's own certificate) names. None: such a leader cannot be forwarded to.
    leader_tls: Option<tokio_rustls::TlsConnector>,
}

/// Why a forwarded request got no answer.
enum Hop {
    /// No connection, TLS handshake or request: nothing reached the leader's handler, or
    /// it is unknown whether it did (a request cut off mid-way).
    Unreachable(String),
    /// The leader answered, but its body was cut off.
    BrokeOff(String),
}

/// A forwarded request's answer: status, headers, body.
type Answer = (StatusCode, HeaderMap, axum::body::Bytes);

/// How long a follower waits to connect to the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Role {
    /// `leader_tls`: what a follower trusts when the leader's façade serves TLS (see
    /// `libstorage::tls::leader_client_config`); without it, only plain HTTP is forwarded.
    pub fn new(leader_tls: Option<rustls::ClientConfig>) -> Result<Role, String> {
        // No redirects: a follower relays the leader's answer as it is.
        let b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30));
        let http = b
            .build()
            .map_err(|e| format!("cannot build the client that forwards to the leader: {e}"))?;
        Ok(Role {
            state: Arc::new(RwLock::new(RoleState::Candidate)),
            http,
            leader_tls: leader_tls.map(|cc| tokio_rustls::TlsConnector::from(Arc::new(cc))),
        })
    }

    /// Forward over plain HTTP (pooled connections).
    async fn forward_http(
        &self,
        method: axum::http::Method,
        url: &str,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Answer, Hop> {
        let resp = self
            .http
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| Hop::Unreachable(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Hop::BrokeOff(e.to_string()))?;
        Ok((status, headers, bytes))
    }

    /// Forward to a leader's façade served over TLS (`hostport` as it announces it): one
    /// HTTP/1.1 connection per request; the leader's certificate must chain to what this
    /// instance trusts and name the host the leader advertises.
    async fn forward_tls(
        &self,
        method: axum::http::Method,
        hostport: &str,
        path_and_query: String,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Answer, Hop> {
        let Some(tls) = &self.leader_tls else {
            return Err(Hop::Unreachable(
                "the leader's façade serves TLS and this instance trusts no certificate for \
                 it: set [libstorage.tls] or [ha] leader_ca_file"
                    .into(),
            ));
        };
        let host = host_of(hostport);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Hop::Unreachable(format!("leader host {host:?}: {e}")))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(hostport))
            .await
            .map_err(|_| Hop::Unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| Hop::Unreachable(e.to_string()))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
            .await
            .map_err(|_| Hop::Unreachable(format!("no TLS handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| Hop::Unreachable(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Hop::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection to the leader ended");
            }
        });
        let mut req = axum::http::Request::new(Body::from(body));
        *req.method_mut() = method;
        *req.uri_mut() = path_and_query
            .parse()
            .map_err(|e| Hop::Unreachable(format!("path {path_and_query:?}: {e}")))?;
        *req.headers_mut() = headers;
        if let Ok(h) = HeaderValue::from_str(hostport) {
            req.headers_mut().insert(header::HOST, h);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Hop::Unreachable(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), PROXY_BODY_LIMIT)
            .await
            .map_err(|e| Hop::BrokeOff(e.to_string()))?;
        Ok((parts.status, parts.headers, bytes))
    }

    pub fn get(&self) -> RoleState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, s: RoleState) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// For `/admin/health` and `/admin/ready`: `{"role": …, "leader": {…}}`.
    pub fn describe(&self) -> serde_json::Value {
        match self.get() {
            RoleState::Follower(Some(l)) => serde_json::json!({"role": "follower", "leader": l}),
            s => serde_json::json!({"role": s.name()}),
        }
    }
}

/// Storage-offer endpoint on a follower: 307 to the leader, before anything else is checked
/// (a non-leading Mesos master does the same). The Location is protocol-relative:
/// `//leader:port` plus the original path and query.
pub async fn offers_redirect(State(role): State<Role>, req: Request, next: Next) -> Response {
    match role.get() {
        RoleState::Leader => next.run(req).await,
        RoleState::Follower(Some(l)) => {
            let pq = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let loc = format!("//{}{pq}", l.offers);
            match HeaderValue::from_str(&loc) {
                Ok(v) => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, v)]).into_response(),
                Err(_) => no_leader_text(),
            }
        }
        _ => no_leader_text(),
    }
}

fn no_leader_text() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "No leader elected: polly instances are electing one; retry shortly",
    )
        .into_response()
}

/// Which API a forwarded request belongs to (which of the leader's addresses it goes to).
#[derive(Clone, Copy)]
pub enum Surface {
    LibStorage,
    Admin,
}

/// Admin paths a follower answers itself: they describe this instance.
fn local_admin_path(path: &str) -> bool {
    matches!(
        path,
        "/admin/health" | "/admin/ready" | "/admin/openapi.json" | "/metrics"
    )
}

/// Why a follower could not hand a request to the leader. Each surface renders it in its
/// own error format with [`ProxyError::status`]: `E` of [`proxy_libstorage`] and
/// [`proxy_admin`] is that surface's error type.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no polly leader is elected yet; retry shortly")]
    NoLeader,
    #[error("request body not forwarded to the leader: {0}")]
    BodyNotForwarded(String),
    /// `leader`: the base URL of the leader's surface.
    #[error("cannot reach the polly leader at {leader}: {reason}")]
    Unreachable { leader: String, reason: String },
    #[error("the polly leader at {leader} broke off its answer: {reason}")]
    BrokeOff { leader: String, reason: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoLeader => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BodyNotForwarded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Unreachable { .. } | ProxyError::BrokeOff { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// libStorage façade on a follower; `E` renders a [`ProxyError`] in libStorage's format.
pub async fn proxy_libstorage<E>(State(role): State<Role>, req: Request, next: Next) -> Response
where
    E: From<ProxyError> + IntoResponse,
{
    proxy(role, Surface::LibStorage, req, next)
        .await
        .unwrap_or_else(|e| E::from(e).into_response())
}

/// Admin API on a follower (except the paths describing this instance); `E` renders a
/// [`ProxyError`] in the admin API's format.
pub async fn proxy_admin<E>(State(role): State<Role>, req: Request, next: Next) -> Response
where
    E: From<ProxyError> + IntoResponse,
{
    if local_admin_path(req.uri().path()) {
        return next.run(req).await;
    }
    proxy(role, Surface::Admin, req, next)
        .await
        .unwrap_or_else(|e| E::from(e).into_response())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those the transport recomputes.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn proxy(
    role: Role,
    surface: Surface,
    req: Request,
    next: Next,
) -> Result<Response, ProxyError> {
    let leader = match role.get() {
        RoleState::Leader => return Ok(next.run(req).await),
        RoleState::Follower(Some(l)) => l,
        _ => return Err(ProxyError::NoLeader),
    };
    let (parts, body) = req.into_parts();
    let base = match surface {
        Surface::LibStorage => format!("{}://{}", leader.libstorage_scheme, leader.libstorage),
        Surface::Admin => format!("http://{}", leader.admin),
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{base}{pq}");
    let body = axum::body::to_bytes(body, PROXY_BODY_LIMIT)
        .await
        .map_err(|e| ProxyError::BodyNotForwarded(e.to_string()))?;
    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter().filter(|(k, _)| forwardable(k)) {
        headers.append(k.clone(), v.clone());
    }
    let answer = match (&surface, leader.libstorage_scheme.as_str()) {
        (Surface::LibStorage, "https") => {
            role.forward_tls(parts.method, &leader.libstorage, pq, headers, body)
                .await
        }
        _ => role.forward_http(parts.method, &url, headers, body).await,
    };
    let (status, resp_headers, bytes) = match answer {
        Ok(a) => a,
        Err(Hop::Unreachable(e)) => {
            tracing::warn!(%url, error = %e, "cannot forward to the leader");
            return Err(ProxyError::Unreachable {
                leader: base,
                reason: e,
            });
        }
        Err(Hop::BrokeOff(e)) => {
            return Err(ProxyError::BrokeOff {
                leader: base,
                reason: e,
            })
        }
    };
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp_headers.iter().filter(|(k, _)| forwardable(k)) {
        out_headers.append(k.clone(), v.clone());
    }
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// The host of `host:port` or `[v6]:port`, without brackets.
fn host_of(hostport: &str) -> &str {
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_uses_the_advertised_host_or_the_bound_ip() {
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let w: SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let l = LeaderInfo::new(None, a, a, true, a).unwrap();
        assert_eq!(l.admin, "127.0.0.1:7000");
        assert_eq!(l.libstorage_scheme, "https");
        assert!(LeaderInfo::new(None, w, a, false, a).is_err());
        let l = LeaderInfo::new(Some("polly-2"), w, w, false, w).unwrap();
        assert_eq!(l.offers, "polly-2:7001");
        let l = LeaderInfo::new(Some("::1"), w, w, false, w).unwrap();
        assert_eq!(l.admin, "[::1]:7001");
    }

    #[test]
    fn proxy_errors_carry_their_status() {
        assert_eq!(
            ProxyError::NoLeader.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ProxyError::NoLeader.to_string(),
            "no polly leader is elected yet; retry shortly"
        );
        let e = ProxyError::Unreachable {
            leader: "http://10.0.0.2:7978".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            e.to_string(),
            "cannot reach the polly leader at http://10.0.0.2:7978: connection refused"
        );
        assert_eq!(
            ProxyError::BodyNotForwarded("length limit exceeded".into()).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
