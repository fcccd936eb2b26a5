//! The libStorage façade of a running [`Polly`] as REX-Ray talks to it: the client's
//! headers, requests sent the way it sends them, and checks of the façade's replies.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::polly::Polly;

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

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub raw: String,
    pub json: Value,
}

impl Polly {
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
            format!("{}{}", self.libstorage, path),
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
