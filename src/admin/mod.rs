//! The admin API: JSON over HTTP on its own listener (default 127.0.0.1:7978), for operators
//! and the `polly` CLI. Volumes, services with capacity, instances, orphans, pending
//! operations, store dump/erase, version, health, readiness, Prometheus metrics and the
//! OpenAPI document. Errors are `{"error": "<code>", "message": "<text>"}` with the status
//! mapped in one place ([`ApiError`]).

pub mod config;
mod error;
mod extract;
mod views;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use config::AdminConfig;
pub use error::{ApiError, ErrorBody};
use extract::{Body, Path, Query};
pub use views::{
    AttachmentView, CreateRequestView, InstanceView, IntentOpView, IntentView, NodeStateView,
    NodeView, ReservationView, SourceView, VolumeStatusView, VolumeView,
};

use crate::volumes::{CreateVolume, Manager, Orphan, ReconcileReport, Restriction, ServiceInfo};

/// The OpenAPI document served at `/admin/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    pub manager: Manager,
    pub token: Option<Arc<str>>,
    /// Set once start-up reconciliation has finished.
    pub ready: Arc<AtomicBool>,
    /// The Mesos scheduler client's state (disabled in embedded mode).
    pub mesos: crate::mesos::client::Handle,
    /// The storage-offer endpoint (frameworks and outstanding offers).
    pub offers: Option<crate::offer_endpoint::Endpoint>,
    /// Lost and fenced nodes.
    pub fencing: Option<crate::fencing::Fencing>,
    /// Leader or follower, with `[ha]` on.
    pub role: Option<crate::ha::Role>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/admin/version", get(version))
        .route("/admin/volumes", get(list_volumes).post(create_volume))
        .route(
            "/admin/volumes/{id}",
            get(inspect_volume).delete(delete_volume),
        )
        .route("/admin/volumes/{id}/attach", post(attach_volume))
        .route("/admin/volumes/{id}/detach", post(detach_volume))
        .route("/admin/volumes/{id}/source", get(volume_source))
        .route("/admin/volumes/{id}/restrict", post(restrict_volume))
        .route("/admin/volumes/{id}/unrestrict", post(unrestrict_volume))
        .route("/admin/volumes/{id}/label", post(label_volume))
        .route("/admin/volumes/{id}/unlabel", post(unlabel_volume))
        .route("/admin/services", get(list_services))
        .route(
            "/admin/instances",
            get(list_instances).post(report_instance),
        )
        .route("/admin/orphans", get(list_orphans))
        .route(
            "/admin/orphans/{service}/{driver_id}/adopt",
            post(adopt_orphan),
        )
        .route(
            "/admin/orphans/{service}/{driver_id}",
            delete(remove_orphan),
        )
        .route("/admin/operations", get(list_operations))
        .route("/admin/store/dump", get(store_dump))
        .route("/admin/store/erase", post(store_erase))
        .route("/admin/agents", get(list_agents))
        .route("/admin/agents/{id}/fence", post(fence_agent))
        .route("/admin/reconciler", get(reconciler_status))
        .route("/admin/mesos", get(mesos_status))
        .route("/admin/frameworks", get(list_frameworks))
        .route("/admin/frameworks/{id}/release", post(release_reservations))
        .route("/admin/offers", get(list_offers))
        .route("/admin/reservations", get(list_reservations))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(guarded)
        .route("/admin/health", get(health))
        .route("/admin/ready", get(ready))
        .route("/admin/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(extract::json_errors))
        .with_state(state)
}

async fn require_token(
    State(st): State<AdminState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return ApiError::unauthorized(if given.is_none() {
                "missing bearer token: pass --token or set POLLY_ADMIN_TOKEN"
            } else {
                "wrong bearer token"
            })
            .into_response();
        }
    }
    next.run(req).await
}

/// The credentials of an `Authorization: Bearer <token>` header. The scheme is matched
/// case-insensitively and may be followed by more than one space (RFC 9110 §11.1, §11.4).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such admin endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Parse a JSON body ourselves: any or no `Content-Type` is accepted, and a malformed body
/// is a 400 in this API's error format. An empty body means `{}`; anything but an object is
/// refused (serde would read a struct from an array of its fields: `[]` as `{}`).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid JSON body: the body must be a JSON object ({...})",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {e}"),
        )
    })
}

