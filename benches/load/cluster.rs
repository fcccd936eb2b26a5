//! Processes of the etcd benchmarks (`failover`, `etcd_ops`): real `polly serve` instances
//! (through the tests' harness, `tests/harness`) with their data dirs on the bench disk, the
//! TOML that puts their store on etcd and makes them an HA group, and their role as
//! `/admin/health` reports it. The etcd server itself is the tests' harness
//! (`tests/harness/etcd.rs`). The including bench declares `mod harness` and imports
//! `harness::etcd` at its root first.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Polly;

/// Whether the etcd benchmarks can run: an etcd binary is there. Without one they say so
/// loudly and write a table saying they did not run.
pub fn etcd_missing(table: &str) -> bool {
    if crate::etcd::binary().is_some() {
        return false;
    }
    let why = "etcd not installed (apt-get install etcd-server, or set POLLY_TEST_ETCD): \
               this benchmark did NOT run";
    eprintln!("\n*** skipped: {why} ***\n");
    crate::load::write_table(table, &format!("Skipped: {why}.\n"));
    true
}

/// The etcd server of a benchmark, its data on the bench disk (beside sled's and the `vfs`
/// roots).
pub fn start_etcd() -> crate::etcd::Etcd {
    let base = crate::load::base_dir();
    std::fs::create_dir_all(&base).unwrap();
    crate::etcd::Etcd::start_under(&base, &[], "http")
}

/// `[store]` on etcd at `url` under `prefix`.
pub fn etcd_store(url: &str, prefix: &str) -> String {
    format!(
        r#"
[store]
backend = "etcd"

[store.etcd]
endpoints = ["{url}"]
prefix = "{prefix}"
"#
    )
}

/// `[ha]` with a lease of `ttl_secs`.
pub fn ha(ttl_secs: u64) -> String {
    format!("\n[ha]\nenabled = true\nlease_ttl_secs = {ttl_secs}\n")
}

/// One `polly serve` process (SIGKILLed when dropped) and its data dir on the bench disk.
pub struct Instance {
    pub polly: Polly,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// Start `polly serve` with `config` in a fresh data dir under the bench dir; returns
    /// once it printed `polly: ready` (a follower prints it once it knows the leader).
    pub async fn start(config: &str) -> Instance {
        let config = config.to_string();
        tokio::task::spawn_blocking(move || {
            let base = crate::load::base_dir();
            std::fs::create_dir_all(&base).unwrap();
            let dir = tempfile::Builder::new()
                .prefix("polly-instance")
                .tempdir_in(base)
                .unwrap();
            let polly = Polly::start_with(&dir.path().join("data"), Some(config.as_str()), None);
            Instance { polly, _dir: dir }
        })
        .await
        .unwrap()
    }

    pub fn admin(&self) -> &str {
        &self.polly.admin
    }

    pub fn offers(&self) -> &str {
        &self.polly.offers
    }

    pub fn libstorage(&self) -> &str {
        &self.polly.libstorage
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(self) {
        self.polly.kill9();
    }
}

/// What `/admin/health` of the instance at `admin` says about its role; `None` when it does
/// not answer.
pub async fn health(http: &reqwest::Client, admin: &str) -> Option<Value> {
    let r = http
        .get(format!("{admin}/admin/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Whether the instance at `admin` reports itself the leader.
pub async fn is_leader(http: &reqwest::Client, admin: &str) -> bool {
    health(http, admin)
        .await
        .is_some_and(|h| h["role"] == "leader")
}

/// Wait (polling every 10 ms, up to `bound`) until exactly one of the instances at `admins`
/// reports itself the leader and every other one reports itself its follower; the leader's
/// index.
pub async fn settled(http: &reqwest::Client, admins: &[&str], bound: Duration) -> usize {
    let start = Instant::now();
    loop {
        let mut roles = Vec::new();
        for a in admins {
            roles.push(health(http, a).await.unwrap_or(Value::Null));
        }
        let leaders: Vec<usize> = (0..roles.len())
            .filter(|i| roles[*i]["role"] == "leader")
            .collect();
        if let [l] = leaders[..] {
            let at = hostport(admins[l]);
            let follow = roles
                .iter()
                .enumerate()
                .all(|(i, r)| i == l || (r["role"] == "follower" && r["leader"]["admin"] == at));
            if follow {
                return l;
            }
        }
        assert!(
            start.elapsed() < bound,
            "the instances did not settle on one leader within {bound:?}: {roles:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hostport(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// A `vfs` service rooted at `root` (shared by the instances of an HA group: one back end).
pub fn vfs_service(root: &Path, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\nroot = \"{}\"\n{extra}",
        root.display()
    )
}
