//! The façade's router: routes by path and method, with per-service auth, `?async`, the
//! `Libstorage-*` headers, the body limit and `Libstorage-Servername` as layers; and the
//! routes that only describe the server (`/`, `/help...`) or answer that there is no route.

use axum::extract::{DefaultBodyLimit, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::list::{volumes_all, volumes_service};
use super::services::{service_one, services_all};
use super::volumes::{
    volume_delete, volume_inspect, volume_post, volumes_all_post, volumes_service_post,
};
use super::{auth, client_headers, flags, json, snapshots, tasks, LsError, LsState, BODY_LIMIT};

/// The façade router.
pub fn router(state: LsState) -> Router {
    let name = state.server_name.clone();
    Router::new()
        .route("/", get(root))
        .route("/services", get(services_all))
        .route("/services/{service}", get(service_one))
        .route("/volumes", get(volumes_all).post(volumes_all_post))
        .route(
            "/volumes/{service}",
            get(volumes_service).post(volumes_service_post),
        )
        .route(
            "/volumes/{service}/{volume}",
            get(volume_inspect).post(volume_post).delete(volume_delete),
        )
        .route("/snapshots", get(snapshots::snapshots_all))
        .route("/snapshots/{service}", get(snapshots::snapshots_service))
        .route(
            "/snapshots/{service}/{snapshot}",
            get(snapshots::snapshot_inspect)
                .post(snapshots::snapshot_post)
                .delete(snapshots::snapshot_delete),
        )
        .route("/tasks", get(tasks::list))
        .route("/tasks/{task}", get(tasks::inspect))
        .route("/help", get(help))
        .route("/help/version", get(help_version))
        .route("/help/config", get(help_admin))
        .route("/help/env", get(help_admin))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        // The route layer added last runs first: per-service auth, then `?async`, then the handler.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            tasks::run_async,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::check_service,
        ))
        .layer(middleware::from_fn(client_headers))
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::check_global,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(move |mut r: Response| {
            let name = name.clone();
            async move {
                if let Ok(v) = HeaderValue::from_str(&name) {
                    r.headers_mut().insert("libstorage-servername", v);
                }
                r
            }
        }))
        .with_state(state)
}

pub(super) async fn no_route() -> LsError {
    LsError::plain(StatusCode::NOT_FOUND, "404 page not found")
}

async fn root(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let urls: Vec<String> = ["services", "snapshots", "tasks", "help", "volumes"]
        .iter()
        .map(|p| format!("http://{host}/{p}"))
        .collect();
    json(StatusCode::OK, &urls)
}

async fn help(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let urls: Vec<String> = ["config", "env", "version"]
        .iter()
        .map(|p| format!("http://{host}/help/{p}"))
        .collect();
    json(StatusCode::OK, &urls)
}

async fn help_version() -> Response {
    json(StatusCode::OK, &env!("CARGO_PKG_VERSION"))
}

/// Polly never exposes its config or environment through the façade; the admin API does.
async fn help_admin(RawQuery(q): RawQuery) -> LsError {
    let token = flags(&q).remove("admin").unwrap_or_default();
    LsError::new(
        StatusCode::UNAUTHORIZED,
        "invalid admin token",
        serde_json::json!({"token": token}),
    )
}
