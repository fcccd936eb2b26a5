//! SUBSCRIBE and the subscription streams: the framework's id checked with the master (when
//! one is configured), SUBSCRIBED then HEARTBEATs on the stream, events sent on it (an
//! operation status at most once), and the end of a stream when its client goes.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use tokio::sync::mpsc;

use super::state::Framework;
use super::wire::{acceptable, bad, encode_event, event_type, Ct, CT_JSON, CT_PROTO, STREAM_ID};
use super::{rfc3339_ms, Endpoint};
use crate::mesos::client;
use crate::mesos::v1;
use crate::mesos::v1::scheduler::{event, Call, Event};

/// The longest framework name, user, principal, role, hostname or web UI URL taken, and the
/// largest `FrameworkInfo`: what a framework says of itself is kept for as long as it is
/// known, shown by `polly framework ls` and logged, so it is bounded.
pub const MAX_INFO_FIELD: usize = 1024;
pub const MAX_INFO_BYTES: usize = 64 << 10;

/// Why a `FrameworkInfo` is too large to take, if it is.
#[allow(deprecated)] // `FrameworkInfo.role`
fn oversize(info: &v1::FrameworkInfo) -> Option<String> {
    use prost::Message as _;
    let len = info.encoded_len();
    if len > MAX_INFO_BYTES {
        return Some(format!(
            "'framework_info' is {len} bytes; at most {MAX_INFO_BYTES} are taken"
        ));
    }
    let fields = [
        ("name", Some(&info.name)),
        ("user", Some(&info.user)),
        ("principal", info.principal.as_ref()),
        ("role", info.role.as_ref()),
        ("hostname", info.hostname.as_ref()),
        ("webui_url", info.webui_url.as_ref()),
    ];
    let roles = info.roles.iter().map(|r| ("roles[]", Some(r)));
    for (name, v) in fields.into_iter().chain(roles) {
        if let Some(v) = v.filter(|v| v.len() > MAX_INFO_FIELD) {
            return Some(format!(
                "'framework_info.{name}' is {} bytes; at most {MAX_INFO_FIELD} are taken",
                v.len()
            ));
        }
    }
    None
}

impl Endpoint {
    #[allow(deprecated)] // `FrameworkInfo.role`: still what single-role frameworks send.
    /// `authenticated`: the principal the call's credentials proved (authentication on).
    pub(super) async fn subscribe(
        &self,
        headers: &HeaderMap,
        call: Call,
        authenticated: Option<String>,
    ) -> Response {
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
        if let Some(refusal) = oversize(&info) {
            return bad(StatusCode::BAD_REQUEST, refusal);
        }
        let info_id = info.id.as_ref().map(|i| i.value.clone());
        let call_id = call.framework_id.as_ref().map(|i| i.value.clone());
        if call_id.is_some() && call_id != info_id {
            return bad(
                StatusCode::BAD_REQUEST,
                "'framework_id' differs from 'subscribe.framework_info.id'",
            );
        }
        // As a master: JSON when acceptable, else protobuf, else 406.
        let accept = headers
            .get(header::ACCEPT)
            .map(|v| v.to_str().unwrap_or(""));
        let ct = if acceptable(accept, CT_JSON) {
            Ct::Json
        } else if acceptable(accept, CT_PROTO) {
            Ct::Proto
        } else {
            return bad(
                StatusCode::NOT_ACCEPTABLE,
                format!("Expecting 'Accept' to allow {CT_JSON} or {CT_PROTO}"),
            );
        };
        if let (Some(p), Some(fp)) = (&authenticated, &info.principal) {
            if p != fp {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("Authenticated principal '{p}' does not match principal '{fp}' set in `FrameworkInfo`"),
                );
            }
        }
        // The principal the framework acts as; a framework id stays bound to the first one.
        let principal = authenticated.or_else(|| info.principal.clone());
        let mut bound_already = false;
        if let Some(id) = &info_id {
            match self.bound_principal(id) {
                Ok(Some(bound)) if Some(&bound) != principal.as_ref() => {
                    tracing::warn!(framework = %id, principal = ?principal, "refused a SUBSCRIBE with a framework id registered to another principal");
                    return bad(
                        StatusCode::FORBIDDEN,
                        format!("Framework {id} is registered to another principal; subscribe with its credentials"),
                    );
                }
                Ok(bound) => bound_already = bound.is_some(),
                Err(e) => {
                    return bad(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read the framework's principal: {e}"),
                    )
                }
            }
            if let Some(refusal) = self.verify_framework(id, ct).await {
                return refusal;
            }
        }
        let id = info_id.unwrap_or_else(|| format!("polly-{}", uuid::Uuid::new_v4()));
        if let Some(p) = principal.as_ref().filter(|_| !bound_already) {
            if let Err(e) = self.bind_principal(&id, p).await {
                return bad(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot record the framework's principal: {e}"),
                );
            }
        }
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
        let hb = Duration::from_secs_f64(self.config().heartbeat_interval_secs);
        let _ = tx.send(Event {
            r#type: event_type(event::Type::Subscribed),
            subscribed: Some(event::Subscribed {
                framework_id: v1::FrameworkId { value: id.clone() },
                heartbeat_interval_seconds: Some(hb.as_secs_f64()),
                master_info: Some(self.master_info(headers)),
            }),
            ..Default::default()
        });
        // As a master does: a HEARTBEAT right after SUBSCRIBED, then one per interval.
        let _ = tx.send(Event {
            r#type: event_type(event::Type::Heartbeat),
            ..Default::default()
        });
        {
            let mut st = self.state();
            // A new subscription replaces the old stream; its offers are withdrawn.
            st.outstanding.retain(|o| o.framework_id != id);
            st.frameworks.insert(
                id.clone(),
                Framework {
                    name: info.name.clone(),
                    role,
                    principal: principal.clone(),
                    multi_role,
                    stream_id: Some(stream_id.clone()),
                    tx: Some(tx.clone()),
                    suppressed: !sub.suppressed_roles.is_empty(),
                    filters: Vec::new(),
                    subscribed_at: rfc3339_ms(crate::volumes::now_ms()),
                    statuses_sent: HashSet::new(),
                    disconnected_at_ms: None,
                    failover_timeout_ms: info
                        .failover_timeout
                        .filter(|t| t.is_finite() && *t > 0.0)
                        .map_or(0, |t| (t.min(1e10) * 1000.0) as u64),
                },
            );
        }
        // Back after a TEARDOWN: its reservations are its own again, not releasable.
        self.back_from_teardown(&id);
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

