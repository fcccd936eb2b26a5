//! Tasks: `?async` on any route runs the request in the background and answers `202` with a
//! Task; a synchronous request running past `exe_timeout` answers `408` with its Task.
//! `GET /tasks[/{id}]` reports a task's state and, once done, the body the synchronous call
//! would have returned (`result`) or its error (`error`). Tasks live in memory only: a
//! restart forgets them, like the Go server.
//!
//! A task belongs to the caller that started it ([`Owner`]): the subject of its token when a
//! policy admitted one, else the instance ids it reported. Another caller neither lists it nor
//! finds it by id (404, as if it did not exist): a task's result is the body of the request,
//! volumes and instance ids included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::Caller;
use super::types::WireTask;
use super::{json, CallerExt, Client, ClientHeaders, LsError, LsState, BODY_LIMIT};
use crate::volumes::now_secs;

/// Finished tasks kept for `GET /tasks`; the oldest are forgotten first.
const KEEP: usize = 1024;

#[derive(Default)]
pub struct Tasks {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, (Owner, WireTask)>>,
}

/// Whose a task is. Without auth the instance ids are what tells callers apart; they are
/// claims, not credentials (anyone may send another host's id), so only a token makes the
/// boundary hard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The subject of a token a policy admitted.
    Subject(String),
    /// No admitted token: the `(driver, instance id)` pairs of its `Libstorage-Instanceid`
    /// headers, lower case; a caller reporting any of them may read the task.
    Instances(BTreeSet<(String, String)>),
    /// Neither: shared by every caller that sends neither.
    Anonymous,
}

impl Owner {
    pub fn of(caller: &Caller, client: &ClientHeaders) -> Owner {
        if let Some(s) = &caller.subject {
            return Owner::Subject(s.clone());
        }
        let ids: BTreeSet<(String, String)> = client
            .iids
            .iter()
            .filter_map(|i| {
                let id = i.resolved_id()?;
                Some((i.driver.to_lowercase(), id.to_lowercase()))
            })
            .collect();
        if ids.is_empty() {
            Owner::Anonymous
        } else {
            Owner::Instances(ids)
        }
    }

    /// Whether the caller `reader` may see a task this owner started.
    pub fn lets_read(&self, reader: &Owner) -> bool {
        match (self, reader) {
            (Owner::Instances(a), Owner::Instances(b)) => !a.is_disjoint(b),
            (a, b) => a == b,
        }
    }
}

impl Tasks {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, (Owner, WireTask)>) -> T) -> T {
        f(&mut self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn queue(&self, owner: Owner) -> WireTask {
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
            m.insert(t.id, (owner, t.clone()));
        });
        t
    }

    fn start(&self, id: u64) {
        self.with(|m| {
            if let Some((_, t)) = m.get_mut(&id) {
                t.state = "running".into();
                t.start_time = now_secs();
            }
        });
    }

    fn finish(&self, id: u64, ok: bool, body: serde_json::Value) {
        self.with(|m| {
            if let Some((_, t)) = m.get_mut(&id) {
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
    let owner = match (
        parts.extensions.get::<std::sync::Arc<Caller>>(),
        parts.extensions.get::<std::sync::Arc<ClientHeaders>>(),
    ) {
        (Some(caller), Some(client)) => Owner::of(caller, client),
        // Both are put on every route before this runs; without them, nobody's.
        _ => Owner::Anonymous,
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut run = tokio::spawn(next.run(req));
    if !is_async {
        if let Ok(done) = tokio::time::timeout(st.exe_timeout, &mut run).await {
            return done.unwrap_or_else(|e| panicked(&e));
        }
    }
    let task = st.tasks.queue(owner);
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
        let task = st
            .tasks
            .with(|m| m.get(&id).map(|(_, t)| t.clone()))
            .unwrap_or(task);
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

/// `GET /tasks`: the caller's own tasks.
pub(super) async fn list(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
) -> Response {
    let me = Owner::of(&caller, &client);
    let all: BTreeMap<String, WireTask> = st.tasks.with(|m| {
        m.iter()
            .filter(|(_, (owner, _))| owner.lets_read(&me))
            .map(|(k, (_, t))| (k.to_string(), t.clone()))
            .collect()
    });
    json(StatusCode::OK, &all)
}

/// `GET /tasks/{id}`: another caller's task is not found.
pub(super) async fn inspect(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path(id): Path<String>,
) -> Result<Response, LsError> {
    let me = Owner::of(&caller, &client);
    let t = id
        .parse::<u64>()
        .ok()
        .and_then(|n| {
            st.tasks.with(|m| {
                m.get(&n)
                    .filter(|(owner, _)| owner.lets_read(&me))
                    .map(|(_, t)| t.clone())
            })
        })
        .ok_or_else(|| LsError::not_found(&id))?;
    Ok(json(StatusCode::OK, &t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libstorage::headers::InstanceId;

    fn client(iids: &[&str]) -> ClientHeaders {
        ClientHeaders {
            iids: iids.iter().map(|s| InstanceId::parse(s).unwrap()).collect(),
            ..ClientHeaders::default()
        }
    }

    #[test]
    fn a_task_is_read_by_its_owner_only() {
        let anon = Caller::default();
        let host_a = Owner::of(&anon, &client(&["vfs=hostA", "vfs:vfs2=hostA"]));
        let host_a_again = Owner::of(&anon, &client(&["vfs:vfs2=HOSTA"]));
        let host_b = Owner::of(&anon, &client(&["vfs=hostB"]));
        let nobody = Owner::of(&anon, &client(&[]));
        assert!(host_a.lets_read(&host_a_again), "same host, one header");
        assert!(!host_a.lets_read(&host_b));
        assert!(!host_a.lets_read(&nobody));
        assert!(!nobody.lets_read(&host_a));
        assert!(nobody.lets_read(&Owner::Anonymous));
        // A subject owns its tasks whatever instance ids come with them.
        let alice = Owner::Subject("alice".into());
        assert!(!alice.lets_read(&host_a) && !host_a.lets_read(&alice));
        assert!(!alice.lets_read(&Owner::Subject("bob".into())));
        assert!(alice.lets_read(&Owner::Subject("alice".into())));
    }
}