/// Version information.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    pub name: String,
    pub version: String,
    pub schema_version: u32,
}

async fn version(State(st): State<AdminState>) -> Json<VersionInfo> {
    Json(VersionInfo {
        name: "polly".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        schema_version: st.manager.store().schema_version(),
    })
}

/// `{"status": "ok"}`, plus `role` (and the `leader`'s addresses on a follower) with `[ha]`.
fn with_role(st: &AdminState, mut v: serde_json::Value) -> serde_json::Value {
    if let (Some(role), Some(obj)) = (&st.role, v.as_object_mut()) {
        if let Some(r) = role.describe().as_object() {
            obj.extend(r.clone());
        }
    }
    v
}

async fn health(State(st): State<AdminState>) -> Json<serde_json::Value> {
    Json(with_role(&st, serde_json::json!({"status": "ok"})))
}

async fn ready(State(st): State<AdminState>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        Json(with_role(&st, serde_json::json!({"status": "ready"}))).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "start-up reconciliation is still running",
        )
        .into_response()
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Text format 0.0.4, or OpenMetrics when the scrape's `Accept` asks for it.
async fn metrics(State(st): State<AdminState>, headers: HeaderMap) -> Response {
    crate::metrics::respond(&headers, |f| st.manager.metrics().render(f))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// Response of `GET /admin/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeList {
    pub volumes: Vec<VolumeView>,
    /// Back-end volumes Polly does not manage; only with `?all=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged: Option<Vec<Orphan>>,
}

async fn list_volumes(
    State(st): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<VolumeList>, ApiError> {
    let volumes = st.manager.volumes()?;
    let unmanaged = if q.all {
        Some(st.manager.reconcile_report().await?.orphans)
    } else {
        None
    };
    Ok(Json(VolumeList {
        volumes: volumes.into_iter().map(VolumeView::from).collect(),
        unmanaged,
    }))
}

async fn create_volume(
    State(st): State<AdminState>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<VolumeView>), ApiError> {
    let req: CreateVolume = body(&bytes)?;
    let existed = st
        .manager
        .store()
        .volume_by_name(&req.service, &req.name)
        .ok()
        .flatten()
        .is_some();
    let v = st.manager.create(req).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(v.into())))
}

#[derive(Debug, Deserialize)]
struct ServiceQuery {
    service: Option<String>,
}

async fn inspect_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> Result<Json<VolumeView>, ApiError> {
    Ok(Json(st.manager.find(q.service.as_deref(), &id)?.into()))
}

