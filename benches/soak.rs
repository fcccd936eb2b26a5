//! Load and soak of one real `polly serve` (the binary cargo built for this bench: release
//! under `cargo bench`, with its store and `vfs` roots on disk, HTTP on loopback), driven for
//! `POLLY_SOAK_SECS` (default 60) by, at the same time:
//!
//! - **REX-Ray clients** on the libStorage façade (`POLLY_SOAK_CLIENTS`, default 1,000), each
//!   its own instance id, dialling as REX-Ray 0.11 does (`GET /services`, then
//!   `GET /services/{svc}?instance` with a metadata-only `Libstorage-Instanceid`) and then
//!   cycling through the calls of `volume ls`, `volume create`, `volume mount`,
//!   `volume unmount` and `volume rm` with their attachment masks, `Libstorage-Instanceid`,
//!   `Libstorage-Localdevices` and `Libstorage-Tx` headers, and a random think time between
//!   calls (uniform 0 – 2 × `POLLY_SOAK_THINK_MS`, default 1,000 ms);
//! - **Mesos frameworks** on the storage-offer endpoint (`POLLY_SOAK_FRAMEWORKS`, default
//!   100): SUBSCRIBE (JSON), then for each offer, after a think time, ACCEPT with a CREATE_DISK
//!   of 1 MB, ACCEPT with a DESTROY_DISK of a volume they hold, or DECLINE, reading every
//!   operation's terminal status on their stream and acknowledging it. A framework holds at
//!   most `HELD_MAX` volumes, so the volumes in Polly's care stay about level.
//!
//! Every answer is checked (status code, body shape, the façade's `Libstorage-Servername`,
//! the instance and attachment state a volume must have at that step, offers for the
//! framework itself, an event at least every three heartbeat intervals, statuses only for
//! operations sent); any deviation is an error of its surface. At the end the store and the
//! `vfs` roots must hold exactly what the clients hold: no intent left, no REX-Ray volume
//! left behind, one reservation per volume a framework holds. Polly's resident memory and
//! open file descriptors are read from `/proc/<pid>` every second.
//!
//! `cargo bench --bench soak` runs the full soak and writes its table to
//! `<target>/polly-bench/soak.md` for `scripts/bench.sh`; without `--bench` (as under
//! `cargo test --all-targets`) a few clients run for a few seconds. Either way the run fails
//! on any error. One tokio runtime with two worker threads: the clients are tasks.

#[path = "load/frameworks.rs"]
mod frameworks;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use polly::mesos::client::MesosContentType;
use polly::store::VolumeStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant as TokioInstant;

use frameworks::{create_disk_call, OfferBook};
use harness::fakes::framework;
use load::Latencies;

/// The libStorage service the REX-Ray clients use, and the one disk offers come from.
const REXRAY_SVC: &str = "rexray";
const POOL_SVC: &str = "pool";
const HEARTBEAT_SECS: u64 = 5;
/// REX-Ray 0.11's local devices header for the vfs executor, as captured.
const LOCAL_DEVICES: &str = "vfs=/dev/xvda::,/dev/xvdb::,/dev/xvdc::,/dev/xvdd::";
/// Error messages kept per surface for the report.
const KEEP_ERRORS: usize = 5;
/// The most volumes a framework holds at once: at this many, a CREATE_DISK draw becomes a
/// DESTROY_DISK, so the volumes in Polly's care stay about level through a run and its
/// memory can be read for leaks (a framework that only ever accumulates volumes would make
/// Polly's state, and rightly its memory, grow for as long as the run lasts).
const HELD_MAX: usize = 3;

#[derive(Clone, Copy, Debug)]
struct Params {
    secs: u64,
    clients: usize,
    frameworks: usize,
    agents: usize,
    think_ms: u64,
    fw_think_ms: u64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

impl Params {
    fn from_env(full: bool) -> Params {
        let (secs, clients, frameworks, agents, think_ms, fw_think_ms) = if full {
            (60, 1000, 100, 10, 1000, 500)
        } else {
            (4, 8, 3, 2, 40, 40)
        };
        Params {
            secs: env_or("POLLY_SOAK_SECS", secs),
            clients: env_or("POLLY_SOAK_CLIENTS", clients),
            frameworks: env_or("POLLY_SOAK_FRAMEWORKS", frameworks),
            agents: env_or("POLLY_SOAK_AGENTS", agents),
            think_ms: env_or("POLLY_SOAK_THINK_MS", think_ms),
            fw_think_ms: env_or("POLLY_SOAK_FW_THINK_MS", fw_think_ms),
        }
    }
}

/// What one client saw: latencies per (surface, call), errors per surface (the first few
/// messages kept), and counters.
#[derive(Default)]
struct Stats {
    lat: BTreeMap<(&'static str, &'static str), Vec<u64>>,
    errors: BTreeMap<&'static str, u64>,
    messages: BTreeMap<&'static str, Vec<String>>,
    counts: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn record(&mut self, surface: &'static str, call: &'static str, t0: Instant) {
        self.lat
            .entry((surface, call))
            .or_default()
            .push(t0.elapsed().as_micros() as u64);
    }

