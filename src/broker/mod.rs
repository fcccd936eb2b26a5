//! The Open Service Broker surface (OSB API 2.13–2.17) of `polly serve`: Cloud Foundry (or
//! any OSB platform) provisions Polly volumes as service instances and binds them to apps
//! with `volume_mounts` that `polly node`'s plugin mounts on each cell. Off until `[broker]`
//! has credentials. Instances and bindings are records in Polly's store, written before any
//! answer; an instance's operation is saved in progress before the volume manager is asked,
//! so one cut by a crash is finished at the next start ([`Broker::recover`]).
//!
//! `catalog.rs` the offerings and plans, `instances.rs` provision/update/deprovision,
//! `bindings.rs` bind/unbind, `wire.rs` the request bodies, `error.rs` the answers.

mod bindings;
pub mod catalog;
pub mod config;
mod error;
mod instances;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde_json::Value;

pub use config::{BrokerConfig, BrokerConfigError, Credentials, PlanConfig};
pub use error::BrokerError;

use crate::ha::{Role, RoleState};
use crate::keyed_lock::KeyedLocks;
use crate::listener::secrets_equal;
use crate::volumes::Manager;
use catalog::Catalog;
use error::Result;

/// The oldest OSB API version served (Cloud Foundry's cloud controller sends 2.13–2.15).
const MIN_MINOR: u32 = 13;

/// The broker: shared by every request and by the operations running in the background.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    manager: Manager,
    catalog: Catalog,
    cfg: BrokerConfig,
    creds: Credentials,
    ready: Arc<AtomicBool>,
    role: Option<Role>,
    /// One request at a time per instance id decides and records what happens to it.
    locks: KeyedLocks,
    /// Bumped whenever a background operation ends, for the requests waiting on one.
    done: tokio::sync::watch::Sender<u64>,
}

/// The `X-Broker-API-Originating-Identity` of a request, as sent (checked well-formed).
#[derive(Debug, Clone, Default)]
struct Identity(Option<String>);

impl Broker {
    pub fn new(
        manager: Manager,
        cfg: BrokerConfig,
        creds: Credentials,
        ready: Arc<AtomicBool>,
        role: Option<Role>,
    ) -> Broker {
        let services: Vec<(String, String)> = manager
            .services()
            .map(|s| (s.name.clone(), s.driver.kind().to_string()))
            .collect();
        let catalog = Catalog::build(&cfg, &services);
        Broker {
            inner: Arc::new(Inner {
                manager,
                catalog,
                cfg,
                creds,
                ready,
                role,
                locks: KeyedLocks::default(),
                done: tokio::sync::watch::channel(0).0,
            }),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    fn async_after(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.async_after_ms)
    }

    /// The HTTP routes, behind basic auth and the version check.
    pub fn router(&self) -> Router {
        let instance = "/v2/service_instances/{instance_id}";
        let binding = "/v2/service_instances/{instance_id}/service_bindings/{binding_id}";
        Router::new()
            .route("/v2/catalog", get(catalog))
            .route(
                instance,
                get(get_instance)
                    .put(provision)
                    .patch(update)
                    .delete(deprovision),
            )
            .route(&format!("{instance}/last_operation"), get(instance_last_op))
            .route(binding, get(get_binding).put(bind).delete(unbind))
            .route(&format!("{binding}/last_operation"), get(binding_last_op))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), gate))
            .with_state(self.clone())
    }

    /// Whether this instance answers instance and binding calls now: it leads and has
    /// finished start-up reconciliation.
    fn serving(&self) -> Result<()> {
        match self.inner.role.as_ref().map(Role::get) {
            None | Some(RoleState::Leader) => {}
            Some(RoleState::Follower(Some(l))) => {
                return Err(BrokerError::Unavailable(format!(
                    "this polly is a follower; the broker is served by the leader (admin API {})",
                    l.admin
                )))
            }
            Some(_) => {
                return Err(BrokerError::Unavailable(
                    "no polly leader is elected yet; retry shortly".into(),
                ))
            }
        }
        if !self.inner.ready.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(
                "polly is starting (start-up reconciliation); retry shortly".into(),
            ));
        }
        Ok(())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = crate::listener::basic_credentials(headers) else {
            return false;
        };
        let c = &self.inner.creds;
        // Both compared in full, whichever differs.
        let user_ok = secrets_equal(user.as_bytes(), c.username.as_bytes());
        secrets_equal(password.as_bytes(), c.password.as_bytes()) & user_ok
    }
}

/// Check `X-Broker-API-Version`: 2.13 or newer in the 2.x line.
fn check_version(headers: &HeaderMap) -> Result<()> {
    let want = || {
        format!("send X-Broker-API-Version 2.{MIN_MINOR} or newer in the 2.x line (Polly serves 2.{MIN_MINOR} to 2.17)")
    };
    let Some(v) = headers
        .get("x-broker-api-version")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(BrokerError::Version(format!(
            "the X-Broker-API-Version header is missing: {}",
            want()
        )));
    };
    let parsed = v
        .trim()
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((2, minor)) if minor >= MIN_MINOR => Ok(()),
        _ => Err(BrokerError::Version(format!(
            "X-Broker-API-Version {v:?} is not served: {}",
            want()
        ))),
    }
}

