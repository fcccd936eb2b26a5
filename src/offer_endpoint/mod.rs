//! The storage-offer endpoint: a Mesos v1 scheduler API served as a master serves it
//! (`POST /api/v1/scheduler`, `/master/api/v1/scheduler`, `GET /version`), on its own
//! listener. Frameworks subscribe (JSON or protobuf), receive OFFERS of disk built by the pure
//! offer engine (`crate::offers`) from the capacity poller's readings and the known agents,
//! and ACCEPT them with operations (CREATE_DISK, DESTROY_DISK, RESERVE, UNRESERVE) that the
//! volume manager carries out; each operation with an id gets UPDATE_OPERATION_STATUS events,
//! kept in the store until acknowledged (see `ops.rs`).
//!
//! Status codes follow the reference (`mesos-v1.md` section 1): 400 for unparsable or
//! incomplete calls and stream-id problems, 403 for a known framework that is not
//! subscribed, 405 for a method other than POST, 406/415 for media types, 501 for `UNKNOWN`,
//! 202 with an empty body for every accepted call.

pub mod config;
mod ops;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::MesosConfig;
use crate::mesos::agents::{agent_instance, InstanceMap};
use crate::mesos::client;
use crate::mesos::json;
use crate::mesos::v1::scheduler::{call, event, Call, Event};
use crate::mesos::v1::{self, resource, value};
use crate::offers::{self, DiskOffer, OfferId, Snapshot};
use crate::volumes::Manager;
use config::OffersConfig;

/// The version `GET /version` reports: purely numeric (pymesos parses it as integers).
pub const MESOS_VERSION: &str = "1.11.0";
/// `Resource.DiskInfo.Source.vendor` of every disk Polly offers.
pub const VENDOR: &str = "polly";

const STREAM_ID: &str = "mesos-stream-id";
const CT_JSON: &str = "application/json";
const CT_PROTO: &str = "application/x-protobuf";

/// Wire encoding of a subscription or call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ct {
    Json,
    Proto,
}

impl Ct {
    fn mime(self) -> &'static str {
        match self {
            Ct::Json => CT_JSON,
            Ct::Proto => CT_PROTO,
        }
    }
}

/// One framework known to the endpoint.
struct Fw {
    name: String,
    role: String,
    principal: Option<String>,
    multi_role: bool,
    stream_id: Option<String>,
    tx: Option<mpsc::UnboundedSender<Event>>,
    suppressed: bool,
    filters: Vec<offers::Filter>,
    subscribed_at: String,
    /// Uuids of the operation statuses sent on the current stream and not yet acknowledged
    /// (`send_status`, `acknowledge`).
    statuses_sent: HashSet<Vec<u8>>,
}

#[derive(Default)]
struct State_ {
    frameworks: BTreeMap<String, Fw>,
    outstanding: Vec<offers::Offer>,
    next_offer_id: OfferId,
    /// Capacity held by CREATE_DISK and GROW_VOLUME operations from their accept until their
    /// terminal status has been sent (`ops.rs`).
    pending: Vec<ops::Pending>,
    /// Operations ended so far (terminal status sent, `ops::release_held`): a [`StoreView`]
    /// read while this stayed the same cannot be missing the last writes of an operation
    /// that is no longer in `pending`.
    ended: u64,
    /// Existing volumes that operations in flight act on (DESTROY_DISK, RESERVE, UNRESERVE),
    /// with how many: not offered until their operations have ended (`ops.rs`).
    acting: HashMap<String, usize>,
}

/// What a snapshot reads from the store and the agent list. Decoding every volume and
/// reservation is the bulk of a snapshot's work, so it is read without the endpoint's state
/// lock ([`Endpoint::store_view`]); only the cheap part that depends on the state is built
/// under it.
struct StoreView {
    agents: Vec<offers::Agent>,
    reservations: Vec<crate::store::Reservation>,
    /// Each volume that may be offered, with its (service, name): skipped while an operation
    /// in flight is creating it.
    volumes: Vec<(offers::ExistingVolume, String, String)>,
}

struct Inner {
    manager: Manager,
    agents: client::Handle,
    cfg: OffersConfig,
    /// Which instance each agent stands for (from `cfg`).
    instance_map: InstanceMap,
    /// The Mesos master config, when one is configured: framework ids are then checked with
    /// its operator API (`GET_FRAMEWORKS`) at SUBSCRIBE.
    mesos: Option<MesosConfig>,
    http: reqwest::Client,
    /// Makes offer ids unique across restarts: an offer of a previous run is unknown.
    run_id: String,
    state: Mutex<State_>,
    wake: Notify,
}

/// Cheap-to-clone handle on the endpoint; the admin API reads it.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// `GET /admin/frameworks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub principal: Option<String>,
    pub connected: bool,
    pub suppressed: bool,
    pub offers: usize,
    pub filters: usize,
    pub subscribed_at: String,
    /// Volumes the framework holds.
    #[serde(default)]
    pub reservations: usize,
    /// When it sent TEARDOWN (RFC 3339), while it still holds reservations.
    #[serde(default)]
    pub torn_down_at: Option<String>,
    /// When its reservations become releasable (`torn_down_at` + `teardown_grace_secs`).
    #[serde(default)]
    pub grace_ends: Option<String>,
    /// The grace has passed: an admin may release its reservations.
    #[serde(default)]
    pub releasable: bool,
}

/// Store meta key prefix of torn-down frameworks that still hold reservations.
const TORN_DOWN_PREFIX: &str = "offers.torn_down.";

/// A framework that sent TEARDOWN while holding reservations (kept in the store's meta).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TornDown {
    /// Unix seconds.
    at: u64,
    name: String,
    role: String,
    principal: Option<String>,
}

/// `POST /admin/frameworks/{id}/release`: what was released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseReport {
    pub framework_id: String,
    /// Volumes no longer reserved (each detached, and still existing).
    pub released: Vec<String>,
    /// Reservations the framework still holds.
    pub remaining: usize,
}

/// Why a release was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    NotFound(String),
    /// Refused while the framework is subscribed, in its grace, or never tore down.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Volume(#[from] crate::volumes::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// `GET /admin/offers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    /// RFC 3339.
    pub expires: String,
    pub disks: Vec<DiskOffer>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic while holding the lock cannot leave it half updated in a way that
    // matters more than stopping the endpoint would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The pool id the engine and the wire (`provider_id`) use for a service's pool in a zone.
pub fn pool_id(service: &str, pool: &str, zone: Option<&str>) -> String {
    format!("{service}/{pool}/{}", zone.unwrap_or("-"))
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONNECTION, "close"), (header::CONTENT_LENGTH, "0")],
    )
        .into_response()
}

/// Room left before an event's body for its RecordIO prefix (`<decimal length>\n`).
const PREFIX_ROOM: usize = 21;

