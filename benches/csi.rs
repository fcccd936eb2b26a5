//! CSI beside the libStorage façade on one real `polly serve`, same run: `CreateVolume`
//! against the façade's `POST /volumes/vfs`, and `ControllerPublishVolume` against its
//! `POST /volumes/vfs/{id}?attach`, at 1 and 64 concurrent clients; throughput, median and
//! p99 latency of each, and the ratios CSI ÷ libStorage.
//!
//! The server (the tests' harness, `tests/harness/polly.rs`) has one `vfs` service, its data
//! dir on the bench disk, CSI on a unix socket in that data dir and the façade on loopback.
//! Each client has its own connection: a tonic channel (HTTP/2, protobuf) on the CSI socket,
//! a keep-alive HTTP/1.1 connection (JSON, REX-Ray's headers) to the façade. Every client
//! does an equal share of a cell's calls one after another; a cell runs in rounds in which
//! the two surfaces take turns, the first one alternating, so a change in the machine's
//! load falls on both surfaces alike. The
//! volumes published are the ones the create cells of the same level made, each published
//! (or attached) once and never unpublished. Nodes and instances report themselves before
//! the run, as `polly node` and REX-Ray do. Any failed call aborts the benchmark, and at the
//! end `GET /admin/volumes` must list exactly the volumes created, those published attached.
//!
//! `cargo bench --bench csi` runs `POLLY_CSI_OPS` calls (default 2,000) per surface and
//! operation at 64 clients and half that at 1 client, and writes
//! `<target>/polly-bench/csi.md` for `scripts/bench.sh`. Without `--bench` (as under
//! `cargo test --all-targets`) it runs a seconds-long smoke version on the debug binary.
//! Files go under `POLLY_BENCH_DIR` (default cargo's `CARGO_TARGET_TMPDIR`).

#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use polly::admin::ReportBody;
use polly::csi::v1::controller_client::ControllerClient;
use polly::csi::v1::ControllerPublishVolumeRequest;
use polly::csi::PUBLISH_SOURCE_KEY;
use tonic::transport::Channel;

use harness::csi::{create_req, rwo};
use harness::{ls_headers, Polly};
use load::Latencies;

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n";

/// The size of every volume: 1 GiB, the façade's smallest (its sizes are in GiB).
const GIB: i64 = 1 << 30;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Surface {
    Csi,
    Facade,
}

impl Surface {
    fn tag(self) -> &'static str {
        match self {
            Surface::Csi => "csi",
            Surface::Facade => "ls",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    /// `CreateVolume`, or `POST /volumes/vfs`.
    Create,
    /// `ControllerPublishVolume`, or `POST /volumes/vfs/{id}?attach`.
    Publish,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Create => "`CreateVolume` / `POST /volumes/vfs`",
            Op::Publish => "`ControllerPublishVolume` / `POST /volumes/vfs/{id}?attach`",
        }
    }
}

/// One client's connections to both surfaces, and who it is on each.
#[derive(Clone)]
struct Client {
    csi: ControllerClient<Channel>,
    http: reqwest::Client,
    facade: String,
    /// The CSI node id it publishes to.
    node: String,
    /// The libStorage instance id it attaches to.
    instance: String,
}

/// The calls of one cell (or one round of it).
#[derive(Default)]
struct Cell {
    lat_us: Vec<u64>,
    wall: Duration,
    /// The ids of the volumes created.
    ids: Vec<String>,
    errors: Vec<String>,
}

impl Cell {
    fn add(&mut self, other: Cell) {
        self.lat_us.extend(other.lat_us);
        self.wall += other.wall;
        self.ids.extend(other.ids);
        self.errors.extend(other.errors);
    }

    /// Every call must have succeeded: the figures of a run with failures would flatter it.
    fn check(self, what: &str) -> Cell {
        if let Some(first) = self.errors.first() {
            panic!(
                "{} of {} {what} calls failed; the benchmark is aborted. First: {first}",
                self.errors.len(),
                self.errors.len() + self.lat_us.len()
            );
        }
        self
    }
}

/// One figure of the table.
struct Stat {
    calls: usize,
    per_s: f64,
    median_ms: f64,
    p99_ms: f64,
}

