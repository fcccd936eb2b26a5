//! Load benchmark of the libStorage façade: `GET /volumes/{svc}` with 1,000 volumes from 64
//! concurrent keep-alive clients on loopback, beside a trivial handler on the same axum stack
//! measured in the same run (the baseline). Prints requests/s, median and p99 latency, and
//! writes the results table to `<target>/polly-bench/facade.md` for `scripts/bench.sh`.
//!
//! `cargo bench --bench facade` runs the full load; without `--bench` (as under
//! `cargo test --all-targets`) it runs a seconds-long smoke version so the code stays working.

mod load;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::libstorage::{router, LsState};
use polly::store::Store;
use polly::volumes::{CreateVolume, Manager, Service};
use tokio::net::TcpListener;

struct Params {
    volumes: usize,
    clients: usize,
    warmup: Duration,
    measure: Duration,
}

struct Result_ {
    requests: usize,
    rps: f64,
    median_us: f64,
    p99_us: f64,
}

async fn serve(app: axum::Router) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// `clients` tasks, each with its own keep-alive connection, hammer `url` for the warm-up,
/// then record every latency during the measurement window.
async fn load(url: &str, p: &Params) -> Result_ {
    let start = Instant::now();
    let measure_from = start + p.warmup;
    let stop = measure_from + p.measure;
    let mut tasks = Vec::new();
    for _ in 0..p.clients {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut lat = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop {
                    break;
                }
                let resp = http.get(&url).send().await.unwrap();
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                let _ = resp.bytes().await.unwrap();
                if t0 >= measure_from {
                    lat.push(t0.elapsed().as_micros() as u32);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let pct = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64;
    Result_ {
        requests: all.len(),
        rps: all.len() as f64 / p.measure.as_secs_f64(),
        median_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

fn main() {
    let full = load::full_run();
    let p = if full {
        Params {
            volumes: 1000,
            clients: 64,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(10),
        }
    } else {
        Params {
            volumes: 20,
            clients: 4,
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(300),
        }
    };
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
        for i in 0..p.volumes {
            manager
                .create(CreateVolume {
                    service: "vfs".into(),
                    name: format!("vol-{i:04}"),
                    size_bytes: 1 << 30,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let facade = serve(router(LsState::new(manager))).await;
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

        let base = load(&format!("{trivial}/"), &p).await;
        let list = load(&format!("{facade}/volumes/vfs"), &p).await;
        let table = format!(
            "Façade load: `GET /volumes/vfs` listing {v} volumes, {c} concurrent keep-alive clients \
             on loopback, {m} s measured after {w} s warm-up, client and server on the same machine.\n\n\
             | endpoint | requests | requests/s | median | p99 |\n|---|---:|---:|---:|---:|\n\
             | baseline: trivial JSON handler, same axum stack | {br} | {brps:.0} | {bm:.2} ms | {bp:.2} ms |\n\
             | `GET /volumes/vfs` ({v} volumes) | {lr} | {lrps:.0} | {lm:.2} ms | {lp:.2} ms |\n\n\
             Median latency ratio façade / baseline: **{ratio:.2}×**; throughput ratio: {tr:.2}×.\n",
            v = p.volumes,
            c = p.clients,
            m = p.measure.as_secs_f64(),
            w = p.warmup.as_secs_f64(),
            br = base.requests,
            brps = base.rps,
            bm = base.median_us / 1000.0,
            bp = base.p99_us / 1000.0,
            lr = list.requests,
            lrps = list.rps,
            lm = list.median_us / 1000.0,
            lp = list.p99_us / 1000.0,
            ratio = list.median_us / base.median_us.max(1.0),
            tr = list.rps / base.rps,
        );
        println!("{table}");
        if full {
            load::write_table("facade", &table);
        }
    });
}
