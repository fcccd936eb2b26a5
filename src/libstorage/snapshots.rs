//! Snapshot routes (`/snapshots...`) and the volume routes that make snapshots and copies.
//! Snapshots are visible through a service when their source volume is.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;

use super::auth::Caller;
use super::routes::no_route;
use super::services::Svc;
use super::types::{
    SnapshotCopyRequest, VolumeCopyRequest, VolumeCreateRequest, VolumeSnapshotRequest,
    WireSnapshot,
};
use super::view::{masked, reachable};
use super::volumes::labels_of;
use super::{
    flags, json, mask, parse_body, CallerExt, Client, ClientHeaders, LsError, LsState, GIB,
};
use crate::volumes::{CreateVolume, SnapshotInfo, Source};

impl LsState {
    /// Snapshots `caller` reaches through `svc`: those of the volumes it reaches there, and
    /// the service's own snapshots of no volume Polly knows.
    async fn visible_snapshots(
        &self,
        svc: &str,
        caller: &Caller,
    ) -> Result<Vec<SnapshotInfo>, LsError> {
        let mut out = Vec::new();
        for s in self.manager.snapshots().await? {
            let ok = match &s.volume_id {
                Some(id) => self
                    .manager
                    .store()
                    .volume(id)?
                    .is_some_and(|v| reachable(&v, svc, caller)),
                None => s.service == svc,
            } && caller.may_use(&s.service);
            if ok {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn visible_snapshot(
        &self,
        svc: &str,
        id: &str,
        caller: &Caller,
    ) -> Result<SnapshotInfo, LsError> {
        self.visible_snapshots(svc, caller)
            .await?
            .into_iter()
            .find(|s| s.snapshot.id == id)
            .ok_or_else(|| LsError::not_found(id))
    }
}

fn by_id(snaps: &[SnapshotInfo]) -> BTreeMap<String, WireSnapshot> {
    snaps
        .iter()
        .map(|s| (s.snapshot.id.clone(), WireSnapshot::from(s)))
        .collect()
}

pub(super) async fn snapshots_all(
    State(st): State<LsState>,
    Extension(caller): CallerExt,
) -> Result<Response, LsError> {
    let mut out = BTreeMap::new();
    for svc in st.all_svcs() {
        out.insert(
            svc.name.clone(),
            by_id(&st.visible_snapshots(&svc.name, &caller).await?),
        );
    }
    Ok(json(StatusCode::OK, &out))
}

pub(super) async fn snapshots_service(
    State(st): State<LsState>,
    Extension(caller): CallerExt,
    Path(service): Path<String>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    Ok(json(
        StatusCode::OK,
        &by_id(&st.visible_snapshots(&svc.name, &caller).await?),
    ))
}

pub(super) async fn snapshot_inspect(
    State(st): State<LsState>,
    Extension(caller): CallerExt,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let s = st.visible_snapshot(&svc.name, &id, &caller).await?;
    Ok(json(StatusCode::OK, &WireSnapshot::from(&s)))
}

pub(super) async fn snapshot_delete(
    State(st): State<LsState>,
    Extension(caller): CallerExt,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let s = st.visible_snapshot(&svc.name, &id, &caller).await?;
    st.manager
        .snapshot_remove(&s.service, &s.snapshot.id)
        .await?;
    Ok(json(StatusCode::RESET_CONTENT, &serde_json::Value::Null))
}

pub(super) async fn snapshot_post(
    State(st): State<LsState>,
    Extension(client): Client,
    Extension(caller): CallerExt,
    Path((service, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, LsError> {
    let svc = st.svc(&service)?;
    let q = flags(&q);
    if q.contains_key("create") {
        let req: VolumeCreateRequest = parse_body(body)?;
        let s = st.visible_snapshot(&svc.name, &id, &caller).await?;
        let size_bytes = match req.size {
            Some(n) if n > 0 => (n as u64).saturating_mul(GIB),
            _ => s.snapshot.size_bytes,
        };
        let iid = st.instance(&client, &svc, false).await?;
        let v = st
            .manager
            .create_from(
                CreateVolume {
                    service: s.service.clone(),
                    name: req.name,
                    size_bytes,
                    labels: labels_of(&req.opts),
                    ..CreateVolume::default()
                },
                Source::Snapshot(s.snapshot.id.clone()),
            )
            .await?;
        let w = masked(&v, &svc, mask::REQUESTED, iid.and_then(|i| i.resolved_id()))
            .ok_or_else(|| LsError::not_found(&v.id))?;
        Ok(json(StatusCode::CREATED, &w))
    } else if q.contains_key("copy") {
        let req: SnapshotCopyRequest = parse_body(body)?;
        let s = st.visible_snapshot(&svc.name, &id, &caller).await?;
        // Polly's back-ends have one location per service, so `destinationID` is required (as
        // the schema says) but names no other place: the copy lands beside the source.
        let copy = st.manager.snapshot_copy(&s, &req.snapshot_name).await?;
        Ok(json(StatusCode::CREATED, &WireSnapshot::from(&copy)))
    } else {
        Err(no_route().await)
    }
}

/// `POST /volumes/{svc}/{id}?copy`.
pub(super) async fn volume_copy(
    st: &LsState,
    client: &ClientHeaders,
    caller: &Caller,
    svc: &Svc,
    volume: &str,
    req: VolumeCopyRequest,
) -> Result<Response, LsError> {
    let v = st.visible_volume(&svc.name, volume, caller)?;
    let iid = st.instance(client, svc, false).await?;
    let mut labels = v.labels.clone();
    labels.extend(labels_of(&req.opts));
    let copy = st
        .manager
        .create_from(
            CreateVolume {
                service: v.service.clone(),
                name: req.volume_name,
                size_bytes: v.size_bytes,
                labels,
                ..CreateVolume::default()
            },
            Source::Volume(v.id.clone()),
        )
        .await?;
    let w = masked(
        &copy,
        svc,
        mask::REQUESTED,
        iid.and_then(|i| i.resolved_id()),
    )
    .ok_or_else(|| LsError::not_found(&copy.id))?;
    Ok(json(StatusCode::CREATED, &w))
}

/// `POST /volumes/{svc}/{id}?snapshot`.
pub(super) async fn volume_snapshot(
    st: &LsState,
    caller: &Caller,
    svc: &Svc,
    volume: &str,
    req: VolumeSnapshotRequest,
) -> Result<Response, LsError> {
    let v = st.visible_volume(&svc.name, volume, caller)?;
    let s = st.manager.snapshot(&v.id, &req.snapshot_name).await?;
    Ok(json(StatusCode::CREATED, &WireSnapshot::from(&s)))
}
