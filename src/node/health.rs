//! `polly node`'s own HTTP endpoint (default 127.0.0.1:7982): `GET /health` (the instance
//! id, volumes mounted, detaches pending, whether central answered the last report) and
//! `GET /metrics` (Prometheus).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::agent::Agent;

/// The outcome of the last report to central.
#[derive(Default)]
pub struct CentralStatus {
    /// `None` before the first report; then the last error, `Some(None)` when it worked.
    last: Mutex<Option<Option<String>>>,
}

impl CentralStatus {
    /// Record a report's outcome; true when the error is new (worth a log line, once).
    pub fn set(&self, error: Option<String>) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let changed = last.as_ref() != Some(&error);
        *last = Some(error);
        changed
    }

    fn get(&self) -> Option<Option<String>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Clone)]
struct HealthState {
    agent: Agent,
    central: Arc<CentralStatus>,
}

/// `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub instance_id: String,
    pub mounts: usize,
    pub pending_detaches: usize,
    pub central: CentralHealth,
}

#[derive(Debug, Serialize)]
pub struct CentralHealth {
    pub server: String,
    /// `None` until the first report has been tried.
    pub reachable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn router(agent: Agent, central: Arc<CentralStatus>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(HealthState { agent, central })
}

/// The node itself is healthy while it serves; central's reachability is reported, not
/// judged (volumes already mounted keep working without central).
async fn health(State(st): State<HealthState>) -> Json<Health> {
    let (mounts, pending_detaches) = st.agent.counts().await;
    let last = st.central.get();
    Json(Health {
        status: "ok",
        instance_id: st.agent.config().instance_id.clone(),
        mounts,
        pending_detaches,
        central: CentralHealth {
            server: st.agent.config().server.clone(),
            reachable: last.as_ref().map(|e| e.is_none()),
            error: last.flatten(),
        },
    })
}

/// Text format 0.0.4, or OpenMetrics when the scrape's `Accept` asks for it.
async fn metrics(State(st): State<HealthState>, headers: HeaderMap) -> Response {
    crate::metrics::respond(&headers, |f| st.agent.metrics().render(f))
}