/// `X-Broker-API-Originating-Identity: <platform> <base64 of a JSON object>`.
fn originating_identity(headers: &HeaderMap) -> Result<Identity> {
    let Some(v) = headers.get("x-broker-api-originating-identity") else {
        return Ok(Identity(None));
    };
    let bad = || {
        BrokerError::BadRequest(
            "X-Broker-API-Originating-Identity must be `<platform> <base64 of a JSON object>`"
                .into(),
        )
    };
    let s = v.to_str().map_err(|_| bad())?;
    let (platform, value) = s.trim().split_once(' ').ok_or_else(bad)?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| bad())?;
    match serde_json::from_slice::<Value>(&json) {
        Ok(Value::Object(_)) if !platform.is_empty() => Ok(Identity(Some(s.trim().to_string()))),
        _ => Err(bad()),
    }
}

/// Auth (401), then the version (412) and the originating identity (400), then whether this
/// polly serves now (503, except the catalog); the request identity is echoed.
async fn gate(State(b): State<Broker>, mut req: Request, next: Next) -> Response {
    let request_id = req.headers().get("x-broker-api-request-identity").cloned();
    let checked = (|| {
        if !b.authorized(req.headers()) {
            return Err(BrokerError::Unauthorized);
        }
        check_version(req.headers())?;
        let identity = originating_identity(req.headers())?;
        if req.uri().path() != "/v2/catalog" {
            b.serving()?;
        }
        Ok(identity)
    })();
    let mut resp = match checked {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    if let Some(id) = request_id {
        resp.headers_mut()
            .insert("x-broker-api-request-identity", id);
    }
    resp
}

/// Query parameters (`accepts_incomplete`, `service_id`, `plan_id`, `operation`).
type Params = Query<HashMap<String, String>>;

fn accepts_incomplete(q: &HashMap<String, String>) -> bool {
    q.get("accepts_incomplete").map(String::as_str) == Some("true")
}

/// A JSON answer.
fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

async fn catalog(State(b): State<Broker>) -> Response {
    reply(StatusCode::OK, b.catalog().to_json())
}

async fn not_found() -> Response {
    BrokerError::NotFound("no such Open Service Broker route".into()).into_response()
}

fn answer(r: Result<(StatusCode, Value)>) -> Response {
    match r {
        Ok((status, body)) => {
            let mut resp = reply(status, body);
            if status == StatusCode::ACCEPTED {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn provision(
    State(b): State<Broker>,
    Path(iid): Path<String>,
    Query(q): Params,
    Extension(id): Extension<Identity>,
    body: Bytes,
) -> Response {
    answer(b.provision(&iid, &body, accepts_incomplete(&q), id.0).await)
}

async fn update(
    State(b): State<Broker>,
    Path(iid): Path<String>,
    Query(q): Params,
    Extension(id): Extension<Identity>,
    body: Bytes,
) -> Response {
    answer(b.update(&iid, &body, accepts_incomplete(&q), id.0).await)
}

async fn deprovision(
    State(b): State<Broker>,
    Path(iid): Path<String>,
    Query(q): Params,
    Extension(id): Extension<Identity>,
) -> Response {
    answer(b.deprovision(&iid, &q, id.0).await)
}

async fn get_instance(State(b): State<Broker>, Path(iid): Path<String>) -> Response {
    answer(b.get_instance(&iid))
}

async fn instance_last_op(
    State(b): State<Broker>,
    Path(iid): Path<String>,
    Query(q): Params,
) -> Response {
    answer(b.instance_last_operation(&iid, &q))
}

async fn bind(
    State(b): State<Broker>,
    Path((iid, bid)): Path<(String, String)>,
    Extension(id): Extension<Identity>,
    body: Bytes,
) -> Response {
    answer(b.bind(&iid, &bid, &body, id.0).await)
}

async fn unbind(
    State(b): State<Broker>,
    Path((iid, bid)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    answer(b.unbind(&iid, &bid, &q).await)
}

async fn get_binding(
    State(b): State<Broker>,
    Path((iid, bid)): Path<(String, String)>,
) -> Response {
    answer(b.get_binding(&iid, &bid))
}

async fn binding_last_op(
    State(b): State<Broker>,
    Path((iid, bid)): Path<(String, String)>,
) -> Response {
    answer(b.binding_last_operation(&iid, &bid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn versions_from_2_13_in_the_2_line() {
        for ok in ["2.13", "2.14", "2.15", "2.17", " 2.20 "] {
            check_version(&headers(&[("x-broker-api-version", ok)])).unwrap();
        }
        for bad in ["2.12", "1.99", "3.0", "2", "two", ""] {
            assert!(
                check_version(&headers(&[("x-broker-api-version", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(check_version(&HeaderMap::new()).is_err());
    }

    #[test]
    fn originating_identity_must_be_platform_and_base64_json() {
        let good = format!(
            "cloudfoundry {}",
            base64::engine::general_purpose::STANDARD.encode(b"{\"user_id\":\"u1\"}")
        );
        let id = originating_identity(&headers(&[("x-broker-api-originating-identity", &good)]))
            .unwrap();
        assert_eq!(id.0.as_deref(), Some(good.as_str()));
        assert!(originating_identity(&HeaderMap::new()).unwrap().0.is_none());
        for bad in ["cloudfoundry", "cloudfoundry !!!", "cloudfoundry WzFd"] {
            assert!(
                originating_identity(&headers(&[("x-broker-api-originating-identity", bad)]))
                    .is_err(),
                "{bad}"
            );
        }
    }
}
