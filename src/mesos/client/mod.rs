//! The Mesos v1 scheduler client: subscribes Polly to a master as a framework, learns the
//! agents from offers (and optionally the operator API), declines and suppresses offers,
//! and keeps the subscription alive across leader changes, 503s, dropped streams and
//! silent masters. The framework id is persisted under [`FRAMEWORK_ID_KEY`]. `scheduler` is
//! the same protocol for any framework that consumes offers (one subscription, no policy).

pub mod config;
pub mod scheduler;
mod state;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use rand::Rng;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{MesosConfig, MesosConfigError, MesosContentType, StaticAgent};
pub use scheduler::{Caller, SubscribeOptions, Subscription};
pub use state::{Agent, AgentSource, ConnState, Handle, MesosStatus};

use super::recordio::Decoder;
use super::v1::scheduler::{call, event, Call, Event};
use super::v1::{self, framework_info, FrameworkId, FrameworkInfo};
use super::{json, Error};
use crate::store::{Op, Store};

/// Store meta key of the framework id.
pub const FRAMEWORK_ID_KEY: &str = "mesos.framework_id";
/// The scheduler endpoint on a master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";
/// The operator endpoint on a master.
pub const OPERATOR_PATH: &str = "/api/v1";
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";
/// How much of an error response body is read (the rest is dropped unread).
const ERROR_BODY_LIMIT: usize = 4096;
/// Consecutive redirects followed before backing off (guards against redirect loops).
const MAX_REDIRECTS: u32 = 4;

/// The exact `Content-Type` string for an encoding.
pub fn content_type(ct: MesosContentType) -> &'static str {
    match ct {
        MesosContentType::Json => "application/json",
        MesosContentType::Protobuf => "application/x-protobuf",
    }
}

/// Encode a call in the configured encoding.
pub fn encode_call(ct: MesosContentType, c: &Call) -> Result<Vec<u8>, Error> {
    match ct {
        MesosContentType::Json => json::to_json(c),
        MesosContentType::Protobuf => Ok(c.encode_to_vec()),
    }
}

/// Decode an event in the configured encoding.
pub fn decode_event(ct: MesosContentType, b: &[u8]) -> Result<Event, Error> {
    match ct {
        MesosContentType::Json => match offers_from_json(b) {
            Some(ev) => Ok(ev),
            None => json::from_json(b),
        },
        MesosContentType::Protobuf => json::from_protobuf(b),
    }
}

