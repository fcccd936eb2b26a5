//! libStorage operation latency on the etcd store beside the sled store, in the same run
//! (cargo feature `etcd`): two real `polly serve` processes, one with its store on sled (the
//! default) and one with `[store] backend = "etcd"` (a real etcd on loopback), both with the
//! `vfs` driver and their files on the bench disk, driven by the same client one request at a
//! time: create, attach, detach and delete of a volume through the façade, the two servers
//! taking turns each round so machine noise falls on both alike. Baselines, interleaved the
//! same way: one raw durable write on each store's medium (a 200-byte `put` to the same etcd
//! through `etcd-client`; 200 bytes appended and `fdatasync`ed in a file on the bench disk).
//!
//! `cargo bench --features etcd --bench etcd_ops` runs 200 rounds and writes
//! `<target>/polly-bench/etcd_ops.md` for `scripts/bench.sh`; without `--bench` (as under
//! `cargo test --all-targets --features etcd`) it runs a few rounds so the code stays working.

#[path = "load/cluster.rs"]
mod cluster;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Instant;

use cluster::Instance;
use harness::etcd;
use load::Latencies;

/// The operations timed, in the order of a round.
const OPS: [&str; 4] = ["create", "attach", "detach", "delete"];

/// Samples of one server (or one baseline), per operation, in µs.
#[derive(Default)]
struct Samples([Vec<u64>; 4]);

const IID: &str = "vfs:vfs=bench-node";

/// Send `req`, expect `status`; its latency and its JSON body.
async fn timed(req: reqwest::RequestBuilder, status: u16, what: &str) -> (u64, serde_json::Value) {
    let start = Instant::now();
    let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    let us = start.elapsed().as_micros() as u64;
    assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
    (us, serde_json::from_slice(&body).unwrap_or_default())
}

/// The server's count of durable store batches (`store_writes` on `/metrics`).
async fn store_writes(http: &reqwest::Client, admin: &str) -> u64 {
    let text = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| !l.starts_with('#') && l.contains("store_writes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no store_writes counter on {admin}/metrics"))
}

