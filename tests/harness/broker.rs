//! The Open Service Broker API as a platform (Cloud Foundry's cloud controller) speaks it to
//! `polly serve`'s broker: HTTP basic auth, `X-Broker-API-Version` (2.17 unless a test says
//! otherwise), an optional originating identity, any method, path and body (raw bytes
//! included), answered as status, headers and JSON body. Blocking, on a runtime of its own,
//! so that tests poll it with [`super::wait_until`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use super::polly::Polly;

/// The credentials the tests configure (`[broker] username`, `password`).
pub const USER: &str = "cf";
pub const PASSWORD: &str = "s3cret";
/// The API version a platform of today sends.
pub const VERSION: &str = "2.17";

/// One answer of the broker.
#[derive(Debug, Clone)]
pub struct OsbReply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when it is empty or not JSON (`text` has it).
    pub body: Value,
    pub text: String,
}

impl OsbReply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error body's `description` ("" when absent).
    pub fn description(&self) -> &str {
        self.body["description"].as_str().unwrap_or("")
    }

    /// The error body's `error` code, when it has one.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// The `operation` of a 202.
    pub fn operation(&self) -> Option<&str> {
        self.body.get("operation").and_then(Value::as_str)
    }
}

impl std::fmt::Display for OsbReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text)
    }
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    None,
    /// Serialized, with `Content-Type: application/json`.
    Json(&'a Value),
    /// These bytes as they are, with this content type (none when `None`).
    Raw(&'a [u8], Option<&'a str>),
}

/// A platform's client of one broker. Cheap to clone; the `with_*` methods change what the
/// clone sends.
#[derive(Clone)]
pub struct Broker {
    pub url: String,
    auth: Option<(String, String)>,
    version: Option<String>,
    identity: Option<String>,
    headers: Vec<(String, String)>,
    rt: Arc<tokio::runtime::Runtime>,
    http: reqwest::Client,
}

impl Polly {
    /// The broker this server prints, with the tests' credentials and version 2.17.
    pub fn broker(&self) -> Broker {
        let url = self.broker.clone().unwrap_or_else(|| {
            panic!("polly serve printed no `polly: broker on http://ADDR` line: is [broker] configured with a username and a password?")
        });
        Broker::new(&url)
    }
}

impl Broker {
    pub fn new(url: &str) -> Broker {
        Broker {
            url: url.trim_end_matches('/').to_string(),
            auth: Some((USER.to_string(), PASSWORD.to_string())),
            version: Some(VERSION.to_string()),
            identity: None,
            headers: Vec::new(),
            rt: Arc::new(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
            ),
            // A fresh connection per request: a broker may close a connection after a
            // refused body, and a pooled one would then fail the next request client-side.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// Basic auth with these credentials, or none.
    pub fn with_auth(mut self, auth: Option<(&str, &str)>) -> Broker {
        self.auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        self
    }

    /// This `X-Broker-API-Version`, or none.
    pub fn with_version(mut self, version: Option<&str>) -> Broker {
        self.version = version.map(str::to_string);
        self
    }

    /// This `X-Broker-API-Originating-Identity` value (see [`cf_identity`]), or none.
    pub fn with_identity(mut self, identity: Option<&str>) -> Broker {
        self.identity = identity.map(str::to_string);
        self
    }

    /// One more header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Broker {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Run a future (an admin call of the harness, say) on this client's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Any request: `path` starts with `/v2/` and carries its query.
    pub fn call(&self, method: Method, path: &str, body: Body<'_>) -> OsbReply {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(v) = &self.version {
            req = req.header("X-Broker-API-Version", v);
        }
        if let Some(i) = &self.identity {
            req = req.header("X-Broker-API-Originating-Identity", i);
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req
                .header("Content-Type", "application/json")
                .body(v.to_string()),
            Body::Raw(bytes, ct) => {
                let req = match ct {
                    Some(ct) => req.header("Content-Type", ct),
                    None => req,
                };
                req.body(bytes.to_vec())
            }
        };
        self.rt.block_on(async {
            let r = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("broker request {path}: {e}"));
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            OsbReply {
                status,
                headers,
                body,
                text,
            }
        })
    }

