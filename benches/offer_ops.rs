//! Load benchmarks of disk offers and provisioning against Polly's real server
//! (`polly::server::serve`, started in this process on loopback listeners, with its store and
//! `vfs` roots on disk), each beside a baseline measured in the same run:
//!
//! 1. **Accept → OPERATION_FINISHED.** 100 frameworks subscribe to the storage-offer endpoint
//!    (JSON, over HTTP), each is offered a share of one `vfs` pool on its own agent, and all 100
//!    ACCEPT a CREATE_DISK at the same moment; the latency of each is from sending the ACCEPT
//!    to reading OPERATION_FINISHED on the framework's stream (create, reserve and attach
//!    done, every step durable). Repeated over several rounds. Baselines: a trivial handler
//!    on the same axum stack answering 202 to the same 100 concurrent POSTs, and one durable
//!    store write (`Store::apply`, flushed) on the same disk.
//! 2. **Provisioning throughput.** Volumes created through the admin API
//!    (`POST /admin/volumes`) by many concurrent clients on `fault(vfs)` with 100 ms added to
//!    every driver call; baseline: the same run with 0 ms.
//!
//! `cargo bench --bench offer_ops` runs the full load and writes its table to
//! `<target>/polly-bench/offer_ops.md` for `scripts/bench.sh`; without `--bench` (as under
//! `cargo test --all-targets`) it runs a seconds-long smoke version so the code stays working.
//! Files go under `POLLY_BENCH_DIR` (default cargo's `CARGO_TARGET_TMPDIR`): not a tmpfs.
//! `POLLY_BENCH_ACCEPT_ONLY=1` runs only the concurrent accepts and prints their figures (no
//! table), with `POLLY_BENCH_ROUNDS` rounds when set: for bisecting and profiling.

#[path = "load/frameworks.rs"]
mod frameworks;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use polly::config::Config;
use polly::mesos::client::MesosContentType;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use frameworks::{create_disk_call, OfferBook};
use harness::fakes::framework;

/// The longest a framework waits for an event on its stream.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Params {
    frameworks: usize,
    rounds: usize,
    volumes: usize,
    clients: usize,
    latency_ms: u64,
}

/// A running server: its admin and offer endpoint URLs, stopped when dropped.
struct Server {
    admin: String,
    offers: String,
    stop: CancellationToken,
    /// The server's store, to count its durable writes and flushes.
    store: polly::store::Store,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = format!("http://{}", l.local_addr().unwrap());
    (l, a)
}

/// Start Polly with `config` (TOML without `data_dir`) in a fresh directory of the bench disk.
async fn start(config: &str) -> Server {
    let base = load::base_dir();
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("offer-ops")
        .tempdir_in(base)
        .unwrap();
    let mut cfg = Config::from_toml(config).unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    cfg.validate().unwrap();
    let prepared = polly::server::prepare(cfg).unwrap();
    let store = prepared.manager.store().clone();
    let (admin_l, admin) = listener().await;
    let (ls_l, _) = listener().await;
    let (offers_l, offers) = listener().await;
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        polly::server::serve(
            prepared,
            admin_l,
            ls_l,
            offers_l,
            None,
            None,
            s.cancelled_owned(),
        )
        .await
        .unwrap()
    });
    let http = reqwest::Client::new();
    loop {
        let ok = http
            .get(format!("{admin}/admin/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Server {
        admin,
        offers,
        stop,
        store,
        _dir: dir,
    }
}

fn offer_config(frameworks: usize) -> String {
    let mut agents = String::new();
    let mut instances = String::new();
    for i in 0..frameworks {
        agents.push_str(&format!(
            "  {{ id = \"agent-{i}\", hostname = \"host-{i}\" }},\n"
        ));
        instances.push_str(&format!("agent-{i} = \"i-{i}\"\n"));
    }
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"

[mesos]
agents = [
{agents}]

[offers]
poll_interval_secs = 1.0
allocation_interval_ms = 100
offer_timeout_secs = 3600
heartbeat_interval_secs = 3600
[offers.instances]
{instances}"#
    )
}

fn fault_config(latency_ms: u64) -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
[services.fault]
latency_ms = {latency_ms}

[offers]
poll_interval_secs = 3600
"#
    )
}