/// A JSON OFFERS event, its offers decoded one at a time (decoded whole, the dynamic form of
/// an event with 10,000 offers took about 90 MB at once). `None` for any other event, and for
/// anything this narrower reading does not take (then the full decoding runs and answers,
/// errors included).
fn offers_from_json(b: &[u8]) -> Option<Event> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// `{"type": ..., "offers": {"offers": [...]}}`, other keys skipped.
    struct Top;
    impl<'de> Visitor<'de> for Top {
        type Value = (Option<String>, Option<Vec<v1::Offer>>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a scheduler event")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let (mut kind, mut offers) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "type" => kind = Some(map.next_value::<String>()?),
                    "offers" => offers = Some(map.next_value_seed(OffersBody)?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok((kind, offers))
        }
    }
    /// `{"offers": [...]}`, other keys skipped.
    struct OffersBody;
    impl<'de> DeserializeSeed<'de> for OffersBody {
        type Value = Vec<v1::Offer>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for OffersBody {
        type Value = Vec<v1::Offer>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an OFFERS event's offers")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut offers = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == "offers" {
                    offers = map.next_value_seed(json::ListSeed::<v1::Offer>::default())?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(offers)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(b);
    let (kind, offers) = de.deserialize_map(Top).ok()?;
    de.end().ok()?;
    if kind.as_deref() != Some("OFFERS") {
        return None;
    }
    Some(Event {
        r#type: Some(event::Type::Offers as i32),
        offers: offers.map(|offers| event::Offers { offers }),
        ..Event::default()
    })
}

/// `//host:port/path` (what a master sends), `http://host:port/...` or `host:port` →
/// `host:port`.
pub fn location_master(loc: &str) -> Option<String> {
    let rest = loc
        .strip_prefix("//")
        .or_else(|| loc.strip_prefix("http://"))
        .or_else(|| loc.strip_prefix("https://"))
        .unwrap_or(loc);
    let hostport = rest.split('/').next()?;
    (!hostport.is_empty()).then(|| hostport.to_string())
}

/// Exponential backoff with jitter, capped.
#[derive(Debug)]
pub struct Backoff {
    initial: u64,
    max: u64,
    failures: u32,
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            initial: initial_ms.max(1),
            max: max_ms.max(initial_ms.max(1)),
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The next delay: uniform in [d/2, d] where d = min(max, initial * 2^failures).
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .initial
            .saturating_mul(1u64 << self.failures.min(32))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(rand::rng().random_range(d / 2..=d))
    }
}

/// How one subscription attempt ended.
enum Ended {
    Redirect(String),
    /// `subscribed`: the attempt reached SUBSCRIBED (so the next one starts a fresh backoff).
    Failed {
        error: Error,
        subscribed: bool,
    },
    Cancelled,
}

/// The client task. Runs until `token` is cancelled.
pub struct Client {
    cfg: MesosConfig,
    store: Store,
    handle: Handle,
    /// Used only for the SUBSCRIBE stream (its own connection pool).
    stream_http: reqwest::Client,
    /// Every other call, on other connections.
    call_http: reqwest::Client,
}

impl Client {
    pub fn new(cfg: MesosConfig, store: Store, handle: Handle) -> Result<Client, Error> {
        let build = |idle: usize| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs_f64(cfg.request_timeout_secs.min(10.0)))
                .pool_max_idle_per_host(idle)
                .build()
                .map_err(|e| Error::Http {
                    master: "-".into(),
                    detail: format!("cannot build HTTP client: {e}"),
                })
        };
        Ok(Client {
            stream_http: build(0)?,
            call_http: build(8)?,
            cfg,
            store,
            handle,
        })
    }

    fn credentials(&self) -> Option<Credentials<'_>> {
        self.cfg.principal.as_deref().map(|principal| Credentials {
            principal,
            secret: self.cfg.secret.as_deref(),
        })
    }

    fn stored_framework_id(&self) -> Result<Option<String>, Error> {
        Ok(self.store.meta(FRAMEWORK_ID_KEY)?.filter(|s| !s.is_empty()))
    }

    fn subscribe_call(&self, framework_id: Option<&str>) -> Call {
        let fid = framework_id.map(|v| FrameworkId {
            value: v.to_string(),
        });
        let cfg = &self.cfg;
        let capabilities = cfg
            .capabilities
            .iter()
            .filter_map(|c| framework_info::capability::Type::from_str_name(c))
            .map(|t| framework_info::Capability {
                r#type: Some(t as i32),
            })
            .collect();
        Call {
            framework_id: fid.clone(),
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: FrameworkInfo {
                    user: cfg.user.clone(),
                    name: cfg.framework_name.clone(),
                    id: fid,
                    failover_timeout: Some(cfg.failover_timeout_secs),
                    checkpoint: Some(cfg.checkpoint),
                    roles: cfg.roles.clone(),
                    principal: cfg.principal.clone(),
                    capabilities,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Subscribe, follow redirects, back off and re-subscribe until cancelled.
    pub async fn run(self, token: CancellationToken) {
        let masters = self.cfg.masters.clone();
        if masters.is_empty() {
            return;
        }
        let mut backoff = Backoff::new(self.cfg.backoff_initial_ms, self.cfg.backoff_max_ms);
        let mut next = 0usize;
        let mut preferred: Option<String> = None;
        let mut redirects = 0u32;
        loop {
            let master = preferred.take().unwrap_or_else(|| {
                let m = masters[next % masters.len()].clone();
                next = next.wrapping_add(1);
                m
            });
            self.handle.update(|s| {
                s.state = ConnState::Connecting;
                s.master = Some(master.clone());
                s.backoff_ms = None;
            });
            let ended = self.session(&master, &token).await;
            self.handle.metrics().connected.set(0);
            self.handle.update(|s| s.stream_id = None);
            match ended {
                Ended::Cancelled => break,
                Ended::Redirect(to) if redirects < MAX_REDIRECTS => {
                    tracing::info!(from = %master, to = %to, "mesos: following redirect to the leading master");
                    redirects += 1;
                    preferred = Some(to);
                    continue;
                }
                Ended::Redirect(to) => {
                    self.failed(&Error::Http {
                        master: master.clone(),
                        detail: format!("too many redirects (last to {to})"),
                    });
                }
                Ended::Failed { error, subscribed } => {
                    self.failed(&error);
                    if subscribed {
                        // The master worked a moment ago: try it again first, quickly.
                        backoff.reset();
                        preferred = Some(master.clone());
                    }
                }
            }
            redirects = 0;
            let delay = backoff.next_delay();
            self.handle.update(|s| {
                s.state = ConnState::BackingOff;
                s.backoff_ms = Some(delay.as_millis() as u64);
            });
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.handle.update(|s| {
            s.state = ConnState::Stopped;
            s.backoff_ms = None;
        });
    }

    fn failed(&self, e: &Error) {
        tracing::warn!(error = %e, "mesos: subscription attempt failed or ended");
        self.handle.metrics().reconnects.inc();
        self.handle.update(|s| s.last_error = Some(e.to_string()));
    }

    /// One SUBSCRIBE and the life of its stream.
    async fn session(&self, master: &str, token: &CancellationToken) -> Ended {
        let fail = |error| Ended::Failed {
            error,
            subscribed: false,
        };
        let ct = self.cfg.content_type;
        let timeout = Duration::from_secs_f64(self.cfg.request_timeout_secs);
        let fid = match self.stored_framework_id() {
            Ok(f) => f,
            Err(e) => return fail(e),
        };
        let body = match encode_call(ct, &self.subscribe_call(fid.as_deref())) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let opened = tokio::select! {
            _ = token.cancelled() => return Ended::Cancelled,
            r = open_subscription(
                &self.stream_http,
                master,
                ct,
                body,
                self.credentials(),
                timeout,
            ) => r,
        };
        let (resp, stream_id) = match opened {
            Ok(Opened::Redirect(to)) => return Ended::Redirect(to),
            Ok(Opened::Stream { resp, stream_id }) => (resp, stream_id),
            Err(e) => return fail(e),
        };
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(call_sender(
            self.call_http.clone(),
            master.to_string(),
            stream_id.clone(),
            self.cfg.clone(),
            self.handle.clone(),
            calls_rx,
        ));
        let mut s = Stream {
            client: self,
            master,
            calls: calls_tx,
            framework_id: None,
            subscribed: false,
            suppressed: false,
        };
        self.handle
            .update(|st| st.stream_id = Some(stream_id.clone()));
        let r = s.read(resp.bytes_stream(), token).await;
        // Calls already queued (e.g. a DECLINE) still go out; then the sender stops.
        drop(s.calls);
        let _ = tokio::time::timeout(Duration::from_secs(2), sender).await;
        match r {
            Ok(()) => Ended::Cancelled,
            Err(error) => Ended::Failed {
                error,
                subscribed: s.subscribed,
            },
        }
    }
}

/// The reading side of one subscription.
struct Stream<'a> {
    client: &'a Client,
    master: &'a str,
    calls: mpsc::UnboundedSender<Call>,
    framework_id: Option<String>,
    subscribed: bool,
    suppressed: bool,
}

impl Stream<'_> {
    fn cfg(&self) -> &MesosConfig {
        &self.client.cfg
    }

    /// Read events until the stream fails (an error) or `token` is cancelled (`Ok`).
    async fn read(
        &mut self,
        mut body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
        token: &CancellationToken,
    ) -> Result<(), Error> {
        let cfg = self.cfg().clone();
        let mut decoder = Decoder::new(cfg.max_record_bytes);
        let mut silence = Duration::from_secs_f64(cfg.request_timeout_secs);
        let mut deadline = Instant::now() + silence;
        let far = Duration::from_secs(86400 * 365);
        let quiet = Duration::from_secs_f64(cfg.quiet_secs);
        let revive_every = Duration::from_secs_f64(cfg.revive_interval_secs);
        let mut quiet_at = Instant::now() + far;
        let mut revive_at = Instant::now() + revive_every;
        loop {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::HeartbeatTimeout {
                        master: self.master.to_string(),
                        secs: silence.as_secs_f64(),
                    });
                }
                _ = tokio::time::sleep_until(quiet_at), if self.subscribed && !self.suppressed => {
                    self.send(call::Type::Suppress, |c| c.suppress = Some(call::Suppress::default()));
                    self.suppressed = true;
                    quiet_at = Instant::now() + far;
                    self.client.handle.update(|s| s.suppressed = true);
                }
                _ = tokio::time::sleep_until(revive_at), if self.subscribed => {
                    revive_at = Instant::now() + revive_every;
                    self.send(call::Type::Revive, |c| c.revive = Some(call::Revive::default()));
                    self.suppressed = false;
                    quiet_at = Instant::now() + quiet;
                    self.client.handle.update(|s| s.suppressed = false);
                    if cfg.operator_agents {
                        self.spawn_operator_poll();
                    }
                }
                chunk = body.next() => {
                    let chunk = match chunk {
                        None => {
                            decoder.finish()?;
                            return Err(Error::Http {
                                master: self.master.to_string(),
                                detail: "the master closed the event stream".into(),
                            });
                        }
                        Some(Err(e)) => return Err(Error::Http {
                            master: self.master.to_string(),
                            detail: format!("event stream broke: {e}"),
                        }),
                        Some(Ok(c)) => c,
                    };
                    decoder.push(&chunk);
                    while let Some(record) = decoder.next_record()? {
                        let ev = decode_event(cfg.content_type, &record)?;
                        deadline = Instant::now() + silence;
                        match self.on_event(ev)? {
                            Some(Learned::Subscribed(interval)) => {
                                silence = interval * cfg.missed_heartbeats;
                                deadline = Instant::now() + silence;
                                quiet_at = Instant::now() + quiet;
                                revive_at = Instant::now() + revive_every;
                            }
                            Some(Learned::NewAgents) => quiet_at = Instant::now() + quiet,
                            None => {}
                        }
                    }
                }
            }
        }
    }

    /// Queue a call for the sender task.
    fn send(&self, t: call::Type, fill: impl FnOnce(&mut Call)) {
        let mut c = Call {
            framework_id: self.framework_id.clone().map(|value| FrameworkId { value }),
            r#type: Some(t as i32),
            ..Default::default()
        };
        fill(&mut c);
        // The receiver lives as long as the stream; a send error means we are ending anyway.
        let _ = self.calls.send(c);
    }

    fn spawn_operator_poll(&self) {
        let http = self.client.call_http.clone();
        let handle = self.client.handle.clone();
        let master = self.master.to_string();
        let cfg = self.cfg().clone();
        tokio::spawn(async move {
            let asked = std::time::SystemTime::now();
            match operator_agents(&http, &master, &cfg).await {
                Ok((agents, recovered)) => {
                    let mut listed: std::collections::BTreeSet<String> = recovered;
                    for a in agents {
                        listed.insert(a.id.clone());
                        handle.learn(a);
                    }
                    // The full inventory no longer lists them: removed or unreachable while
                    // this client may have missed the FAILURE (e.g. while disconnected).
                    for id in handle.mark_unlisted_lost(&listed, asked) {
                        tracing::warn!(agent = %id, "mesos: agent lost (absent from GET_AGENTS)");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "mesos: GET_AGENTS failed"),
            }
        });
    }

    fn on_event(&mut self, ev: Event) -> Result<Option<Learned>, Error> {
        let handle = &self.client.handle;
        let t = ev.r#type.and_then(|t| event::Type::try_from(t).ok());
        match t {
            Some(event::Type::Subscribed) => {
                let Some(s) = ev.subscribed else {
                    return Err(self.malformed("SUBSCRIBED without `subscribed`"));
                };
                let fid = s.framework_id.value.clone();
                if self.client.stored_framework_id()?.as_deref() != Some(fid.as_str()) {
                    self.client
                        .store
                        .apply(&[Op::PutMeta(FRAMEWORK_ID_KEY.to_string(), fid.clone())])?;
                }
                let interval = s
                    .heartbeat_interval_seconds
                    .filter(|i| i.is_finite() && *i > 0.0)
                    .unwrap_or(15.0);
                tracing::info!(master = %self.master, framework_id = %fid, "mesos: subscribed");
                self.framework_id = Some(fid.clone());
                self.subscribed = true;
                self.suppressed = false;
                handle.metrics().subscriptions.inc();
                handle.metrics().connected.set(1);
                handle.update(|st| {
                    st.state = ConnState::Subscribed;
                    st.framework_id = Some(fid);
                    st.heartbeat_interval_secs = Some(interval);
                    st.subscriptions += 1;
                    st.suppressed = false;
                    st.backoff_ms = None;
                });
                if self.cfg().operator_agents {
                    self.spawn_operator_poll();
                }
                return Ok(Some(Learned::Subscribed(Duration::from_secs_f64(
                    interval.min(3600.0),
                ))));
            }
            Some(event::Type::Heartbeat) => {
                handle.metrics().heartbeats.inc();
                handle.update(|st| st.last_heartbeat = Some(state::now_rfc3339()));
            }
            Some(event::Type::Offers) => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                let mut new = false;
                for o in &offers {
                    new |= handle.learn(Agent::from_offer(o));
                }
                if !offers.is_empty() {
                    let ids: Vec<v1::OfferId> = offers.into_iter().map(|o| o.id).collect();
                    let n = ids.len() as u64;
                    let refuse = self.cfg().refuse_seconds;
                    self.send(call::Type::Decline, |c| {
                        c.decline = Some(call::Decline {
                            offer_ids: ids,
                            filters: Some(v1::Filters {
                                refuse_seconds: Some(refuse),
                            }),
                        })
                    });
                    handle.metrics().offers_declined.inc_by(n);
                    handle.update(|st| st.offers_declined += n);
                }
                if new {
                    return Ok(Some(Learned::NewAgents));
                }
            }
            Some(event::Type::Rescind) => {
                tracing::debug!("mesos: offer rescinded (already declined)");
            }
            Some(event::Type::Update) => {
                if let Some(st) = ev.update.map(|u| u.status) {
                    if let (Some(uuid), Some(agent_id)) = (st.uuid, st.agent_id) {
                        self.send(call::Type::Acknowledge, |c| {
                            c.acknowledge = Some(call::Acknowledge {
                                agent_id,
                                task_id: st.task_id,
                                uuid,
                            })
                        });
                    }
                }
            }
            Some(event::Type::UpdateOperationStatus) => {
                if let Some(st) = ev.update_operation_status.map(|u| u.status) {
                    if let (Some(uuid), Some(operation_id)) = (st.uuid, st.operation_id) {
                        self.send(call::Type::AcknowledgeOperationStatus, |c| {
                            c.acknowledge_operation_status =
                                Some(call::AcknowledgeOperationStatus {
                                    agent_id: st.agent_id,
                                    resource_provider_id: st.resource_provider_id,
                                    uuid: uuid.value,
                                    operation_id,
                                })
                        });
                    }
                }
            }
            Some(event::Type::Failure) => {
                if let Some(f) = ev.failure {
                    match (f.agent_id, f.executor_id) {
                        (Some(agent), None) => {
                            tracing::warn!(agent = %agent.value, "mesos: agent lost");
                            handle.mark_lost(&agent.value);
                        }
                        (agent, Some(exec)) => tracing::info!(
                            agent = ?agent.map(|a| a.value), executor = %exec.value,
                            status = ?f.status, "mesos: executor exited"),
                        (None, None) => {}
                    }
                }
            }
            Some(event::Type::Error) => {
                let message = ev.error.map(|e| e.message).unwrap_or_default();
                tracing::error!(master = %self.master, %message, "mesos: ERROR event");
                if framework_removed(&message) {
                    // Only a removed framework starts over under a new id.
                    self.client
                        .store
                        .apply(&[Op::PutMeta(FRAMEWORK_ID_KEY.to_string(), String::new())])?;
                    handle.update(|st| st.framework_id = None);
                }
                return Err(Error::Refused {
                    master: self.master.to_string(),
                    message,
                });
            }
            _ => {}
        }
        Ok(None)
    }

    fn malformed(&self, what: &str) -> Error {
        Error::Http {
            master: self.master.to_string(),
            detail: format!("malformed event: {what}"),
        }
    }
}

