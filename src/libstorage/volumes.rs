//! One volume's routes (inspect, create, attach, detach, snapshot and copy by query flag,
//! delete) and detaching every volume of the requesting instance.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::auth::Caller;
use super::headers::attachment_mask;
use super::routes::no_route;
use super::services::Svc;
use super::types::{
    self, AttachResponse, VolumeAttachRequest, VolumeCreateRequest, VolumeDetachRequest,
    VolumeView, WireVolume,
};
use super::view::{masked, requires_instance, visible};
use super::{
    flags, json, mask, parse_body, snapshots, CallerExt, Client, ClientHeaders, LsError, LsState,
    GIB,
};
use crate::store::Volume;
use crate::volumes::CreateVolume;

pub(super) async fn volume_inspect(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let q = flags(&q);
    let m = attachment_mask(q.get("attachments").map(String::as_str));
    let iid = st.instance(&client, &svc, requires_instance(m)).await?;
    let v = if q.contains_key("byName") {
        st.visible_by_name(&svc.name, &volume, &caller)?
    } else {
        st.visible_volume(&svc.name, &volume, &caller)?
    };
    let w = masked(&v, &svc, m, iid.and_then(|i| i.resolved_id()))
        .ok_or_else(|| LsError::not_found(&volume))?;
    Ok(json(StatusCode::OK, &w))
}

pub(super) async fn volumes_all_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    if !flags(&q).contains_key("detach") {
        return Err(no_route().await);
    }
    let req: VolumeDetachRequest = parse_body(body)?;
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        let done = detach_all(&st, &client, &caller, &svc, &req).await?;
        if !done.is_empty() {
            out.insert(svc.name.clone(), done);
        }
    }
    Ok(json(StatusCode::RESET_CONTENT, &out))
}

pub(super) async fn volumes_service_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    if flags(&q).contains_key("detach") {
        let req: VolumeDetachRequest = parse_body(body)?;
        let done = detach_all(&st, &client, &caller, &svc, &req).await?;
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
pub(super) fn labels_of(
    opts: &Option<BTreeMap<String, serde_json::Value>>,
) -> BTreeMap<String, String> {
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

pub(super) async fn volume_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let q = flags(&q);
    let (client, caller) = (&*client, &*caller);
    if q.contains_key("attach") {
        attach(&st, client, caller, &svc, &volume, parse_body(body)?).await
    } else if q.contains_key("detach") {
        detach(&st, client, caller, &svc, &volume, parse_body(body)?).await
    } else if q.contains_key("copy") {
        let req = parse_body(body)?;
        snapshots::volume_copy(&st, client, caller, &svc, &volume, req).await
    } else if q.contains_key("snapshot") {
        snapshots::volume_snapshot(&st, caller, &svc, &volume, parse_body(body)?).await
    } else {
        Err(no_route().await)
    }
}

async fn attach(
    st: &LsState,
    client: &ClientHeaders,
    caller: &Caller,
    svc: &Svc,
    volume: &str,
    req: VolumeAttachRequest,
) -> Result<Response, LsError> {
    let device = req.next_device_name.filter(|d| !d.is_empty());
    // Before the instance is recorded: a refused request leaves nothing behind.
    if let Some(d) = &device {
        crate::volumes::check_ident("device name", d)
            .map_err(|why| LsError::from(crate::volumes::Error::InvalidArgument(why)))?;
    }
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let v = st.visible_volume(&svc.name, volume, caller)?;
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
    caller: &Caller,
    svc: &Svc,
    volume: &str,
    req: VolumeDetachRequest,
) -> Result<Response, LsError> {
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let v = st.visible_volume(&svc.name, volume, caller)?;
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
    caller: &Caller,
    svc: &Svc,
    req: &VolumeDetachRequest,
) -> Result<BTreeMap<String, WireVolume>, LsError> {
    let iid = st.instance(client, svc, true).await?;
    let me = iid
        .and_then(|i| i.resolved_id())
        .ok_or_else(|| LsError::missing_instance_id(&svc.name))?;
    let mut out = BTreeMap::new();
    for v in st.visible_volumes(&svc.name, caller)? {
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

pub(super) async fn volume_delete(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path((service, volume)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    st.instance(&client, &svc, false).await?;
    let v = st.visible_volume(&svc.name, &volume, &caller)?;
    if flags(&q).contains_key("force") && !v.attachments.is_empty() {
        st.manager.detach(&v.id, None).await?;
    }
    st.manager.delete(&v.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
