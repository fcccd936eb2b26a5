//! The Docker volume plugin: the legacy plugin protocol Docker (and Cloud Foundry's volume
//! manager) speaks over a unix socket, `/run/docker/plugins/polly.sock` by default, so that
//! `docker volume create --driver polly` and `docker run -v NAME:/path` reach Polly. Each
//! call is translated into the node agent's lifecycle ([`crate::node::Agent`]); errors go
//! back in `Err`, worded for the person who typed `docker …`.
//!
//! Status codes: 200 for every call Docker made correctly (with `Err` set when it failed,
//! as Docker reads it), 400 for a body that is not the call's JSON, 404 for a call this
//! plugin does not implement. Every response is JSON with the plugin content type.

mod options;
mod wire;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use options::{parse_docker_size, FILESYSTEMS, KNOWN as KNOWN_OPTIONS};
pub use wire::CONTENT_TYPE;

use super::agent::{Agent, VolumeInfo};
use super::error::NodeError;
use wire::*;

fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"Err\":\"encoding\"}".to_vec());
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response()
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    reply(status, &ErrResponse { err: msg.into() })
}

/// The call's JSON, or a 400 naming the call and what is wrong.
#[allow(clippy::result_large_err)]
fn decode<T: DeserializeOwned>(call: &str, bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!("polly: malformed {call} request: {e}"),
        )
    })
}

/// The plugin's router; serve it on a unix socket.
pub fn router(agent: Agent) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/VolumeDriver.Create", post(create))
        .route("/VolumeDriver.Remove", post(remove))
        .route("/VolumeDriver.Mount", post(mount))
        .route("/VolumeDriver.Unmount", post(unmount))
        .route("/VolumeDriver.Path", post(path))
        .route("/VolumeDriver.Get", post(get))
        .route("/VolumeDriver.List", post(list))
        .route("/VolumeDriver.Capabilities", post(capabilities))
        .fallback(unknown)
        .with_state(agent)
}

async fn unknown(uri: axum::http::Uri) -> Response {
    err(
        StatusCode::NOT_FOUND,
        format!(
            "polly: {} is not a call this volume plugin implements",
            uri.path().trim_start_matches('/')
        ),
    )
}

async fn activate() -> Response {
    reply(
        StatusCode::OK,
        &ActivateResponse {
            implements: vec!["VolumeDriver"],
        },
    )
}

async fn capabilities() -> Response {
    // Global: every node sees the same volumes, through central Polly.
    reply(
        StatusCode::OK,
        &CapabilitiesResponse {
            capabilities: Capabilities { scope: "global" },
        },
    )
}

/// A call that failed: `Err` for Docker, a log line, and the error counted (mount and
/// unmount count their own, with their latency).
fn failed(agent: &Agent, call: &str, e: NodeError) -> Response {
    if !matches!(call, "mount" | "unmount") {
        agent.metrics().error(call);
    }
    tracing::info!(call, error = %e, "docker plugin call failed");
    err(StatusCode::OK, e.to_string())
}

async fn create(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: CreateRequest = match decode("VolumeDriver.Create", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let opts = match options::parse(&req.opts.unwrap_or_default()) {
        Ok(o) => o,
        Err(m) => return failed(&agent, "create", NodeError::InvalidOption(m)),
    };
    match agent.create(&req.name, opts).await {
        Ok(_) => err(StatusCode::OK, ""),
        Err(e) => failed(&agent, "create", e),
    }
}

async fn remove(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: NameRequest = match decode("VolumeDriver.Remove", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match agent.remove(&req.name).await {
        Ok(()) => err(StatusCode::OK, ""),
        Err(e) => failed(&agent, "remove", e),
    }
}

async fn mount(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: MountRequest = match decode("VolumeDriver.Mount", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match agent.mount(&req.name, &req.id).await {
        Ok(p) => reply(
            StatusCode::OK,
            &MountResponse {
                mountpoint: p.to_string_lossy().into_owned(),
                err: String::new(),
            },
        ),
        Err(e) => failed(&agent, "mount", e),
    }
}

async fn unmount(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: MountRequest = match decode("VolumeDriver.Unmount", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match agent.unmount(&req.name, &req.id).await {
        Ok(()) => err(StatusCode::OK, ""),
        Err(e) => failed(&agent, "unmount", e),
    }
}

async fn path(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: NameRequest = match decode("VolumeDriver.Path", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mountpoint = agent
        .path(&req.name)
        .await
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    reply(
        StatusCode::OK,
        &MountResponse {
            mountpoint,
            err: String::new(),
        },
    )
}

fn volume(v: VolumeInfo, with_status: bool) -> Volume {
    let status = with_status.then(|| {
        let mut s = BTreeMap::new();
        s.insert("id".to_string(), v.volume.id.clone().into());
        s.insert("service".to_string(), v.volume.service.clone().into());
        s.insert("size_bytes".to_string(), v.volume.size_bytes.into());
        let holders: Vec<serde_json::Value> = v
            .volume
            .attachments
            .iter()
            .map(|a| a.instance_id.clone().into())
            .collect();
        s.insert("attached_to".to_string(), holders.into());
        if let Some(z) = &v.volume.zone {
            s.insert("zone".to_string(), z.clone().into());
        }
        s
    });
    Volume {
        name: v.name,
        mountpoint: v
            .mountpoint
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        status,
    }
}

async fn get(State(agent): State<Agent>, bytes: Bytes) -> Response {
    let req: NameRequest = match decode("VolumeDriver.Get", &bytes) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match agent.get(&req.name).await {
        Ok(v) => reply(
            StatusCode::OK,
            &GetResponse {
                volume: Some(volume(v, true)),
                err: String::new(),
            },
        ),
        Err(e) => {
            agent.metrics().error("get");
            reply(
                StatusCode::OK,
                &GetResponse {
                    volume: None,
                    err: e.to_string(),
                },
            )
        }
    }
}

async fn list(State(agent): State<Agent>) -> Response {
    match agent.list().await {
        Ok(vs) => reply(
            StatusCode::OK,
            &ListResponse {
                volumes: vs.into_iter().map(|v| volume(v, false)).collect(),
                err: String::new(),
            },
        ),
        Err(e) => {
            agent.metrics().error("list");
            reply(
                StatusCode::OK,
                &ListResponse {
                    volumes: Vec::new(),
                    err: e.to_string(),
                },
            )
        }
    }
}