enum Learned {
    Subscribed(Duration),
    NewAgents,
}

/// Whether an ERROR message means the master removed (tore down) this framework.
pub fn framework_removed(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("framework") && (m.contains("removed") || m.contains("torn down"))
}

/// Sends queued calls in order on the call connections, with `Mesos-Stream-Id`.
async fn call_sender(
    http: reqwest::Client,
    master: String,
    stream_id: String,
    cfg: MesosConfig,
    handle: Handle,
    mut rx: mpsc::UnboundedReceiver<Call>,
) {
    let ct = cfg.content_type;
    let timeout = Duration::from_secs_f64(cfg.request_timeout_secs);
    while let Some(c) = rx.recv().await {
        let name = c
            .r#type
            .and_then(|t| call::Type::try_from(t).ok())
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        let credentials = cfg.principal.as_deref().map(|principal| Credentials {
            principal,
            secret: cfg.secret.as_deref(),
        });
        let r = post_call(&http, &master, ct, &stream_id, credentials, timeout, &c).await;
        if let Err(e) = r {
            tracing::warn!(call = name, master = %master, error = %e, "mesos: call failed");
            handle.update(|s| s.last_error = Some(format!("{name} call failed: {e}")));
        }
    }
}

/// HTTP Basic credentials sent with every request to a master.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub principal: &'a str,
    pub secret: Option<&'a str>,
}

