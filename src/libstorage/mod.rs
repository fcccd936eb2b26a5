//! The libStorage façade: the REST API REX-Ray 0.10/0.11 agents speak (reference
//! `libstorage-api.md`), served on its own listener over the same volume manager as the admin
//! API. Routes dispatch on path + method + presence of a query flag (`?attach`, `?detach`...),
//! bodies are parsed from bytes whatever the `Content-Type`, every response carries
//! `Libstorage-Servername`, and errors are `{"message","status","error"}` ([`LsError`]).
//!
//! Volume ids on the wire are Polly ids (`pv-...`), sizes are GiB, labels are `fields`.
//! A volume is visible through service `S` when it has no service restriction or is
//! restricted to `S`; otherwise it is absent from `S`'s lists and not found by id or name.

pub mod auth;
pub mod config;
mod error;
pub mod headers;
mod snapshots;
mod tasks;
pub mod tls;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use config::{
    AuthConfig, LibStorageConfig, LibStorageConfigError, LibStorageServiceConfig, TlsConfig,
};
pub use error::{ErrorBody, LsError};
use headers::{attachment_mask, instance_for, InstanceId, LocalDevices, Tx};
use types::{
    state, AttachResponse, DriverInfo, VolumeAttachRequest, VolumeCreateRequest,
    VolumeDetachRequest, VolumeView, WireInstance, WireInstanceId, WireServiceInfo, WireVolume,
};

use crate::store::{Volume, VolumeStatus};
use crate::volumes::{CreateVolume, Manager};

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

/// Most bytes of rendered list bodies kept: one body per (service, mask, instance, filter)
/// adds up with many REX-Ray agents and large lists.
const LIST_CACHE_BYTES: usize = 32 << 20;

/// Rendered `GET /volumes/{svc}` bodies by (service, mask, instance, filter), all of one
/// version of the store's volumes (`Store::volumes_version`): a body rendered at a newer
/// one drops the others (a volume write made them stale, and keeping them would hold one
/// body per agent for nothing), and bodies beyond [`LIST_CACHE_BYTES`] are not kept.
#[derive(Debug, Default)]
pub(crate) struct ListCache {
    version: u64,
    bytes: usize,
    bodies: std::collections::HashMap<String, Bytes>,
}

impl ListCache {
    /// The body for `key` rendered at `version`, if kept.
    pub(crate) fn get(&self, key: &str, version: u64) -> Option<Bytes> {
        (version == self.version)
            .then(|| self.bodies.get(key).cloned())
            .flatten()
    }

    /// Keep `body`, rendered for `key` at `version`.
    pub(crate) fn put(&mut self, key: String, version: u64, body: Bytes) {
        if version < self.version {
            return;
        }
        if version > self.version {
            self.bodies.clear();
            self.bytes = 0;
            self.version = version;
        }
        if self.bytes + body.len() > LIST_CACHE_BYTES {
            return;
        }
        self.bytes += body.len();
        if let Some(old) = self.bodies.insert(key, body) {
            self.bytes -= old.len();
        }
    }

