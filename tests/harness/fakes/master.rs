//! A fake Mesos master for tests (not part of the product): the v1 scheduler API as
//! `reference/mesos-v1.md` describes it. Chunked RecordIO streams (records split across
//! chunks), SUBSCRIBED then HEARTBEAT, 307 with a protocol-relative Location from a
//! non-leader, 503 while recovering or leaderless, 200 + ERROR + close for a refused
//! subscription, the 400/403/405/406/415/501 rules, stream-id checks, failover_timeout,
//! offers from several agents in two zones, and the operator API's GET_AGENTS and
//! GET_FRAMEWORKS. Several masters share one cluster state (the
//! "registry"); tests steer it through [`Cluster`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use polly::mesos::v1::scheduler::{Call, Event};

pub const JSON: &str = "application/json";
pub const PROTOBUF: &str = "application/x-protobuf";

/// An agent the fake cluster offers.
#[derive(Debug, Clone)]
pub struct FakeAgent {
    pub id: String,
    pub hostname: String,
    pub region: String,
    pub zone: String,
    pub rack: String,
    /// Only visible through the operator API (it never shows up in offers).
    pub operator_only: bool,
}

/// One SUBSCRIBE the cluster answered.
#[derive(Debug, Clone)]
pub struct Subscribe {
    pub master: usize,
    /// `framework_id` as sent (None for a new framework).
    pub framework_id: Option<String>,
    pub framework_info: Value,
    pub content_type: String,
    /// What it got: `Ok(framework id)` or `Err(error message)`.
    pub outcome: Result<String, String>,
    pub authorization: Option<String>,
}

/// One accepted non-SUBSCRIBE call.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub master: usize,
    pub kind: String,
    pub body: Value,
    pub stream_id: String,
    pub peer: SocketAddr,
    pub content_type: String,
}

#[derive(Debug)]
struct Framework {
    /// The FrameworkInfo of its last SUBSCRIBE, with the id filled in (as GET_FRAMEWORKS
    /// reports it).
    info: Value,
    failover_timeout: f64,
    connected: bool,
    removed: bool,
    suppressed: bool,
    stream_id: Option<String>,
    stream_peer: Option<SocketAddr>,
    disconnected_at: Option<Instant>,
    encoding: &'static str,
    sender: Option<mpsc::Sender<Bytes>>,
}

#[derive(Debug)]
struct ClusterState {
    addrs: Vec<SocketAddr>,
    leader: Option<usize>,
    recovering: bool,
    heartbeat_secs: f64,
    agents: Vec<FakeAgent>,
    frameworks: HashMap<String, Framework>,
    subscribes: Vec<Subscribe>,
    calls: Vec<CallRecord>,
    rejected: Vec<(usize, u16)>,
    refuse_next: Option<String>,
    silenced: HashSet<String>,
    next_framework: u64,
    next_offer: u64,
}

/// Handle on a fake cluster of masters.
#[derive(Clone)]
pub struct Cluster {
    state: Arc<Mutex<ClusterState>>,
}

/// Two regions would need REGION_AWARE; the default cluster is one region, two zones.
pub fn default_agents() -> Vec<FakeAgent> {
    (0..4)
        .map(|i| FakeAgent {
            id: format!("agent-S{i}"),
            hostname: format!("node-{i}.example"),
            region: "eu-1".into(),
            zone: if i % 2 == 0 { "eu-1a" } else { "eu-1b" }.into(),
            rack: format!("r{}", 10 + i),
            operator_only: false,
        })
        .collect()
}

