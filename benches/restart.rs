//! Start-up and memory of the real `polly serve` binary with a large store, each beside a
//! baseline measured in the same run:
//!
//! 1. **Restart to serving.** A data dir is populated with `volumes` `vfs` volumes through
//!    Polly's own `Manager` in this process (the same code path as the admin API's create,
//!    every volume durable in the store and present in the `vfs` back-end), then closed. Each
//!    run starts `polly serve` on that data dir and times start → the first libStorage
//!    `GET /volumes/vfs` that answers 200 with every volume; then stops it with SIGTERM.
//!    Baseline: the same binary with an empty data dir, start → the first successful list
//!    (of nothing). Medians of several runs, with min – max.
//! 2. **RSS.** `polly serve` on the same data dir, subscribed to the fake Mesos master
//!    (`tests/harness/fakes/master.rs`) that offers `agents` agents (and lists them through the
//!    operator API), after Polly knows every agent, one framework is subscribed to Polly's
//!    storage-offer endpoint and has received its first OFFERS (one offer round over all
//!    agents), and the façade has listed every volume once: VmRSS and VmHWM from
//!    `/proc/<pid>/status`. Baseline: an empty data dir, no master, after ready.
//!
//! `cargo bench --bench restart` runs the full sizes (100,000 volumes, 10,000 agents) and
//! writes `<target>/polly-bench/restart.md` and `rss.md` for `scripts/bench.sh`; extra
//! arguments `restart` / `rss` pick one part. Without `--bench` (as under
//! `cargo test --all-targets`) it runs a small smoke version. Files go under
//! `POLLY_BENCH_DIR` (default cargo's `CARGO_TARGET_TMPDIR`): not a tmpfs.
//! For profiling: `POLLY_BENCH_VOLUMES` and `POLLY_BENCH_AGENTS` change the sizes, and
//! `POLLY_BENCH_WRAP` starts the server through a wrapper program (see `Serve::spawn`);
//! `POLLY_BENCH_DATA` keeps the populated data dir there for the next run.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use polly::config::Config;
use polly::volumes::CreateVolume;

use harness::fakes::master as fake_master;

const BIN: &str = env!("CARGO_BIN_EXE_polly");

struct Params {
    volumes: usize,
    agents: usize,
    runs: usize,
}