    /// Bytes of the bodies kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bodies kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bodies.len()
    }
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
        if iid.resolved_id().is_some_and(|id| id.len() > 256) {
            return Err(LsError::bad_header(
                "invalid InstanceID",
                &s,
                "instance id longer than 256 characters",
            ));
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

/// A service the client names, with its driver kind.
struct Svc {
    name: String,
    driver: String,
}

impl LsState {
    fn svc(&self, name: &str) -> Result<Svc, LsError> {
        let s = self
            .manager
            .service(name)
            .map_err(|_| LsError::not_found(name))?;
        Ok(Svc {
            name: s.name.clone(),
            driver: s.driver.kind().to_string(),
        })
    }

    fn all_svcs(&self) -> Vec<Svc> {
        self.manager
            .services()
            .map(|s| Svc {
                name: s.name.clone(),
                driver: s.driver.kind().to_string(),
            })
            .collect()
    }

    /// Record the instance a client reported (its id, and the hostname when the metadata
    /// carries one), keeping what earlier reports told when this one says less.
    async fn record(&self, driver: &str, iid: &InstanceId) -> Result<(), LsError> {
        let Some(id) = iid.resolved_id() else {
            return Ok(());
        };
        let known = self.manager.store().instance(driver, id)?;
        let hostname = iid
            .hostname()
            .map(str::to_string)
            .or_else(|| known.as_ref().and_then(|k| k.hostname.clone()));
        let fields = if iid.fields.is_empty() {
            known.map(|k| k.fields).unwrap_or_default()
        } else {
            iid.fields.clone()
        };
        self.manager
            .record_instance(driver, id, hostname, fields)
            .await?;
        Ok(())
    }

    /// The instance id the client gave for `svc`, recorded; `required` turns its absence
    /// into the reference's 400.
    async fn instance<'a>(
        &self,
        client: &'a ClientHeaders,
        svc: &Svc,
        required: bool,
    ) -> Result<Option<&'a InstanceId>, LsError> {
        match instance_for(&client.iids, &svc.name, &svc.driver) {
            Some(iid) => {
                self.record(&svc.driver, iid).await?;
                if required && iid.resolved_id().is_none() {
                    return Err(LsError::missing_instance_id(&svc.name));
                }
                Ok(Some(iid))
            }
            None if required => Err(LsError::missing_instance_id(&svc.name)),
            None => Ok(None),
        }
    }

    /// Volumes visible through `svc`, sorted by id.
    fn visible_volumes(&self, svc: &str) -> Result<Vec<Volume>, LsError> {
        let mut v: Vec<Volume> = self
            .manager
            .volumes()?
            .into_iter()
            .filter(|v| visible(v, svc))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// One volume visible through `svc`, by Polly id; invisible is not found.
    fn visible_volume(&self, svc: &str, id: &str) -> Result<Volume, LsError> {
        match self.manager.store().volume(id)? {
            Some(v) if visible(&v, svc) => Ok(v),
            _ => Err(LsError::not_found(id)),
        }
    }

    /// One volume visible through `svc`, by name (case-insensitive; the service's own
    /// volume first when several services hold that name).
    fn visible_by_name(&self, svc: &str, name: &str) -> Result<Volume, LsError> {
        let mut hits: Vec<Volume> = self
            .visible_volumes(svc)?
            .into_iter()
            .filter(|v| v.name.eq_ignore_ascii_case(name))
            .collect();
        hits.sort_by_key(|v| (v.service != svc, v.name != name));
        hits.into_iter()
            .next()
            .ok_or_else(|| LsError::not_found(name))
    }
}

/// Whether a volume can be seen and used through libStorage service `svc`.
pub fn visible(v: &Volume, svc: &str) -> bool {
    v.status == VolumeStatus::Available
        && (v.restrict_services.is_empty() || v.restrict_services.contains(svc))
}

/// Convert a volume for service `svc` and apply the attachments mask; `None` when the
/// mask filters the volume out. `me` is the requesting instance's resolved id.
fn masked(v: &Volume, svc: &Svc, mask: u32, me: Option<&str>) -> Option<WireVolume> {
    let w = WireVolume::from(VolumeView {
        volume: v,
        service: &svc.name,
        driver: &svc.driver,
    });
    apply_mask(w, mask, me)
}

/// The server's attachment algorithm (reference §4.4). Polly acts as a driver that sets
/// `attachmentState` from every attachment it knows, then filters.
pub fn apply_mask(mut w: WireVolume, m: u32, me: Option<&str>) -> Option<WireVolume> {
    if m == 0 {
        w.attachments.clear();
        w.attachment_state = 0;
        return Some(w);
    }
    let is_me = |id: &str| me.is_some_and(|me| me.eq_ignore_ascii_case(id));
    let st = if w.attachments.is_empty() {
        state::AVAILABLE
    } else if w.attachments.iter().any(|a| is_me(&a.instance_id.id)) {
        state::ATTACHED
    } else {
        state::UNAVAILABLE
    };
    w.attachment_state = st;
    let attached = m & mask::ATTACHED != 0;
    let unattached = m & mask::UNATTACHED != 0;
    let mine = m & mask::MINE != 0;
    let drop = (st == state::AVAILABLE && attached && !unattached)
        || ((st == state::ATTACHED || st == state::UNAVAILABLE) && !attached && unattached)
        || (mine
            && attached
            && (st == state::UNAVAILABLE || (st == state::AVAILABLE && !unattached)));
    if drop {
        return None;
    }
    if mine {
        w.attachments.retain(|a| is_me(&a.instance_id.id));
    }
    Some(w)
}

fn requires_instance(m: u32) -> bool {
    m & (mask::MINE | mask::DEVICES) != 0
}

/// The `filter` query: only `(name=<x>)` is acted on, like the Go server.
fn name_filter(f: Option<&String>) -> Result<Option<String>, LsError> {
    let Some(f) = f else { return Ok(None) };
    let inner = f
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.split_once('='))
        .ok_or_else(|| LsError::plain(StatusCode::BAD_REQUEST, format!("invalid filter {f:?}")))?;
    Ok((inner.0.trim().eq_ignore_ascii_case("name")).then(|| inner.1.trim().to_string()))
}

