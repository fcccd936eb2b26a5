//! High availability (`[ha]`, etcd store only): this instance's role (leader or follower),
//! what the leader announces in the election key, and what a follower does with requests:
//! the storage-offer endpoint answers 307 to the leader (as a non-leading Mesos master does),
//! the libStorage façade and the admin API forward each request to the leader and relay its
//! answer (see ARCHITECTURE.md, "High availability", for why they proxy).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

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
}

impl Role {
    pub fn new() -> Role {
        Role {
            state: Arc::new(RwLock::new(RoleState::Candidate)),
            // No redirects: a follower relays the leader's answer as it is.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
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

impl Default for Role {
    fn default() -> Self {
        Role::new()
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

/// Which API a forwarded request belongs to (its leader address and error format).
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

/// libStorage façade on a follower.
pub async fn proxy_libstorage(State(role): State<Role>, req: Request, next: Next) -> Response {
    proxy(role, Surface::LibStorage, req, next).await
}

/// Admin API on a follower (except the paths describing this instance).
pub async fn proxy_admin(State(role): State<Role>, req: Request, next: Next) -> Response {
    if local_admin_path(req.uri().path()) {
        return next.run(req).await;
    }
    proxy(role, Surface::Admin, req, next).await
}

fn surface_error(surface: Surface, status: StatusCode, message: String) -> Response {
    match surface {
        Surface::LibStorage => crate::libstorage::LsError::plain(status, message).into_response(),
        Surface::Admin => crate::admin::ApiError::new(status, "no_leader", message).into_response(),
    }
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

async fn proxy(role: Role, surface: Surface, req: Request, next: Next) -> Response {
    let leader = match role.get() {
        RoleState::Leader => return next.run(req).await,
        RoleState::Follower(Some(l)) => l,
        _ => {
            return surface_error(
                surface,
                StatusCode::SERVICE_UNAVAILABLE,
                "no polly leader is elected yet; retry shortly".into(),
            )
        }
    };
    let (parts, body) = req.into_parts();
    let base = match surface {
        Surface::LibStorage => format!("{}://{}", leader.libstorage_scheme, leader.libstorage),
        Surface::Admin => format!("http://{}", leader.admin),
    };
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{base}{pq}");
    let body = match axum::body::to_bytes(body, PROXY_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return surface_error(
                surface,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body not forwarded to the leader: {e}"),
            )
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter().filter(|(k, _)| forwardable(k)) {
        headers.append(k.clone(), v.clone());
    }
    let sent = role
        .http
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%url, error = %e, "cannot forward to the leader");
            return surface_error(
                surface,
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the polly leader at {base}: {e}"),
            );
        }
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers().iter().filter(|(k, _)| forwardable(k)) {
        out_headers.append(k.clone(), v.clone());
    }
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return surface_error(
                surface,
                StatusCode::BAD_GATEWAY,
                format!("the polly leader at {base} broke off its answer: {e}"),
            )
        }
    };
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    out
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
}