/// One event as a RecordIO record, written into a single buffer (no second copy of the
/// body for the prefix). A JSON OFFERS event is written one offer at a time
/// ([`offers_json`]).
fn encode_event(ct: Ct, e: &Event) -> Bytes {
    let mut out = vec![0u8; PREFIX_ROOM];
    match ct {
        Ct::Proto => {
            out.reserve_exact(e.encoded_len());
            // Encoding into a Vec only fails for want of room, and a Vec grows.
            let _ = e.encode(&mut out);
        }
        Ct::Json => {
            let written = match offers_json(e, &mut out) {
                Some(r) => r,
                None => json::write_json(e, &mut out),
            };
            if let Err(err) = written {
                tracing::error!(error = %err, "cannot encode an event as JSON");
                out.truncate(PREFIX_ROOM);
            }
        }
    }
    let prefix = format!("{}\n", out.len() - PREFIX_ROOM);
    let start = PREFIX_ROOM - prefix.len();
    out[start..PREFIX_ROOM].copy_from_slice(prefix.as_bytes());
    Bytes::from(out).slice(start..)
}

/// A JSON OFFERS event (type and offers, nothing else set) written as Mesos JSON one offer
/// at a time, the same bytes as [`json::write_json`] of the whole event: converting the
/// whole event at once builds one dynamic message tree of every offer, several times the
/// size of the text with an offer per agent of a large cluster. `None` for any other event.
fn offers_json(e: &Event, out: &mut Vec<u8>) -> Option<Result<(), crate::mesos::Error>> {
    let Event {
        r#type,
        subscribed: None,
        offers: Some(event::Offers { offers }),
        inverse_offers: None,
        rescind: None,
        rescind_inverse_offer: None,
        update: None,
        update_operation_status: None,
        message: None,
        failure: None,
        error: None,
    } = e
    else {
        return None;
    };
    if *r#type != event_type(event::Type::Offers) || offers.is_empty() {
        return None;
    }
    out.extend_from_slice(br#"{"type":"OFFERS","offers":{"offers":["#);
    for (i, o) in offers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Err(err) = json::write_json(o, out) {
            return Some(Err(err));
        }
    }
    out.extend_from_slice(b"]}}");
    Some(Ok(()))
}

fn event_type(t: event::Type) -> Option<i32> {
    Some(t as i32)
}

impl Endpoint {
    pub fn new(manager: Manager, agents: client::Handle, cfg: OffersConfig) -> Endpoint {
        Self::with_master(manager, agents, cfg, None)
    }

    /// Like [`Endpoint::new`]; with `mesos` (a config with masters), a framework that
    /// subscribes with an id is checked against the master's `GET_FRAMEWORKS`.
    pub fn with_master(
        manager: Manager,
        agents: client::Handle,
        cfg: OffersConfig,
        mesos: Option<MesosConfig>,
    ) -> Endpoint {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Endpoint {
            inner: Arc::new(Inner {
                manager,
                agents,
                instance_map: cfg.instance_map(),
                cfg,
                mesos: mesos.filter(|m| m.enabled()),
                http,
                run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
                state: Mutex::new(State_ {
                    next_offer_id: 1,
                    ..Default::default()
                }),
                wake: Notify::new(),
            }),
        }
    }

    fn offer_id_string(&self, id: OfferId) -> String {
        format!("{}-O{id}", self.inner.run_id)
    }

    fn parse_offer_id(&self, s: &str) -> Option<OfferId> {
        s.strip_prefix(&self.inner.run_id)?
            .strip_prefix("-O")?
            .parse()
            .ok()
    }

    /// Run an allocation round soon.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Subscribed and disconnected frameworks, then torn-down ones that still hold
    /// reservations (with when their grace ends).
    pub fn frameworks(&self) -> Result<Vec<FrameworkView>, crate::store::Error> {
        let store = self.inner.manager.store();
        let held = store.reservations()?;
        let torn = self.torn_down()?;
        let count = |id: &str| held.iter().filter(|r| r.framework_id == id).count();
        let now = crate::volumes::now_secs();
        let st = lock(&self.inner.state);
        let mut out: Vec<FrameworkView> = st
            .frameworks
            .iter()
            .map(|(id, f)| FrameworkView {
                id: id.clone(),
                name: f.name.clone(),
                role: f.role.clone(),
                principal: f.principal.clone(),
                connected: f.tx.is_some(),
                suppressed: f.suppressed,
                offers: st
                    .outstanding
                    .iter()
                    .filter(|o| &o.framework_id == id)
                    .count(),
                filters: f.filters.len(),
                subscribed_at: f.subscribed_at.clone(),
                reservations: count(id),
                torn_down_at: None,
                grace_ends: None,
                releasable: false,
            })
            .collect();
        for (id, t) in torn {
            if st.frameworks.contains_key(&id) {
                continue;
            }
            let ends = self.grace_end(t.at);
            out.push(FrameworkView {
                reservations: count(&id),
                id,
                name: t.name,
                role: t.role,
                principal: t.principal,
                connected: false,
                suppressed: false,
                offers: 0,
                filters: 0,
                subscribed_at: String::new(),
                torn_down_at: Some(rfc3339_ms(t.at.saturating_mul(1000))),
                grace_ends: Some(rfc3339_ms(ends.saturating_mul(1000))),
                releasable: now >= ends,
            });
        }
        Ok(out)
    }

    /// Torn-down frameworks recorded in the store, by id.
    fn torn_down(&self) -> Result<BTreeMap<String, TornDown>, crate::store::Error> {
        let mut out = BTreeMap::new();
        for (k, v) in self.inner.manager.store().meta_prefixed(TORN_DOWN_PREFIX)? {
            match serde_json::from_str::<TornDown>(&v) {
                Ok(t) => {
                    out.insert(k[TORN_DOWN_PREFIX.len()..].to_string(), t);
                }
                Err(e) => tracing::warn!(key = %k, error = %e, "unreadable teardown record"),
            }
        }
        Ok(out)
    }

    /// Unix seconds at which the reservations of a framework torn down at `at` are
    /// releasable.
    fn grace_end(&self, at: u64) -> u64 {
        at.saturating_add(self.inner.cfg.teardown_grace_secs.ceil() as u64)
    }