async fn no_route() -> LsError {
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

async fn service_info(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    with_instance: bool,
) -> Result<WireServiceInfo, LsError> {
    let instance = if with_instance {
        let iid = st
            .instance(client, svc, true)
            .await?
            .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
        Some(WireInstance {
            instance_id: WireInstanceId {
                id: iid.resolved_id().unwrap_or_default().to_string(),
                ..WireInstanceId::from(iid)
            },
            name: format!("{}Instance", svc.driver),
            provider_name: String::new(),
        })
    } else {
        None
    };
    Ok(WireServiceInfo {
        name: svc.name.clone(),
        instance,
        driver: DriverInfo::for_kind(&svc.driver),
    })
}

async fn services_all(
    State(st): State<LsState>,
    Extension(client): Client,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let with_instance = flags(&q).contains_key("instance");
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        out.insert(
            svc.name.clone(),
            service_info(&st, &client, &svc, with_instance).await?,
        );
    }
    Ok(json(StatusCode::OK, &out))
}

async fn service_one(
    State(st): State<LsState>,
    Extension(client): Client,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let with_instance = flags(&q).contains_key("instance");
    Ok(json(
        StatusCode::OK,
        &service_info(&st, &client, &svc, with_instance).await?,
    ))
}

/// The volumes of one service after the mask and the name filter.
/// What a volume list depends on besides the volumes themselves.
struct ListArgs {
    mask: u32,
    name: Option<String>,
    me: Option<String>,
}