impl Cluster {
    /// Start `n` masters on 127.0.0.1:0; master 0 leads.
    pub async fn start(n: usize, heartbeat_secs: f64, agents: Vec<FakeAgent>) -> Cluster {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap());
            listeners.push(l);
        }
        let cluster = Cluster {
            state: Arc::new(Mutex::new(ClusterState {
                addrs,
                leader: Some(0),
                recovering: false,
                heartbeat_secs,
                agents,
                frameworks: HashMap::new(),
                subscribes: Vec::new(),
                calls: Vec::new(),
                rejected: Vec::new(),
                refuse_next: None,
                silenced: HashSet::new(),
                next_framework: 1,
                next_offer: 1,
            })),
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let app = Router::new()
                .route("/api/v1/scheduler", any(scheduler))
                .route("/master/api/v1/scheduler", any(scheduler))
                .route("/api/v1", any(operator))
                .with_state((cluster.clone(), i));
            tokio::spawn(async move {
                axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                    .await
                    .unwrap();
            });
        }
        cluster
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap()
    }

    pub fn addr(&self, i: usize) -> String {
        self.lock().addrs[i].to_string()
    }

    pub fn set_leader(&self, leader: Option<usize>) {
        self.lock().leader = leader;
    }

    pub fn set_recovering(&self, r: bool) {
        self.lock().recovering = r;
    }

    pub fn refuse_next(&self, message: &str) {
        self.lock().refuse_next = Some(message.into());
    }

    pub fn add_agent(&self, a: FakeAgent) {
        self.lock().agents.push(a);
    }

    /// Register a framework as if it had subscribed to this master elsewhere and is still
    /// connected there: `GET_FRAMEWORKS` lists it as active (no stream of ours carries it).
    pub fn register_framework(&self, id: &str, role: &str) {
        let info = json!({"id": {"value": id}, "user": "root", "name": id, "roles": [role]});
        self.lock().frameworks.insert(
            id.to_string(),
            Framework {
                info,
                failover_timeout: 0.0,
                connected: true,
                removed: false,
                suppressed: false,
                stream_id: None,
                stream_peer: None,
                disconnected_at: None,
                encoding: "application/json",
                sender: None,
            },
        );
    }

    /// Remove an agent as a master does when the agent fails its health checks or is marked
    /// gone: it is offered no more, `GET_AGENTS` no longer lists it, and every connected
    /// framework gets FAILURE with the agent id and no executor id (agent lost).
    pub async fn remove_agent(&self, id: &str) {
        let streams: Vec<(mpsc::Sender<Bytes>, &'static str)> = {
            let mut st = self.lock();
            st.agents.retain(|a| a.id != id);
            st.frameworks
                .values()
                .filter(|f| f.connected)
                .filter_map(|f| f.sender.clone().map(|tx| (tx, f.encoding)))
                .collect()
        };
        let ev = json!({"type": "FAILURE", "failure": {"agent_id": {"value": id}}});
        for (tx, enc) in streams {
            send_record(&tx, &encode_event(enc, &ev), 5).await;
        }
    }

    pub fn subscribes(&self) -> Vec<Subscribe> {
        self.lock().subscribes.clone()
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    pub fn calls_of(&self, kind: &str) -> Vec<CallRecord> {
        self.calls()
            .into_iter()
            .filter(|c| c.kind == kind)
            .collect()
    }

    /// Requests answered with a 3xx, 4xx or 5xx: (master, status).
    pub fn rejected(&self) -> Vec<(usize, u16)> {
        self.lock().rejected.clone()
    }

    /// Successful subscriptions (framework ids) so far.
    pub fn subscribed_ids(&self) -> Vec<String> {
        self.subscribes()
            .into_iter()
            .filter_map(|s| s.outcome.ok())
            .collect()
    }

    pub fn connected(&self, fw: &str) -> bool {
        self.lock().frameworks.get(fw).is_some_and(|f| f.connected)
    }

    pub fn stream_peer(&self, fw: &str) -> Option<SocketAddr> {
        self.lock().frameworks.get(fw).and_then(|f| f.stream_peer)
    }

    /// Close every subscription stream (as a master failover or network cut would).
    pub fn drop_streams(&self) {
        let mut st = self.lock();
        for f in st.frameworks.values_mut() {
            f.sender = None;
            if f.connected {
                f.connected = false;
                f.disconnected_at = Some(Instant::now());
            }
        }
    }

    /// Keep a framework's stream open but stop its heartbeats (a hung master).
    pub fn silence(&self, fw: &str) {
        let mut st = self.lock();
        if let Some(sid) = st.frameworks.get(fw).and_then(|f| f.stream_id.clone()) {
            st.silenced.insert(sid);
        }
    }

    /// Write raw bytes (one chunk) into a framework's stream.
    pub async fn inject(&self, fw: &str, bytes: &[u8]) {
        let tx = self
            .lock()
            .frameworks
            .get(fw)
            .and_then(|f| f.sender.clone());
        if let Some(tx) = tx {
            let _ = tx.send(Bytes::copy_from_slice(bytes)).await;
        }
    }

    /// Close one framework's stream after what was sent so far.
    pub fn close_stream(&self, fw: &str) {
        let mut st = self.lock();
        if let Some(f) = st.frameworks.get_mut(fw) {
            f.sender = None;
        }
    }

    /// Send an event (Mesos JSON) to a framework in its stream's encoding.
    pub async fn push_event(&self, fw: &str, event: Value) {
        let (tx, enc) = {
            let st = self.lock();
            match st.frameworks.get(fw) {
                Some(f) => (f.sender.clone(), f.encoding),
                None => return,
            }
        };
        if let Some(tx) = tx {
            send_record(&tx, &encode_event(enc, &event), 0).await;
        }
    }
}