/// Accept latencies in µs over `rounds` × `frameworks` concurrent CREATE_DISKs, and how many
/// accepts were DROPPED (their offer was rescinded meanwhile: the pool's free space, read
/// from the file system, shrank) and retried with a newer offer.
/// Latencies (µs), accepts dropped, and the store's durable writes and flushes meanwhile.
async fn accept_latency(p: &Params) -> (Vec<u64>, usize, (u64, u64)) {
    let server = start(&offer_config(p.frameworks)).await;
    let mut clients = Vec::new();
    for _ in 0..p.frameworks {
        let fw = framework::subscribe(&server.offers, MesosContentType::Json, None).await;
        clients.push(OfferBook::new(fw));
    }
    // Offers are not rebalanced while outstanding (as with a Mesos master): a framework that
    // subscribed first may hold the whole pool. Once all are subscribed, each gives back what
    // it holds, so the next round divides the pool among all of them.
    for c in clients.iter_mut() {
        c.drain();
        let ids: Vec<Value> = c.offers.drain(..).map(|o| o["id"].clone()).collect();
        if !ids.is_empty() {
            c.fw.call(
                json!({"type": "DECLINE", "framework_id": {"value": c.fw.id},
                "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}}),
            )
            .await;
        }
    }
    let barrier = Arc::new(Barrier::new(p.frameworks));
    let rounds = p.rounds;
    let (writes0, syncs0) = (server.store.durable_writes(), server.store.durable_syncs());
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let (mut lat, mut dropped) = (Vec::new(), 0);
                for r in 0..rounds {
                    // Everyone holds an offer, then all accept at once.
                    let mut offer = c.take_offer(WAIT).await.unwrap();
                    c.offers.push(offer);
                    barrier.wait().await;
                    let mut attempt = 0;
                    loop {
                        offer = c.take_offer(WAIT).await.unwrap();
                        let op = format!("op-{r}-{attempt}");
                        let call = create_disk_call(&c.fw.id, &offer, &op, 1.0);
                        let t0 = Instant::now();
                        c.fw.call(call).await;
                        let done = c.terminal(&op, WAIT).await.unwrap();
                        let us = t0.elapsed().as_micros() as u64;
                        if done["state"] == "OPERATION_DROPPED" {
                            dropped += 1;
                            attempt += 1;
                            continue;
                        }
                        assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
                        lat.push(us);
                        c.fw.call(json!({"type": "ACKNOWLEDGE_OPERATION_STATUS",
                            "framework_id": {"value": c.fw.id},
                            "acknowledge_operation_status": done}))
                            .await;
                        break;
                    }
                    // Everyone has finished this round before the next one starts.
                    barrier.wait().await;
                }
                (lat, dropped)
            })
        })
        .collect();
    // The first framework task to fail ends the run at once: the others would otherwise wait
    // at the barrier for it forever.
    let results = futures::future::try_join_all(tasks)
        .await
        .expect("a framework task failed (its panic is printed above)");
    let (mut all, mut dropped) = (Vec::new(), 0);
    for (l, d) in results {
        all.extend(l);
        dropped += d;
    }
    let writes = server.store.durable_writes() - writes0;
    let syncs = server.store.durable_syncs() - syncs0;
    drop(server);
    (all, dropped, (writes, syncs))
}