async fn list_args(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<ListArgs, LsError> {
    let mask = attachment_mask(q.get("attachments").map(String::as_str));
    let name = name_filter(q.get("filter"))?;
    let iid = st.instance(client, svc, requires_instance(mask)).await?;
    let me = iid.and_then(|i| i.resolved_id()).map(str::to_string);
    Ok(ListArgs { mask, name, me })
}

async fn list_for(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, WireVolume>, LsError> {
    let args = list_args(st, client, svc, q).await?;
    render_list(st, svc, &args)
}

/// One service's list as JSON bytes, rendered once per version of the store's volumes and
/// argument set: REX-Ray agents poll lists, and a large list costs far more to render than
/// to send. (A list depends on the volumes alone; writes of intents, reservations or
/// operation records leave the rendered bodies valid.)
async fn list_body(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<Bytes, LsError> {
    let args = list_args(st, client, svc, q).await?;
    // Read before the list: a body is never filed under a newer version than its volumes.
    let version = st.manager.store().volumes_version();
    let key = format!(
        "{}\0{}\0{}\0{}",
        svc.name,
        args.mask,
        args.me.as_deref().unwrap_or("\u{1}"),
        args.name.as_deref().unwrap_or("\u{1}")
    );
    let cache = || st.list_cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(body) = cache().get(&key, version) {
        return Ok(body);
    }
    let body = Bytes::from(write_list(st, svc, &args)?);
    cache().put(key, version, body.clone());
    Ok(body)
}

/// [`render_list`] written straight to JSON bytes (an object keyed by volume id, ids in
/// order), one volume converted at a time: the whole map of converted volumes would hold
/// a second copy of every listed volume next to the store's decoded list while the body is
/// written.
fn write_list(st: &LsState, svc: &Svc, args: &ListArgs) -> Result<Vec<u8>, LsError> {
    use serde::ser::{SerializeMap, Serializer};
    let render_err = |e: serde_json::Error| {
        LsError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("render list: {e}"),
        )
    };
    let all = st.manager.store().volumes_shared()?;
    // The store lists by id; a map's keys must come out sorted and once each as the
    // map of `render_list` would have them.
    if !all.windows(2).all(|w| w[0].id < w[1].id) {
        let out = render_list(st, svc, args)?;
        return serde_json::to_vec(&out).map_err(render_err);
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    let mut map = ser.serialize_map(None).map_err(render_err)?;
    for (v, w) in listed(&all, svc, args) {
        map.serialize_entry(&v.id, &w).map_err(render_err)?;
    }
    map.end().map_err(render_err)?;
    Ok(out)
}

/// The volumes of `all` that a list through `svc` shows with `args` (visible to the
/// service, matching the name filter, passing the attachment mask), each with its wire
/// form, in the order of `all`.
fn listed<'a>(
    all: &'a [Arc<Volume>],
    svc: &'a Svc,
    args: &'a ListArgs,
) -> impl Iterator<Item = (&'a Volume, WireVolume)> + 'a {
    let (m, me) = (args.mask, args.me.as_deref());
    all.iter()
        .filter(move |v| visible(v, &svc.name))
        .filter(move |v| {
            args.name
                .as_ref()
                .is_none_or(|n| v.name.eq_ignore_ascii_case(n))
        })
        .filter_map(move |v| masked(v, svc, m, me).map(|w| (&**v, w)))
}

fn render_list(
    st: &LsState,
    svc: &Svc,
    args: &ListArgs,
) -> Result<BTreeMap<String, WireVolume>, LsError> {
    let all = st.manager.store().volumes_shared()?;
    Ok(listed(&all, svc, args)
        .map(|(v, w)| (v.id.clone(), w))
        .collect())
}

async fn volumes_all(
    State(st): State<LsState>,
    Extension(client): Client,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let q = flags(&q);
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        let vols = list_for(&st, &client, &svc, &q)
            .await
            .map_err(batch_error)?;
        out.insert(svc.name.clone(), vols);
    }
    Ok(json(StatusCode::OK, &out))
}

/// A failure of one service in an all-services call (reference: 500 batch error).
fn batch_error(e: LsError) -> LsError {
    LsError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "batch processing error",
        serde_json::json!({"completed": {}, "inner": {"msg": e.message, "status": e.status.as_u16(), "error": e.error}}),
    )
}

async fn volumes_service(
    State(st): State<LsState>,
    Extension(client): Client,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let body = list_body(&st, &client, &svc, &flags(&q)).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

async fn volume_inspect(
    State(st): State<LsState>,
    Extension(client): Client,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let q = flags(&q);
    let m = attachment_mask(q.get("attachments").map(String::as_str));
    let iid = st.instance(&client, &svc, requires_instance(m)).await?;
    let v = if q.contains_key("byName") {
        st.visible_by_name(&svc.name, &volume)?
    } else {
        st.visible_volume(&svc.name, &volume)?
    };
    let w = masked(&v, &svc, m, iid.and_then(|i| i.resolved_id()))
        .ok_or_else(|| LsError::not_found(&volume))?;
    Ok(json(StatusCode::OK, &w))
}

async fn volumes_all_post(
    State(st): State<LsState>,
    Extension(client): Client,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    if !flags(&q).contains_key("detach") {
        return Err(no_route().await);
    }
    let req: VolumeDetachRequest = parse_body(body)?;
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        let done = detach_all(&st, &client, &svc, &req).await?;
        if !done.is_empty() {
            out.insert(svc.name.clone(), done);
        }
    }
    Ok(json(StatusCode::RESET_CONTENT, &out))
}

async fn volumes_service_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    if flags(&q).contains_key("detach") {
        let req: VolumeDetachRequest = parse_body(body)?;
        let done = detach_all(&st, &client, &svc, &req).await?;
        return Ok(json(StatusCode::RESET_CONTENT, &done));
    }
    let req: VolumeCreateRequest = parse_body(body)?;
    let iid = st.instance(&client, &svc, false).await?;
    let v = create(&st, &svc, req).await?;
    let w = masked(&v, &svc, mask::REQUESTED, iid.and_then(|i| i.resolved_id()))
        .ok_or_else(|| LsError::not_found(&v.id))?;
    Ok(json(StatusCode::CREATED, &w))
}

/// Request `opts` as labels (`fields` on the wire), values stringified like the Go server.
fn labels_of(opts: &Option<BTreeMap<String, serde_json::Value>>) -> BTreeMap<String, String> {
    opts.iter()
        .flatten()
        .map(|(k, v)| (k.clone(), types::stringify(v)))
        .collect()
}

/// What a façade create asks the manager for (pure): size in GiB (default 1, > 0), `opts`
/// as labels (`fields` on the wire), type/iops/encryption as driver fields.
pub(crate) fn create_request(
    service: &str,
    req: &VolumeCreateRequest,
) -> Result<CreateVolume, LsError> {
    let size_gib = match req.size {
        None | Some(0) => 1,
        Some(n) if n > 0 => n as u64,
        Some(n) => {
            return Err(LsError::plain(
                StatusCode::BAD_REQUEST,
                format!("size {n} must be a positive number of GiB"),
            ))
        }
    };
    let size_bytes = size_gib.checked_mul(GIB).ok_or_else(|| {
        LsError::plain(
            StatusCode::BAD_REQUEST,
            format!("size {size_gib} GiB is too large"),
        )
    })?;
    let mut fields = BTreeMap::new();
    if let Some(t) = req.kind.as_ref().filter(|t| !t.is_empty()) {
        fields.insert("type".to_string(), t.clone());
    }
    if let Some(i) = req.iops.filter(|i| *i > 0) {
        fields.insert("iops".to_string(), i.to_string());
    }
    if req.encrypted == Some(true) {
        fields.insert("encrypted".to_string(), "true".to_string());
    }
    Ok(CreateVolume {
        service: service.to_string(),
        name: req.name.clone(),
        size_bytes,
        zone: req.availability_zone.clone().filter(|z| !z.is_empty()),
        labels: labels_of(&req.opts),
        fields,
        ..CreateVolume::default()
    })
}

