//! Tasks: `?async` on any route runs the request in the background and answers `202` with a
//! Task; a synchronous request running past `exe_timeout` answers `408` with its Task.
//! `GET /tasks[/{id}]` reports a task's state and, once done, the body the synchronous call
//! would have returned (`result`) or its error (`error`). Tasks live in memory only: a
//! restart forgets them, like the Go server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::types::WireTask;
use super::{json, LsError, LsState, BODY_LIMIT};
use crate::volumes::now_secs;

/// Finished tasks kept for `GET /tasks`; the oldest are forgotten first.
const KEEP: usize = 1024;

#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, WireTask>>,
}

impl Tasks {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, WireTask>) -> T) -> T {
        f(&mut self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn queue(&self) -> WireTask {
        let t = WireTask {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            queue_time: now_secs(),
            state: "queued".into(),
            start_time: 0,
            complete_time: 0,
            result: None,
            error: None,
        };
        self.with(|m| {
            while m.len() >= KEEP {
                let Some(oldest) = m.keys().next().copied() else {
                    break;
                };
                m.remove(&oldest);
            }
            m.insert(t.id, t.clone());
        });
        t
    }

    fn start(&self, id: u64) {
        self.with(|m| {
            if let Some(t) = m.get_mut(&id) {
                t.state = "running".into();
                t.start_time = now_secs();
            }
        });
    }

    fn finish(&self, id: u64, ok: bool, body: serde_json::Value) {
        self.with(|m| {
            if let Some(t) = m.get_mut(&id) {
                t.complete_time = now_secs();
                if ok {
                    t.state = "success".into();
                    t.result = Some(body);
                } else {
                    t.state = "error".into();
                    t.error = Some(body);
                }
            }
        });
    }
}

/// Middleware: every request runs as a task. With `?async` the client gets `202` and the
/// Task at once; otherwise it gets the response, or `408` and the Task when the request
/// outlives `exe_timeout` (the work goes on; `GET /tasks/{id}` reports its outcome).
pub(super) async fn run_async(State(st): State<LsState>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/tasks") {
        return next.run(req).await;
    }
    let is_async = req
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "async"));
    // Read the body now: the background run must not depend on the client's connection.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return LsError::plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {BODY_LIMIT} bytes"),
            )
            .into_response()
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut run = tokio::spawn(next.run(req));
    if !is_async {
        if let Ok(done) = tokio::time::timeout(st.exe_timeout, &mut run).await {
            return done.unwrap_or_else(|e| panicked(&e));
        }
    }
    let task = st.tasks.queue();
    let tasks = st.tasks.clone();
    let id = task.id;
    tasks.start(id);
    tokio::spawn(async move {
        let resp = run.await.unwrap_or_else(|e| panicked(&e));
        let ok = resp.status().as_u16() < 300;
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        tasks.finish(id, ok, value);
    });
    if is_async {
        json(StatusCode::ACCEPTED, &task)
    } else {
        let task = st.tasks.with(|m| m.get(&id).cloned()).unwrap_or(task);
        json(StatusCode::REQUEST_TIMEOUT, &task)
    }
}

/// A handler that panicked (a bug): a 500 rather than a dropped connection.
fn panicked(e: &tokio::task::JoinError) -> Response {
    LsError::plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("request handler failed: {e}"),
    )
    .into_response()
}

pub(super) async fn list(State(st): State<LsState>) -> Response {
    let all: BTreeMap<String, WireTask> = st
        .tasks
        .with(|m| m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    json(StatusCode::OK, &all)
}

pub(super) async fn inspect(
    State(st): State<LsState>,
    Path(id): Path<String>,
) -> Result<Response, LsError> {
    let t = id
        .parse::<u64>()
        .ok()
        .and_then(|n| st.tasks.with(|m| m.get(&n).cloned()))
        .ok_or_else(|| LsError::not_found(&id))?;
    Ok(json(StatusCode::OK, &t))
}