    fn error(&mut self, surface: &'static str, msg: String) {
        *self.errors.entry(surface).or_default() += 1;
        let kept = self.messages.entry(surface).or_default();
        if kept.len() < KEEP_ERRORS {
            kept.push(msg);
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn merge(&mut self, o: Stats) {
        for (k, v) in o.lat {
            self.lat.entry(k).or_default().extend(v);
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.messages {
            let kept = self.messages.entry(k).or_default();
            kept.extend(v);
            kept.truncate(KEEP_ERRORS);
        }
        for (k, v) in o.counts {
            *self.counts.entry(k).or_default() += v;
        }
    }

    fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Raise the soft open-files limit to what the clients and the server (which inherits it)
/// need, up to the hard limit; panics when even the hard limit is too low.
fn raise_fd_limit(need: libc::rlim_t) -> (libc::rlim_t, libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < need {
            lim.rlim_cur = lim.rlim_max.min(need);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    assert!(
        soft >= need,
        "the open-files limit is {soft} (hard {hard}), the soak needs {need}: raise it \
         (`ulimit -n`) or run fewer clients (POLLY_SOAK_CLIENTS)"
    );
    (soft, hard)
}

fn config(p: &Params) -> String {
    let mut agents = String::new();
    let mut instances = String::new();
    for i in 0..p.agents {
        agents.push_str(&format!(
            "  {{ id = \"agent-{i}\", hostname = \"host-{i}\", zone = \"zone-a\" }},\n"
        ));
        instances.push_str(&format!("agent-{i} = \"i-{i}\"\n"));
    }
    // The REX-Ray clients' service is in a zone without agents, so disk offers come from the
    // pool service only. The pool has no quota (a quota'd `vfs` pool serializes its creates
    // and deletes on one lock, which is the driver's cost, not Polly's), so its capacity
    // follows the disk's free space: offers shrunk by other writers to the disk are
    // rescinded and an ACCEPT of one is DROPPED: counted, not an error.
    format!(
        r#"
[[services]]
name = "{REXRAY_SVC}"
driver = "vfs"
zone = "zone-r"

[[services]]
name = "{POOL_SVC}"
driver = "vfs"
zone = "zone-a"

[mesos]
agents = [
{agents}]

[offers]
poll_interval_secs = 1.0
allocation_interval_ms = 200
offer_timeout_secs = 30
heartbeat_interval_secs = {HEARTBEAT_SECS}
[offers.instances]
{instances}"#
    )
}

/// A uniform think time of 0 – 2 × `mean_ms`, none once the run is over (calls in flight
/// then finish their cycle at once).
async fn think(rng: &mut StdRng, mean_ms: u64, deadline: TokioInstant) {
    if mean_ms == 0 || TokioInstant::now() >= deadline {
        return;
    }
    let ms = rng.random_range(0..=2 * mean_ms);
    tokio::time::sleep_until(deadline.min(TokioInstant::now() + Duration::from_millis(ms))).await;
}

// ---------------------------------------------------------------------------------------------
// REX-Ray clients

const LS: &str = "libStorage";

struct Rexray {
    http: reqwest::Client,
    base: String,
    me: String,
    /// `vfs:rexray=<me>`, once dialled.
    iid: String,
    stats: Stats,
}

/// A façade answer: status, body as JSON (`Null` when empty).
struct Answer {
    status: u16,
    json: Value,
    empty: bool,
}

impl Rexray {
    /// One request as REX-Ray sends it (no `Content-Type`, a fresh `Libstorage-Tx`, the
    /// instance id and local devices headers when `headers`); the latency is recorded under
    /// `call` and any status other than `expect` or a response without
    /// `Libstorage-Servername` or with a body that is not JSON is an error.
    #[allow(clippy::too_many_arguments)] // one argument per part of the request
    async fn call(
        &mut self,
        call: &'static str,
        method: reqwest::Method,
        path: &str,
        iid: Option<&str>,
        local_devices: bool,
        body: Option<&str>,
        expect: u16,
    ) -> Result<Answer, String> {
        let tx = format!(
            "txID={}, txCR={}",
            uuid::Uuid::new_v4(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        );
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Libstorage-Tx", tx);
        if let Some(iid) = iid {
            r = r.header("Libstorage-Instanceid", iid);
        }
        if local_devices {
            r = r.header("Libstorage-Localdevices", LOCAL_DEVICES);
        }
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let t0 = Instant::now();
        let resp = r
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let named = resp.headers().contains_key("libstorage-servername");
        let raw = resp
            .bytes()
            .await
            .map_err(|e| format!("{method} {path}: reading the body: {e}"))?;
        self.stats.record(LS, call, t0);
        if status != expect {
            return Err(format!(
                "{method} {path}: {status} (expected {expect}): {}",
                String::from_utf8_lossy(&raw)
            ));
        }
        if !named {
            return Err(format!("{method} {path}: no Libstorage-Servername header"));
        }
        let empty = raw.is_empty();
        let json = if empty {
            Value::Null
        } else {
            serde_json::from_slice(&raw).map_err(|e| {
                format!(
                    "{method} {path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&raw)
                )
            })?
        };
        Ok(Answer {
            status,
            json,
            empty,
        })
    }

    /// REX-Ray's start-up: the service table, then its instance id resolved by the server
    /// from a metadata-only header.
    async fn dial(&mut self) -> Result<(), String> {
        let a = self
            .call(
                "services",
                reqwest::Method::GET,
                "/services",
                None,
                false,
                None,
                200,
            )
            .await?;
        if a.json[REXRAY_SVC]["driver"]["name"] != "vfs" {
            return Err(format!(
                "GET /services: no vfs service {REXRAY_SVC}: {}",
                a.json
            ));
        }
        let meta = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&json!(self.me)).unwrap());
        let raw_iid = format!("vfs=,,{meta}");
        let path = format!("/services/{REXRAY_SVC}?instance");
        let a = self
            .call(
                "services",
                reqwest::Method::GET,
                &path,
                Some(&raw_iid),
                false,
                None,
                200,
            )
            .await?;
        let got = &a.json["instance"]["instanceID"]["id"];
        if *got != self.me.as_str() {
            return Err(format!(
                "GET {path}: instance id {got}, expected {}",
                self.me
            ));
        }
        self.iid = format!("vfs:{REXRAY_SVC}={}", self.me);
        Ok(())
    }

    /// `GET /volumes/rexray/{id}?attachments={mask}` → the volume.
    async fn inspect(&mut self, id: &str, mask: u32) -> Result<Value, String> {
        let path = format!("/volumes/{REXRAY_SVC}/{id}?attachments={mask}");
        let iid = self.iid.clone();
        let a = self
            .call(
                "inspect",
                reqwest::Method::GET,
                &path,
                Some(&iid),
                true,
                None,
                200,
            )
            .await?;
        if a.json["id"] != id {
            return Err(format!("GET {path}: another volume: {}", a.json));
        }
        Ok(a.json)
    }

    fn attached_to_me(&self, v: &Value) -> bool {
        v["attachments"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["instanceID"]["id"] == self.me.as_str()))
    }

    /// One `volume ls`, `create`, `mount`, `unmount`, `rm` cycle on volume `name`. `made`
    /// holds the id of the volume while it exists and `attached` whether it is attached, so
    /// that the caller can clean up after an error.
    #[allow(clippy::too_many_arguments)] // the cycle's volume, its state and its pacing
    async fn cycle(
        &mut self,
        name: &str,
        prefix: &str,
        made: &mut Option<String>,
        attached: &mut bool,
        rng: &mut StdRng,
        think_ms: u64,
        deadline: TokioInstant,
    ) -> Result<(), String> {
        use reqwest::Method;
        let iid = self.iid.clone();
        // volume ls: none of this client's earlier volumes may be left.
        let path = format!("/volumes/{REXRAY_SVC}?attachments=1");
        let a = self
            .call("list", Method::GET, &path, Some(&iid), true, None, 200)
            .await?;
        let Some(listed) = a.json.as_object() else {
            return Err(format!("GET {path}: not a map: {}", a.json));
        };
        if let Some((id, v)) = listed
            .iter()
            .find(|(_, v)| v["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        {
            return Err(format!(
                "GET {path}: {id} of an earlier cycle is still listed: {v}"
            ));
        }
        think(rng, think_ms, deadline).await;

        // volume create
        let body = json!({"name": name, "availabilityZone": "", "encrypted": false, "iops": 0,
            "size": 1, "type": ""})
        .to_string();
        let path = format!("/volumes/{REXRAY_SVC}");
        let a = self
            .call(
                "create",
                Method::POST,
                &path,
                Some(&iid),
                true,
                Some(&body),
                201,
            )
            .await?;
        let Some(id) = a.json["id"].as_str().map(str::to_string) else {
            return Err(format!("POST {path}: no id: {}", a.json));
        };
        *made = Some(id.clone());
        if a.json["name"] != name || a.json["attachmentState"] != 3 {
            return Err(format!("POST {path}: created {}", a.json));
        }
        think(rng, think_ms, deadline).await;

        // volume mount: inspect 31 (available), attach, inspect 15 (attached to me), then the
        // instance to pick its own attachment.
        let v = self.inspect(&id, 31).await?;
        if v["attachmentState"] != 3 {
            return Err(format!("before attach, {id} is not available: {v}"));
        }
        think(rng, think_ms, deadline).await;
        let path = format!("/volumes/{REXRAY_SVC}/{id}?attach");
        let a = self
            .call(
                "attach",
                Method::POST,
                &path,
                Some(&iid),
                true,
                Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
                200,
            )
            .await?;
        *attached = true;
        if !a.json["attachToken"].is_string() || !self.attached_to_me(&a.json["volume"]) {
            return Err(format!("POST {path}: {}", a.json));
        }
        think(rng, think_ms, deadline).await;
        let v = self.inspect(&id, 15).await?;
        if v["attachmentState"] != 2 || !self.attached_to_me(&v) {
            return Err(format!(
                "after attach, {id} is not attached to {}: {v}",
                self.me
            ));
        }
        let path = format!("/services/{REXRAY_SVC}?instance");
        let a = self
            .call("services", Method::GET, &path, Some(&iid), false, None, 200)
            .await?;
        if a.json["instance"]["instanceID"]["id"] != self.me.as_str() {
            return Err(format!("GET {path}: {}", a.json));
        }
        think(rng, think_ms, deadline).await;

        // volume unmount: inspect 11, detach → 205 with the volume.
        let v = self.inspect(&id, 11).await?;
        if v["attachmentState"] != 2 {
            return Err(format!("before detach, {id} is not attached to me: {v}"));
        }
        think(rng, think_ms, deadline).await;
        let path = format!("/volumes/{REXRAY_SVC}/{id}?detach");
        let a = self
            .call(
                "detach",
                Method::POST,
                &path,
                Some(&iid),
                true,
                Some("{}"),
                205,
            )
            .await?;
        *attached = false;
        if a.empty || a.json["id"] != id.as_str() || self.attached_to_me(&a.json) {
            return Err(format!("POST {path}: {} {}", a.status, a.json));
        }
        think(rng, think_ms, deadline).await;

        // volume rm: inspect 0, DELETE → 204 without a body.
        let v = self.inspect(&id, 0).await?;
        if v.get("attachments").is_some() {
            return Err(format!("mask 0 kept the attachments: {v}"));
        }
        think(rng, think_ms, deadline).await;
        let path = format!("/volumes/{REXRAY_SVC}/{id}");
        let a = self
            .call("delete", Method::DELETE, &path, None, false, None, 204)
            .await?;
        if !a.empty {
            return Err(format!("DELETE {path}: 204 with a body: {}", a.json));
        }
        *made = None;
        Ok(())
    }

    /// Best effort after an error: detach and delete what the failed cycle left.
    async fn clean_up(&mut self, made: &mut Option<String>, attached: &mut bool) {
        let Some(id) = made.take() else { return };
        let iid = self.iid.clone();
        if *attached {
            let path = format!("/volumes/{REXRAY_SVC}/{id}?detach");
            let _ = self
                .call(
                    "detach",
                    reqwest::Method::POST,
                    &path,
                    Some(&iid),
                    true,
                    Some("{}"),
                    205,
                )
                .await;
            *attached = false;
        }
        let path = format!("/volumes/{REXRAY_SVC}/{id}");
        let _ = self
            .call(
                "delete",
                reqwest::Method::DELETE,
                &path,
                None,
                false,
                None,
                204,
            )
            .await;
    }
}

async fn rexray_client(n: usize, base: String, think_ms: u64, deadline: TokioInstant) -> Stats {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let mut c = Rexray {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap(),
        base,
        me: format!("rexray-{n:04}"),
        iid: String::new(),
        stats: Stats::default(),
    };
    // Agents start at different times.
    think(&mut rng, think_ms, deadline).await;
    if let Err(e) = c.dial().await {
        c.stats.error(LS, format!("{}: dial: {e}", c.me));
        return c.stats;
    }
    let prefix = format!("soak-{n:04}-");
    let mut k = 0;
    while TokioInstant::now() < deadline {
        let name = format!("{prefix}{k}");
        k += 1;
        let (mut made, mut attached) = (None, false);
        match c
            .cycle(
                &name,
                &prefix,
                &mut made,
                &mut attached,
                &mut rng,
                think_ms,
                deadline,
            )
            .await
        {
            Ok(()) => c.stats.count("REX-Ray cycles"),
            Err(e) => {
                c.stats.error(LS, format!("{}: {e}", c.me));
                c.clean_up(&mut made, &mut attached).await;
            }
        }
        think(&mut rng, think_ms, deadline).await;
    }
    c.stats
}

// ---------------------------------------------------------------------------------------------
// Frameworks

const MESOS: &str = "storage offers";

/// What a framework ends with: its id and the volumes it holds (id → its MOUNT resource).
struct FrameworkEnd {
    id: String,
    held: BTreeMap<String, Value>,
    stats: Stats,
}

/// POST a call; anything but 202 with an empty body is an error.
async fn post(
    book: &OfferBook,
    stats: &mut Stats,
    call: &'static str,
    body: Value,
) -> Result<(), String> {
    let t0 = Instant::now();
    let (status, text) = book.fw.post(&body).await;
    stats.record(MESOS, call, t0);
    if status != 202 || !text.is_empty() {
        return Err(format!("{call}: {status} {text}"));
    }
    Ok(())
}

async fn framework_client(
    n: usize,
    base: String,
    think_ms: u64,
    deadline: TokioInstant,
) -> FrameworkEnd {
    let mut rng = StdRng::seed_from_u64(1_000_000 + n as u64);
    let mut stats = Stats::default();
    // The subscribe helper panics on any deviation; run it in its own task to count that.
    let t0 = Instant::now();
    let sub =
        tokio::spawn(
            async move { framework::subscribe(&base, MesosContentType::Json, None).await },
        )
        .await;
    let fw = match sub {
        Ok(fw) => fw,
        Err(e) => {
            stats.error(MESOS, format!("framework {n}: SUBSCRIBE: {e}"));
            return FrameworkEnd {
                id: String::new(),
                held: BTreeMap::new(),
                stats,
            };
        }
    };
    stats.record(MESOS, "subscribe", t0);
    let mut book = OfferBook::new(fw);
    let id = book.fw.id.clone();
    let mut held: BTreeMap<String, Value> = BTreeMap::new();
    let mut sent: HashSet<String> = HashSet::new();
    let within = Duration::from_secs(3 * HEARTBEAT_SECS);
    let mut k = 0;
    let result: Result<(), String> = async {
        loop {
            let offer = match tokio::time::timeout_at(deadline, book.take_offer(within)).await {
                Err(_) => return Ok(()),
                Ok(o) => o?,
            };
            think(&mut rng, think_ms, deadline).await;
            if TokioInstant::now() >= deadline {
                // Give it back rather than leave it outstanding.
                book.offers.push(offer);
                return Ok(());
            }
            let r: f64 = rng.random();
            let op = format!("soak-{n}-{k}");
            k += 1;
            let mut target = None;
            let destroy = !held.is_empty() && (r < 0.25 || (r < 0.55 && held.len() >= HELD_MAX));
            let (call, operation) = if destroy {
                let vol = held
                    .keys()
                    .nth(rng.random_range(0..held.len()))
                    .unwrap()
                    .clone();
                let source = held[&vol].clone();
                target = Some(vol);
                (
                    "DESTROY_DISK",
                    Some(json!({"type": "ACCEPT", "framework_id": {"value": id},
                        "accept": {"offer_ids": [offer["id"].clone()],
                            "operations": [{"type": "DESTROY_DISK", "id": {"value": op},
                                "destroy_disk": {"source": source}}],
                            "filters": {"refuse_seconds": 0}}})),
                )
            } else if r < 0.55 {
                ("CREATE_DISK", Some(create_disk_call(&id, &offer, &op, 1.0)))
            } else {
                ("DECLINE", None)
            };
            let Some(accept) = operation else {
                // Decline this offer and every other one outstanding, so that the pool's share
                // goes round.
                book.drain();
                let ids: Vec<Value> = std::iter::once(offer["id"].clone())
                    .chain(book.offers.drain(..).map(|o| o["id"].clone()))
                    .collect();
                post(
                    &book,
                    &mut stats,
                    "DECLINE",
                    json!({"type": "DECLINE",
                    "framework_id": {"value": id},
                    "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 1.0}}}),
                )
                .await?;
                continue;
            };
            sent.insert(op.clone());
            let t0 = Instant::now();
            post(&book, &mut stats, "ACCEPT", accept).await?;
            let done = tokio::time::timeout(Duration::from_secs(60), book.terminal(&op, within))
                .await
                .map_err(|_| format!("{op}: no terminal status within 60 s"))??;
            match done["state"].as_str() {
                Some("OPERATION_FINISHED") => {
                    stats.record(MESOS, call, t0);
                    if call == "CREATE_DISK" {
                        let disk = done["converted_resources"][0].clone();
                        let Some(vol) = disk["disk"]["source"]["id"].as_str() else {
                            return Err(format!("{op}: FINISHED without a volume: {done}"));
                        };
                        if disk["disk"]["source"]["type"] != "MOUNT" {
                            return Err(format!("{op}: FINISHED with {disk}"));
                        }
                        if held.insert(vol.to_string(), disk.clone()).is_some() {
                            return Err(format!("{op}: volume {vol} made twice"));
                        }
                    } else if let Some(vol) = &target {
                        // What a DESTROY_DISK gives back is the pool's RAW disk.
                        let raw = &done["converted_resources"][0]["disk"]["source"];
                        if raw["type"] != "RAW" || raw.get("id").is_some() {
                            return Err(format!("{op}: DESTROY_DISK of {vol} converted to {raw}"));
                        }
                        held.remove(vol);
                    }
                    stats.count(if call == "CREATE_DISK" {
                        "CREATE_DISK finished"
                    } else {
                        "DESTROY_DISK finished"
                    });
                }
                Some("OPERATION_DROPPED") => {
                    stats.count("operations dropped (offer rescinded meanwhile)")
                }
                _ => return Err(format!("{op} ({call}): {done}")),
            }
            if done.get("uuid").is_some() {
                post(
                    &book,
                    &mut stats,
                    "ACKNOWLEDGE_OPERATION_STATUS",
                    json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": id},
                        "acknowledge_operation_status": done}),
                )
                .await?;
            }
            // Statuses left are resends of operations already seen; one for an operation
            // never sent breaks the protocol.
            book.drain();
            for s in book.statuses.drain(..) {
                let of = s["operation_id"]["value"].as_str().unwrap_or_default();
                if !sent.contains(of) {
                    return Err(format!("a status for an operation never sent: {s}"));
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        stats.error(MESOS, format!("framework {id}: {e}"));
    }
    book.drain();
    for v in book.violations.drain(..) {
        stats.error(MESOS, format!("framework {id}: {v}"));
    }
    FrameworkEnd { id, held, stats }
}

// ---------------------------------------------------------------------------------------------
// Polly's process: memory and file descriptors

/// One reading of `/proc/<pid>`: seconds since the start, VmRSS in KiB, open descriptors,
/// threads, CPU seconds used so far (user + system).
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    cpu_secs: f64,
}

/// User + system CPU seconds of `pid` (fields 14 and 15 of `/proc/<pid>/stat`, after the
/// parenthesised command name).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// VmRSS (KiB), open descriptors and threads of `pid`.
fn read_proc(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// Least-squares slope of `y` over `t`, per second.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mt, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (t, y)| {
        (a + (t - mt) * (y - my), b + (t - mt) * (t - mt))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// The memory verdict over the load window (`samples`: those taken until the clients'
/// deadline): the trend over the whole window and over its second half (MiB/min), and
/// whether it is flat: its growth over the second half is under 2% of its mean (at least
/// 1 MiB).
fn memory_trend(samples: &[Sample]) -> (f64, f64, bool) {
    let mib = |s: &Sample| (s.t, s.rss_kib as f64 / 1024.0);
    let all: Vec<(f64, f64)> = samples.iter().map(mib).collect();
    let half: Vec<(f64, f64)> = samples[samples.len() / 2..].iter().map(mib).collect();
    let (whole, second) = (slope(&all), slope(&half));
    let span = half.last().map(|l| l.0 - half[0].0).unwrap_or(0.0);
    let mean = half.iter().map(|p| p.1).sum::<f64>() / half.len().max(1) as f64;
    let flat = second * span <= (mean * 0.02).max(1.0);
    (whole * 60.0, second * 60.0, flat)
}

/// The interval of the RSS course in the report: a multiple of 5 s giving about a dozen
/// points over the run.
fn rss_step(samples: &[Sample]) -> u64 {
    let span = samples.last().map_or(0.0, |s| s.t);
    (((span / 12.0) / 5.0).ceil() as u64).max(1) * 5
}

/// VmRSS (MiB) of the first sample at or after each multiple of [`rss_step`], e.g.
/// `0 s 13.3, 10 s 80.1, …`, so that a plateau or a steady climb shows in the report.
fn rss_course(samples: &[Sample]) -> String {
    let step = rss_step(samples) as f64;
    let mut out = Vec::new();
    let mut next = 0.0;
    for s in samples {
        if s.t + 0.5 >= next {
            out.push(format!(
                "{:.0} s {:.1} ({} threads)",
                s.t,
                s.rss_kib as f64 / 1024.0,
                s.threads
            ));
            next = ((s.t / step).round() + 1.0) * step;
        }
    }
    out.join(", ")
}

// ---------------------------------------------------------------------------------------------
// The run

/// The store and the `vfs` roots after the run must hold exactly what the clients hold.
async fn final_checks(polly: &harness::Polly, ends: &[FrameworkEnd], stats: &mut Stats) {
    const STORE: &str = "store and back-end at the end";
    // Operations a framework stopped waiting for may still run: wait until none is left.
    let mut waited = 0;
    let dump = loop {
        let dump = match polly.client().dump().await {
            Ok(d) => d,
            Err(e) => {
                stats.error(STORE, format!("admin dump: {e}"));
                return;
            }
        };
        let busy = !dump.intents.is_empty()
            || dump
                .volumes
                .iter()
                .any(|v| v.status != VolumeStatus::Available)
            || dump
                .operations
                .iter()
                .any(|o| o.state == "OPERATION_PENDING");
        if !busy || waited >= 600 {
            break dump;
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !dump.intents.is_empty() {
        stats.error(STORE, format!("intents left: {:?}", dump.intents));
    }
    let rexray: Vec<_> = dump
        .volumes
        .iter()
        .filter(|v| v.service == REXRAY_SVC)
        .collect();
    if !rexray.is_empty() {
        stats.error(
            STORE,
            format!(
                "{} REX-Ray volumes left, e.g. {:?}",
                rexray.len(),
                rexray[0]
            ),
        );
    }
    let on_disk = harness::vfs_volume_dirs(&polly.data_dir, REXRAY_SVC).len();
    if on_disk != 0 {
        stats.error(
            STORE,
            format!("{on_disk} REX-Ray volume directories left in the vfs root"),
        );
    }
    let held: BTreeSet<(String, String)> = ends
        .iter()
        .flat_map(|e| e.held.keys().map(|v| (e.id.clone(), v.clone())))
        .collect();
    let reserved: BTreeSet<(String, String)> = dump
        .reservations
        .iter()
        .map(|r| (r.framework_id.clone(), r.volume_id.clone()))
        .collect();
    if held != reserved {
        let extra: Vec<_> = reserved.difference(&held).take(3).collect();
        let missing: Vec<_> = held.difference(&reserved).take(3).collect();
        stats.error(
            STORE,
            format!(
                "reservations ({}) differ from the volumes frameworks hold ({}): not held {extra:?}, \
                 not reserved {missing:?}",
                reserved.len(),
                held.len()
            ),
        );
    }
    let pool: BTreeSet<String> = dump
        .volumes
        .iter()
        .filter(|v| v.service == POOL_SVC)
        .map(|v| v.id.clone())
        .collect();
    let held_ids: BTreeSet<String> = held.iter().map(|(_, v)| v.clone()).collect();
    if pool != held_ids {
        stats.error(
            STORE,
            format!(
                "{} pool volumes in the store, {} held by frameworks",
                pool.len(),
                held_ids.len()
            ),
        );
    }
    let on_disk = harness::vfs_volume_dirs(&polly.data_dir, POOL_SVC).len();
    if on_disk != held_ids.len() {
        stats.error(
            STORE,
            format!(
                "{on_disk} pool volume directories in the vfs root, {} held",
                held_ids.len()
            ),
        );
    }
    for v in dump.volumes.iter().filter(|v| v.service == POOL_SVC) {
        if v.attachments.len() != 1 {
            stats.error(
                STORE,
                format!("held volume {} has attachments {:?}", v.id, v.attachments),
            );
        }
    }
}

fn main() {
    let full = load::full_run();
    let p = Params::from_env(full);
    // Each client and framework holds a connection or two, and so does the server.
    let need = 2 * (p.clients as u64 + 3 * p.frameworks as u64) + 1024;
    let (fd_soft, fd_hard) = raise_fd_limit(need);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (table, samples, errors) = rt.block_on(run(p, (fd_soft, fd_hard)));
    println!("{table}");
    if full {
        load::write_table("soak", &table);
        let mut csv = String::from("secs,rss_kib,fds,threads,cpu_secs\n");
        for s in &samples {
            csv.push_str(&format!(
                "{:.1},{},{},{},{:.2}\n",
                s.t, s.rss_kib, s.fds, s.threads, s.cpu_secs
            ));
        }
        std::fs::write(load::out_dir().join("soak-samples.csv"), csv).unwrap();
    }
    assert_eq!(errors, 0, "the soak saw {errors} errors (listed above)");
}

async fn run(p: Params, fd_limit: (u64, u64)) -> (String, Vec<Sample>, u64) {
    let base = load::base_dir();
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("soak")
        .tempdir_in(&base)
        .unwrap();
    // POLLY_SOAK_WRAP: a prefix command for the server, e.g. `heaptrack -o /tmp/polly-soak`.
    let wrap: Vec<String> = std::env::var("POLLY_SOAK_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let polly = harness::Polly::start_wrapped(&dir.path().join("data"), Some(&config(&p)), &wrap);
    let pid = polly
        .server_pid()
        .expect("the polly process under POLLY_SOAK_WRAP");

    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                match read_proc(pid) {
                    Some((rss_kib, fds, threads)) => samples.push(Sample {
                        t: start.elapsed().as_secs_f64(),
                        rss_kib,
                        fds,
                        threads,
                        cpu_secs: cpu_secs(pid).unwrap_or(0.0),
                    }),
                    None => break,
                }
            }
            samples
        })
    };

    let deadline = TokioInstant::now() + Duration::from_secs(p.secs);
    let frameworks: Vec<_> = (0..p.frameworks)
        .map(|n| {
            tokio::spawn(framework_client(
                n,
                polly.offers.clone(),
                p.fw_think_ms,
                deadline,
            ))
        })
        .collect();
    let clients: Vec<_> = (0..p.clients)
        .map(|n| {
            tokio::spawn(rexray_client(
                n,
                polly.libstorage.clone(),
                p.think_ms,
                deadline,
            ))
        })
        .collect();

    let mut stats = Stats::default();
    for c in clients {
        match c.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error(LS, format!("a client task failed: {e}")),
        }
    }
    let mut ends = Vec::new();
    for f in frameworks {
        match f.await {
            Ok(mut e) => {
                stats.merge(std::mem::take(&mut e.stats));
                ends.push(e);
            }
            Err(e) => stats.error(MESOS, format!("a framework task failed: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    // POLLY_SOAK_SAMPLES: every sample as tab-separated values, for a closer look than the
    // report's course.
    if let Ok(path) = std::env::var("POLLY_SOAK_SAMPLES") {
        let mut tsv = String::from("t_s\trss_kib\tthreads\tfds\tcpu_s\n");
        for s in &samples {
            tsv += &format!(
                "{:.1}\t{}\t{}\t{}\t{:.2}\n",
                s.t, s.rss_kib, s.threads, s.fds, s.cpu_secs
            );
        }
        if let Err(e) = std::fs::write(&path, tsv) {
            eprintln!("soak: cannot write {path}: {e}");
        }
    }
    let mut polly = polly;
    if !polly.alive() {
        stats.error("process", "polly exited during the run".into());
    } else {
        final_checks(&polly, &ends, &mut stats).await;
    }
    if !wrap.is_empty() && polly.stop_wrapped(Duration::from_secs(900)).is_none() {
        eprintln!("soak: the POLLY_SOAK_WRAP command did not exit within 900 s of SIGTERM");
    }
    drop(polly);
    let errors = stats.total_errors();
    let table = report(&p, &stats, &samples, elapsed, fd_limit);
    (table, samples, errors)
}

fn report(
    p: &Params,
    stats: &Stats,
    samples: &[Sample],
    elapsed: f64,
    fd_limit: (u64, u64),
) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Soak: one `polly serve` (the {build} binary, `vfs` on disk, HTTP on loopback) for \
         {secs} s, {el:.1} s until every client finished its last cycle, with at once {c} \
         simulated REX-Ray 0.11 clients on the libStorage façade (each its own instance id; \
         start-up dial, then `volume ls`, `create`, `mount`, `unmount`, `rm` in a loop with a \
         think time of 0 – {tt} ms between calls) and {f} Mesos frameworks on the storage-offer \
         endpoint over {a} agents (JSON; per offer, after 0 – {ft} ms: ACCEPT a DESTROY_DISK of \
         a held volume 25%, a CREATE_DISK of 1 MB 30% (55% while holding none; a DESTROY_DISK \
         instead while holding {hm}, the most a framework keeps), else DECLINE that offer and \
         any other outstanding; every terminal status acknowledged). Clients and server share the machine; one tokio runtime with 2 worker \
         threads drives all clients. Open-files limit {fs} (hard {fh}).\n",
        build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        secs = p.secs,
        el = elapsed,
        hm = HELD_MAX,
        c = p.clients,
        tt = 2 * p.think_ms,
        f = p.frameworks,
        a = p.agents,
        ft = 2 * p.fw_think_ms,
        fs = fd_limit.0,
        fh = fd_limit.1,
    );
    let _ = writeln!(t, "| surface | call | requests | p50 | p99 | max |");
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|");
    let mut per_surface: BTreeMap<&str, usize> = BTreeMap::new();
    for ((surface, call), lat) in &stats.lat {
        let l = Latencies::from(lat.clone());
        *per_surface.entry(surface).or_default() += l.len();
        let what = match *call {
            "CREATE_DISK" | "DESTROY_DISK" => format!("ACCEPT {call} → OPERATION_FINISHED"),
            "ACCEPT" => "ACCEPT → 202".to_string(),
            other => other.to_string(),
        };
        let _ = writeln!(
            t,
            "| {surface} | {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            l.len(),
            l.ms(0.5),
            l.ms(0.99),
            l.max_ms()
        );
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "| surface | requests | requests/s | errors |");
    let _ = writeln!(t, "|---|---:|---:|---:|");
    let mut surfaces: BTreeSet<&str> = per_surface.keys().copied().collect();
    surfaces.extend(stats.errors.keys().copied());
    for s in surfaces {
        let n = per_surface.get(s).copied().unwrap_or(0);
        let _ = writeln!(
            t,
            "| {s} | {n} | {:.0} | {} |",
            n as f64 / elapsed,
            stats.errors.get(s).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(t);
    let counts: Vec<String> = stats
        .counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = writeln!(t, "Outcomes: {}.\n", counts.join("; "));
    if samples.len() >= 2 {
        let rss = |s: &Sample| s.rss_kib as f64 / 1024.0;
        let max = samples.iter().map(rss).fold(0.0, f64::max);
        // The verdict is over the 60 s (POLLY_SOAK_SECS) of load. After the deadline the
        // clients finish the cycle they are in without think times: a burst of up to one
        // call per client at once, a different load, reported on its own.
        let in_window = samples
            .iter()
            .take_while(|s| s.t <= p.secs as f64 + 0.5)
            .count()
            .max(2)
            .min(samples.len());
        let (window, after) = samples.split_at(in_window);
        let (whole, second, flat) = memory_trend(window);
        let after = match (after.iter().map(rss).reduce(f64::max), after.last()) {
            (Some(max_after), Some(last)) => format!(
                " In the {n} s after the load window (the clients finish their cycle without \
                 think times): max {max_after:.1} MiB, {th} threads at the end.",
                n = after.len(),
                th = last.threads,
            ),
            _ => String::new(),
        };
        let fds_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
        let threads_max = samples.iter().map(|s| s.threads).max().unwrap_or(0);
        let _ = writeln!(
            t,
            "Polly's memory (VmRSS, {n} samples, one a second): first {first:.1} MiB, last \
             {last:.1} MiB, max {max:.1} MiB; trend over the {secs} s of load \
             {whole:+.2} MiB/min, over its second half {second:+.2} MiB/min: **{verdict}**.{after} \
             Open file descriptors: \
             first {f0}, last {f1}, max {fds_max}; threads: max {threads_max}. CPU used by Polly: {cpu:.1} s in \
             {span:.0} s ({load:.2} cores on average). VmRSS (MiB) and threads every {step} s: {course}.\n",
            n = samples.len(),
            secs = p.secs,
            first = rss(&samples[0]),
            last = rss(samples.last().unwrap()),
            verdict = if flat {
                "memory flat"
            } else {
                "memory growing"
            },
            f0 = samples[0].fds,
            f1 = samples.last().unwrap().fds,
            cpu = samples.last().unwrap().cpu_secs,
            span = samples.last().unwrap().t,
            load = samples.last().unwrap().cpu_secs / samples.last().unwrap().t.max(1.0),
            step = rss_step(samples),
            course = rss_course(samples),
        );
    }
    let total = stats.total_errors();
    let _ = writeln!(t, "Errors: **{total}** (target 0).");
    for (surface, msgs) in &stats.messages {
        for m in msgs {
            let _ = writeln!(t, "- {surface}: {m}");
        }
    }
    t
}