    /// Release what a framework holds (all of it, or one volume): detach each volume from
    /// every instance (driver detach, each under its own intent), lift the framework's
    /// restriction, then drop the reservation. Volumes are never deleted. Refused while the
    /// framework is subscribed, and, unless `force`, before its teardown grace has passed
    /// (or when it never tore down). The reservation record goes last, so a release cut
    /// short by a crash or an error is finished by running it again.
    pub async fn release(
        &self,
        fw: &str,
        volume: Option<&str>,
        force: bool,
    ) -> Result<ReleaseReport, ReleaseError> {
        let subscribed = lock(&self.inner.state)
            .frameworks
            .get(fw)
            .is_some_and(|f| f.tx.is_some());
        if subscribed {
            return Err(ReleaseError::Refused(format!(
                "framework {fw} is subscribed; it releases its volumes with UNRESERVE or DESTROY_DISK"
            )));
        }
        let store = self.inner.manager.store().clone();
        let mark = self.torn_down()?.remove(fw);
        let mut held: Vec<crate::store::Reservation> = store
            .reservations()?
            .into_iter()
            .filter(|r| r.framework_id == fw)
            .collect();
        if held.is_empty() && mark.is_none() {
            return Err(ReleaseError::NotFound(format!(
                "framework {fw} holds no reservations"
            )));
        }
        if let Some(v) = volume {
            held.retain(|r| r.volume_id == v);
            if held.is_empty() {
                return Err(ReleaseError::NotFound(format!(
                    "framework {fw} holds no volume {v}"
                )));
            }
        }
        if !force {
            let now = crate::volumes::now_secs();
            match &mark {
                None => {
                    return Err(ReleaseError::Refused(format!(
                        "framework {fw} has not torn down; pass --force to release its reservations anyway"
                    )))
                }
                Some(t) if now < self.grace_end(t.at) => {
                    let ends = self.grace_end(t.at);
                    return Err(ReleaseError::Refused(format!(
                        "framework {fw} tore down at {}; its reservations are kept until {} ({} s from now); pass --force to release them now",
                        rfc3339_ms(t.at.saturating_mul(1000)),
                        rfc3339_ms(ends.saturating_mul(1000)),
                        ends - now
                    )));
                }
                Some(_) => {}
            }
        }
        let m = &self.inner.manager;
        let mut released = Vec::new();
        for r in held {
            match m.volume(&r.volume_id) {
                Ok(v) => {
                    for a in &v.attachments {
                        m.detach(&v.id, Some(&a.instance_id)).await?;
                    }
                    if v.restrict_frameworks.contains(fw) {
                        m.unrestrict(
                            &v.id,
                            &crate::volumes::Restriction {
                                frameworks: BTreeSet::from([fw.to_string()]),
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                }
                // The volume is gone already: only the claim is left to drop.
                Err(crate::volumes::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let drop_claim = crate::store::Op::DeleteReservation {
                framework_id: fw.to_string(),
                volume_id: r.volume_id.clone(),
            };
            store.commit(vec![drop_claim]).await?;
            tracing::info!(framework = fw, volume = %r.volume_id, "reservation released by an admin");
            released.push(r.volume_id);
        }
        let remaining = store
            .reservations()?
            .iter()
            .filter(|r| r.framework_id == fw)
            .count();
        if remaining == 0 && mark.is_some() {
            store.apply(&[crate::store::Op::DeleteMeta(format!(
                "{TORN_DOWN_PREFIX}{fw}"
            ))])?;
        }
        self.wake();
        Ok(ReleaseReport {
            framework_id: fw.to_string(),
            released,
            remaining,
        })
    }

    pub fn offers(&self) -> Vec<OfferView> {
        let st = lock(&self.inner.state);
        st.outstanding
            .iter()
            .map(|o| OfferView {
                id: self.offer_id_string(o.id),
                framework_id: o.framework_id.clone(),
                agent_id: o.agent_id.clone(),
                hostname: o.hostname.clone(),
                expires: rfc3339_ms(o.expires_ms),
                disks: o.disks.clone(),
            })
            .collect()
    }

    /// The HTTP routes of the endpoint.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/scheduler", post(scheduler))
            .route("/master/api/v1/scheduler", post(scheduler))
            .route("/version", get(version))
            .with_state(self.clone())
    }

    /// Allocation rounds until `token` is cancelled: every `allocation_interval_ms` and after
    /// every call that may change the outcome. Resumes operations a previous run left pending.
    pub async fn run(self, token: CancellationToken) {
        self.resume_operations();
        let every = Duration::from_millis(self.inner.cfg.allocation_interval_ms);
        // Acknowledged operation records past their retention are removed a quarter of the
        // retention after they expire at most (and at least once a minute), off this loop.
        let prune_every =
            Duration::from_secs_f64((self.inner.cfg.operation_retention_secs / 4.0).min(60.0));
        let mut pruned_at: Option<tokio::time::Instant> = None;
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if let Err(e) = self.round() {
                tracing::warn!(error = %e, "offer round failed");
            }
            let due = pruned_at.is_none_or(|t| t.elapsed() >= prune_every);
            if due && pruning.as_ref().is_none_or(|p| p.is_finished()) {
                pruned_at = Some(tokio::time::Instant::now());
                let ep = self.clone();
                pruning = Some(tokio::spawn(async move {
                    match ep.prune_operations().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            records = n,
                            "acknowledged operation records past their retention removed"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot remove old operation records"),
                    }
                }));
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
        // Close every subscription stream.
        let mut st = lock(&self.inner.state);
        for f in st.frameworks.values_mut() {
            f.tx = None;
        }
    }

    /// The store's part of a snapshot, read without the state lock (see
    /// [`Endpoint::locked_view`]).
    fn store_view(&self) -> Result<StoreView, crate::store::Error> {
        let store = self.inner.manager.store();
        let instances = store.instances()?;
        let known = self.inner.agents.agents_with_instances(&instances);
        // Lost and fenced nodes get no offers, and what a lost node holds is not offered
        // until it is fenced (`crate::fencing`).
        let held = crate::fencing::Held::read(store)?;
        let agents: Vec<offers::Agent> = known
            .iter()
            .filter(|a| !a.lost && !held.blocks_agent(&a.id))
            .map(|a| offers::Agent {
                id: a.id.clone(),
                hostname: a.hostname.clone(),
                zone: a.zone.clone(),
            })
            .collect();
        let reservations = store.reservations()?;
        let reserved: HashMap<&str, &str> = reservations
            .iter()
            .map(|r| (r.volume_id.as_str(), r.framework_id.as_str()))
            .collect();
        // Which agent stands for each instance: once per snapshot, not once per volume (an
        // accept builds a snapshot, so this is on every ACCEPT's path).
        let agent_of_instance: BTreeMap<String, &str> = known
            .iter()
            .rev() // the first agent wins, as a search in order would find it
            .filter_map(|k| Some((self.instance_for(k, &instances)?, k.id.as_str())))
            .collect();
        let mut volumes = Vec::new();
        for v in store.volumes_shared()?.iter() {
            let reserved_by = reserved.get(v.id.as_str()).map(|f| f.to_string());
            if v.status != crate::store::VolumeStatus::Available
                || (v.restrict_frameworks.is_empty() && reserved_by.is_none())
                || held.holds(v)
            {
                continue;
            }
            let attached_to_agent = v
                .attachments
                .first()
                .and_then(|a| agent_of_instance.get(&a.instance_id))
                .map(|id| id.to_string());
            if !v.attachments.is_empty() && attached_to_agent.is_none() {
                continue; // attached somewhere no agent stands for
            }
            let ev = offers::ExistingVolume {
                volume_id: v.id.clone(),
                pool_id: pool_id(
                    &v.service,
                    v.pool.as_deref().unwrap_or("default"),
                    v.zone.as_deref(),
                ),
                zone: v.zone.clone(),
                mb: (v.size_bytes >> 20).max(1),
                frameworks: v.restrict_frameworks.iter().cloned().collect(),
                reserved_by,
                attached_to_agent,
                kind: offers::VolumeKind::Mount,
            };
            volumes.push((ev, v.service.clone(), v.name.clone()));
        }
        Ok(StoreView {
            agents,
            reservations,
            volumes,
        })
    }

    /// The state lock, with a [`StoreView`] read before it was taken and still valid under
    /// it. The view is read without the lock, so many ACCEPTs and the allocation round do
    /// not queue behind one another's store reads; it is valid when no operation ended while
    /// it was read (an operation in flight is covered by `pending`: its capacity through its
    /// claim, the volume it creates by name). A few tries, then the view is read under the
    /// lock, as the other writers of the store (admin API, reconciler) never take this lock.
    fn locked_view(&self) -> Result<(MutexGuard<'_, State_>, StoreView), crate::store::Error> {
        for _ in 0..3 {
            let ended = lock(&self.inner.state).ended;
            let view = self.store_view()?;
            let st = lock(&self.inner.state);
            if st.ended == ended {
                return Ok((st, view));
            }
        }
        let st = lock(&self.inner.state);
        let view = self.store_view()?;
        Ok((st, view))
    }

    /// The engine's view of the world now: frameworks and offers from `st`, the rest from
    /// `view` (read as [`Endpoint::locked_view`] does).
    fn snapshot(
        &self,
        st: &State_,
        view: StoreView,
        now_ms: u64,
    ) -> Result<Snapshot, crate::store::Error> {
        // Readings and the claims not yet accounted in them, read together: a pending
        // operation counts against its pool until the manager has counted its bytes. Read
        // under the state lock, with `pending`.
        let (readings, claims) = self.inner.manager.capacity_view();
        let mut pools = Vec::new();
        let mut profiles = BTreeMap::new();
        for (service, r) in &readings {
            for p in &r.pools {
                let id = pool_id(service, &p.pool, p.zone.as_deref());
                profiles.insert(id.clone(), p.pool.clone());
                pools.push(offers::Pool {
                    id,
                    service: service.clone(),
                    pool: p.pool.clone(),
                    profile: p.pool.clone(),
                    zone: p.zone.clone(),
                    total_mb: p.total_bytes >> 20,
                    free_mb: p.free_bytes >> 20,
                    available: r.available,
                });
            }
        }
        let StoreView {
            agents,
            reservations,
            volumes,
        } = view;
        // Being created: held through its reservation, offered only after its operation's
        // terminal status has been sent.
        // Acted on by an operation in flight: consumed by its ACCEPT until it has ended.
        let creating = ops::creating(&st.pending);
        let volumes: Vec<offers::ExistingVolume> = volumes
            .into_iter()
            .filter(|(_, service, name)| !creating.contains(&(service.as_str(), name.as_str())))
            .filter(|(v, _, _)| !st.acting.contains_key(&v.volume_id))
            .map(|(v, _, _)| v)
            .collect();
        let cfg = &self.inner.cfg;
        let share = |id: &str| cfg.frameworks.get(id).cloned().unwrap_or_default();
        let mut frameworks: Vec<offers::Framework> = st
            .frameworks
            .iter()
            .filter(|(_, f)| f.tx.is_some())
            .map(|(id, f)| offers::Framework {
                id: id.clone(),
                role: f.role.clone(),
                weight: share(id).weight,
                quota: share(id).quota(),
                suppressed: f.suppressed,
                filters: f.filters.clone(),
            })
            .collect();
        // Frameworks that are away (disconnected, torn down) but still hold volumes: offered
        // nothing, but what they hold counts towards their role's share and quota.
        // (A set, not a search of the list per reservation: with thousands of volumes held
        // and hundreds of frameworks that search was a good part of every snapshot.)
        let mut listed: HashSet<String> = frameworks.iter().map(|f| f.id.clone()).collect();
        for r in &reservations {
            if listed.insert(r.framework_id.clone()) {
                frameworks.push(offers::Framework {
                    id: r.framework_id.clone(),
                    role: r.role.clone(),
                    weight: share(&r.framework_id).weight,
                    quota: share(&r.framework_id).quota(),
                    suppressed: true,
                    filters: Vec::new(),
                });
            }
        }
        let role_weights = cfg
            .roles
            .iter()
            .map(|(r, c)| (r.clone(), c.weight))
            .collect();
        let role_quotas = cfg
            .roles
            .iter()
            .map(|(r, c)| (r.clone(), c.quota()))
            .collect();
        Ok(Snapshot {
            now_ms,
            next_offer_id: st.next_offer_id,
            config: offers::Config {
                headroom_mb: self.inner.cfg.headroom_bytes >> 20,
                offer_timeout_ms: (self.inner.cfg.offer_timeout_secs * 1000.0) as u64,
                min_offer_mb: 1,
            },
            pools,
            agents,
            frameworks,
            role_weights,
            role_quotas,
            reservations: ops::reservations(&st.pending, &claims),
            volumes,
            outstanding: st.outstanding.clone(),
        })
    }

    /// One allocation round: send new offers, rescind what the engine withdraws.
    fn round(&self) -> Result<(), crate::store::Error> {
        let (mut st, view) = self.locked_view()?;
        let now = crate::volumes::now_ms();
        for f in st.frameworks.values_mut() {
            f.filters.retain(|x| x.until_ms > now);
        }
        let snap = self.snapshot(&st, view, now)?;
        let alloc = offers::allocate(&snap);
        st.next_offer_id = alloc.next_offer_id;
        let gone: BTreeSet<OfferId> = alloc.rescinds.iter().map(|r| r.offer_id).collect();
        let mut rescinded = Vec::new();
        st.outstanding.retain(|o| {
            if gone.contains(&o.id) {
                rescinded.push((o.framework_id.clone(), o.id));
                false
            } else {
                true
            }
        });
        for (fw, id) in rescinded {
            self.send_locked(&st, &fw, self.rescind_event(id));
        }
        let agents = self.inner.agents.agents();
        // Looked up once per round, not once per offer (a round can offer every agent).
        let agents_by_id: HashMap<&str, &crate::mesos::client::Agent> =
            agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let profiles: BTreeMap<&str, &str> = snap
            .pools
            .iter()
            .map(|p| (p.id.as_str(), p.profile.as_str()))
            .collect();
        let mut by_fw: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for o in &alloc.new_offers {
            if let Some(f) = st.frameworks.get(&o.framework_id) {
                let agent = agents_by_id.get(o.agent_id.as_str()).copied();
                by_fw
                    .entry(o.framework_id.clone())
                    .or_default()
                    .push(self.offer_to_v1(o, f, agent, &profiles));
            }
        }
        st.outstanding.extend(alloc.new_offers);
        for (fw, offers) in by_fw {
            let ev = Event {
                r#type: event_type(event::Type::Offers),
                offers: Some(event::Offers { offers }),
                ..Default::default()
            };
            self.send_locked(&st, &fw, ev);
        }
        Ok(())
    }

    fn rescind_event(&self, id: OfferId) -> Event {
        Event {
            r#type: event_type(event::Type::Rescind),
            rescind: Some(event::Rescind {
                offer_id: v1::OfferId {
                    value: self.offer_id_string(id),
                },
            }),
            ..Default::default()
        }
    }

    fn send_locked(&self, st: &State_, fw: &str, ev: Event) {
        if let Some(tx) = st.frameworks.get(fw).and_then(|f| f.tx.as_ref()) {
            let _ = tx.send(ev);
        }
    }

    fn send(&self, fw: &str, ev: Event) {
        let st = lock(&self.inner.state);
        self.send_locked(&st, fw, ev);
    }

    /// Deliver an operation status on the framework's current stream at most once: a status
    /// (by its uuid) that a subscription resent from the store is not sent again by its
    /// operation finishing at the same moment, nor the other way round. Answers to explicit
    /// requests (reconciliation, a repeated operation id) go through [`Endpoint::send`].
    fn send_status(&self, fw: &str, ev: Event) {
        let mut st = lock(&self.inner.state);
        let Some(f) = st.frameworks.get_mut(fw) else {
            return;
        };
        if f.tx.is_none() {
            return;
        }
        let uuid = ev
            .update_operation_status
            .as_ref()
            .and_then(|u| u.status.uuid.as_ref())
            .map(|u| u.value.clone());
        if let Some(u) = uuid {
            if !f.statuses_sent.insert(u) {
                return;
            }
        }
        if let Some(tx) = &f.tx {
            let _ = tx.send(ev);
        }
    }

    fn offer_to_v1(
        &self,
        o: &offers::Offer,
        f: &Fw,
        agent: Option<&client::Agent>,
        profiles: &BTreeMap<&str, &str>,
    ) -> v1::Offer {
        let alloc = f.multi_role.then(|| resource::AllocationInfo {
            role: Some(f.role.clone()),
        });
        let resources = o
            .disks
            .iter()
            .map(|d| match d {
                DiskOffer::Raw {
                    pool_id,
                    profile,
                    mb,
                } => disk_resource(pool_id, profile, None, *mb, alloc.clone()),
                DiskOffer::Volume {
                    volume_id,
                    pool_id,
                    mb,
                    ..
                } => disk_resource(
                    pool_id,
                    profiles.get(pool_id.as_str()).copied().unwrap_or("default"),
                    Some(volume_id),
                    *mb,
                    alloc.clone(),
                ),
            })
            .collect();
        let domain = agent.and_then(|a| {
            let zone = a.zone.clone()?;
            Some(v1::DomainInfo {
                fault_domain: Some(v1::domain_info::FaultDomain {
                    region: v1::domain_info::fault_domain::RegionInfo {
                        name: a.region.clone().unwrap_or_else(|| "default".into()),
                    },
                    zone: v1::domain_info::fault_domain::ZoneInfo { name: zone },
                }),
            })
        });
        v1::Offer {
            id: v1::OfferId {
                value: self.offer_id_string(o.id),
            },
            framework_id: v1::FrameworkId {
                value: o.framework_id.clone(),
            },
            agent_id: v1::AgentId {
                value: o.agent_id.clone(),
            },
            hostname: o.hostname.clone(),
            domain,
            resources,
            allocation_info: alloc,
            ..Default::default()
        }
    }

    /// The instance id volumes are attached to for an agent ([`agent_instance`]).
    fn instance_for(
        &self,
        a: &client::Agent,
        instances: &[crate::store::Instance],
    ) -> Option<String> {
        agent_instance(a, instances, &self.inner.instance_map)
    }

    /// Close a framework's stream (if it is still `stream_id`'s) and return its offers.
    fn disconnected(&self, fw: &str, stream_id: &str) {
        let mut st = lock(&self.inner.state);
        let Some(f) = st.frameworks.get_mut(fw) else {
            return;
        };
        if f.stream_id.as_deref() != Some(stream_id) {
            return;
        }
        f.tx = None;
        st.outstanding.retain(|o| o.framework_id != fw);
        drop(st);
        tracing::info!(
            framework = fw,
            "framework disconnected from the storage-offer endpoint"
        );
        self.wake();
    }
}

fn disk_resource(
    pool_id: &str,
    profile: &str,
    volume_id: Option<&str>,
    mb: u64,
    alloc: Option<resource::AllocationInfo>,
) -> v1::Resource {
    use resource::disk_info::source::Type as T;
    v1::Resource {
        name: "disk".into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: mb as f64 }),
        provider_id: Some(v1::ResourceProviderId {
            value: pool_id.to_string(),
        }),
        allocation_info: alloc,
        disk: Some(resource::DiskInfo {
            source: Some(resource::disk_info::Source {
                r#type: if volume_id.is_some() {
                    T::Mount
                } else {
                    T::Raw
                } as i32,
                vendor: Some(VENDOR.into()),
                id: volume_id.map(String::from),
                profile: Some(profile.to_string()),
                mount: volume_id.map(|_| resource::disk_info::source::Mount { root: None }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ends a framework's subscription when its response stream is dropped (client gone).
struct StreamGuard {
    ep: Endpoint,
    framework_id: String,
    stream_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.ep.disconnected(&self.framework_id, &self.stream_id);
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "version": MESOS_VERSION,
        "build_user": "polly",
        "build_date": "",
        "build_time": 0,
        "git_tag": format!("polly-{}", env!("CARGO_PKG_VERSION")),
    }))
}

/// Decode a call; JSON acknowledgements are accepted in pymesos' shape too (the whole
/// status object, with `uuid` as `{"value": …}`).
pub(crate) fn decode_call(ct: Ct, body: &[u8]) -> Result<Call, String> {
    match ct {
        Ct::Proto => json::from_protobuf::<Call>(body).map_err(|e| e.to_string()),
        Ct::Json => {
            let mut v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
            if !v.is_object() {
                return Err("invalid JSON: expected an object".into());
            }
            if let Some(ack) = v.get_mut("acknowledge_operation_status") {
                if let Some(u) = ack.get("uuid").and_then(|u| u.get("value")).cloned() {
                    ack["uuid"] = u;
                }
            }
            json::from_value::<Call>(&v).map_err(|e| e.to_string())
        }
    }
}

async fn scheduler(State(ep): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => {
            return bad(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            )
        }
        Some(Ok(CT_JSON)) => Ct::Json,
        Some(Ok(CT_PROTO)) => Ct::Proto,
        Some(_) => {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Expecting 'Content-Type' of {CT_JSON} or {CT_PROTO}"),
            )
        }
    };
    let call = match decode_call(ct, &body) {
        Ok(c) => c,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body: {e}"),
            )
        }
    };
    let Some(t) = call.r#type else {
        return bad(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    };
    let t = call::Type::try_from(t).unwrap_or(call::Type::Unknown);
    if t == call::Type::Unknown {
        return bad(StatusCode::NOT_IMPLEMENTED, "Received 'UNKNOWN' call");
    }
    if t == call::Type::Subscribe {
        return ep.subscribe(&headers, call).await;
    }
    let Some(fw) = call.framework_id.as_ref().map(|f| f.value.clone()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "Expecting 'framework_id' to be present",
        );
    };
    {
        let st = lock(&ep.inner.state);
        let Some(f) = st.frameworks.get(&fw) else {
            return bad(StatusCode::BAD_REQUEST, "Framework cannot be found");
        };
        if f.tx.is_none() {
            return bad(StatusCode::FORBIDDEN, "Framework is not subscribed");
        }
        let given = headers.get(STREAM_ID).and_then(|v| v.to_str().ok());
        match given {
            None => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                )
            }
            Some(s) if Some(s) != f.stream_id.as_deref() => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {fw}"),
                )
            }
            Some(_) => {}
        }
    }
    match t {
        call::Type::Teardown => {
            if let Err(e) = ep.teardown(&fw) {
                return bad(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot record the teardown: {e}"),
                );
            }
        }
        call::Type::Accept => {
            let Some(a) = call.accept else {
                return bad(StatusCode::BAD_REQUEST, "Expecting 'accept' to be present");
            };
            ep.accept(&fw, a).await;
        }
        call::Type::Decline => {
            let Some(d) = call.decline else {
                return bad(StatusCode::BAD_REQUEST, "Expecting 'decline' to be present");
            };
            ep.decline(&fw, &d.offer_ids, d.filters.as_ref());
        }
        call::Type::Revive => {
            let mut st = lock(&ep.inner.state);
            if let Some(f) = st.frameworks.get_mut(&fw) {
                f.suppressed = false;
                f.filters.clear();
            }
            drop(st);
            ep.wake();
        }
        call::Type::Suppress => {
            if let Some(f) = lock(&ep.inner.state).frameworks.get_mut(&fw) {
                f.suppressed = true;
            }
        }
        call::Type::AcknowledgeOperationStatus => {
            let Some(a) = call.acknowledge_operation_status else {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "Expecting 'acknowledge_operation_status' to be present",
                );
            };
            if let Err(e) = ep.acknowledge(&fw, &a).await {
                return bad(StatusCode::BAD_REQUEST, e);
            }
        }
        call::Type::ReconcileOperations => {
            let ids: Vec<String> = call
                .reconcile_operations
                .map(|r| {
                    r.operations
                        .into_iter()
                        .map(|o| o.operation_id.value)
                        .collect()
                })
                .unwrap_or_default();
            ep.reconcile(&fw, &ids);
        }
        // Task calls and the rest have nothing to act on here (Polly runs no tasks).
        _ => {}
    }
    accepted()
}