fn with_credentials(
    req: reqwest::RequestBuilder,
    credentials: Option<Credentials<'_>>,
) -> reqwest::RequestBuilder {
    match credentials {
        Some(c) => req.basic_auth(c.principal, c.secret),
        None => req,
    }
}

/// What a SUBSCRIBE request got back.
pub(crate) enum Opened {
    /// 307: the leading master, `host:port`.
    Redirect(String),
    /// 200: the event stream (still to be read) and its `Mesos-Stream-Id`.
    Stream {
        resp: reqwest::Response,
        stream_id: String,
    },
}

/// POST an encoded SUBSCRIBE to `master` and check the answer's status and headers; the
/// body, if any, is the event stream. `timeout` bounds the wait for the response headers.
pub(crate) async fn open_subscription(
    http: &reqwest::Client,
    master: &str,
    ct: MesosContentType,
    body: Vec<u8>,
    credentials: Option<Credentials<'_>>,
    timeout: Duration,
) -> Result<Opened, Error> {
    let http_err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let req = http
        .post(format!("http://{master}{SCHEDULER_PATH}"))
        .header(CONTENT_TYPE, content_type(ct))
        .header(ACCEPT, content_type(ct))
        .body(body);
    let resp = match tokio::time::timeout(timeout, with_credentials(req, credentials).send()).await
    {
        Err(_) => {
            return Err(http_err(format!(
                "no SUBSCRIBE response within {timeout:?}"
            )))
        }
        Ok(Err(e)) => return Err(http_err(format!("SUBSCRIBE failed: {e}"))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if status == StatusCode::TEMPORARY_REDIRECT {
        return resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(location_master)
            .map(Opened::Redirect)
            .ok_or_else(|| http_err("307 without a usable Location".into()));
    }
    if status != StatusCode::OK {
        let text = tokio::time::timeout(timeout, read_limited(resp, ERROR_BODY_LIMIT))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(Error::Status {
            master: master.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).chars().take(200).collect(),
        });
    }
    let Some(stream_id) = resp
        .headers()
        .get(STREAM_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return Err(http_err(
            "SUBSCRIBE answered 200 without Mesos-Stream-Id".into(),
        ));
    };
    Ok(Opened::Stream { resp, stream_id })
}

/// POST one call (not SUBSCRIBE) on the subscription `stream_id`; any 2xx is success.
pub(crate) async fn post_call(
    http: &reqwest::Client,
    master: &str,
    ct: MesosContentType,
    stream_id: &str,
    credentials: Option<Credentials<'_>>,
    timeout: Duration,
    c: &Call,
) -> Result<(), Error> {
    let body = encode_call(ct, c)?;
    let req = http
        .post(format!("http://{master}{SCHEDULER_PATH}"))
        .header(CONTENT_TYPE, content_type(ct))
        .header(STREAM_ID_HEADER, stream_id)
        .timeout(timeout)
        .body(body);
    let resp = with_credentials(req, credentials)
        .send()
        .await
        .map_err(|e| Error::Http {
            master: master.to_string(),
            detail: e.to_string(),
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = read_limited(resp, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    Err(Error::Status {
        master: master.to_string(),
        status: status.as_u16(),
        body: String::from_utf8_lossy(&text).chars().take(200).collect(),
    })
}

/// At most `limit` bytes of a response body (never buffers an unbounded body).
async fn read_limited(resp: reqwest::Response, limit: usize) -> reqwest::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The operator API's `GET_AGENTS` (JSON): the registered agents, and the ids of agents the
/// master recovered from its registry that have not re-registered yet.
pub async fn operator_agents(
    http: &reqwest::Client,
    master: &str,
    cfg: &MesosConfig,
) -> Result<(Vec<Agent>, std::collections::BTreeSet<String>), Error> {
    let err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let mut req = http
        .post(format!("http://{master}{OPERATOR_PATH}"))
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs_f64(cfg.request_timeout_secs))
        .body(r#"{"type":"GET_AGENTS"}"#);
    if let Some(p) = &cfg.principal {
        req = req.basic_auth(p, cfg.secret.as_ref());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| err(format!("GET_AGENTS: {e}")))?;
    if resp.status() != StatusCode::OK {
        return Err(Error::Status {
            master: master.to_string(),
            status: resp.status().as_u16(),
            body: String::new(),
        });
    }
    let limit = usize::try_from(cfg.max_record_bytes).unwrap_or(usize::MAX);
    let body = read_limited(resp, limit.saturating_add(1))
        .await
        .map_err(|e| err(format!("GET_AGENTS body: {e}")))?;
    if body.len() > limit {
        return Err(err(format!(
            "GET_AGENTS response exceeds max_record_bytes ({limit} bytes)"
        )));
    }
    // Only each agent's `agent_info` is kept from the parse (the rest of an agent's entry,
    // its resources above all, is skipped): with 10,000 agents a whole JSON tree of the
    // answer was the largest thing Polly held.
    let v: GetAgentsResponse = serde_json::from_slice(&body).map_err(|e| Error::Json {
        message: "GET_AGENTS response".into(),
        detail: e.to_string(),
    })?;
    let listed = v.get_agents.unwrap_or_default();
    if let Some(e) = listed.agents.error {
        return Err(e);
    }
    let out = listed.agents.agents;
    let recovered = listed
        .recovered_agents
        .iter()
        .filter_map(|a| a["id"]["value"].as_str().map(str::to_string))
        .collect();
    Ok((out, recovered))
}

/// The parts of a `GET_AGENTS` answer Polly reads.
#[derive(serde::Deserialize)]
struct GetAgentsResponse {
    #[serde(default)]
    get_agents: Option<GetAgentsBody>,
}

#[derive(serde::Deserialize, Default)]
struct GetAgentsBody {
    #[serde(default)]
    agents: ConvertedAgents,
    /// `AgentInfo`s of agents the master recovered that have not re-registered.
    #[serde(default)]
    recovered_agents: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct RegisteredAgent {
    #[serde(default)]
    agent_info: serde_json::Value,
}

/// The `agents` of a `GET_AGENTS` answer, each converted as soon as it is parsed: its
/// `agent_info` lives as a JSON tree only until it is an [`Agent`] (10,000 trees at once
/// were 50 MB). The first agent that does not convert is kept as the error, and the rest
/// of the list is only skipped.
#[derive(Default)]
struct ConvertedAgents {
    agents: Vec<Agent>,
    error: Option<Error>,
}

impl<'de> serde::Deserialize<'de> for ConvertedAgents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ConvertedAgents;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of agents")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ConvertedAgents, A::Error> {
                let mut out = ConvertedAgents::default();
                while let Some(a) = seq.next_element::<RegisteredAgent>()? {
                    if out.error.is_some() {
                        continue;
                    }
                    match json::from_value::<v1::AgentInfo>(&a.agent_info) {
                        Ok(info) => out.agents.extend(Agent::from_agent_info(&info)),
                        Err(e) => out.error = Some(e),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// What a master's operator API says about a framework id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkStatus {
    /// Registered (connected or within its failover timeout).
    Known,
    /// Among the completed (removed or torn down) frameworks.
    Removed,
    /// Not known to the master at all.
    Unknown,
}

/// Ask the masters' operator API (`GET_FRAMEWORKS`, JSON) about `framework_id`: `first` (the
/// master the client is subscribed to, if any) and then every configured master, following
/// 307 redirects to the leader. Fails only when no master gives an answer.
pub async fn operator_framework_status(
    http: &reqwest::Client,
    cfg: &MesosConfig,
    first: Option<&str>,
    framework_id: &str,
    timeout: Duration,
) -> Result<FrameworkStatus, Error> {
    let mut candidates: Vec<String> = first.map(str::to_string).into_iter().collect();
    candidates.extend(cfg.masters.iter().cloned());
    let mut last = None;
    let mut tried = std::collections::BTreeSet::new();
    while let Some(master) = (!candidates.is_empty()).then(|| candidates.remove(0)) {
        if !tried.insert(master.clone()) || tried.len() > cfg.masters.len() + MAX_REDIRECTS as usize
        {
            continue;
        }
        match get_frameworks(http, &master, cfg, timeout).await {
            Ok(Operator::Answer(v)) => return Ok(framework_status(&v, framework_id)),
            Ok(Operator::Redirect(to)) => candidates.insert(0, to),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Http {
        master: "-".into(),
        detail: "no Mesos master configured".into(),
    }))
}

enum Operator {
    Answer(serde_json::Value),
    Redirect(String),
}

async fn get_frameworks(
    http: &reqwest::Client,
    master: &str,
    cfg: &MesosConfig,
    timeout: Duration,
) -> Result<Operator, Error> {
    let err = |detail: String| Error::Http {
        master: master.to_string(),
        detail,
    };
    let mut req = http
        .post(format!("http://{master}{OPERATOR_PATH}"))
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json")
        .timeout(timeout)
        .body(r#"{"type":"GET_FRAMEWORKS"}"#);
    if let Some(p) = &cfg.principal {
        req = req.basic_auth(p, cfg.secret.as_ref());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| err(format!("GET_FRAMEWORKS: {e}")))?;
    let status = resp.status();
    if status == StatusCode::TEMPORARY_REDIRECT {
        return resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(location_master)
            .map(Operator::Redirect)
            .ok_or_else(|| err("307 without a usable Location".into()));
    }
    if status != StatusCode::OK {
        let text = read_limited(resp, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        return Err(Error::Status {
            master: master.to_string(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).chars().take(200).collect(),
        });
    }
    let limit = usize::try_from(cfg.max_record_bytes).unwrap_or(usize::MAX);
    let body = read_limited(resp, limit.saturating_add(1))
        .await
        .map_err(|e| err(format!("GET_FRAMEWORKS body: {e}")))?;
    if body.len() > limit {
        return Err(err(format!(
            "GET_FRAMEWORKS response exceeds max_record_bytes ({limit} bytes)"
        )));
    }
    let v = serde_json::from_slice(&body).map_err(|e| Error::Json {
        message: "GET_FRAMEWORKS response".into(),
        detail: e.to_string(),
    })?;
    Ok(Operator::Answer(v))
}

/// Look `framework_id` up in a `GET_FRAMEWORKS` answer.
pub fn framework_status(v: &serde_json::Value, framework_id: &str) -> FrameworkStatus {
    let listed = |key: &str| {
        v["get_frameworks"][key].as_array().is_some_and(|fs| {
            fs.iter()
                .any(|f| f["framework_info"]["id"]["value"].as_str() == Some(framework_id))
        })
    };
    if listed("frameworks") {
        FrameworkStatus::Known
    } else if listed("completed_frameworks") {
        FrameworkStatus::Removed
    } else {
        FrameworkStatus::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OFFERS event decoded one offer at a time equals the full decoding; other events
    /// and offers the narrow reading refuses go to the full decoding, errors included.
    #[test]
    fn offers_events_decode_one_offer_at_a_time_like_the_full_decoding() {
        let offer = |i: usize| {
            format!(
                r#"{{"id":{{"value":"o{i}"}},"framework_id":{{"value":"fw"}},"agent_id":{{"value":"a{i}"}},
                "hostname":"node-{i}","domain":{{"fault_domain":{{"region":{{"name":"eu"}},"zone":{{"name":"eu-a"}}}}}},
                "resources":[{{"name":"disk","type":"SCALAR","scalar":{{"value":1024}}}}],
                "attributes":[{{"name":"rack","type":"TEXT","text":{{"value":"r{i}"}}}}]}}"#
            )
        };
        let offers: Vec<String> = (0..3).map(offer).collect();
        let ev = format!(
            r#"{{"extra":{{"x":[1,2]}},"offers":{{"offers":[{}],"more":1}},"type":"OFFERS"}}"#,
            offers.join(",")
        );
        let narrow = offers_from_json(ev.as_bytes()).expect("an OFFERS event");
        let full: Event = json::from_json(ev.as_bytes()).unwrap();
        assert_eq!(narrow, full);
        assert_eq!(narrow.offers.as_ref().unwrap().offers.len(), 3);
        assert_eq!(
            decode_event(MesosContentType::Json, ev.as_bytes()).unwrap(),
            full
        );

        let hb = br#"{"type":"HEARTBEAT"}"#;
        assert!(offers_from_json(hb).is_none());
        assert_eq!(
            decode_event(MesosContentType::Json, hb).unwrap(),
            json::from_json::<Event>(hb).unwrap()
        );

        // An offer without its required id: the full decoding's error, naming the field.
        let bad = ev.replacen(r#""id":{"value":"o1"},"#, "", 1);
        assert!(offers_from_json(bad.as_bytes()).is_none());
        let e = decode_event(MesosContentType::Json, bad.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            json::from_json::<Event>(bad.as_bytes())
                .unwrap_err()
                .to_string()
        );
        assert!(e.to_string().contains("missing required fields"), "{e}");
    }

    #[test]
    fn protocol_relative_locations() {
        assert_eq!(
            location_master("//m2:5050/api/v1/scheduler").as_deref(),
            Some("m2:5050")
        );
        assert_eq!(location_master("m2:5050").as_deref(), Some("m2:5050"));
        assert_eq!(
            location_master("http://10.0.0.2:5050/master/api/v1/scheduler").as_deref(),
            Some("10.0.0.2:5050")
        );
        assert_eq!(location_master("//"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(100, 1000);
        let ds: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert!((50..=100).contains(&ds[0]), "{ds:?}");
        assert!((100..=200).contains(&ds[1]), "{ds:?}");
        assert!(ds.iter().all(|d| *d <= 1000), "{ds:?}");
        assert!(ds[9] >= 500, "{ds:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn get_frameworks_answers_are_read_by_framework_id() {
        let v = serde_json::json!({"type": "GET_FRAMEWORKS", "get_frameworks": {
            "frameworks": [{"framework_info": {"id": {"value": "a"}, "user": "u", "name": "n"},
                            "active": true, "connected": true, "recovered": false}],
            "completed_frameworks": [{"framework_info": {"id": {"value": "b"}, "user": "u",
                                      "name": "n"}, "active": false, "connected": false,
                                      "recovered": false}]}});
        assert_eq!(framework_status(&v, "a"), FrameworkStatus::Known);
        assert_eq!(framework_status(&v, "b"), FrameworkStatus::Removed);
        assert_eq!(framework_status(&v, "c"), FrameworkStatus::Unknown);
        assert_eq!(
            framework_status(&serde_json::json!({}), "a"),
            FrameworkStatus::Unknown
        );
    }

    #[test]
    fn removed_framework_errors_are_recognised() {
        assert!(framework_removed("Framework has been removed"));
        assert!(!framework_removed("Role 'x' is not valid"));
    }

    #[test]
    fn subscribe_sets_both_framework_ids_only_when_resubscribing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let cfg = MesosConfig {
            masters: vec!["m:5050".into()],
            ..Default::default()
        };
        let h = Handle::new(&cfg, Default::default());
        let c = Client::new(cfg, store, h).unwrap();
        let fresh = c.subscribe_call(None);
        assert!(fresh.framework_id.is_none());
        assert!(fresh
            .subscribe
            .as_ref()
            .unwrap()
            .framework_info
            .id
            .is_none());
        let again = c.subscribe_call(Some("fw-9"));
        assert_eq!(again.framework_id.as_ref().unwrap().value, "fw-9");
        assert_eq!(
            again
                .subscribe
                .as_ref()
                .unwrap()
                .framework_info
                .id
                .as_ref()
                .unwrap()
                .value,
            "fw-9"
        );
        let j = json::to_value(&again).unwrap();
        assert_eq!(j["type"], "SUBSCRIBE");
        assert_eq!(j["subscribe"]["framework_info"]["name"], "polly");
        assert_eq!(
            j["subscribe"]["framework_info"]["capabilities"][0]["type"],
            "MULTI_ROLE"
        );
    }

    /// Agents learned from several tasks at once (offers and the operator API's poll): the
    /// `mesos_agents` gauge and the status end at the number of agents known, never at a
    /// count one of the learns took before another's.
    #[test]
    fn concurrently_learned_agents_are_all_counted() {
        let metrics = crate::metrics::MesosMetrics::default();
        let h = Handle::new(&MesosConfig::default(), metrics.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..2_500 {
                        h.learn(Agent {
                            id: format!("agent-{t}-{i}"),
                            hostname: format!("node-{t}-{i}"),
                            region: None,
                            zone: None,
                            attributes: std::collections::BTreeMap::new(),
                            source: state::AgentSource::Offer,
                            lost: false,
                            lost_at: None,
                            last_seen: state::now_rfc3339(),
                            fence: None,
                        });
                    }
                });
            }
        });
        assert_eq!(h.agents().len(), 10_000);
        assert_eq!(metrics.agents.get(), 10_000);
        assert_eq!(h.status().agents_known, 10_000);
    }
}