    /// Send an event on the framework's stream (answers to explicit requests:
    /// reconciliation, a repeated operation id).
    pub(super) fn send(&self, fw: &str, ev: Event) {
        self.state().send(fw, ev);
    }

    /// Deliver an operation status on the framework's current stream at most once: a status
    /// (by its uuid) that a subscription resent from the store is not sent again by its
    /// operation finishing at the same moment, nor the other way round. Answers to explicit
    /// requests (reconciliation, a repeated operation id) go through [`Endpoint::send`].
    pub(super) fn send_status(&self, fw: &str, ev: Event) {
        self.state().send_status(fw, ev);
    }

    /// Close a framework's stream (if it is still `stream_id`'s) and return its offers.
    fn disconnected(&self, fw: &str, stream_id: &str) {
        let mut st = self.state();
        let Some(f) = st.frameworks.get_mut(fw) else {
            return;
        };
        if f.stream_id.as_deref() != Some(stream_id) {
            return;
        }
        f.tx = None;
        f.disconnected_at_ms = Some(crate::volumes::now_ms());
        st.outstanding.retain(|o| o.framework_id != fw);
        drop(st);
        tracing::info!(
            framework = fw,
            "framework disconnected from the storage-offer endpoint"
        );
        self.wake();
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

impl Endpoint {
    /// SUBSCRIBED's `master_info`: this endpoint as the master the framework talks to (the
    /// address it connected to, from `Host`, else the listen address), its run as the id.
    fn master_info(&self, headers: &HeaderMap) -> v1::MasterInfo {
        use std::net::{IpAddr, Ipv4Addr};
        let listen = self.config().listen;
        let (host, port) = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                let (host, port) = h.rsplit_once(':')?;
                Some((
                    host.trim_matches(['[', ']']).to_string(),
                    port.parse::<u16>().ok()?,
                ))
            })
            .unwrap_or_else(|| (listen.ip().to_string(), listen.port()));
        let ip = match host.parse::<IpAddr>().unwrap_or(listen.ip()) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        };
        v1::MasterInfo {
            id: format!("polly-{}", self.inner.run_id),
            // As a master writes it: the address's bytes in network order, read as a
            // little-endian number (what clients decode with `struct.pack('<I', ip)`).
            ip: u32::from_le_bytes(ip.octets()),
            port: u32::from(port),
            pid: Some(format!("master@{ip}:{port}")),
            hostname: Some(host.clone()),
            version: Some(super::MESOS_VERSION.to_string()),
            address: Some(v1::Address {
                hostname: Some(host),
                ip: Some(ip.to_string()),
                port: i32::from(port),
            }),
            domain: None,
            capabilities: Vec::new(),
        }
    }
}

