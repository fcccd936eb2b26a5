//! The operator's surfaces of a running [`Polly`]: the typed admin-API client, raw admin
//! HTTP, and the `polly` CLI pointed at it.

use std::process::Command;

use polly::client::AdminClient;
use serde_json::Value;

use super::polly::{Polly, BIN};

impl Polly {
    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.admin, self.token.clone())
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

    /// Run the CLI against this server; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["--admin-url", &self.admin]).args(args);
        cmd.env_remove("POLLY_ADMIN_TOKEN")
            .env_remove("POLLY_ADMIN_URL");
        if let Some(t) = &self.token {
            cmd.env("POLLY_ADMIN_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run the CLI with `--json` and parse stdout; panics on a non-zero exit.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let (code, out, err) = self.cli(&a);
        assert_eq!(code, 0, "polly {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {args:?}: {e}: {out}"))
    }
}