/// Mesos JSON event → wire bytes in `enc`.
pub fn encode_event(enc: &str, event: &Value) -> Vec<u8> {
    if enc == PROTOBUF {
        polly::mesos::json::from_value::<Event>(event)
            .expect("fake master events are valid")
            .encode_to_vec()
    } else {
        serde_json::to_vec(event).unwrap()
    }
}

/// Frame a record and send it as two or three chunks, split at a point that moves with
/// `salt`, so records always straddle chunk boundaries.
async fn send_record(tx: &mpsc::Sender<Bytes>, record: &[u8], salt: usize) -> bool {
    let mut framed = format!("{}\n", record.len()).into_bytes();
    framed.extend_from_slice(record);
    let a = 1 + salt % (framed.len() - 1).max(1);
    let b = (a + (framed.len() - a) / 2).max(a);
    for part in [&framed[..a], &framed[a..b], &framed[b..]] {
        if !part.is_empty() && tx.send(Bytes::copy_from_slice(part)).await.is_err() {
            return false;
        }
    }
    true
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// 307/503 checks shared by both endpoints (they come before anything else).
fn leader_checks(st: &ClusterState, me: usize, path: &str) -> Option<Response> {
    match st.leader {
        Some(l) if l != me => {
            let loc = format!("//{}{}", st.addrs[l], path);
            Some((StatusCode::TEMPORARY_REDIRECT, [("Location", loc)]).into_response())
        }
        None => Some(error(StatusCode::SERVICE_UNAVAILABLE, "No leader elected")),
        Some(_) if st.recovering => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Master has not finished recovery",
        )),
        Some(_) => None,
    }
}

fn offers_event(st: &mut ClusterState, fw: &str) -> Value {
    let mut offers = Vec::new();
    for a in st.agents.clone() {
        if a.operator_only {
            continue;
        }
        let n = st.next_offer;
        st.next_offer += 1;
        offers.push(json!({
            "id": {"value": format!("offer-O{n}")},
            "framework_id": {"value": fw},
            "agent_id": {"value": a.id},
            "hostname": a.hostname,
            "domain": {"fault_domain": {"region": {"name": a.region}, "zone": {"name": a.zone}}},
            "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": a.rack}}],
            "resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 102400},
                           "role": "*"}],
            "allocation_info": {"role": "*"},
        }));
    }
    json!({"type": "OFFERS", "offers": {"offers": offers}})
}

fn agent_info(a: &FakeAgent) -> Value {
    json!({"id": {"value": a.id}, "hostname": a.hostname, "port": 5051,
           "domain": {"fault_domain": {"region": {"name": a.region}, "zone": {"name": a.zone}}},
           "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": a.rack}}]})
}

/// Parse a call body per its Content-Type into Mesos JSON.
fn decode_call(ct: &str, body: &[u8]) -> Result<Value, String> {
    if ct == PROTOBUF {
        let c = Call::decode(body).map_err(|e| e.to_string())?;
        polly::mesos::json::to_value(&c).map_err(|e| e.to_string())
    } else {
        let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("expected a JSON object".into());
        }
        Ok(v)
    }
}

type MasterState = State<(Cluster, usize)>;