    pub fn get(&self, path: &str) -> OsbReply {
        self.call(Method::GET, path, Body::None)
    }

    pub fn put(&self, path: &str, body: &Value) -> OsbReply {
        self.call(Method::PUT, path, Body::Json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> OsbReply {
        self.call(Method::PATCH, path, Body::Json(body))
    }

    pub fn delete(&self, path: &str) -> OsbReply {
        self.call(Method::DELETE, path, Body::None)
    }

    /// `GET /v2/catalog`.
    pub fn catalog(&self) -> OsbReply {
        self.get("/v2/catalog")
    }

    /// `PUT /v2/service_instances/:iid[?accepts_incomplete=true]`.
    pub fn provision(&self, iid: &str, body: &Value, accepts_incomplete: bool) -> OsbReply {
        self.put(&instance_path(iid, accepts_incomplete), body)
    }

    /// `PATCH /v2/service_instances/:iid[?accepts_incomplete=true]`.
    pub fn update(&self, iid: &str, body: &Value, accepts_incomplete: bool) -> OsbReply {
        self.patch(&instance_path(iid, accepts_incomplete), body)
    }

    /// `GET /v2/service_instances/:iid`.
    pub fn fetch(&self, iid: &str) -> OsbReply {
        self.get(&format!("/v2/service_instances/{iid}"))
    }

    /// `DELETE /v2/service_instances/:iid?service_id=&plan_id=[&accepts_incomplete=true]`.
    pub fn deprovision(
        &self,
        iid: &str,
        service_id: &str,
        plan_id: &str,
        accepts_incomplete: bool,
    ) -> OsbReply {
        let mut q = query(&[("service_id", service_id), ("plan_id", plan_id)]);
        if accepts_incomplete {
            q.push_str("&accepts_incomplete=true");
        }
        self.delete(&format!("/v2/service_instances/{iid}?{q}"))
    }

    /// `GET /v2/service_instances/:iid/last_operation[?operation=]`.
    pub fn last_operation(&self, iid: &str, operation: Option<&str>) -> OsbReply {
        match operation {
            Some(op) => self.get(&format!(
                "/v2/service_instances/{iid}/last_operation?{}",
                query(&[("operation", op)])
            )),
            None => self.get(&format!("/v2/service_instances/{iid}/last_operation")),
        }
    }

    /// `PUT /v2/service_instances/:iid/service_bindings/:bid`.
    pub fn bind(&self, iid: &str, bid: &str, body: &Value) -> OsbReply {
        self.put(&binding_path(iid, bid), body)
    }

    /// `GET /v2/service_instances/:iid/service_bindings/:bid`.
    pub fn fetch_binding(&self, iid: &str, bid: &str) -> OsbReply {
        self.get(&binding_path(iid, bid))
    }

    /// `DELETE /v2/service_instances/:iid/service_bindings/:bid?service_id=&plan_id=`.
    pub fn unbind(&self, iid: &str, bid: &str, service_id: &str, plan_id: &str) -> OsbReply {
        self.delete(&format!(
            "{}?{}",
            binding_path(iid, bid),
            query(&[("service_id", service_id), ("plan_id", plan_id)])
        ))
    }

    /// `GET /v2/service_instances/:iid/service_bindings/:bid/last_operation`.
    pub fn binding_last_operation(&self, iid: &str, bid: &str) -> OsbReply {
        self.get(&format!("{}/last_operation", binding_path(iid, bid)))
    }
}

fn instance_path(iid: &str, accepts_incomplete: bool) -> String {
    if accepts_incomplete {
        format!("/v2/service_instances/{iid}?accepts_incomplete=true")
    } else {
        format!("/v2/service_instances/{iid}")
    }
}

fn binding_path(iid: &str, bid: &str) -> String {
    format!("/v2/service_instances/{iid}/service_bindings/{bid}")
}

/// A percent-encoded query string.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// `X-Broker-API-Originating-Identity` as Cloud Foundry sends it: `cloudfoundry` and the
/// base64 of `{"user_id": ...}`.
pub fn cf_identity(user_id: &str) -> String {
    let json = serde_json::json!({ "user_id": user_id }).to_string();
    format!(
        "cloudfoundry {}",
        base64::engine::general_purpose::STANDARD.encode(json)
    )
}
