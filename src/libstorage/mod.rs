//! The libStorage façade: the REST API REX-Ray 0.10/0.11 agents speak (reference
//! `libstorage-api.md`), served on its own listener over the same volume manager as the admin
//! API. Routes dispatch on path + method + presence of a query flag (`?attach`, `?detach`...),
//! bodies are parsed from bytes whatever the `Content-Type`, every response carries
//! `Libstorage-Servername`, and errors are `{"message","status","error"}` ([`LsError`]).
//!
//! Volume ids on the wire are Polly ids (`pv-...`), sizes are GiB, labels are `fields`.
//! A volume is visible through service `S` when it has no service restriction or is
//! restricted to `S`; otherwise it is absent from `S`'s lists and not found by id or name.
//! A service with its own auth policy is a tenant: a caller that policy refuses reaches none
//! of its volumes, through any service's routes (`view::reachable`).
//!
//! Here: the handlers' shared state and what every request goes through (the parsed
//! `Libstorage-*` headers, query flags, bodies). The router is in `routes`, the routes by
//! resource in `services`, `list`, `volumes`, `snapshots` and `tasks`, and what a volume looks
//! like through a service in `view`.

pub mod auth;
pub mod config;
mod error;
pub mod headers;
mod list;
mod routes;
mod services;
mod snapshots;
mod tasks;
pub mod tls;
pub mod types;
mod view;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use config::{
    AuthConfig, LibStorageConfig, LibStorageConfigError, LibStorageServiceConfig, TlsConfig,
};
pub use error::{ErrorBody, LsError};
use headers::{InstanceId, LocalDevices, Tx};
use list::ListCache;
pub use routes::router;
pub use view::{apply_mask, reachable, visible};
pub(crate) use volumes::create_request;

use crate::volumes::Manager;

/// Largest request body the façade reads.
pub const BODY_LIMIT: usize = 1 << 20;

const GIB: u64 = 1 << 30;

/// Attachment mask bits (reference §4.4).
pub mod mask {
    pub const REQUESTED: u32 = 1;
    pub const MINE: u32 = 2;
    pub const DEVICES: u32 = 4;
    pub const ATTACHED: u32 = 8;
    pub const UNATTACHED: u32 = 16;
}

/// Shared state of the façade handlers.
#[derive(Clone)]
pub struct LsState {
    pub manager: Manager,
    pub tasks: Arc<tasks::Tasks>,
    /// Sent as `Libstorage-Servername` on every response.
    pub server_name: Arc<str>,
    /// JWT policies; the default checks nothing.
    pub auth: Arc<auth::Auth>,
    /// How long a synchronous request may run before it answers `408` with its Task.
    pub exe_timeout: std::time::Duration,
    /// Rendered `GET /volumes/{svc}` bodies of the current version of the store's volumes.
    list_cache: Arc<std::sync::Mutex<ListCache>>,
}

impl LsState {
    pub fn new(manager: Manager) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        LsState {
            manager,
            tasks: Arc::default(),
            server_name: Arc::from(format!("polly-{}", &id[..8])),
            auth: Arc::default(),
            exe_timeout: std::time::Duration::from_secs(60),
            list_cache: Arc::default(),
        }
    }
}

/// The `Libstorage-*` request headers, parsed once per request by [`client_headers`].
#[derive(Debug, Clone, Default)]
pub struct ClientHeaders {
    pub iids: Vec<InstanceId>,
    pub local_devices: Vec<LocalDevices>,
    pub tx: Option<Tx>,
}

/// Parse every `Libstorage-*` header up front: garbage in any of them is refused before a
/// handler runs, with the reference's message.
async fn client_headers(mut req: Request, next: Next) -> Response {
    match parse_client_headers(req.headers()) {
        Ok(h) => {
            req.extensions_mut().insert(Arc::new(h));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn parse_client_headers(h: &HeaderMap) -> Result<ClientHeaders, LsError> {
    let text = |v: &HeaderValue, what: &str| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| LsError::bad_header(what, "<non-ascii>", "header is not ASCII text"))
    };
    let mut out = ClientHeaders::default();
    for v in h.get_all("libstorage-instanceid") {
        let s = text(v, "invalid InstanceID")?;
        let iid =
            InstanceId::parse(&s).map_err(|e| LsError::bad_header("invalid InstanceID", &s, &e))?;
        // Checked here too (the manager checks what it records): a bad id is refused on
        // every route, with the header's own message, before any handler runs.
        let checks = [
            ("instance id", iid.resolved_id()),
            ("hostname", iid.hostname()),
        ];
        for (what, value) in checks {
            if let Some(Err(why)) = value.map(|v| crate::volumes::check_ident(what, v)) {
                let shown: String = s.chars().take(crate::volumes::MAX_IDENT_BYTES).collect();
                return Err(LsError::bad_header("invalid InstanceID", &shown, &why));
            }
        }
        out.iids.push(iid);
    }
    for v in h.get_all("libstorage-localdevices") {
        let s = text(v, "invalid LocalDevices")?;
        out.local_devices.push(
            LocalDevices::parse(&s)
                .map_err(|e| LsError::bad_header("invalid LocalDevices", &s, &e))?,
        );
    }
    if let Some(v) = h.get("libstorage-tx") {
        let s = text(v, "invalid transaction")?;
        out.tx =
            Some(Tx::parse(&s).map_err(|e| LsError::bad_header("invalid transaction", &s, &e))?);
    }
    Ok(out)
}

type Client = Extension<Arc<ClientHeaders>>;

/// The caller as auth established it (`auth::check_service` puts it on every route).
type CallerExt = Extension<Arc<auth::Caller>>;

/// Query flags: keys present in the query string, with their (possibly empty) values.
fn flags(q: &Option<String>) -> BTreeMap<String, String> {
    q.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Parse a JSON body from bytes, whatever the `Content-Type`; an empty body is `{}`.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, LsError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            LsError::plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {BODY_LIMIT} bytes"),
            )
        } else {
            LsError::plain(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))
        }
    })?;
    parse_body_bytes(&bytes)
}

/// The body rule of [`parse_body`] on bytes already read: blank is `{}`, else JSON of `T`.
pub(crate) fn parse_body_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LsError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(LsError::bad_body)
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, Json(v)).into_response()
}