async fn scheduler(
    State((cluster, me)): MasterState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = scheduler_inner(&cluster, me, peer, method, &headers, &body).await;
    if r.status().is_redirection() || r.status().is_client_error() || r.status().is_server_error() {
        cluster.lock().rejected.push((me, r.status().as_u16()));
    }
    r
}

async fn scheduler_inner(
    cluster: &Cluster,
    me: usize,
    peer: SocketAddr,
    method: Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if let Some(r) = leader_checks(&cluster.lock(), me, "/api/v1/scheduler") {
        return r;
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Expecting 'POST'");
    }
    let Some(ct) = header(headers, "content-type") else {
        return error(
            StatusCode::BAD_REQUEST,
            "Expecting 'Content-Type' to be present",
        );
    };
    if ct != JSON && ct != PROTOBUF {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Expecting 'Content-Type' of {JSON} or {PROTOBUF}"),
        );
    }
    let call = match decode_call(ct, body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse body: {e}"),
            )
        }
    };
    let Some(kind) = call["type"].as_str().map(str::to_string) else {
        return error(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    };
    match kind.as_str() {
        "UNKNOWN" => return error(StatusCode::NOT_IMPLEMENTED, "Received 'UNKNOWN' call"),
        "SUBSCRIBE" => return subscribe(cluster, me, peer, headers, ct, &call).await,
        _ => {}
    }
    let Some(fid) = call["framework_id"]["value"].as_str().map(str::to_string) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Expecting 'framework_id' to be present",
        );
    };
    let sub = kind.to_ascii_lowercase();
    let needs_sub = !matches!(kind.as_str(), "TEARDOWN" | "REVIVE" | "SUPPRESS");
    if needs_sub && !call[&sub].is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Expecting '{sub}' to be present"),
        );
    }
    let (sender, enc, offers) = {
        let mut st = cluster.lock();
        let Some(f) = st.frameworks.get(&fid) else {
            return error(StatusCode::BAD_REQUEST, "Framework cannot be found");
        };
        if !f.connected || f.removed {
            return error(StatusCode::FORBIDDEN, "Framework is not subscribed");
        }
        let Some(sid) = header(headers, "mesos-stream-id") else {
            return error(
                StatusCode::BAD_REQUEST,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            );
        };
        if Some(sid) != f.stream_id.as_deref() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("The stream ID '{sid}' included in this request didn't match"),
            );
        }
        if kind == "ACKNOWLEDGE" {
            let uuid = call["acknowledge"]["uuid"].as_str().unwrap_or("");
            let ok = base64::engine::general_purpose::STANDARD
                .decode(uuid)
                .is_ok_and(|b| b.len() == 16);
            if !ok {
                return error(StatusCode::BAD_REQUEST, "Invalid uuid");
            }
        }
        st.calls.push(CallRecord {
            master: me,
            kind: kind.clone(),
            body: call.clone(),
            stream_id: sid.to_string(),
            peer,
            content_type: ct.to_string(),
        });
        let mut offers = None;
        let f = st.frameworks.get_mut(&fid).expect("checked above");
        match kind.as_str() {
            "SUPPRESS" => f.suppressed = true,
            "REVIVE" => f.suppressed = false,
            "TEARDOWN" => {
                f.removed = true;
                f.connected = false;
                f.sender = None;
            }
            _ => {}
        }
        let (sender, enc) = (f.sender.clone(), f.encoding);
        if kind == "REVIVE" {
            offers = Some(offers_event(&mut st, &fid));
        }
        (sender, enc, offers)
    };
    if let (Some(tx), Some(ev)) = (sender, offers) {
        send_record(&tx, &encode_event(enc, &ev), 3).await;
    }
    (StatusCode::ACCEPTED, [("Content-Length", "0")]).into_response()
}

fn accepts(accept: Option<&str>, ct: &str) -> bool {
    match accept {
        None => true,
        Some(a) => a.split(',').any(|p| {
            let p = p.split(';').next().unwrap_or("").trim();
            p == ct || p == "*/*" || p == "application/*"
        }),
    }
}

