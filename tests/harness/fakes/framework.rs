//! A consumer framework for the storage-offer tests, written against the wire: it subscribes
//! over JSON or protobuf (Polly's own Mesos types and RecordIO decoder), reads its event
//! stream in a task, and sends calls in the encoding it subscribed with.

use std::collections::VecDeque;
use std::time::Duration;

use polly::mesos::client::MesosContentType;
use polly::mesos::client::{decode_event, encode_call};
use polly::mesos::recordio::Decoder;
use polly::mesos::v1::scheduler::{call, Call};
use polly::mesos::v1::{self, FrameworkInfo};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A subscribed framework: its id, stream id and the events of its stream as JSON.
pub struct Framework {
    pub base: String,
    pub id: String,
    pub stream_id: String,
    pub ct: MesosContentType,
    pub events: mpsc::UnboundedReceiver<Value>,
    /// Events read while waiting for another kind, kept for later waits.
    pub skipped: VecDeque<Value>,
    pub http: reqwest::Client,
}

/// SUBSCRIBE (with `id` when the framework already has one) and read SUBSCRIBED and the first
/// HEARTBEAT; panics if the endpoint answers otherwise.
pub async fn subscribe(base: &str, ct: MesosContentType, id: Option<&str>) -> Framework {
    subscribe_as(base, ct, id, None).await
}