/// The same concurrency against a trivial handler on the same HTTP stack: every client POSTs
/// at once, `rounds` times; latency of each POST → 202.
async fn baseline_latency(p: &Params) -> Vec<u64> {
    let (l, url) = listener().await;
    let app = axum::Router::new().route(
        "/api/v1/scheduler",
        axum::routing::post(|_body: axum::body::Bytes| async { axum::http::StatusCode::ACCEPTED }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let barrier = Arc::new(Barrier::new(p.frameworks));
    let tasks: Vec<_> = (0..p.frameworks)
        .map(|_| {
            let (barrier, url, rounds) = (barrier.clone(), url.clone(), p.rounds);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut lat = Vec::new();
                for _ in 0..rounds {
                    barrier.wait().await;
                    let t0 = Instant::now();
                    let r = http
                        .post(format!("{url}/api/v1/scheduler"))
                        .header("content-type", "application/json")
                        .body(r#"{"type":"ACCEPT"}"#)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Median µs of one durable store write on the bench disk (100 writes).
fn store_write_us() -> f64 {
    let dir = tempfile::Builder::new()
        .prefix("offer-ops-store")
        .tempdir_in(load::base_dir())
        .unwrap();
    let store = polly::store::Store::open(&dir.path().join("store")).unwrap();
    let mut lat = Vec::new();
    for i in 0..100u64 {
        let t0 = Instant::now();
        store
            .apply(&[polly::store::Op::PutMeta(
                format!("bench.{i}"),
                "x".repeat(200),
            )])
            .unwrap();
        lat.push(t0.elapsed().as_micros() as u64);
    }
    load::summary(lat).0 * 1000.0
}

/// Create `p.volumes` volumes through the admin API with `p.clients` concurrent clients;
/// returns (volumes/s, median ms, p99 ms).
async fn provisioning(p: &Params, latency_ms: u64) -> (f64, f64, f64) {
    let server = start(&fault_config(latency_ms)).await;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..p.clients)
        .map(|_| {
            let (next, admin, total) = (next.clone(), server.admin.clone(), p.volumes);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let t = Instant::now();
                    let r = http
                        .post(format!("{admin}/admin/volumes"))
                        .json(&json!({"service": "vfs", "name": format!("v{n}"), "size_bytes": 1 << 20}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                    lat.push(t.elapsed().as_micros() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    // Every volume is really there, once.
    let listed: Value = reqwest::get(format!("{}/admin/volumes", server.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["volumes"].as_array().unwrap().len(), p.volumes);
    drop(server);
    let (med, p99) = load::summary(all);
    (p.volumes as f64 / secs, med, p99)
}

fn main() {
    let full = load::full_run();
    let p = if full {
        Params {
            frameworks: 100,
            rounds: 10,
            volumes: 5000,
            clients: 256,
            latency_ms: 100,
        }
    } else {
        Params {
            frameworks: 4,
            rounds: 2,
            volumes: 40,
            clients: 8,
            latency_ms: 20,
        }
    };
    let p = Params {
        rounds: std::env::var("POLLY_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(p.rounds),
        ..p
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    if std::env::var_os("POLLY_BENCH_ACCEPT_ONLY").is_some() {
        // Only the concurrent accepts (bisecting, profiling): no table is written.
        rt.block_on(async move {
            let (acc, dropped, (writes, syncs)) = accept_latency(&p).await;
            let (am, ap) = load::summary(acc);
            println!(
                "{f} at once, {r} rounds: median {am:.2} ms, p99 {ap:.2} ms; {dropped} dropped; \
                 {writes} durable writes, {syncs} flushes ({wps:.1} writes per flush)",
                f = p.frameworks,
                r = p.rounds,
                wps = writes as f64 / syncs.max(1) as f64,
            );
        });
        return;
    }
    rt.block_on(async move {
        let base = baseline_latency(&p).await;
        let (acc, dropped, (writes, syncs)) = accept_latency(&p).await;
        // The floor: one framework, one ACCEPT at a time.
        let (alone, _, _) = accept_latency(&Params {
            frameworks: 1,
            rounds: p.rounds * 2,
            ..p
        })
        .await;
        let alone_n = alone.len();
        let (om, op) = load::summary(alone);
        let write_us = tokio::task::spawn_blocking(store_write_us).await.unwrap();
        let (bm, bp) = load::summary(base);
        let (am, ap) = load::summary(acc.clone());
        let (slow_rate, slow_med, slow_p99) = provisioning(&p, p.latency_ms).await;
        let (fast_rate, fast_med, fast_p99) = provisioning(&p, 0).await;
        let verdict = |ok: bool| if ok { "meets" } else { "misses" };
        let table = format!(
            "Accept → OPERATION_FINISHED: {f} frameworks on one `vfs` pool, each ACCEPTing a \
             CREATE_DISK of 1 MB at the same moment, {r} rounds ({n} accepts), JSON over HTTP on \
             loopback to an in-process `polly serve`; client and server share the machine.\n\n\
             | what | samples | median | p99 |\n|---|---:|---:|---:|\n\
             | baseline: trivial handler, same axum stack, {f} concurrent POSTs → 202 | {bn} | {bm:.2} ms | {bp:.2} ms |\n\
             | baseline: one durable store write (`Store::apply`, flushed), same disk | 100 | {w:.2} ms | |\n\
             | one framework, one ACCEPT at a time: ACCEPT → OPERATION_FINISHED | {alone_n} | {om:.2} ms | {op:.2} ms |\n\
             | {f} at once: ACCEPT → OPERATION_FINISHED (create + reserve + attach, `vfs`) | {n} | {am:.2} ms | {ap:.2} ms |\n\n\
             {dropped} accepts found their offer rescinded (DROPPED, retried with a newer \
             offer; not in the figures). During the concurrent rounds the store made {writes} \
             durable writes with {syncs} flushes (group commit: {wps:.1} writes per flush).\n\n\
             Median accept latency: **{am:.2} ms**, {ra:.1}× the trivial handler and {rw:.1}× one \
             durable store write; it {va} the ≤ 5 ms target ({rt:.2}× the target).\n\n\
             Provisioning: {v} volumes of 1 MiB created through `POST /admin/volumes` by {c} \
             concurrent clients on `fault(vfs)`.\n\n\
             | driver latency per call | volumes/s | median create | p99 create |\n|---|---:|---:|---:|\n\
             | baseline: 0 ms | {fr:.0} | {fm:.2} ms | {fp:.2} ms |\n\
             | {l} ms | {sr:.0} | {sm:.2} ms | {sp:.2} ms |\n\n\
             Throughput with {l} ms per driver call: **{sr:.0} volumes/s**, {rr:.2}× the 0 ms \
             baseline; it {vp} the ≥ 500 volumes/s target ({rp:.2}× the target).\n",
            f = p.frameworks,
            r = p.rounds,
            n = acc.len(),
            bn = p.frameworks * p.rounds,
            wps = writes as f64 / syncs.max(1) as f64,
            w = write_us / 1000.0,
            ra = am / bm.max(0.001),
            rw = am / (write_us / 1000.0).max(0.001),
            va = verdict(am <= 5.0),
            rt = am / 5.0,
            v = p.volumes,
            c = p.clients,
            l = p.latency_ms,
            fr = fast_rate,
            fm = fast_med,
            fp = fast_p99,
            sr = slow_rate,
            sm = slow_med,
            sp = slow_p99,
            rr = slow_rate / fast_rate,
            vp = verdict(slow_rate >= 500.0),
            rp = slow_rate / 500.0,
        );
        println!("{table}");
        if full {
            load::write_table("offer_ops", &table);
        }
    });
}