impl Endpoint {
    #[allow(deprecated)] // `FrameworkInfo.role`: still what single-role frameworks send.
    async fn subscribe(&self, headers: &HeaderMap, call: Call) -> Response {
        if headers.contains_key(STREAM_ID) {
            return bad(
                StatusCode::BAD_REQUEST,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            );
        }
        let Some(sub) = call.subscribe else {
            return bad(
                StatusCode::BAD_REQUEST,
                "Expecting 'subscribe' to be present",
            );
        };
        let info = sub.framework_info;
        let info_id = info.id.as_ref().map(|i| i.value.clone());
        let call_id = call.framework_id.as_ref().map(|i| i.value.clone());
        if call_id.is_some() && call_id != info_id {
            return bad(
                StatusCode::BAD_REQUEST,
                "'framework_id' differs from 'subscribe.framework_info.id'",
            );
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*/*");
        let ct = if accept.contains(CT_JSON) || accept.contains("*/*") {
            Ct::Json
        } else if accept.contains(CT_PROTO) {
            Ct::Proto
        } else {
            return bad(
                StatusCode::NOT_ACCEPTABLE,
                format!("Expecting 'Accept' to allow {CT_JSON} or {CT_PROTO}"),
            );
        };
        if let Some(id) = &info_id {
            if let Some(refusal) = self.verify_framework(id, ct).await {
                return refusal;
            }
        }
        let id = info_id.unwrap_or_else(|| format!("polly-{}", uuid::Uuid::new_v4()));
        let multi_role = info
            .capabilities
            .iter()
            .any(|c| c.r#type == Some(v1::framework_info::capability::Type::MultiRole as i32));
        let role = if multi_role {
            info.roles.first().cloned()
        } else {
            info.role.clone()
        }
        .unwrap_or_else(|| "*".into());
        let stream_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let hb = Duration::from_secs_f64(self.inner.cfg.heartbeat_interval_secs);
        let _ = tx.send(Event {
            r#type: event_type(event::Type::Subscribed),
            subscribed: Some(event::Subscribed {
                framework_id: v1::FrameworkId { value: id.clone() },
                heartbeat_interval_seconds: Some(hb.as_secs_f64()),
                master_info: None,
            }),
            ..Default::default()
        });
        // As a master does: a HEARTBEAT right after SUBSCRIBED, then one per interval.
        let _ = tx.send(Event {
            r#type: event_type(event::Type::Heartbeat),
            ..Default::default()
        });
        {
            let mut st = lock(&self.inner.state);
            // A new subscription replaces the old stream; its offers are withdrawn.
            st.outstanding.retain(|o| o.framework_id != id);
            st.frameworks.insert(
                id.clone(),
                Fw {
                    name: info.name.clone(),
                    role,
                    principal: info.principal.clone(),
                    multi_role,
                    stream_id: Some(stream_id.clone()),
                    tx: Some(tx.clone()),
                    suppressed: !sub.suppressed_roles.is_empty(),
                    filters: Vec::new(),
                    subscribed_at: rfc3339_ms(crate::volumes::now_ms()),
                    statuses_sent: HashSet::new(),
                },
            );
        }
        // Back after a TEARDOWN: its reservations are its own again, not releasable.
        let mark = format!("{TORN_DOWN_PREFIX}{id}");
        if let Ok(Some(_)) = self.inner.manager.store().meta(&mark) {
            if let Err(e) = self
                .inner
                .manager
                .store()
                .apply(&[crate::store::Op::DeleteMeta(mark)])
            {
                tracing::warn!(framework = %id, error = %e, "cannot clear the teardown record");
            }
        }
        tracing::info!(framework = %id, name = %info.name, "framework subscribed to the storage-offer endpoint");
        // Statuses not yet acknowledged are sent again on every subscription.
        self.resend_unacknowledged(&id);
        let guard = StreamGuard {
            ep: self.clone(),
            framework_id: id,
            stream_id: stream_id.clone(),
        };
        let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream = futures::stream::unfold(
            (rx, iv, guard),
            move |(mut rx, mut iv, g)| async move {
                let ev = tokio::select! {
                    biased;
                    ev = rx.recv() => ev?,
                    _ = iv.tick() => Event { r#type: event_type(event::Type::Heartbeat), ..Default::default() },
                };
                Some((Ok::<_, Infallible>(encode_event(ct, &ev)), (rx, iv, g)))
            },
        );
        self.wake();
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, ct.mime())
            .header(STREAM_ID, stream_id)
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| bad(StatusCode::INTERNAL_SERVER_ERROR, "response"))
    }

