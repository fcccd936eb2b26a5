//! Load benchmark of the libStorage façade: list (1,000 volumes), inspect, create, attach and
//! detach at 1, 16, 64 and 256 concurrent keep-alive clients on loopback, each level beside a
//! trivial handler on the same axum stack and the same client, measured in the same run (the
//! baseline). Prints and writes `<target>/polly-bench/facade.md` for `scripts/bench.sh`:
//! requests/s, median, p99 and the interquartile spread of the latency, and the ratios
//! against the baseline.
//!
//! `cargo bench --bench facade` runs the full load; without `--bench` (as under
//! `cargo test --all-targets`) it runs a seconds-long smoke version so the code stays working.

mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::libstorage::{router, LsState};
use polly::store::Store;
use polly::volumes::{CreateVolume, Manager, Service};
use tokio::net::TcpListener;

struct Params {
    volumes: usize,
    levels: Vec<usize>,
    warmup: Duration,
    measure: Duration,
}

/// What one client does in a loop.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// `GET /` on the trivial handler.
    Baseline,
    /// `GET /volumes/vfs`: every volume of the service.
    List,
    /// `GET /volumes/vfs/{id}`: one volume, a different one each time.
    Inspect,
    /// `POST /volumes/vfs`: a new volume with a name of its own.
    Create,
    /// `POST /volumes/vfs/{id}?attach` then `?detach` on the client's own volume, each
    /// timed into its own series.
    AttachDetach,
}

#[derive(Default)]
struct Series {
    lat_us: Vec<u32>,
}

struct Figure {
    requests: usize,
    rps: f64,
    median_ms: f64,
    p99_ms: f64,
    p25_ms: f64,
    p75_ms: f64,
}

impl Series {
    fn figure(mut self, measure: Duration) -> Figure {
        assert!(
            !self.lat_us.is_empty(),
            "no request completed in the window"
        );
        self.lat_us.sort_unstable();
        let all = &self.lat_us;
        let pct = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        Figure {
            requests: all.len(),
            rps: all.len() as f64 / measure.as_secs_f64(),
            median_ms: pct(0.5),
            p99_ms: pct(0.99),
            p25_ms: pct(0.25),
            p75_ms: pct(0.75),
        }
    }
}

async fn serve(app: axum::Router) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// Sends one request and checks its status; the body is read in full.
async fn call(req: reqwest::RequestBuilder, want: u16, what: &str) -> Duration {
    let t0 = Instant::now();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        want,
        "{what}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    t0.elapsed()
}

struct Target {
    facade: String,
    trivial: String,
    /// Ids of the listed volumes, for inspect.
    ids: Arc<Vec<String>>,
    /// One volume per client (up to the largest level) for attach/detach.
    own: Arc<Vec<String>>,
}