/// Create through the manager (idempotent by service and name), as [`create_request`] says.
async fn create(st: &LsState, svc: &Svc, req: VolumeCreateRequest) -> Result<Volume, LsError> {
    let v = st.manager.create(create_request(&svc.name, &req)?).await?;
    if !visible(&v, &svc.name) {
        return Err(LsError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "volume name {:?} is taken in service {:?} by a volume this service may not use",
                req.name, svc.name
            ),
        ));
    }
    Ok(v)
}

async fn volume_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let q = flags(&q);
    if q.contains_key("attach") {
        attach(&st, &client, &svc, &volume, parse_body(body)?).await
    } else if q.contains_key("detach") {
        detach(&st, &client, &svc, &volume, parse_body(body)?).await
    } else if q.contains_key("copy") {
        snapshots::volume_copy(&st, &client, &svc, &volume, parse_body(body)?).await
    } else if q.contains_key("snapshot") {
        snapshots::volume_snapshot(&st, &svc, &volume, parse_body(body)?).await
    } else {
        Err(no_route().await)
    }
}

async fn attach(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    volume: &str,
    req: VolumeAttachRequest,
) -> Result<Response, LsError> {
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let v = st.visible_volume(&svc.name, volume)?;
    let device = req.next_device_name.filter(|d| !d.is_empty());
    let v = if req.force {
        // Pre-empt: take the volume away from every other instance, atomically with the
        // attach, so a concurrent plain attach cannot take it in between.
        st.manager.attach_preempting(&v.id, me, device).await?
    } else {
        st.manager.attach(&v.id, me, device).await?
    };
    let token = v
        .attachments
        .iter()
        .find(|a| a.instance_id == me)
        .map(|a| a.device.clone())
        .unwrap_or_default();
    let w = masked(&v, svc, mask::REQUESTED | mask::MINE, Some(me))
        .ok_or_else(|| LsError::not_found(volume))?;
    Ok(json(
        StatusCode::OK,
        &AttachResponse {
            volume: w,
            attach_token: token,
        },
    ))
}

/// The volume as a detach answers it: no attachment list, state from what is left.
fn detached_view(v: &Volume, svc: &Svc, me: &str) -> WireVolume {
    let mut w = masked(v, svc, mask::REQUESTED, Some(me)).unwrap_or_else(|| {
        WireVolume::from(VolumeView {
            volume: v,
            service: &svc.name,
            driver: &svc.driver,
        })
    });
    w.attachments.clear();
    w
}

async fn detach(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    volume: &str,
    req: VolumeDetachRequest,
) -> Result<Response, LsError> {
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let v = st.visible_volume(&svc.name, volume)?;
    let v = if req.force {
        st.manager.detach(&v.id, None).await?
    } else {
        st.manager.detach(&v.id, Some(me)).await?
    };
    Ok(json(StatusCode::RESET_CONTENT, &detached_view(&v, svc, me)))
}

/// Detach every volume visible through `svc` from the requesting instance.
async fn detach_all(
    st: &LsState,
    client: &ClientHeaders,
    svc: &Svc,
    req: &VolumeDetachRequest,
) -> Result<BTreeMap<String, WireVolume>, LsError> {
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let mut out = BTreeMap::new();
    for v in st.visible_volumes(&svc.name)? {
        if !v.attachments.iter().any(|a| a.instance_id == me) {
            continue;
        }
        let v = if req.force {
            st.manager.detach(&v.id, None).await?
        } else {
            st.manager.detach(&v.id, Some(me)).await?
        };
        out.insert(v.id.clone(), detached_view(&v, svc, me));
    }
    Ok(out)
}

async fn volume_delete(
    State(st): State<LsState>,
    Extension(client): Client,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    st.instance(&client, &svc, false).await?;
    let v = st.visible_volume(&svc.name, &volume)?;
    if flags(&q).contains_key("force") && !v.attachments.is_empty() {
        st.manager.detach(&v.id, None).await?;
    }
    st.manager.delete(&v.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests;