    /// With a master configured, check a subscribing framework's id with the master's
    /// operator API. `None`: go ahead. A refusal is what a master answers when it refuses a
    /// subscription (200, one ERROR event, end of stream); a master that cannot be asked
    /// gives 503, which scheduler libraries retry, as they do a master still recovering.
    async fn verify_framework(&self, id: &str, ct: Ct) -> Option<Response> {
        let cfg = self.inner.mesos.as_ref()?;
        let current = self.inner.agents.status();
        let first = (current.state == client::ConnState::Subscribed)
            .then_some(current.master)
            .flatten();
        let timeout = Duration::from_secs_f64(cfg.request_timeout_secs.min(10.0));
        let status =
            client::operator_framework_status(&self.inner.http, cfg, first.as_deref(), id, timeout)
                .await;
        let message = match status {
            Ok(client::FrameworkStatus::Known) => return None,
            Ok(client::FrameworkStatus::Removed) => format!(
                "Framework {id} has been removed at the Mesos master; subscribe without an id to get a new one"
            ),
            Ok(client::FrameworkStatus::Unknown) => format!(
                "Framework {id} is not known to the Mesos master; subscribe to the master first, or subscribe here without an id"
            ),
            Err(e) => {
                tracing::warn!(framework = id, error = %e, "cannot verify a framework id with the Mesos master");
                return Some(bad(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Cannot verify framework {id} with the Mesos master ({e}); retry"),
                ));
            }
        };
        tracing::info!(framework = id, "subscription refused: {message}");
        let ev = Event {
            r#type: event_type(event::Type::Error),
            error: Some(event::Error { message }),
            ..Default::default()
        };
        let body = encode_event(ct, &ev);
        let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
        Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, ct.mime())
                .header(STREAM_ID, uuid::Uuid::new_v4().to_string())
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| bad(StatusCode::INTERNAL_SERVER_ERROR, "response")),
        )
    }

    /// TEARDOWN: rescind the framework's offers and end its stream. Its reservations stay;
    /// when it holds any, the teardown is recorded (durably, before the 202) so that they
    /// become releasable by an admin once `teardown_grace_secs` have passed.
    fn teardown(&self, fw: &str) -> Result<(), crate::store::Error> {
        let store = self.inner.manager.store();
        let holds = store.reservations()?.iter().any(|r| r.framework_id == fw);
        if holds {
            let st = lock(&self.inner.state);
            let f = st.frameworks.get(fw);
            let mark = TornDown {
                at: crate::volumes::now_secs(),
                name: f.map(|f| f.name.clone()).unwrap_or_default(),
                role: f.map(|f| f.role.clone()).unwrap_or_else(|| "*".into()),
                principal: f.and_then(|f| f.principal.clone()),
            };
            drop(st);
            let v = serde_json::to_string(&mark).unwrap_or_default();
            store.apply(&[crate::store::Op::PutMeta(
                format!("{TORN_DOWN_PREFIX}{fw}"),
                v,
            )])?;
        }
        let mut st = lock(&self.inner.state);
        let gone: Vec<OfferId> = st
            .outstanding
            .iter()
            .filter(|o| o.framework_id == fw)
            .map(|o| o.id)
            .collect();
        for id in gone {
            self.send_locked(&st, fw, self.rescind_event(id));
        }
        st.outstanding.retain(|o| o.framework_id != fw);
        // Dropping the sender ends the stream; reservations stay (never released implicitly).
        st.frameworks.remove(fw);
        drop(st);
        tracing::info!(
            framework = fw,
            grace_secs = self.inner.cfg.teardown_grace_secs,
            "framework tore down; its reservations are kept for the grace period"
        );
        self.wake();
        Ok(())
    }

    fn decline(&self, fw: &str, ids: &[v1::OfferId], filters: Option<&v1::Filters>) {
        let now = crate::volumes::now_ms();
        let until = now + refuse_ms(filters);
        let mut st = lock(&self.inner.state);
        let mut agents = Vec::new();
        for id in ids {
            let Some(n) = self.parse_offer_id(&id.value) else {
                continue;
            };
            if let Some(pos) = st
                .outstanding
                .iter()
                .position(|o| o.id == n && o.framework_id == fw)
            {
                agents.push(st.outstanding.remove(pos).agent_id);
            }
        }
        if until > now {
            if let Some(f) = st.frameworks.get_mut(fw) {
                for agent_id in agents {
                    f.filters.push(offers::Filter {
                        agent_id,
                        pool_id: None,
                        until_ms: until,
                    });
                }
            }
        }
        drop(st);
        self.wake();
    }
}