async fn delete_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> Result<StatusCode, ApiError> {
    let v = st.manager.find(q.service.as_deref(), &id)?;
    st.manager.delete(&v.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /admin/volumes/{id}/attach`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    pub instance_id: String,
    #[serde(default)]
    pub device: Option<String>,
}

async fn attach_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let b: AttachBody = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    let attached = st.manager.attach(&v.id, &b.instance_id, b.device).await?;
    // Only an instance that really received an attachment enters the instance table.
    let driver = st.manager.service(&v.service)?.driver.kind().to_string();
    st.manager
        .record_instance(&driver, &b.instance_id, None, BTreeMap::new())
        .await?;
    Ok(Json(attached.into()))
}

/// Body of `POST /admin/volumes/{id}/detach`: one instance, or `force` for all.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachBody {
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub force: bool,
}

async fn detach_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let b: DetachBody = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    let instance = match (&b.instance_id, b.force) {
        (Some(i), _) => Some(i.as_str()),
        (None, true) => None,
        (None, false) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give instance_id, or force: true to detach from every instance",
            ))
        }
    };
    Ok(Json(st.manager.detach(&v.id, instance).await?.into()))
}

async fn restrict_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let r: Restriction = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    Ok(Json(st.manager.restrict(&v.id, &r).await?.into()))
}

async fn unrestrict_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let r: Restriction = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    Ok(Json(st.manager.unrestrict(&v.id, &r).await?.into()))
}

/// Body of `POST /admin/volumes/{id}/label`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    pub labels: BTreeMap<String, String>,
}

async fn label_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let b: LabelBody = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    Ok(Json(st.manager.label(&v.id, &b.labels).await?.into()))
}

/// Body of `POST /admin/volumes/{id}/unlabel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlabelBody {
    pub keys: Vec<String>,
}

async fn unlabel_volume(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<ServiceQuery>,
    Body(bytes): Body,
) -> Result<Json<VolumeView>, ApiError> {
    let b: UnlabelBody = body(&bytes)?;
    let v = st.manager.find(q.service.as_deref(), &id)?;
    Ok(Json(st.manager.unlabel(&v.id, &b.keys).await?.into()))
}

async fn list_services(State(st): State<AdminState>) -> Result<Json<Vec<ServiceInfo>>, ApiError> {
    Ok(Json(st.manager.service_infos().await?))
}

async fn list_instances(State(st): State<AdminState>) -> Result<Json<Vec<InstanceView>>, ApiError> {
    let instances = st.manager.store().instances()?;
    Ok(Json(
        instances.into_iter().map(InstanceView::from).collect(),
    ))
}

/// Body of `POST /admin/instances`: a node agent (`polly node`) reporting itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    pub instance_id: String,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

async fn report_instance(
    State(st): State<AdminState>,
    Body(bytes): Body,
) -> Result<StatusCode, ApiError> {
    let b: ReportBody = body(&bytes)?;
    st.manager
        .record_node(&b.instance_id, b.hostname, b.zone, b.fields)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /admin/volumes/{id}/source`.
#[derive(Debug, Deserialize)]
struct SourceQuery {
    instance_id: String,
    #[serde(default)]
    service: Option<String>,
}

/// What the node the volume is attached to mounts (409 for any other instance).
async fn volume_source(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Query(q): Query<SourceQuery>,
) -> Result<Json<SourceView>, ApiError> {
    let v = st.manager.find(q.service.as_deref(), &id)?;
    Ok(Json(
        st.manager.node_source(&v.id, &q.instance_id).await?.into(),
    ))
}

async fn list_orphans(State(st): State<AdminState>) -> Result<Json<ReconcileReport>, ApiError> {
    Ok(Json(st.manager.reconcile_report().await?))
}

/// Body of `POST /admin/orphans/{service}/{driver_id}/adopt`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptBody {
    /// Name of the new record; default: the back-end's name.
    #[serde(default)]
    pub name: Option<String>,
}

async fn adopt_orphan(
    State(st): State<AdminState>,
    Path((service, driver_id)): Path<(String, String)>,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<VolumeView>), ApiError> {
    let b: AdoptBody = if bytes.is_empty() {
        AdoptBody::default()
    } else {
        body(&bytes)?
    };
    let v = st
        .manager
        .adopt_orphan(&service, &driver_id, b.name)
        .await?;
    Ok((StatusCode::CREATED, Json(v.into())))
}

async fn remove_orphan(
    State(st): State<AdminState>,
    Path((service, driver_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    st.manager.remove_orphan(&service, &driver_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_operations(State(st): State<AdminState>) -> Result<Json<Vec<IntentView>>, ApiError> {
    let intents = st.manager.store().intents()?;
    Ok(Json(intents.into_iter().map(IntentView::from).collect()))
}

/// The store's own backup format (`store::Dump`, stamped with its schema version), not the
/// admin views: a dump is every record exactly as the store keeps it.
async fn store_dump(State(st): State<AdminState>) -> Result<Json<crate::store::Dump>, ApiError> {
    Ok(Json(st.manager.store().dump()?))
}

/// Body of `POST /admin/store/erase`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseBody {
    #[serde(default)]
    pub confirm: bool,
}

async fn store_erase(
    State(st): State<AdminState>,
    Body(bytes): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: EraseBody = body(&bytes)?;
    if !b.confirm {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "erase removes every record; send {\"confirm\": true}",
        ));
    }
    st.manager.store().erase()?;
    Ok(Json(serde_json::json!({"erased": true})))
}

async fn list_agents(
    State(st): State<AdminState>,
) -> Result<Json<Vec<crate::mesos::client::Agent>>, ApiError> {
    if let Some(f) = &st.fencing {
        return Ok(Json(f.agents()?));
    }
    let instances = st.manager.store().instances()?;
    Ok(Json(st.mesos.agents_with_instances(&instances)))
}

/// Body of `POST /admin/agents/{id}/fence` (nothing is needed: the call is the assertion).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceBody {}

async fn fence_agent(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Body(bytes): Body,
) -> Result<Json<NodeView>, ApiError> {
    let _: FenceBody = body(&bytes)?;
    let Some(f) = &st.fencing else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "fencing is not running in this server",
        ));
    };
    Ok(Json(
        f.fence(&id, crate::fencing::BY_OPERATOR).await?.into(),
    ))
}

async fn reconciler_status(
    State(st): State<AdminState>,
) -> Json<Option<crate::volumes::ReconcilerStatus>> {
    Json(st.manager.reconciler_status())
}

async fn mesos_status(State(st): State<AdminState>) -> Json<crate::mesos::client::MesosStatus> {
    Json(st.mesos.status())
}

async fn list_frameworks(
    State(st): State<AdminState>,
) -> Result<Json<Vec<crate::offer_endpoint::FrameworkView>>, ApiError> {
    Ok(Json(match st.offers {
        Some(o) => o.frameworks()?,
        None => Vec::new(),
    }))
}

/// `POST /admin/frameworks/{id}/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Only this volume (default: every reservation of the framework).
    #[serde(default)]
    pub volume_id: Option<String>,
    /// Release before the teardown grace has passed, or for a framework that never tore down.
    #[serde(default)]
    pub force: bool,
}

async fn release_reservations(
    State(st): State<AdminState>,
    Path(id): Path<String>,
    Body(bytes): Body,
) -> Result<Json<crate::offer_endpoint::ReleaseReport>, ApiError> {
    let b: ReleaseBody = body(&bytes)?;
    let Some(offers) = st.offers else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the storage-offer endpoint is not running",
        ));
    };
    Ok(Json(
        offers.release(&id, b.volume_id.as_deref(), b.force).await?,
    ))
}