/// `subscribe` with a role (the single-role `FrameworkInfo.role`) when given.
pub async fn subscribe_as(
    base: &str,
    ct: MesosContentType,
    id: Option<&str>,
    role: Option<&str>,
) -> Framework {
    try_subscribe_as(base, ct, id, role)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `subscribe`, but a request that fails to connect or an answer other than 200 is an
/// `Err` (as while a new leader is being elected), so a test can retry as a scheduler
/// library does.
pub async fn try_subscribe(
    base: &str,
    ct: MesosContentType,
    id: Option<&str>,
) -> Result<Framework, String> {
    try_subscribe_as(base, ct, id, None).await
}

/// `subscribe_as`, with a refused or failed SUBSCRIBE (no endpoint listening, 503 while the
/// instances elect a leader, a 307 to a leader that is gone) as an error instead of a panic,
/// for callers that retry (failover tests and the failover benchmark). What breaks the
/// protocol still panics.
pub async fn try_subscribe_as(
    base: &str,
    ct: MesosContentType,
    id: Option<&str>,
    role: Option<&str>,
) -> Result<Framework, String> {
    try_subscribe_with(base, ct, id, role, None).await
}

/// `try_subscribe_as` authenticated as `creds` (principal, secret): HTTP basic credentials
/// on the SUBSCRIBE and on every later call of the framework, and the principal in its
/// `FrameworkInfo`.
#[allow(deprecated)]
pub async fn try_subscribe_with(
    base: &str,
    ct: MesosContentType,
    id: Option<&str>,
    role: Option<&str>,
    creds: Option<(&str, &str)>,
) -> Result<Framework, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, secret)) = creds {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {token}").parse().unwrap(),
        );
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let mime = polly::mesos::client::content_type(ct);
    let info = FrameworkInfo {
        user: "root".into(),
        name: "consumer".into(),
        id: id.map(|i| v1::FrameworkId { value: i.into() }),
        role: role.map(str::to_string),
        principal: creds.map(|(p, _)| p.to_string()),
        ..Default::default()
    };
    let c = Call {
        framework_id: id.map(|i| v1::FrameworkId { value: i.into() }),
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info,
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = http
        .post(format!("{base}/api/v1/scheduler"))
        .header("content-type", mime)
        .header("accept", mime)
        .body(encode_call(ct, &c).unwrap())
        .send()
        .await
        .map_err(|e| format!("SUBSCRIBE to {base}: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("SUBSCRIBE to {base}: {status}: {body}"));
    }
    assert_eq!(resp.headers()["content-type"], mime);
    assert!(
        resp.headers().get("content-length").is_none(),
        "stream must be chunked"
    );
    let stream_id = resp.headers()["mesos-stream-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut resp = resp;
        let mut dec = Decoder::new(1 << 24);
        while let Ok(Some(chunk)) = resp.chunk().await {
            dec.push(&chunk);
            while let Ok(Some(rec)) = dec.next_record() {
                let ev = decode_event(ct, &rec).expect("event decodes");
                let v = polly::mesos::json::to_value(&ev).unwrap();
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let id = first["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let second = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second["type"], "HEARTBEAT",
        "a heartbeat follows SUBSCRIBED at once"
    );
    Ok(Framework {
        base: base.to_string(),
        id,
        stream_id,
        ct,
        events: rx,
        skipped: Default::default(),
        http,
    })
}

impl Framework {
    /// The next event of `kind` (kept ones first), keeping the others for later; panics
    /// after `secs`.
    pub async fn next(&mut self, kind: &str, secs: u64) -> Value {
        self.next_where(kind, secs, |e| e["type"] == kind).await
    }

    /// The next event `want` accepts (kept ones first), keeping the others for later.
    pub async fn next_where(
        &mut self,
        what: &str,
        secs: u64,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.skipped.iter().position(&want) {
            return self.skipped.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} event within {secs}s"))
                .expect("stream open");
            if ev["type"] == "RESCIND" {
                // A rescinded offer is no longer usable: forget it if it was kept.
                let gone = ev["rescind"]["offer_id"]["value"].clone();
                for e in self.skipped.iter_mut().filter(|e| e["type"] == "OFFERS") {
                    if let Some(list) = e["offers"]["offers"].as_array_mut() {
                        list.retain(|o| o["id"]["value"] != gone);
                    }
                }
            }
            if want(&ev) {
                return ev;
            }
            if ev["type"] != "HEARTBEAT" {
                self.skipped.push_back(ev);
            }
        }
    }

    /// Offers until one for each of `agents` has arrived.
    pub async fn offers_for(&mut self, agents: &[&str]) -> Vec<Value> {
        let mut got: Vec<Value> = Vec::new();
        while !agents
            .iter()
            .all(|a| got.iter().any(|o| o["agent_id"]["value"] == *a))
        {
            let ev = self.next("OFFERS", 20).await;
            got.extend(ev["offers"]["offers"].as_array().unwrap().iter().cloned());
        }
        got
    }

    /// POST a call given in Mesos JSON, always as JSON.
    pub async fn post_json(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/scheduler", self.base))
            .header("content-type", "application/json")
            .header("mesos-stream-id", &self.stream_id)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// POST a call given in Mesos JSON, in the encoding the framework subscribed with: JSON
    /// frameworks send the value as it is (so tests can send library quirks), protobuf ones
    /// its protobuf encoding. Returns the status code and the body.
    pub async fn post(&self, body: &Value) -> (u16, String) {
        let mime = polly::mesos::client::content_type(self.ct);
        let bytes = match self.ct {
            MesosContentType::Json => body.to_string().into_bytes(),
            MesosContentType::Protobuf => {
                let c: Call = polly::mesos::json::from_value(body).expect("a valid call");
                encode_call(self.ct, &c).unwrap()
            }
        };
        let r = self
            .http
            .post(format!("{}/api/v1/scheduler", self.base))
            .header("content-type", mime)
            .header("mesos-stream-id", &self.stream_id)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// Send a call (in the framework's encoding) and expect 202 with an empty body.
    pub async fn call(&self, body: Value) {
        let (status, text) = self.post(&body).await;
        assert_eq!(status, 202, "{text}");
        assert_eq!(text, "");
    }

    /// The next status of operation `op`; statuses of other operations are kept for later.
    pub async fn status(&mut self, op: &str, secs: u64) -> Value {
        let ev = self
            .next_where("UPDATE_OPERATION_STATUS", secs, |e| {
                e["type"] == "UPDATE_OPERATION_STATUS"
                    && e["update_operation_status"]["status"]["operation_id"]["value"] == op
            })
            .await;
        ev["update_operation_status"]["status"].clone()
    }
}

/// The offer on `agent` among `offers`.
pub fn offer_on<'a>(offers: &'a [Value], agent: &str) -> &'a Value {
    offers
        .iter()
        .find(|o| o["agent_id"]["value"] == agent)
        .unwrap()
}

/// An ACCEPT of `offer` with one CREATE_DISK of `mb` from its first RAW disk.
pub fn create_disk(fw: &str, offer: &Value, op: &str, mb: f64) -> Value {
    let mut source = offer["resources"][0].clone();
    source["scalar"]["value"] = json!(mb);
    json!({"type": "ACCEPT", "framework_id": {"value": fw},
        "accept": {"offer_ids": [offer["id"].clone()],
            "operations": [{"type": "CREATE_DISK", "id": {"value": op},
                "create_disk": {"source": source, "target_type": "MOUNT"}}],
            "filters": {"refuse_seconds": 0}}})
}