/// Serve the endpoint on `listener` until `token` is cancelled.
pub async fn serve(
    ep: Endpoint,
    listener: tokio::net::TcpListener,
    token: CancellationToken,
) -> std::io::Result<()> {
    // Routes resolved once, not per accepted connection (see `server::serve_router`).
    axum::serve(listener, ep.router().into_make_service())
        .with_graceful_shutdown(token.cancelled_owned())
        .await
}

/// The default of `Filters.refuse_seconds`.
const DEFAULT_REFUSE_SECS: f64 = 5.0;

/// How long, in ms, a DECLINE's or ACCEPT's `filters` keep the agent out of this framework's
/// offers. As a Mesos master does: absent means the default 5 s; a value that is negative,
/// not a number, infinite or beyond what a duration can hold (i64 nanoseconds) is replaced
/// by the default, with a warning, rather than read as "no filter" or "forever".
fn refuse_ms(filters: Option<&v1::Filters>) -> u64 {
    let Some(secs) = filters.and_then(|f| f.refuse_seconds) else {
        return (DEFAULT_REFUSE_SECS * 1000.0) as u64;
    };
    let max_secs = i64::MAX as f64 / 1e9;
    let secs = if secs.is_finite() && (0.0..=max_secs).contains(&secs) {
        secs
    } else {
        tracing::warn!(
            refuse_seconds = secs,
            "invalid Filters.refuse_seconds; using the default of 5 s"
        );
        DEFAULT_REFUSE_SECS
    };
    (secs * 1000.0) as u64
}