impl From<&Cell> for Stat {
    fn from(c: &Cell) -> Stat {
        let l = Latencies::from(c.lat_us.clone());
        Stat {
            calls: l.len(),
            per_s: l.len() as f64 / c.wall.as_secs_f64(),
            median_ms: l.ms(0.5),
            p99_ms: l.ms(0.99),
        }
    }
}

/// One call: the new volume's id for a create, nothing for a publish; what went wrong.
async fn call(cl: &mut Client, s: Surface, op: Op, item: &str) -> Result<Option<String>, String> {
    match (s, op) {
        (Surface::Csi, Op::Create) => {
            let r = cl
                .csi
                .create_volume(create_req(item, GIB, rwo(), &[("service", "vfs")]))
                .await
                .map_err(|e| format!("CreateVolume {item}: {e}"))?;
            match r.into_inner().volume {
                Some(v) => Ok(Some(v.volume_id)),
                None => Err(format!("CreateVolume {item}: no volume in the answer")),
            }
        }
        (Surface::Csi, Op::Publish) => {
            let r = cl
                .csi
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: item.to_string(),
                    node_id: cl.node.clone(),
                    volume_capability: Some(rwo()),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("ControllerPublishVolume {item} to {}: {e}", cl.node))?;
            if !r
                .into_inner()
                .publish_context
                .contains_key(PUBLISH_SOURCE_KEY)
            {
                return Err(format!(
                    "ControllerPublishVolume {item}: no {PUBLISH_SOURCE_KEY} in the context"
                ));
            }
            Ok(None)
        }
        (Surface::Facade, op) => {
            let (url, body, want) = match op {
                Op::Create => (
                    format!("{}/volumes/vfs", cl.facade),
                    format!(r#"{{"name":"{item}","size":1}}"#),
                    201,
                ),
                Op::Publish => (
                    format!("{}/volumes/vfs/{item}?attach", cl.facade),
                    r#"{"nextDeviceName":"/dev/xvdb"}"#.to_string(),
                    200,
                ),
            };
            // As REX-Ray sends them: its headers, no Content-Type on the body.
            let mut req = cl.http.post(&url).body(body);
            for (k, v) in ls_headers("vfs", &cl.instance) {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
            let status = resp.status().as_u16();
            let raw = resp.bytes().await.map_err(|e| format!("POST {url}: {e}"))?;
            if status != want {
                return Err(format!(
                    "POST {url}: {status}: {}",
                    String::from_utf8_lossy(&raw[..raw.len().min(300)])
                ));
            }
            if op == Op::Publish {
                return Ok(None);
            }
            let v: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|e| format!("POST {url}: {e}"))?;
            match v["id"].as_str() {
                Some(id) => Ok(Some(id.to_string())),
                None => Err(format!("POST {url}: no id in {v}")),
            }
        }
    }
}

/// Every client runs its share of `items` (names to create, or ids to publish), one call
/// after another, all clients at once.
async fn run(clients: &[Client], s: Surface, op: Op, items: &[String]) -> Cell {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, cl) in clients.iter().enumerate() {
        let mut cl = cl.clone();
        let mine: Vec<String> = items
            .iter()
            .skip(c)
            .step_by(clients.len())
            .cloned()
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Cell::default();
            for item in mine {
                let t0 = Instant::now();
                let r = call(&mut cl, s, op, &item).await;
                let took = t0.elapsed().as_micros() as u64;
                match r {
                    Ok(id) => {
                        out.lat_us.push(took);
                        out.ids.extend(id);
                    }
                    Err(e) => out.errors.push(e),
                }
            }
            out
        }));
    }
    let mut all = Cell::default();
    for t in tasks {
        all.add(t.await.unwrap());
    }
    all.wall = started.elapsed();
    all
}