async fn subscribe(
    cluster: &Cluster,
    me: usize,
    peer: SocketAddr,
    headers: &HeaderMap,
    ct: &str,
    call: &Value,
) -> Response {
    if headers.contains_key("mesos-stream-id") {
        return error(
            StatusCode::BAD_REQUEST,
            "Subscribe calls should not include the 'Mesos-Stream-Id' header",
        );
    }
    let accept = header(headers, "accept");
    let enc = if accepts(accept, JSON) {
        JSON
    } else if accepts(accept, PROTOBUF) {
        PROTOBUF
    } else {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "Expecting 'Accept' to allow JSON or protobuf",
        );
    };
    let fi = &call["subscribe"]["framework_info"];
    if !fi.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            "Expecting 'subscribe.framework_info'",
        );
    }
    if !fi["user"].is_string() || !fi["name"].is_string() {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required fields: framework_info.user, framework_info.name",
        );
    }
    let top = call["framework_id"]["value"].as_str();
    let inner = fi["id"]["value"].as_str();
    if top != inner {
        return error(
            StatusCode::BAD_REQUEST,
            "'framework_id' differs from 'subscribe.framework_info.id'",
        );
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let stream_id = uuid::Uuid::new_v4().to_string();
    let mut first: Vec<Value> = Vec::new();
    let outcome = {
        let mut st = cluster.lock();
        let refused = st.refuse_next.take();
        let outcome = match (refused, inner) {
            (Some(msg), _) => Err(msg),
            (None, Some(id)) => match st.frameworks.get_mut(id) {
                Some(f) => {
                    let expired = f.disconnected_at.is_some_and(|t| {
                        !f.connected && t.elapsed().as_secs_f64() > f.failover_timeout
                    });
                    if expired {
                        f.removed = true;
                    }
                    if f.removed {
                        Err("Framework has been removed".to_string())
                    } else {
                        Ok(id.to_string())
                    }
                }
                // Unknown id: a framework re-registering after a master failover.
                None => Ok(id.to_string()),
            },
            (None, None) => {
                let n = st.next_framework;
                st.next_framework += 1;
                Ok(format!("fake-cluster-{n:04}"))
            }
        };
        if let Ok(id) = &outcome {
            let failover_timeout = fi["failover_timeout"].as_f64().unwrap_or(0.0);
            let mut info = fi.clone();
            info["id"] = json!({"value": id});
            let f = st.frameworks.entry(id.clone()).or_insert(Framework {
                info: Value::Null,
                failover_timeout,
                connected: false,
                removed: false,
                suppressed: false,
                stream_id: None,
                stream_peer: None,
                disconnected_at: None,
                encoding: enc,
                sender: None,
            });
            // A new SUBSCRIBE replaces the old stream.
            f.info = info;
            f.failover_timeout = failover_timeout;
            f.connected = true;
            f.suppressed = false;
            f.disconnected_at = None;
            f.stream_id = Some(stream_id.clone());
            f.stream_peer = Some(peer);
            f.encoding = enc;
            f.sender = Some(tx.clone());
            let hb = st.heartbeat_secs;
            let master = st.addrs[me];
            first.push(json!({"type": "SUBSCRIBED", "subscribed": {
                "framework_id": {"value": id},
                "heartbeat_interval_seconds": hb,
                "master_info": {"id": format!("master-{me}"), "ip": 16777343,
                                "port": master.port(), "hostname": "127.0.0.1",
                                "version": "1.11.0"}}}));
            first.push(json!({"type": "HEARTBEAT"}));
            let offers = offers_event(&mut st, id);
            first.push(offers);
        }
        if let Err(m) = &outcome {
            first.push(json!({"type": "ERROR", "error": {"message": m}}));
        }
        st.subscribes.push(Subscribe {
            master: me,
            framework_id: top.map(str::to_string),
            framework_info: fi.clone(),
            content_type: ct.to_string(),
            outcome: outcome.clone(),
            authorization: header(headers, "authorization").map(str::to_string),
        });
        outcome
    };
    for (i, ev) in first.iter().enumerate() {
        send_record(&tx, &encode_event(enc, ev), i * 7 + 1).await;
    }
    match outcome {
        // 200 + ERROR + close: dropping the only sender ends the body after the ERROR.
        Err(_) => drop(tx),
        Ok(id) => {
            drop(tx);
            tokio::spawn(heartbeats(cluster.clone(), id, stream_id.clone()));
        }
    }
    let guard = StreamGuard {
        cluster: cluster.clone(),
        stream_id: stream_id.clone(),
    };
    let body = futures::stream::unfold((rx, guard), |(mut rx, g)| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), (rx, g)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", enc)
        .header("Mesos-Stream-Id", stream_id)
        .body(Body::from_stream(body))
        .unwrap()
}

