//! Starts the real `polly serve` on loopback with a temp data dir and talks HTTP to it.
#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The REX-Ray 0.11 vfs client's headers, as captured.
pub const IID_META: &str = "vfs=,,InZtIg=="; // metadata = base64("\"vm\"")
pub const LD: &str = "vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::";

pub fn iid(svc: &str, id: &str) -> String {
    format!("vfs:{svc}={id}")
}

/// Headers of a per-service call after start-up (IID resolved, local devices, tx).
pub fn ls_headers(svc: &str, instance: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Libstorage-Instanceid", iid(svc, instance)),
        ("Libstorage-Localdevices", LD.to_string()),
        ("Libstorage-Tx", tx()),
    ]
}

/// Borrowed header pairs, as the request helpers take them.
pub fn refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

pub fn tx() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("txID={}, txCR={now}", uuid::Uuid::new_v4())
}

pub struct Polly {
    _server: crate::common::Polly,
    pub ls: String,
    pub admin: String,
    /// The storage-offer endpoint, `http://ADDR`.
    pub offers: String,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub raw: String,
    pub json: Value,
}

impl Polly {
    /// Start `polly serve` (through the shared harness) with one vfs service per name.
    pub fn start(services: &[&str], extra_config: &str) -> Polly {
        let mut cfg = String::new();
        for s in services {
            cfg.push_str(&format!("[[services]]\nname = \"{s}\"\ndriver = \"vfs\"\n"));
        }
        cfg.push_str(extra_config);
        Self::start_config(&cfg)
    }

    /// Start `polly serve` with this whole TOML config in a fresh temp dir.
    pub fn start_config(config: &str) -> Polly {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// Stop (SIGKILL) and start again on the same data dir with another config.
    pub fn restart(self, config: &str) -> Polly {
        let Polly { _server, _dir, .. } = self;
        _server.kill9();
        Self::start_in(_dir, config)
    }

    /// SIGTERM the server (a graceful stop).
    pub fn sigterm(&self) {
        self._server.sigterm();
    }

    /// The server's exit code once it has exited.
    pub fn exit_code(&mut self) -> Option<i32> {
        self._server.exit_code()
    }

    /// SIGKILL the server (its temp dir goes with it).
    pub fn kill9(self) {
        self._server.kill9();
    }

    /// The server's data dir (store, default vfs roots).
    pub fn data_dir(&self) -> &std::path::Path {
        &self._server.data_dir
    }

    fn start_in(dir: tempfile::TempDir, config: &str) -> Polly {
        let server = crate::common::Polly::start_with(&dir.path().join("data"), Some(config), None);
        Polly {
            ls: server.libstorage.clone(),
            admin: server.admin.clone(),
            offers: server.offers.clone(),
            _server: server,
            _dir: dir,
            // A fresh connection per request: after a refused oversize body the server closes
            // the connection, and a pooled one would fail the next request client-side.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// A libStorage request as REX-Ray sends it: no `Content-Type` on bodies.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut r = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{}", self.ls, path),
        );
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp.text().await.unwrap();
        let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            raw,
            json,
        }
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{}", self.admin, path))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{}", self.admin, path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The store's volumes, as the admin API shows them.
    pub async fn volumes(&self) -> Vec<Value> {
        self.admin_get("/admin/volumes").await["volumes"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Reply {
    /// Every façade response names the server.
    pub fn check_servername(&self) {
        let n = self
            .headers
            .get("libstorage-servername")
            .expect("no Libstorage-Servername header");
        assert!(!n.is_empty());
    }

    /// A libStorage error: `{"message","status","error"}` with the HTTP status repeated.
    pub fn check_error(&self, status: u16, message: &str) {
        self.check_servername();
        assert_eq!(self.status.as_u16(), status, "body: {}", self.raw);
        assert_eq!(self.json["status"], status, "body: {}", self.raw);
        assert!(
            self.json["message"]
                .as_str()
                .unwrap_or("")
                .contains(message),
            "message {:?} lacks {message:?}",
            self.json["message"]
        );
        assert!(
            !self.json["error"].is_null(),
            "no error details: {}",
            self.raw
        );
    }
}