fn base_dir() -> PathBuf {
    std::env::var_os("POLLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn out_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("polly-bench")
}

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n";

/// Creates `n` volumes in `data_dir` through Polly's manager (store + `vfs` driver, as
/// `polly serve --config <config>` opens them), 64 at a time, and closes the store.
fn populate(data_dir: &Path, config: &str, n: usize) -> Duration {
    let t0 = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = Config::from_toml(config).unwrap();
        cfg.data_dir = data_dir.to_path_buf();
        cfg.validate().unwrap();
        let prepared = polly::server::prepare(cfg).unwrap();
        let manager = prepared.manager.clone();
        drop(prepared);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (m, next) = (manager.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    m.create(CreateVolume {
                        service: "vfs".into(),
                        name: format!("vol-{i:06}"),
                        size_bytes: 1 << 30,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(manager.store().volumes().unwrap().len(), n);
    });
    drop(rt);
    t0.elapsed()
}

/// A running `polly serve`: its child process and addresses.
struct Serve {
    child: Child,
    admin: String,
    libstorage: String,
    offers: String,
    /// The lines printed after the addresses, each with when it was read.
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Serve {
    /// Spawns `polly serve` and waits only for its listen addresses (printed before start-up
    /// reconciliation), not for `polly: ready`.
    fn spawn(data_dir: &Path, config: &Path) -> Serve {
        // For profiling: POLLY_BENCH_WRAP names a program the server is started through
        // (given the binary and its arguments; it should `exec` them, keeping the pid that
        // is measured and signalled), e.g. a script that preloads a heap profiler.
        let mut cmd = match std::env::var_os("POLLY_BENCH_WRAP") {
            Some(wrap) => {
                let mut c = Command::new(wrap);
                c.arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = cmd
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--libstorage-listen", "127.0.0.1:0"])
            .args(["--offers-listen", "127.0.0.1:0"])
            .env_remove("POLLY_CONFIG")
            .env_remove("POLLY_ADMIN_TOKEN")
            .env("POLLY_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn polly");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let (mut admin, mut libstorage, mut offers) = (None, None, None);
        while admin.is_none() || libstorage.is_none() || offers.is_none() {
            let (_, line) = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("polly printed its addresses");
            if let Some(a) = line.strip_prefix("polly: admin API on ") {
                admin = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: libStorage on ") {
                libstorage = Some(a.to_string());
            } else if let Some(a) = line.strip_prefix("polly: storage offers on ") {
                offers = Some(a.to_string());
            }
        }
        Serve {
            child,
            admin: admin.unwrap(),
            libstorage: libstorage.unwrap(),
            offers: offers.unwrap(),
            lines: rx,
        }
    }

    /// SIGTERM, then wait for a clean exit (the store is closed when it returns).
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
        let st = self.child.wait().unwrap();
        assert!(st.success(), "polly serve exited with {st}");
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |k: &str| -> u64 {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in /proc/pid/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /volumes/vfs` until it answers 200 with `n` volumes; returns when it did.
async fn first_full_list(http: &reqwest::Client, libstorage: &str, n: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no full list within 300 s");
        if let Ok(r) = http.get(format!("{libstorage}/volumes/vfs")).send().await {
            if r.status().is_success() {
                if let Ok(body) = r.bytes().await {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let got = v.as_object().map_or(0, |o| o.len());
                    if got == n {
                        return Instant::now();
                    }
                    assert!(got <= n, "listed {got} volumes, {n} exist");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Start → first full list, `runs` times; also start → `polly: ready`.
async fn restarts(data_dir: &Path, config: &Path, n: usize, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let http = reqwest::Client::new();
    let (mut serving, mut ready) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let s = Serve::spawn(data_dir, config);
        let t1 = first_full_list(&http, &s.libstorage, n).await;
        serving.push((t1 - t0).as_secs_f64());
        // Ready is printed after start-up reconciliation; the list may answer before it.
        // Other status lines (the CSI endpoint's address) may come first.
        let t2 = tokio::task::block_in_place(|| loop {
            let (t, line) = s
                .lines
                .recv_timeout(Duration::from_secs(300))
                .expect("polly: ready");
            if line == "polly: ready" {
                break t;
            }
        });
        ready.push((t2 - t0).as_secs_f64());
        tokio::task::block_in_place(|| s.stop());
    }
    (serving, ready)
}

fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let build = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    format!(
        "{build}, {cores} cores, {mem:.0} GiB memory, Linux {}",
        kernel.trim()
    )
}

/// Agents known to `polly serve`, from its `mesos_agents` gauge.
async fn known_agents(http: &reqwest::Client, admin: &str) -> u64 {
    let Ok(r) = http.get(format!("{admin}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            k.ends_with("mesos_agents")
                .then(|| v.trim().parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let parts: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a == "restart" || *a == "rss")
        .collect();
    let want = |p: &str| parts.is_empty() || parts.contains(&p);
    let mut p = if full {
        Params {
            volumes: 100_000,
            agents: 10_000,
            runs: 5,
        }
    } else {
        Params {
            volumes: 200,
            agents: 50,
            runs: 2,
        }
    };
    // Other sizes, for profiling: POLLY_BENCH_VOLUMES, POLLY_BENCH_AGENTS.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    p.volumes = env("POLLY_BENCH_VOLUMES").unwrap_or(p.volumes);
    p.agents = env("POLLY_BENCH_AGENTS").unwrap_or(p.agents);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = base_dir();
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("restart")
        .tempdir_in(&base)
        .unwrap();
    // For profiling: POLLY_BENCH_DATA names a data dir kept between runs, populated by the
    // first run only.
    let kept = std::env::var_os("POLLY_BENCH_DATA").map(PathBuf::from);
    let full_dir = kept.clone().unwrap_or_else(|| dir.path().join("full"));
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let plain_cfg = dir.path().join("plain.toml");
    std::fs::write(&plain_cfg, SERVICES).unwrap();

    let marker = full_dir.join(format!("populated-{}", p.volumes));
    let took = if kept.is_some() && marker.exists() {
        Duration::ZERO
    } else {
        let took = populate(&full_dir, SERVICES, p.volumes);
        if kept.is_some() {
            std::fs::write(&marker, "").unwrap();
        }
        took
    };
    println!(
        "populated {} volumes in {:.1} s ({:.0}/s)",
        p.volumes,
        took.as_secs_f64(),
        p.volumes as f64 / took.as_secs_f64()
    );
    let machine = machine();

    if want("restart") {
        let (serving, ready) = rt.block_on(restarts(&full_dir, &plain_cfg, p.volumes, p.runs));
        let (b_serving, b_ready) = rt.block_on(restarts(&empty_dir, &plain_cfg, 0, p.runs));
        let (s_lo, s_hi) = range(&serving);
        let (b_lo, b_hi) = range(&b_serving);
        let (r_lo, r_hi) = range(&ready);
        let (br_lo, br_hi) = range(&b_ready);
        let m = med(&serving);
        let mut out = String::new();
        writeln!(
            out,
            "Restart to serving: `polly serve` ({machine}) on a data dir with \
             {v} `vfs` volumes (created through Polly's manager, {pop:.0} s to populate), \
             stopped with SIGTERM and started again; time from spawning the process to the \
             first libStorage `GET /volumes/vfs` answering 200 with all {v} volumes (polled \
             every 5 ms), and to `polly: ready` (after start-up reconciliation). {r} runs each; \
             baseline: the same binary and config with an empty data dir.\n\n\
             | data dir | runs | start → full list, median | min – max | start → ready, median | min – max |\n\
             |---|---:|---:|---|---:|---|\n\
             | baseline: empty | {r} | {bm:.3} s | {b_lo:.3} – {b_hi:.3} s | {brm:.3} s | {br_lo:.3} – {br_hi:.3} s |\n\
             | {v} volumes | {r} | {m:.3} s | {s_lo:.3} – {s_hi:.3} s | {rm:.3} s | {r_lo:.3} – {r_hi:.3} s |\n\n\
             Start → serving all {v} volumes: **{m:.2} s** median, {ratio:.1}× the empty baseline \
             (+{extra:.2} s); it {verdict} the ≤ 2 s target ({tr:.2}× the target).",
            v = p.volumes,
            pop = took.as_secs_f64(),
            r = p.runs,
            bm = med(&b_serving),
            brm = med(&b_ready),
            rm = med(&ready),
            ratio = m / med(&b_serving),
            extra = m - med(&b_serving),
            verdict = if m <= 2.0 { "meets" } else { "misses" },
            tr = m / 2.0,
        )
        .unwrap();
        println!("{out}");
        if full {
            std::fs::create_dir_all(out_path()).unwrap();
            std::fs::write(out_path().join("restart.md"), &out).unwrap();
        }
    }

    if want("rss") {
        let out = rt.block_on(rss(
            &p,
            &full_dir,
            &empty_dir,
            &plain_cfg,
            &dir.path().join("mesos.toml"),
            &machine,
        ));
        println!("{out}");
        if full {
            std::fs::create_dir_all(out_path()).unwrap();
            std::fs::write(out_path().join("rss.md"), &out).unwrap();
        }
    }
}

async fn rss(
    p: &Params,
    full_dir: &Path,
    empty_dir: &Path,
    plain_cfg: &Path,
    mesos_cfg: &Path,
    machine: &str,
) -> String {
    let http = reqwest::Client::new();
    // Baseline: empty data dir, no master, after ready.
    let s = tokio::task::block_in_place(|| Serve::spawn(empty_dir, plain_cfg));
    first_full_list(&http, &s.libstorage, 0).await;
    wait_ready(&http, &s.admin).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b_rss, b_hwm) = s.memory();
    tokio::task::block_in_place(|| s.stop());

    let agents: Vec<fake_master::FakeAgent> = (0..p.agents)
        .map(|i| fake_master::FakeAgent {
            id: format!("agent-S{i}"),
            hostname: format!("node-{i}.example"),
            region: "eu-1".into(),
            zone: if i % 2 == 0 { "eu-1a" } else { "eu-1b" }.into(),
            rack: format!("r{}", i % 100),
            operator_only: false,
        })
        .collect();
    let master = fake_master::Cluster::start(1, 5.0, agents).await;
    std::fs::write(
        mesos_cfg,
        format!(
            "{SERVICES}\n[mesos]\nmasters = [\"{m}\"]\noperator_agents = true\n{extra}\n\n\
             [offers]\nallocation_interval_ms = 1000\n",
            m = master.addr(0),
            // More `[mesos]` settings, for profiling (e.g. `content_type = "protobuf"`).
            extra = std::env::var("POLLY_BENCH_MESOS").unwrap_or_default(),
        ),
    )
    .unwrap();
    let s = tokio::task::block_in_place(|| Serve::spawn(full_dir, mesos_cfg));
    first_full_list(&http, &s.libstorage, p.volumes).await;
    wait_ready(&http, &s.admin).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = known_agents(&http, &s.admin).await;
        if n as usize >= p.agents {
            break;
        }
        if Instant::now() > deadline {
            let listed: serde_json::Value = http
                .get(format!("{}/admin/agents", s.admin))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let listed = listed.as_array().unwrap();
            let lost = listed.iter().filter(|a| a["lost"] == true).count();
            let mut ids: Vec<&str> = listed.iter().filter_map(|a| a["id"].as_str()).collect();
            ids.sort();
            panic!(
                "polly knows {n} of {} agents ({} listed, {lost} lost, first {:?})",
                p.agents,
                listed.len(),
                &ids[..ids.len().min(5)]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (k_rss, k_hwm) = s.memory();
    // One framework on the storage-offer endpoint: its first OFFERS is one round.
    let offered = first_offers(&http, &s.offers).await;
    assert!(offered > 0, "the round offered nothing");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss, hwm) = s.memory();
    tokio::task::block_in_place(|| s.stop());

    let mib = |kib: u64| kib as f64 / 1024.0;
    let target = 200.0;
    format!(
        "Memory of `polly serve` ({machine}), from `/proc/<pid>/status`. \
         Loaded: {v} `vfs` volumes in the store, subscribed to the fake Mesos master offering \
         {a} agents (also listed through the operator API's `GET_AGENTS`), measured once Polly \
         knows all {a} agents, after the libStorage façade listed all volumes once and one \
         framework subscribed to the storage-offer endpoint received its first OFFERS \
         ({offered} offers: one round over every agent). Baseline: empty data dir, no master, \
         after ready.\n\n\
         | server | VmRSS | VmHWM (peak) |\n|---|---:|---:|\n\
         | baseline: empty, no master | {brss:.1} MiB | {bhwm:.1} MiB |\n\
         | {v} volumes + {a} agents, before the offer round | {krss:.1} MiB | {khwm:.1} MiB |\n\
         | {v} volumes + {a} agents, after the offer round | {rss:.1} MiB | {hwm:.1} MiB |\n\n\
         Resident memory with {v} volumes and {a} agents: **{rss:.0} MiB** (peak {hwm:.0} MiB), \
         {ratio:.1}× the empty baseline; the peak {verdict} the ≤ 200 MB target \
         ({tr:.2}× the target, 200 MB = {tmib:.0} MiB).",
        v = p.volumes,
        a = p.agents,
        brss = mib(b_rss),
        krss = mib(k_rss),
        khwm = mib(k_hwm),
        bhwm = mib(b_hwm),
        rss = mib(rss),
        hwm = mib(hwm),
        ratio = rss as f64 / b_rss as f64,
        verdict = if (hwm as f64 * 1024.0) <= target * 1e6 {
            "meets"
        } else {
            "misses"
        },
        tr = hwm as f64 * 1024.0 / (target * 1e6),
        tmib = target * 1e6 / (1 << 20) as f64,
    )
}

async fn wait_ready(http: &reqwest::Client, admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ok = http
            .get(format!("{admin}/admin/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "not ready within 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SUBSCRIBE (JSON) to the storage-offer endpoint and read the stream until the first
/// OFFERS event; returns how many offers it held.
async fn first_offers(http: &reqwest::Client, offers: &str) -> usize {
    let body = serde_json::json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {"user": "root", "name": "rss-bench"}}
    });
    let mut resp = http
        .post(format!("{offers}/api/v1/scheduler"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "SUBSCRIBE");
    let mut dec = polly::mesos::recordio::Decoder::new(64 << 20);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), resp.chunk())
            .await
            .expect("OFFERS within 120 s")
            .unwrap()
            .expect("stream open");
        dec.push(&chunk);
        while let Some(rec) = dec.next_record().unwrap() {
            let ev: serde_json::Value = serde_json::from_slice(&rec).unwrap();
            if ev["type"] == "OFFERS" {
                return ev["offers"]["offers"].as_array().map_or(0, Vec::len);
            }
        }
    }
}