#[cfg(test)]
mod refuse_tests {
    use super::*;

    fn ms(secs: Option<f64>) -> u64 {
        refuse_ms(Some(&v1::Filters {
            refuse_seconds: secs,
        }))
    }

    #[test]
    fn refuse_seconds_as_a_mesos_master_reads_it() {
        assert_eq!(refuse_ms(None), 5_000);
        assert_eq!(ms(None), 5_000);
        assert_eq!(ms(Some(0.0)), 0);
        assert_eq!(ms(Some(0.25)), 250);
        assert_eq!(ms(Some(3600.0)), 3_600_000);
        // A year and more is honoured (no silent cap).
        assert_eq!(ms(Some(4e8)), 400_000_000_000);
        for bad in [
            -1.0,
            -0.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            assert_eq!(ms(Some(bad)), 5_000, "{bad}");
        }
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::mesos::recordio;

    fn offer(i: u32, volumes: u32) -> v1::Offer {
        let alloc = (i % 2 == 0).then(|| resource::AllocationInfo {
            role: Some("storage".into()),
        });
        let mut resources = vec![disk_resource("vfs", "fast", None, 1024, alloc.clone())];
        for v in 0..volumes {
            let id = format!("vol-{i}-{v}");
            resources.push(disk_resource("vfs", "fast", Some(&id), 64, alloc.clone()));
        }
        v1::Offer {
            id: v1::OfferId {
                value: format!("polly-O{i}"),
            },
            framework_id: v1::FrameworkId {
                value: "fw-1".into(),
            },
            agent_id: v1::AgentId {
                value: format!("agent-S{i}"),
            },
            hostname: format!("node-{i}.example"),
            resources,
            allocation_info: alloc,
            ..Default::default()
        }
    }

    fn offers_event(offers: Vec<v1::Offer>) -> Event {
        Event {
            r#type: event_type(event::Type::Offers),
            offers: Some(event::Offers { offers }),
            ..Default::default()
        }
    }

    /// The record as it was built before OFFERS were written offer by offer: the whole
    /// event converted at once, then framed.
    fn whole(ct: Ct, e: &Event) -> Vec<u8> {
        let body = match ct {
            Ct::Json => json::to_json(e).unwrap(),
            Ct::Proto => e.encode_to_vec(),
        };
        recordio::encode(&body)
    }

    #[test]
    fn offers_written_offer_by_offer_are_the_bytes_of_the_whole_event() {
        for n in [1, 2, 7] {
            let e = offers_event((0..n).map(|i| offer(i, i % 3)).collect());
            let mut direct = Vec::new();
            assert!(offers_json(&e, &mut direct).unwrap().is_ok());
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(json::to_json(&e).unwrap()).unwrap(),
                "{n} offers"
            );
            for ct in [Ct::Json, Ct::Proto] {
                assert_eq!(encode_event(ct, &e).as_ref(), whole(ct, &e), "{ct:?}");
            }
            // The framework reads it back as the same event.
            let mut dec = recordio::Decoder::new(1 << 20);
            dec.push(&encode_event(Ct::Json, &e));
            let rec = dec.next_record().unwrap().unwrap();
            assert_eq!(json::from_json::<Event>(&rec).unwrap(), e);
        }
    }