/// `clients` tasks, each with its own keep-alive connection, run `op` for the warm-up, then
/// record every latency during the measurement window. Returns the series (two for
/// attach/detach: attach, then detach).
async fn load(t: &Target, op: Op, clients: usize, p: &Params, tag: &str) -> Vec<Series> {
    let start = Instant::now();
    let measure_from = start + p.warmup;
    let stop = measure_from + p.measure;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (facade, trivial, ids, own) = (
            t.facade.clone(),
            t.trivial.clone(),
            t.ids.clone(),
            t.own.clone(),
        );
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let iid = format!("vfs:vfs=bench-node-{c}");
            let mut a = Series::default();
            let mut b = Series::default();
            let mut n = 0usize;
            loop {
                let now = Instant::now();
                if now >= stop {
                    break;
                }
                let keep = now >= measure_from;
                n += 1;
                let d = match op {
                    Op::Baseline => call(http.get(format!("{trivial}/")), 200, "baseline").await,
                    Op::List => call(http.get(format!("{facade}/volumes/vfs")), 200, "list").await,
                    Op::Inspect => {
                        let id = &ids[(c * 7919 + n) % ids.len()];
                        call(
                            http.get(format!("{facade}/volumes/vfs/{id}")),
                            200,
                            "inspect",
                        )
                        .await
                    }
                    Op::Create => {
                        call(
                            http.post(format!("{facade}/volumes/vfs"))
                                .header("Libstorage-Instanceid", &iid)
                                .body(format!(r#"{{"name":"new-{tag}-{c}-{n}","size":1}}"#)),
                            201,
                            "create",
                        )
                        .await
                    }
                    Op::AttachDetach => {
                        let id = &own[c];
                        let at = call(
                            http.post(format!("{facade}/volumes/vfs/{id}?attach"))
                                .header("Libstorage-Instanceid", &iid)
                                .body(r#"{"nextDeviceName":"/dev/xvdb"}"#),
                            200,
                            "attach",
                        )
                        .await;
                        if keep {
                            a.lat_us.push(at.as_micros() as u32);
                        }
                        call(
                            http.post(format!("{facade}/volumes/vfs/{id}?detach"))
                                .header("Libstorage-Instanceid", &iid)
                                .body("{}"),
                            205,
                            "detach",
                        )
                        .await
                    }
                };
                if keep {
                    let s = if op == Op::AttachDetach {
                        &mut b
                    } else {
                        &mut a
                    };
                    s.lat_us.push(d.as_micros() as u32);
                }
            }
            (a, b)
        }));
    }
    let (mut a, mut b) = (Series::default(), Series::default());
    for t in tasks {
        let (x, y) = t.await.unwrap();
        a.lat_us.extend(x.lat_us);
        b.lat_us.extend(y.lat_us);
    }
    if op == Op::AttachDetach {
        vec![a, b]
    } else {
        vec![a]
    }
}