async fn list_offers(State(st): State<AdminState>) -> Json<Vec<crate::offer_endpoint::OfferView>> {
    Json(st.offers.map(|o| o.offers()).unwrap_or_default())
}

async fn list_reservations(
    State(st): State<AdminState>,
) -> Result<Json<Vec<ReservationView>>, ApiError> {
    let reservations = st.manager.store().reservations()?;
    Ok(Json(
        reservations
            .into_iter()
            .map(ReservationView::from)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every `(method, path)` the router declares, read from this file's source so the test
    /// follows the router without a second hand-kept list.
    fn routed() -> BTreeSet<(String, String)> {
        let src = include_str!("mod.rs");
        let src = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
        let mut out = BTreeSet::new();
        for chunk in src.split(".route(").skip(1) {
            let path = chunk.split('"').nth(1).unwrap().to_string();
            let rest = &chunk[chunk.find(',').unwrap()..];
            let end = [".route", ".fallback", ".merge", ".with_state", ";"]
                .iter()
                .filter_map(|stop| rest.find(stop))
                .min()
                .unwrap_or(rest.len());
            let rest = &rest[..end];
            for m in ["get", "post", "delete", "put", "patch"] {
                let found = rest.match_indices(&format!("{m}(")).any(|(i, _)| {
                    i == 0
                        || !rest.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && rest.as_bytes()[i - 1] != b'_'
                });
                if found {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let mut out = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (m, op) in ops.as_object().unwrap() {
                assert!(op["responses"].is_object(), "{m} {path} has no responses");
                out.insert((m.clone(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for h in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
            assert_eq!(super::bearer_token(h), Some("t0k"), "{h}");
        }
        for h in ["Basic t0k", "Bearert0k", "t0k", ""] {
            assert_eq!(super::bearer_token(h), None, "{h}");
        }
    }

    #[test]
    fn openapi_documents_exactly_the_routes_served() {
        let r = routed();
        assert!(r.len() > 15, "route parser found too little: {r:?}");
        assert_eq!(r, documented());
    }

    #[test]
    fn openapi_refs_resolve() {
        let text = super::OPENAPI;
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        for kind in ["schemas", "responses"] {
            for part in text.split(&format!("\"#/components/{kind}/")).skip(1) {
                let name = &part[..part.find('"').unwrap()];
                assert!(
                    doc["components"][kind][name].is_object(),
                    "dangling $ref {kind}/{name}"
                );
            }
        }
    }
}