    #[test]
    fn other_events_are_framed_as_before() {
        let heartbeat = Event {
            r#type: event_type(event::Type::Heartbeat),
            ..Default::default()
        };
        let empty_offers = offers_event(Vec::new());
        let error = Event {
            r#type: event_type(event::Type::Error),
            error: Some(event::Error {
                message: "x".repeat(300),
            }),
            ..Default::default()
        };
        // An OFFERS event with something else set is not written by the shortcut.
        let mut mixed = offers_event(vec![offer(1, 1)]);
        mixed.error = error.error.clone();
        assert!(offers_json(&mixed, &mut Vec::new()).is_none());
        assert!(offers_json(&empty_offers, &mut Vec::new()).is_none());
        for e in [heartbeat, empty_offers, error, mixed] {
            for ct in [Ct::Json, Ct::Proto] {
                assert_eq!(encode_event(ct, &e).as_ref(), whole(ct, &e), "{ct:?} {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn status(uuid: &[u8], op: &str) -> Event {
        Event {
            r#type: event_type(event::Type::UpdateOperationStatus),
            update_operation_status: Some(event::UpdateOperationStatus {
                status: v1::OperationStatus {
                    operation_id: Some(v1::OperationId { value: op.into() }),
                    state: v1::OperationState::OperationFinished as i32,
                    uuid: Some(v1::Uuid {
                        value: uuid.to_vec(),
                    }),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }
    }

    fn sent(ep: &Endpoint) -> usize {
        lock(&ep.inner.state).frameworks["fw-1"].statuses_sent.len()
    }

    /// A status is delivered at most once on a stream, and the stream forgets it once the
    /// framework acknowledges it, so the set holds only the statuses in flight.
    #[tokio::test]
    async fn a_status_goes_once_per_stream_and_is_forgotten_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("store")).unwrap();
        let manager = Manager::with_services(store, BTreeMap::new(), Duration::from_secs(5));
        let agents = client::Handle::new(&MesosConfig::default(), Default::default());
        let ep = Endpoint::new(manager, agents, OffersConfig::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&ep.inner.state).frameworks.insert(
            "fw-1".into(),
            Fw {
                name: "fw".into(),
                role: "storage".into(),
                principal: None,
                multi_role: false,
                stream_id: Some("s-1".into()),
                tx: Some(tx),
                suppressed: false,
                filters: Vec::new(),
                subscribed_at: String::new(),
                statuses_sent: HashSet::new(),
            },
        );
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        ep.send_status("fw-1", status(a.as_bytes(), "op-a"));
        ep.send_status("fw-1", status(a.as_bytes(), "op-a"));
        ep.send_status("fw-1", status(b.as_bytes(), "op-b"));
        let mut got = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            got.push(
                ev.update_operation_status
                    .unwrap()
                    .status
                    .uuid
                    .unwrap()
                    .value,
            );
        }
        assert_eq!(got, vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()]);
        assert_eq!(sent(&ep), 2);
        let ack = |u: &uuid::Uuid, op: &str| call::AcknowledgeOperationStatus {
            uuid: u.as_bytes().to_vec(),
            operation_id: v1::OperationId { value: op.into() },
            ..Default::default()
        };
        ep.acknowledge("fw-1", &ack(&a, "op-a")).await.unwrap();
        assert_eq!(sent(&ep), 1, "the acknowledged status is forgotten");
        ep.acknowledge("fw-1", &ack(&b, "op-b")).await.unwrap();
        assert_eq!(sent(&ep), 0, "nothing in flight, nothing remembered");
    }
}