/// `level` clients, each with its own CSI channel and façade connection, its node and its
/// instance reported to Polly.
async fn connect(p: &Polly, level: usize) -> Vec<Client> {
    let admin = p.client();
    let mut clients = Vec::new();
    for c in 0..level {
        let (node, instance) = (format!("csi-node-{c}"), format!("ls-node-{c}"));
        for id in [&node, &instance] {
            admin
                .report(&ReportBody {
                    instance_id: id.clone(),
                    hostname: Some(id.clone()),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let channel = polly::csi::connect(&p.csi_endpoint()).await.unwrap();
        clients.push(Client {
            csi: ControllerClient::new(channel),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap(),
            facade: p.libstorage.clone(),
            node,
            instance,
        });
    }
    clients
}

/// The figures of one run, and what it checked.
struct Results {
    /// Clients → calls per surface and operation.
    levels: Vec<(usize, usize)>,
    /// The rounds each level's cells ran in.
    rounds: Vec<usize>,
    stats: BTreeMap<(Op, usize, Surface), Stat>,
    /// Every call made, warm-up included; none failed.
    calls: usize,
    /// Volumes created (and listed by `GET /admin/volumes`).
    created: usize,
    /// Volumes published or attached (and listed with their attachment).
    published: usize,
}

/// In how many rounds a cell of `n` calls from `level` clients runs: as many as give each
/// client at least 4 calls a round (a round's start and end, when not every client is busy,
/// stay a small part of it), an even number from 2 to 10 so each surface goes first equally.
fn rounds(level: usize, n: usize) -> usize {
    (n / (4 * level) / 2 * 2).clamp(2, 10)
}

async fn bench(p: &Polly, levels: &[(usize, usize)]) -> Results {
    let mut r = Results {
        levels: levels.to_vec(),
        rounds: Vec::new(),
        stats: BTreeMap::new(),
        calls: 0,
        created: 0,
        published: 0,
    };
    for &(level, n) in levels {
        let clients = connect(p, level).await;
        // Warm-up, untimed: one create and one publish per client on each surface.
        for s in [Surface::Csi, Surface::Facade] {
            let names: Vec<String> = (0..level)
                .map(|i| format!("warm-{}-c{level}-{i}", s.tag()))
                .collect();
            let made = run(&clients, s, Op::Create, &names)
                .await
                .check("warm-up create");
            let pubd = run(&clients, s, Op::Publish, &made.ids)
                .await
                .check("warm-up publish");
            r.calls += made.lat_us.len() + pubd.lat_us.len();
            r.created += made.ids.len();
            r.published += pubd.lat_us.len();
        }
        // Rounds of a cell: the surfaces take turns, the first one alternating, so a change
        // in the machine's load (other work on its cores) falls on both alike.
        let rounds = rounds(level, n);
        let mut created: BTreeMap<Surface, Cell> = BTreeMap::new();
        let mut published: BTreeMap<Surface, Cell> = BTreeMap::new();
        for op in [Op::Create, Op::Publish] {
            let items: BTreeMap<Surface, Vec<String>> = [Surface::Csi, Surface::Facade]
                .into_iter()
                .map(|s| {
                    let items = match op {
                        Op::Create => (0..n)
                            .map(|j| format!("{}-c{level}-{j}", s.tag()))
                            .collect(),
                        Op::Publish => created[&s].ids.clone(),
                    };
                    (s, items)
                })
                .collect();
            for k in 0..rounds {
                let order = if k % 2 == 0 {
                    [Surface::Csi, Surface::Facade]
                } else {
                    [Surface::Facade, Surface::Csi]
                };
                for s in order {
                    let all = &items[&s];
                    let chunk = &all[k * all.len() / rounds..(k + 1) * all.len() / rounds];
                    let cell = run(&clients, s, op, chunk)
                        .await
                        .check(&format!("{s:?} {op:?} at {level} clients"));
                    let cells = match op {
                        Op::Create => &mut created,
                        Op::Publish => &mut published,
                    };
                    cells.entry(s).or_default().add(cell);
                }
            }
        }
        r.rounds.push(rounds);
        for (op, cells) in [(Op::Create, created), (Op::Publish, published)] {
            for (s, cell) in cells {
                let st = Stat::from(&cell);
                assert_eq!(st.calls, n, "{op:?} {s:?} at {level} clients");
                eprintln!(
                    "csi: {op:?} {s:?} at {level} clients: {} calls, {:.0}/s, median {:.2} ms, p99 {:.2} ms",
                    st.calls, st.per_s, st.median_ms, st.p99_ms
                );
                r.calls += st.calls;
                match op {
                    Op::Create => r.created += st.calls,
                    Op::Publish => r.published += st.calls,
                }
                r.stats.insert((op, level, s), st);
            }
        }
    }
    // Nothing was lost or doubled: the store holds every volume created, once, and those
    // published are attached, once each.
    let volumes = p.volumes().await;
    assert_eq!(volumes.len(), r.created, "volumes listed vs created");
    let attachments: usize = volumes
        .iter()
        .map(|v| v["attachments"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(attachments, r.published, "attachments listed vs published");
    r
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn table(r: &Results) -> String {
    let mut t = String::new();
    let counts: Vec<String> = r
        .levels
        .iter()
        .zip(&r.rounds)
        .map(|((c, n), k)| {
            format!(
                "{n} at {c} client{} in {k} rounds",
                if *c == 1 { "" } else { "s" }
            )
        })
        .collect();
    writeln!(
        t,
        "One `polly serve` (release build, one `vfs` service, its data dir on the bench disk) \
         with CSI on a unix socket in its data dir and the libStorage façade on loopback; the \
         clients in the benchmark process on the same machine. Each client has its own \
         connection: a tonic channel (HTTP/2, protobuf) for CSI, a keep-alive HTTP/1.1 \
         connection (JSON, REX-Ray's headers) for the façade. `CreateVolume` (1 GiB, \
         `service=vfs`, a single-node-writer mount capability) beside `POST /volumes/vfs` \
         (`size` 1, in GiB); `ControllerPublishVolume` of the volumes those creates made, to \
         the client's node, beside `POST /volumes/vfs/{{id}}?attach` to the client's instance \
         (both reported to Polly beforehand); each volume published once, never unpublished. \
         Calls per surface and operation: {}, after one untimed create and publish per client \
         on each surface; each client makes an equal share of a round's calls one after \
         another; in each round the surfaces take turns, CSI first in every other round, \
         the façade first in the rest. Throughput: calls over the wall time of a surface's \
         rounds; median and p99 (nearest rank) of every call's latency. CSI ÷ libStorage: \
         above 1 for throughput, below 1 for latency, means CSI is faster.",
        counts.join(", ")
    )
    .unwrap();
    writeln!(t).unwrap();
    writeln!(
        t,
        "| operation (CSI / libStorage) | clients | CSI calls/s | libStorage calls/s | \
         throughput CSI ÷ libStorage | CSI median | libStorage median | median CSI ÷ \
         libStorage | CSI p99 | libStorage p99 | p99 CSI ÷ libStorage |"
    )
    .unwrap();
    writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for op in [Op::Create, Op::Publish] {
        for &(level, _) in &r.levels {
            let (Some(c), Some(l)) = (
                r.stats.get(&(op, level, Surface::Csi)),
                r.stats.get(&(op, level, Surface::Facade)),
            ) else {
                continue;
            };
            writeln!(
                t,
                "| {} | {level} | {:.0} | {:.0} | **{:.2}×** | {} | {} | {:.2}× | {} | {} | {:.2}× |",
                op.label(),
                c.per_s,
                l.per_s,
                c.per_s / l.per_s,
                ms(c.median_ms),
                ms(l.median_ms),
                c.median_ms / l.median_ms.max(0.001),
                ms(c.p99_ms),
                ms(l.p99_ms),
                c.p99_ms / l.p99_ms.max(0.001),
            )
            .unwrap();
        }
    }
    writeln!(t).unwrap();
    writeln!(
        t,
        "Checks: all {} calls succeeded (warm-up included); `GET /admin/volumes` listed {} \
         volumes, the {} created, with {} attachments, one per volume published.",
        r.calls, r.created, r.created, r.published
    )
    .unwrap();
    t
}

fn main() {
    let full = load::full_run();
    let at_64 = if full {
        std::env::var("POLLY_CSI_OPS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n >= 2)
            .unwrap_or(2000)
    } else {
        16
    };
    let levels = if full {
        vec![(1, at_64 / 2), (64, at_64)]
    } else {
        vec![(1, at_64 / 2), (4, at_64)]
    };
    let base = load::base_dir();
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("csi")
        .tempdir_in(&base)
        .unwrap();
    let p = Polly::start_with(&dir.path().join("data"), Some(SERVICES), None);
    assert!(
        p.csi.starts_with("unix://"),
        "CSI is on {}, not a unix socket: the data dir's path is too long for one; set \
         POLLY_BENCH_DIR to a shorter directory",
        p.csi
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let r = rt.block_on(bench(&p, &levels));
    eprintln!("csi: measured in {:.0} s", started.elapsed().as_secs_f64());
    drop(p);
    let t = table(&r);
    println!("{t}");
    if full {
        load::write_table("csi", &t);
    }
}
