//! Volume lists (`GET /volumes`, `GET /volumes/{service}`): the attachments mask, the name
//! filter and the requesting instance applied, and a service's list rendered once per
//! version of the store's volumes and argument set ([`ListCache`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::Caller;
use super::headers::attachment_mask;
use super::services::Svc;
use super::types::WireVolume;
use super::view::{masked, reachable, requires_instance};
use super::{flags, json, CallerExt, Client, ClientHeaders, LsError, LsState};
use crate::store::Volume;

/// Most bytes of rendered list bodies kept: one body per (service, mask, instance, filter, scope)
/// adds up with many REX-Ray agents and large lists.
const LIST_CACHE_BYTES: usize = 32 << 20;

/// Rendered `GET /volumes/{svc}` bodies by (service, mask, instance, filter, caller's
/// scope), all of one
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

/// The volumes of one service after the mask and the name filter.
/// What a volume list depends on besides the volumes themselves.
struct ListArgs {
    mask: u32,
    name: Option<String>,
    me: Option<String>,
    caller: Arc<Caller>,
}

async fn list_args(
    st: &LsState,
    client: &ClientHeaders,
    caller: &Arc<Caller>,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<ListArgs, LsError> {
    let mask = attachment_mask(q.get("attachments").map(String::as_str));
    let name = name_filter(q.get("filter"))?;
    let iid = st.instance(client, svc, requires_instance(mask)).await?;
    let me = iid.and_then(|i| i.resolved_id()).map(str::to_string);
    Ok(ListArgs {
        mask,
        name,
        me,
        caller: caller.clone(),
    })
}

async fn list_for(
    st: &LsState,
    client: &ClientHeaders,
    caller: &Arc<Caller>,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, WireVolume>, LsError> {
    let args = list_args(st, client, caller, svc, q).await?;
    render_list(st, svc, &args)
}

/// One service's list as JSON bytes, rendered once per version of the store's volumes and
/// argument set: REX-Ray agents poll lists, and a large list costs far more to render than
/// to send. (A list depends on the volumes alone; writes of intents, reservations or
/// operation records leave the rendered bodies valid.)
async fn list_body(
    st: &LsState,
    client: &ClientHeaders,
    caller: &Arc<Caller>,
    svc: &Svc,
    q: &BTreeMap<String, String>,
) -> Result<Bytes, LsError> {
    let args = list_args(st, client, caller, svc, q).await?;
    // Read before the list: a body is never filed under a newer version than its volumes.
    let version = st.manager.store().volumes_version();
    let key = format!(
        "{}\0{}\0{}\0{}\0{}",
        svc.name,
        args.mask,
        args.me.as_deref().unwrap_or("\u{1}"),
        args.name.as_deref().unwrap_or("\u{1}"),
        args.caller.scope_key()
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

/// The volumes of `all` that a list through `svc` shows with `args` (reachable by the
/// caller through the service, matching the name filter, passing the attachment mask), each with its wire
/// form, in the order of `all`.
fn listed<'a>(
    all: &'a [Arc<Volume>],
    svc: &'a Svc,
    args: &'a ListArgs,
) -> impl Iterator<Item = (&'a Volume, WireVolume)> + 'a {
    let (m, me) = (args.mask, args.me.as_deref());
    all.iter()
        .filter(move |v| reachable(v, &svc.name, &args.caller))
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

pub(super) async fn volumes_all(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let q = flags(&q);
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        let vols = list_for(&st, &client, &caller, &svc, &q)
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

pub(super) async fn volumes_service(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let body = list_body(&st, &client, &caller, &svc, &flags(&q)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The list cache keeps the bodies of one version of the store's volumes only (a newer one
    /// drops the rest: with many agents listing while the store changes, stale bodies would pile
    /// up to one per agent), ignores bodies rendered at an older version, and stays within its
    /// byte budget.
    #[test]
    fn list_cache_keeps_only_the_current_generation_within_its_budget() {
        let mut c = ListCache::default();
        let body = |n: usize| Bytes::from(vec![b'x'; n]);
        for agent in 0..100 {
            c.put(format!("vfs:1:agent-{agent}"), 1, body(1000));
        }
        assert_eq!((c.len(), c.bytes()), (100, 100_000));
        assert_eq!(c.get("vfs:1:agent-7", 1).map(|b| b.len()), Some(1000));
        assert!(
            c.get("vfs:1:agent-7", 2).is_none(),
            "a body of generation 1 served at 2"
        );

        c.put("vfs:1:agent-7".into(), 2, body(500));
        assert_eq!(
            (c.len(), c.bytes()),
            (1, 500),
            "generation 1 bodies kept after 2 came"
        );
        assert!(c.get("vfs:1:agent-8", 2).is_none());
        // A request that read the store before the last write does not bring stale bodies back.
        c.put("vfs:1:agent-8".into(), 1, body(500));
        assert_eq!(c.len(), 1);
        // Replacing a body counts its bytes once.
        c.put("vfs:1:agent-7".into(), 2, body(700));
        assert_eq!((c.len(), c.bytes()), (1, 700));

        // Never more than the budget, however many agents list.
        let big = LIST_CACHE_BYTES / 10 + 1;
        for agent in 0..50 {
            c.put(format!("vfs:1:agent-{agent}"), 3, body(big));
            assert!(c.bytes() <= LIST_CACHE_BYTES, "{} bytes kept", c.bytes());
        }
        assert_eq!(c.len(), 9);
    }
}