/// The least time a disconnected framework is remembered (its `failover_timeout` when
/// longer), so a framework that reconnects at once keeps its filters and state.
pub const FORGET_AFTER_MS: u64 = 60_000;

impl Endpoint {
    /// Forget frameworks that went away: disconnected for their `failover_timeout` (at least
    /// [`FORGET_AFTER_MS`]) and holding no reservation and no operation record. They leave
    /// the framework list, and their principal binding is dropped (nothing of theirs is
    /// left to protect). Returns how many.
    pub(super) async fn forget_gone_frameworks(&self) -> Result<usize, crate::store::Error> {
        let now = crate::volumes::now_ms();
        let gone: Vec<String> = {
            let st = self.state();
            st.frameworks
                .iter()
                .filter(|(_, f)| {
                    f.tx.is_none()
                        && f.disconnected_at_ms.is_some_and(|t| {
                            now.saturating_sub(t) >= f.failover_timeout_ms.max(FORGET_AFTER_MS)
                        })
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        if gone.is_empty() {
            return Ok(0);
        }
        let store = self.store();
        let mut keep: HashSet<String> = store
            .reservations()?
            .into_iter()
            .map(|r| r.framework_id)
            .collect();
        keep.extend(store.operations()?.into_iter().map(|r| r.framework_id));
        let mut forgotten = Vec::new();
        {
            let mut st = self.state();
            for id in gone.into_iter().filter(|id| !keep.contains(id)) {
                // Still away (not subscribed again meanwhile).
                if st.frameworks.get(&id).is_some_and(|f| f.tx.is_none()) {
                    st.frameworks.remove(&id);
                    forgotten.push(id);
                }
            }
        }
        let unbind: Vec<crate::store::Op> = forgotten
            .iter()
            .map(|id| crate::store::Op::DeleteMeta(super::auth::binding_key(id)))
            .collect();
        if !unbind.is_empty() {
            store.commit(unbind).await?;
        }
        for id in &forgotten {
            tracing::info!(framework = %id, "forgot a framework that went away holding nothing");
        }
        Ok(forgotten.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};
    use std::time::Duration;

    use super::{Framework, FORGET_AFTER_MS};
    use crate::mesos::client::{self, MesosConfig};
    use crate::offer_endpoint::config::OffersConfig;
    use crate::offer_endpoint::Endpoint;
    use crate::store::{Op, Reservation};
    use crate::volumes::Manager;

    fn away(since_ms: u64, failover_ms: u64) -> Framework {
        Framework {
            name: "fw".into(),
            role: "*".into(),
            principal: Some("p".into()),
            multi_role: false,
            stream_id: None,
            tx: None,
            suppressed: false,
            filters: Vec::new(),
            subscribed_at: String::new(),
            statuses_sent: HashSet::new(),
            disconnected_at_ms: Some(crate::volumes::now_ms() - since_ms),
            failover_timeout_ms: failover_ms,
        }
    }

    /// Frameworks that went away holding nothing are forgotten after their failover
    /// timeout (at least a minute), with their principal binding; the others stay.
    #[tokio::test]
    async fn frameworks_that_went_away_holding_nothing_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("store")).unwrap();
        let manager = Manager::with_services(store, BTreeMap::new(), Duration::from_secs(5));
        let agents = client::Handle::new(&MesosConfig::default(), Default::default());
        let ep = Endpoint::new(manager, agents, OffersConfig::default());
        let long = FORGET_AFTER_MS + 1000;
        {
            let mut st = ep.state();
            st.frameworks.insert("gone".into(), away(long, 0));
            st.frameworks.insert("recent".into(), away(1000, 0));
            st.frameworks
                .insert("long-failover".into(), away(long, 10 * long));
            st.frameworks.insert("holds".into(), away(long, 0));
        }
        for id in ["gone", "holds"] {
            ep.bind_principal(id, "p").await.unwrap();
        }
        ep.store()
            .commit(vec![Op::PutReservation(Reservation {
                framework_id: "holds".into(),
                role: "*".into(),
                principal: Some("p".into()),
                volume_id: "v".into(),
                bytes: 1,
                created_at: 1,
            })])
            .await
            .unwrap();
        assert_eq!(ep.forget_gone_frameworks().await.unwrap(), 1);
        let left: Vec<String> = ep.state().frameworks.keys().cloned().collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(!left.contains(&"gone".to_string()));
        assert_eq!(ep.bound_principal("gone").unwrap(), None);
        assert_eq!(ep.bound_principal("holds").unwrap().as_deref(), Some("p"));
        assert_eq!(ep.forget_gone_frameworks().await.unwrap(), 0);
    }
}