/// One create → attach → detach → delete cycle through the façade of `server`; `keep` adds
/// the latencies to `s`. With `count`, the server's durable store batches of each operation
/// are read from its metrics between the operations (then the cycle is not a timed one).
async fn cycle(
    http: &reqwest::Client,
    server: &Instance,
    name: &str,
    s: &mut Samples,
    keep: bool,
    count: bool,
) -> [u64; 4] {
    let ls = server.libstorage();
    let mut writes = [0; 4];
    let mut before = if count {
        store_writes(http, server.admin()).await
    } else {
        0
    };
    let mut id = String::new();
    for (i, op) in OPS.iter().enumerate() {
        let (req, status) = match i {
            0 => (
                http.post(format!("{ls}/volumes/vfs"))
                    .body(format!(r#"{{"name":"{name}","size":1}}"#)),
                201,
            ),
            1 => (
                http.post(format!("{ls}/volumes/vfs/{id}?attach"))
                    .body(r#"{"nextDeviceName":"/dev/xvdb"}"#),
                200,
            ),
            2 => (
                http.post(format!("{ls}/volumes/vfs/{id}?detach"))
                    .body("{}"),
                205,
            ),
            _ => (http.delete(format!("{ls}/volumes/vfs/{id}")), 204),
        };
        let (us, v) = timed(req.header("Libstorage-Instanceid", IID), status, op).await;
        if i == 0 {
            id = v["id"].as_str().expect("created volume's id").to_string();
        }
        if keep {
            s.0[i].push(us);
        }
        if count {
            let now = store_writes(http, server.admin()).await;
            writes[i] = now - before;
            before = now;
        }
    }
    writes
}

/// Four raw durable writes (one per operation slot): `put`s to etcd, and appends +
/// `fdatasync` to `file`.
async fn raw_writes(
    kv: &mut etcd_client::Client,
    file: &mut std::fs::File,
    put: &mut Samples,
    fsync: &mut Samples,
    keep: bool,
) {
    let value = vec![b'x'; 200];
    for i in 0..OPS.len() {
        let start = Instant::now();
        kv.put("/polly-bench-raw/key", value.clone(), None)
            .await
            .expect("etcd put");
        let p = start.elapsed().as_micros() as u64;
        let start = Instant::now();
        file.write_all(&value).unwrap();
        file.sync_data().unwrap();
        let f = start.elapsed().as_micros() as u64;
        if keep {
            put.0[i].push(p);
            fsync.0[i].push(f);
        }
    }
}

async fn bench(rounds: usize, warmup: usize) -> String {
    let server = cluster::start_etcd();
    let vfs = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n";
    let on_sled = Instance::start(vfs).await;
    let on_etcd =
        Instance::start(&(vfs.to_string() + &cluster::etcd_store(&server.url(), "/polly-ops/")))
            .await;
    let http = reqwest::Client::new();
    let mut kv = etcd_client::Client::connect([server.url()], None)
        .await
        .expect("connect to etcd");
    let base = load::base_dir();
    let dir = tempfile::Builder::new()
        .prefix("etcd-ops-fsync")
        .tempdir_in(&base)
        .unwrap();
    let mut file = std::fs::File::create(dir.path().join("raw")).unwrap();
    let (mut sled, mut etcd, mut put, mut fsync) = Default::default();
    // Durable store batches per operation, counted on one untimed cycle of each server.
    let sled_writes = cycle(&http, &on_sled, "count", &mut sled, false, true).await;
    let etcd_writes = cycle(&http, &on_etcd, "count", &mut etcd, false, true).await;
    let started = Instant::now();
    for round in 0..warmup + rounds {
        let keep = round >= warmup;
        let name = format!("ops-{round}");
        // The two servers take turns going first.
        if round % 2 == 0 {
            cycle(&http, &on_sled, &name, &mut sled, keep, false).await;
            cycle(&http, &on_etcd, &name, &mut etcd, keep, false).await;
        } else {
            cycle(&http, &on_etcd, &name, &mut etcd, keep, false).await;
            cycle(&http, &on_sled, &name, &mut sled, keep, false).await;
        }
        raw_writes(&mut kv, &mut file, &mut put, &mut fsync, keep).await;
    }
    eprintln!(
        "{} rounds in {:.1} s",
        warmup + rounds,
        started.elapsed().as_secs_f64()
    );
    drop((on_sled, on_etcd));
    assert_eq!(
        sled_writes, etcd_writes,
        "the same operation commits a different number of batches on the two stores"
    );
    // The raw writes' medians, for the store-level table `scripts/bench.sh` adds.
    let raw = serde_json::json!({
        "put_ms": Latencies::from(put.0.concat()).ms(0.5),
        "fdatasync_ms": Latencies::from(fsync.0.concat()).ms(0.5),
    });
    std::fs::create_dir_all(load::out_dir()).unwrap();
    std::fs::write(load::out_dir().join("etcd_ops.json"), raw.to_string()).unwrap();
    table(rounds, sled_writes, &sled, &etcd, &put, &fsync)
}

fn table(
    rounds: usize,
    writes: [u64; 4],
    sled: &Samples,
    etcd: &Samples,
    put: &Samples,
    fsync: &Samples,
) -> String {
    let l = |s: &Samples, i: usize| Latencies::from(s.0[i].clone());
    let all = |s: &Samples| Latencies::from(s.0.concat());
    let ms = |x: f64| {
        if x < 1.0 {
            format!("{:.0} µs", x * 1e3)
        } else {
            format!("{x:.2} ms")
        }
    };
    let spread = |x: &Latencies| format!("{} – {}", ms(x.ms(0.1)), ms(x.ms(0.9)));
    let mut t = String::new();
    writeln!(
        t,
        "libStorage operations on each store backend: two `polly serve` processes (release \
         build), one with its store on sled (the default) and one on etcd (one member on \
         loopback, data on the same disk), both with the `vfs` driver, driven by the same \
         client one request at a time (keep-alive). {rounds} rounds (after a warm-up), each a \
         create (`POST /volumes/vfs`), attach (`POST …?attach`), detach (`POST …?detach`) and \
         delete (`DELETE /volumes/vfs/{{id}}`) on each server, the two taking turns going \
         first. Durable store batches per operation: counted on each server's `store_writes` \
         metric around one untimed cycle (the same on both). Baselines, interleaved the same \
         way (4 per round): one raw durable write on each store's medium, a 200-byte `put` to \
         the same etcd through `etcd-client`, and 200 bytes appended + `fdatasync` in a file \
         on the same disk. Spread: p10 – p90."
    )
    .unwrap();
    writeln!(t).unwrap();
    writeln!(
        t,
        "| operation | durable batches | sled: median | sled: p10 – p90 | etcd: median | etcd: p10 – p90 | etcd / sled |"
    )
    .unwrap();
    writeln!(t, "|---|---:|---:|---|---:|---|---:|").unwrap();
    for (i, op) in OPS.iter().enumerate() {
        let (s, e) = (l(sled, i), l(etcd, i));
        writeln!(
            t,
            "| {op} | {} | {} | {} | {} | {} | {:.2}× |",
            writes[i],
            ms(s.ms(0.5)),
            spread(&s),
            ms(e.ms(0.5)),
            spread(&e),
            e.ms(0.5) / s.ms(0.5)
        )
        .unwrap();
    }
    let (f, p) = (all(fsync), all(put));
    writeln!(
        t,
        "| baseline: one raw durable write (sled column: `fdatasync`; etcd column: `put`) | 1 | {} | {} | {} | {} | {:.2}× |",
        ms(f.ms(0.5)),
        spread(&f),
        ms(p.ms(0.5)),
        spread(&p),
        p.ms(0.5) / f.ms(0.5)
    )
    .unwrap();
    writeln!(t).unwrap();
    let (sc, ec) = (l(sled, 0), l(etcd, 0));
    let (sa, ea) = (l(sled, 1), l(etcd, 1));
    let floor = |n: u64, x: &Latencies| n as f64 * x.ms(0.5);
    writeln!(
        t,
        "On etcd, a libStorage create takes **{}** median, **{:.2}×** sled's {} in the same \
         run, and an attach **{}**, **{:.2}×** sled's {}. A create commits {} durable batches \
         and an attach {}, so on etcd they cannot go below {} and {} of raw `put`s: create is \
         {:.2}× that floor, attach {:.2}× (on sled, against raw `fdatasync`s: {} and {}, \
         create {:.2}×, attach {:.2}×).",
        ms(ec.ms(0.5)),
        ec.ms(0.5) / sc.ms(0.5),
        ms(sc.ms(0.5)),
        ms(ea.ms(0.5)),
        ea.ms(0.5) / sa.ms(0.5),
        ms(sa.ms(0.5)),
        writes[0],
        writes[1],
        ms(floor(writes[0], &p)),
        ms(floor(writes[1], &p)),
        ec.ms(0.5) / floor(writes[0], &p),
        ea.ms(0.5) / floor(writes[1], &p),
        ms(floor(writes[0], &f)),
        ms(floor(writes[1], &f)),
        sc.ms(0.5) / floor(writes[0], &f),
        sa.ms(0.5) / floor(writes[1], &f),
    )
    .unwrap();
    t
}

fn main() {
    if cluster::etcd_missing("etcd_ops") {
        return;
    }
    let (rounds, warmup) = if load::full_run() { (200, 10) } else { (3, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(bench(rounds, warmup));
    println!("{t}");
    load::write_table("etcd_ops", &t);
}
