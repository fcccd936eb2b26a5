//! Serving an HTTP router on a TCP listener with the limits every listener needs (`[http]`):
//! a deadline for a request's head (which is also how long an idle keep-alive connection is
//! kept), a deadline for reading a request's body, and a cap on open connections. Without
//! them a client that opens sockets and sends nothing, or sends a header a byte at a time,
//! holds a file and a task for ever, and a thousand of them locked every listener out.
//!
//! A response may stream for as long as it likes (a Mesos subscription): only reading the
//! request is timed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// `[http]`: the limits of every HTTP listener of `polly serve` (admin, libStorage,
/// storage offers, broker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Seconds a client has to send a request's head, counted from when the connection is
    /// ready for one: also how long an idle keep-alive connection is kept. Default 30.
    pub header_timeout_secs: f64,
    /// Seconds a handler waits for a request's body. Default 60.
    pub body_timeout_secs: f64,
    /// Open connections per listener; past it, new ones wait in the kernel's queue until one
    /// closes. Default 8192.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout_secs: 30.0,
            body_timeout_secs: 60.0,
            max_connections: 8192,
        }
    }
}

/// What is wrong with `[http]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpLimitsError {
    #[error("http.{0} must be a positive number of seconds")]
    Secs(&'static str),
    #[error("http.max_connections must be positive")]
    Connections,
}

impl HttpLimits {
    pub fn validate(&self) -> Result<(), HttpLimitsError> {
        for (name, v) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e7) {
                return Err(HttpLimitsError::Secs(name));
            }
        }
        if self.max_connections == 0 {
            return Err(HttpLimitsError::Connections);
        }
        Ok(())
    }
}

/// The user and password of an `Authorization: Basic …` header (scheme in any case), if the
/// request carries well-formed ones.
pub fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Secret equality whose time does not depend on where the first difference is.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// How long a stopping listener waits for its connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` with `limits` until `shutdown` completes; then stop accepting,
/// let each connection finish the request it is on, and return (after [`DRAIN`] at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_secs_f64(limits.body_timeout_secs),
    ));
    // HTTP/1.1 only (every client of these listeners speaks it): the head deadline then
    // runs from the moment a connection is accepted, so one that never sends a byte is
    // closed too (a protocol-sniffing server waits for a first byte before any deadline).
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs_f64(limits.header_timeout_secs));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut refused_since_log = 0u64;
    let mut last_log = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of files, or a connection reset before it was accepted: wait a
                    // little and go on (one line every few seconds, with a count).
                    refused_since_log += 1;
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::warn!(error = %e, failed = refused_since_log, addr = ?listener.local_addr().ok(), "cannot accept connections");
                        refused_since_log = 0;
                        last_log = tokio::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = builder
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: all slots back = all connections done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(all)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_and_secrets() {
        use axum::http::{header, HeaderMap, HeaderValue};
        use base64::Engine as _;
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        let token = base64::engine::general_purpose::STANDARD.encode("cf:p:w");
        for scheme in ["Basic", "basic", "BASIC"] {
            assert_eq!(
                basic_credentials(&with(&format!("{scheme} {token}"))),
                Some(("cf".into(), "p:w".into()))
            );
        }
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
        assert_eq!(basic_credentials(&with(&format!("Bearer {token}"))), None);
        assert_eq!(basic_credentials(&with("Basic !!!")), None);
        assert!(secrets_equal(b"cf:pw", b"cf:pw"));
        assert!(!secrets_equal(b"cf:p", b"cf:pw"));
        assert!(!secrets_equal(b"cf:pwx", b"cf:pw"));
        assert!(!secrets_equal(b"cf:pX", b"cf:pw"));
    }

    #[test]
    fn limits_are_checked() {
        HttpLimits::default().validate().unwrap();
        let bad = HttpLimits {
            header_timeout_secs: 0.0,
            ..HttpLimits::default()
        };
        assert_eq!(
            bad.validate(),
            Err(HttpLimitsError::Secs("header_timeout_secs"))
        );
        let bad = HttpLimits {
            max_connections: 0,
            ..HttpLimits::default()
        };
        assert_eq!(bad.validate(), Err(HttpLimitsError::Connections));
    }
}