fn main() {
    let full = load::full_run();
    let p = if full {
        Params {
            volumes: 1000,
            levels: vec![1, 16, 64, 256],
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(4),
        }
    } else {
        Params {
            volumes: 20,
            levels: vec![1, 4],
            warmup: Duration::from_millis(50),
            measure: Duration::from_millis(150),
        }
    };
    let max_clients = *p.levels.iter().max().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let vfs = Arc::new(VfsDriver::open(VfsConfig::new(dir.path().join("vfs"))).unwrap());
        let services = BTreeMap::from([(
            "vfs".to_string(),
            Service {
                name: "vfs".into(),
                driver: vfs,
            },
        )]);
        let manager = Manager::with_services(store, services, Duration::from_secs(60));
        let mut ids = Vec::new();
        for i in 0..p.volumes {
            let v = manager
                .create(CreateVolume {
                    service: "vfs".into(),
                    name: format!("vol-{i:04}"),
                    size_bytes: 1 << 30,
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(v.id);
        }
        let facade = serve(router(LsState::new(manager.clone()))).await;
        let trivial = serve(axum::Router::new().route(
            "/",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
        ))
        .await;

        // Sanity: the façade really lists every volume.
        let listed: serde_json::Value = reqwest::get(format!("{facade}/volumes/vfs"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed.as_object().unwrap().len(), p.volumes);

        let mut t = Target {
            facade,
            trivial,
            ids: Arc::new(ids),
            own: Arc::new(Vec::new()),
        };

        // Rows: (operation label, clients, figure, baseline figure of that level).
        let mut rows: Vec<(&str, usize, Figure)> = Vec::new();
        let mut base: BTreeMap<usize, Figure> = BTreeMap::new();
        for &c in &p.levels {
            let f = load(&t, Op::Baseline, c, &p, "").await.remove(0);
            base.insert(c, f.figure(p.measure));
            for (label, op) in [("list", Op::List), ("inspect", Op::Inspect)] {
                let f = load(&t, op, c, &p, "").await.remove(0);
                rows.push((label, c, f.figure(p.measure)));
            }
        }
        // Creates add volumes: they run after every list, so each list saw `volumes`.
        for &c in &p.levels {
            let f = load(&t, Op::Create, c, &p, &format!("c{c}"))
                .await
                .remove(0);
            rows.push(("create", c, f.figure(p.measure)));
        }
        let mut own = Vec::new();
        for c in 0..max_clients {
            let v = manager
                .create(CreateVolume {
                    service: "vfs".into(),
                    name: format!("own-{c}"),
                    size_bytes: 1 << 30,
                    ..Default::default()
                })
                .await
                .unwrap();
            own.push(v.id);
        }
        t.own = Arc::new(own.clone());
        for &c in &p.levels {
            let mut s = load(&t, Op::AttachDetach, c, &p, "").await;
            let detach = s.pop().unwrap();
            let attach = s.pop().unwrap();
            rows.push(("attach", c, attach.figure(p.measure)));
            rows.push(("detach", c, detach.figure(p.measure)));
        }
        // Every attach was followed by its detach: nothing is left attached.
        for id in &own {
            let v = manager.store().volume(id).unwrap().unwrap();
            assert!(v.attachments.is_empty(), "{id} still attached: {v:?}");
        }

        let order = ["list", "inspect", "create", "attach", "detach"];
        rows.sort_by_key(|(l, c, _)| (order.iter().position(|o| o == l), *c));
        let mut out = String::new();
        writeln!(
            out,
            "Façade load: each operation from 1 to {max} concurrent keep-alive clients on loopback \
             (client and server on the same machine, one tokio runtime), {m} s measured after \
             {w} s warm-up per row. `list` is `GET /volumes/vfs` with {v} volumes; `inspect` \
             `GET /volumes/vfs/{{id}}` over those volumes; `create` `POST /volumes/vfs` (a new \
             1 GiB volume each, durable before the reply); `attach` and `detach` alternate on \
             each client's own volume (`POST …?attach`, `POST …?detach`), so each gets half \
             of that loop's time. Baseline: a trivial JSON handler on the same axum stack, same \
             client, same number of clients, in the same run. Spread: interquartile range \
             (p25 – p75) of the latencies.\n",
            max = max_clients,
            m = p.measure.as_secs_f64(),
            w = p.warmup.as_secs_f64(),
            v = p.volumes,
        )
        .unwrap();
        writeln!(
            out,
            "| operation | clients | requests | requests/s | median | p99 | spread (p25 – p75) | median / baseline | throughput / baseline |\n\
             |---|---:|---:|---:|---:|---:|---|---:|---:|"
        )
        .unwrap();
        let row = |out: &mut String, label: &str, c: usize, f: &Figure, b: Option<&Figure>| {
            let (r1, r2) = match b {
                Some(b) => (
                    format!("{:.2}×", f.median_ms / b.median_ms.max(0.001)),
                    format!("{:.2}×", f.rps / b.rps),
                ),
                None => (String::new(), String::new()),
            };
            writeln!(
                out,
                "| {label} | {c} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} – {:.2} ms | {r1} | {r2} |",
                f.requests, f.rps, f.median_ms, f.p99_ms, f.p25_ms, f.p75_ms
            )
            .unwrap();
        };
        for &c in &p.levels {
            row(&mut out, "baseline: trivial handler", c, &base[&c], None);
        }
        for (label, c, f) in &rows {
            row(&mut out, label, *c, f, Some(&base[c]));
        }
        if let Some((_, _, f)) = rows.iter().find(|(l, c, _)| *l == "list" && *c == 64) {
            let target = 5.0;
            writeln!(
                out,
                "\nList of {} volumes at 64 clients: **{:.2} ms** median, {:.2}× its baseline; \
                 it {} the ≤ 5 ms target ({:.2}× the target).",
                p.volumes,
                f.median_ms,
                f.median_ms / base[&64].median_ms.max(0.001),
                if f.median_ms <= target { "meets" } else { "misses" },
                f.median_ms / target
            )
            .unwrap();
        }
        println!("{out}");
        if full {
            load::write_table("facade", &out);
        }
    });
}