/// Marks the framework disconnected when its stream goes away (either side closing).
struct StreamGuard {
    cluster: Cluster,
    stream_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut st) = self.cluster.state.lock() {
            for f in st.frameworks.values_mut() {
                if f.stream_id.as_deref() == Some(self.stream_id.as_str()) && f.connected {
                    f.connected = false;
                    f.sender = None;
                    f.disconnected_at = Some(Instant::now());
                }
            }
        }
    }
}

async fn heartbeats(cluster: Cluster, fw: String, stream_id: String) {
    let mut salt = 0;
    loop {
        let every = cluster.lock().heartbeat_secs;
        tokio::time::sleep(Duration::from_secs_f64(every)).await;
        let (tx, enc, silent) = {
            let st = cluster.lock();
            let Some(f) = st.frameworks.get(&fw) else {
                return;
            };
            if f.stream_id.as_deref() != Some(stream_id.as_str()) || !f.connected {
                return;
            }
            let Some(tx) = f.sender.clone() else { return };
            (tx, f.encoding, st.silenced.contains(&stream_id))
        };
        if silent {
            continue;
        }
        salt += 1;
        if !send_record(&tx, &encode_event(enc, &json!({"type": "HEARTBEAT"})), salt).await {
            return;
        }
    }
}

/// The operator API: GET_AGENTS and GET_FRAMEWORKS (JSON), with the same leader and header
/// rules. GET_FRAMEWORKS lists registered frameworks (connected, or disconnected within their
/// failover timeout) under `frameworks` and removed ones (torn down, or past their failover
/// timeout) under `completed_frameworks`, each as `{framework_info, active, connected,
/// recovered}`.
async fn operator(
    State((cluster, me)): MasterState,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let st = cluster.lock();
    if let Some(r) = leader_checks(&st, me, "/api/v1") {
        return r;
    }
    if method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Expecting 'POST'");
    }
    match header(&headers, "content-type") {
        None => return error(StatusCode::BAD_REQUEST, "Expecting 'Content-Type'"),
        Some(JSON) => {}
        Some(_) => return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expecting JSON"),
    }
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Failed to parse body: {e}"),
            )
        }
    };
    if call["type"] == "GET_FRAMEWORKS" {
        let (mut live, mut completed) = (Vec::new(), Vec::new());
        let mut ids: Vec<&String> = st.frameworks.keys().collect();
        ids.sort();
        for id in ids {
            let f = &st.frameworks[id];
            let expired = f
                .disconnected_at
                .is_some_and(|t| !f.connected && t.elapsed().as_secs_f64() > f.failover_timeout);
            let entry = json!({"framework_info": f.info, "active": f.connected && !f.removed,
                               "connected": f.connected && !f.removed, "recovered": false});
            if f.removed || expired {
                completed.push(entry);
            } else {
                live.push(entry);
            }
        }
        return (
            StatusCode::OK,
            [("Content-Type", JSON)],
            serde_json::to_string(&json!({"type": "GET_FRAMEWORKS",
                "get_frameworks": {"frameworks": live, "completed_frameworks": completed}}))
            .unwrap(),
        )
            .into_response();
    }
    if call["type"] != "GET_AGENTS" {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "only GET_AGENTS and GET_FRAMEWORKS are faked",
        );
    }
    let agents: Vec<Value> = st
        .agents
        .iter()
        .map(|a| json!({"agent_info": agent_info(a), "active": true, "version": "1.11.0"}))
        .collect();
    (
        StatusCode::OK,
        [("Content-Type", JSON)],
        serde_json::to_string(&json!({"type": "GET_AGENTS",
            "get_agents": {"agents": agents, "recovered_agents": []}}))
        .unwrap(),
    )
        .into_response()
}
