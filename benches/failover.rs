//! Failover time of an HA group (cargo feature `etcd`): a real etcd on loopback and three
//! real `polly serve` processes with `[ha]` and `[store] backend = "etcd"`, sharing one `vfs`
//! back end, and a framework that only knows a follower's storage-offer address (its calls
//! follow the 307 to the leader). Each run SIGKILLs the leader and times, from the kill:
//!
//! - a survivor reports itself leader on `/admin/health` (polled every 10 ms);
//! - the framework, whose event stream ended with the kill, is subscribed again (SUBSCRIBE
//!   with its id through the same follower address, retried every 20 ms while the instances
//!   elect: 503, or a 307 to the dead leader);
//! - its first ACCEPT (CREATE_DISK of an offer from the new leader) is answered 202;
//! - that operation's OPERATION_FINISHED arrives on its stream.
//!
//! Between runs the killed instance is started again (a fresh data dir); the next kill comes
//! once the three agree on one leader, after a random pause within one keep-alive period
//! (TTL/3), so the lease time left at the kill varies as after a real crash. Baseline: the
//! configured lease TTL (a leader that dies without resigning holds its key until its lease
//! runs out: between 2/3 of the TTL and the whole TTL after the kill).
//!
//! `cargo bench --features etcd --bench failover` runs 20 failovers with the default lease
//! (`POLLY_FAILOVER_TTL_SECS` to change it) and writes `<target>/polly-bench/failover.md` for
//! `scripts/bench.sh`; without `--bench` (as under `cargo test --all-targets --features etcd`)
//! it runs one failover with a 2 s lease so the code stays working.

#[path = "load/cluster.rs"]
mod cluster;
#[path = "load/frameworks.rs"]
mod frameworks;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use polly::mesos::client::MesosContentType;
use serde_json::json;

use cluster::Instance;
use frameworks::{create_disk_call, OfferBook};
use harness::etcd;
use harness::fakes::framework;
use load::Latencies;

/// The longest any step of a run may take before the benchmark fails.
const BOUND: Duration = Duration::from_secs(60);

struct Params {
    runs: usize,
    ttl_secs: u64,
}

fn params() -> Params {
    let ttl = std::env::var("POLLY_FAILOVER_TTL_SECS")
        .ok()
        .map(|v| v.parse().expect("POLLY_FAILOVER_TTL_SECS: whole seconds"));
    if load::full_run() {
        // Polly's default `ha.lease_ttl_secs`.
        let default = polly::ha::HaConfig::default().lease_ttl_secs;
        Params {
            runs: 20,
            ttl_secs: ttl.unwrap_or(default),
        }
    } else {
        Params {
            runs: 1,
            ttl_secs: ttl.unwrap_or(2),
        }
    }
}

/// One agent with a `vfs` pool on a back end the three instances share; offers and their
/// rounds at Polly's defaults.
fn config(etcd: &str, prefix: &str, root: &std::path::Path, ttl_secs: u64) -> String {
    cluster::vfs_service(root, "zone = \"zone-a\"\nquota_bytes = 10737418240\n")
        + &cluster::etcd_store(etcd, prefix)
        + &cluster::ha(ttl_secs)
        + r#"
[mesos]
agents = [{ id = "agent-a", hostname = "host-a", region = "eu", zone = "zone-a" }]

[offers.instances]
agent-a = "i-a"
"#
}

/// Times of one failover, from the kill.
struct Run {
    elected: Duration,
    subscribed: Duration,
    accepted: Duration,
    finished: Duration,
    /// ACCEPTs answered otherwise than 202 before the first 202.
    refused: usize,
}

/// ACCEPT a CREATE_DISK of the next offer (the next ones after a refusal) until one is
/// answered 202, then wait for that operation's OPERATION_FINISHED and acknowledge it. Times
/// since `since` of the 202 and of the status, and the refusals before the 202.
async fn accept_one(book: &mut OfferBook, op: &str, since: Instant) -> (Duration, Duration, usize) {
    let mut refused = 0;
    let accepted = loop {
        let offer = book.take_offer(BOUND).await.unwrap();
        let call = create_disk_call(&book.fw.id, &offer, op, 16.0);
        let (status, body) = book.fw.post(&call).await;
        if status == 202 {
            break since.elapsed();
        }
        eprintln!("ACCEPT of {op} answered {status}: {body}; taking the next offer");
        refused += 1;
        assert!(since.elapsed() < BOUND, "no ACCEPT of {op} answered 202");
    };
    let st = book.terminal(op, BOUND).await.unwrap();
    let finished = since.elapsed();
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    book.fw
        .call(json!({"type": "ACKNOWLEDGE_OPERATION_STATUS",
            "framework_id": {"value": book.fw.id},
            "acknowledge_operation_status": st}))
        .await;
    assert!(
        book.violations.is_empty(),
        "the stream broke the protocol: {:?}",
        book.violations
    );
    (accepted, finished, refused)
}

/// SUBSCRIBE with `id` through `offers`, retried every 20 ms until it is answered 200.
async fn resubscribe(offers: &str, id: &str, since: Instant) -> OfferBook {
    loop {
        match framework::try_subscribe_as(offers, MesosContentType::Json, Some(id), None).await {
            Ok(fw) => return OfferBook::new(fw),
            Err(e) => assert!(since.elapsed() < BOUND, "no SUBSCRIBE answered 200: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll the survivors' `/admin/health` every 10 ms; time since `since` at which one says it
/// leads.
async fn new_leader(http: &reqwest::Client, survivors: &[String], since: Instant) -> Duration {
    loop {
        for a in survivors {
            if cluster::is_leader(http, a).await {
                return since.elapsed();
            }
        }
        assert!(since.elapsed() < BOUND, "no survivor became leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bench(p: &Params) -> String {
    let server = cluster::start_etcd();
    let base = load::base_dir();
    let root = tempfile::Builder::new()
        .prefix("failover-vfs")
        .tempdir_in(&base)
        .unwrap();
    let cfg = config(&server.url(), "/polly-failover/", root.path(), p.ttl_secs);
    let mut inst: Vec<Option<Instance>> = Vec::new();
    for _ in 0..3 {
        inst.push(Some(Instance::start(&cfg).await));
    }
    let http = reqwest::Client::new();
    let admins = |inst: &[Option<Instance>]| -> Vec<String> {
        inst.iter()
            .map(|i| i.as_ref().unwrap().admin().to_string())
            .collect()
    };
    let settle = |admins: Vec<String>| {
        let http = http.clone();
        async move {
            let a: Vec<&str> = admins.iter().map(String::as_str).collect();
            cluster::settled(&http, &a, BOUND).await
        }
    };
    let mut leader = settle(admins(&inst)).await;

    // The framework knows one follower's address; a first operation before any failover
    // checks the whole path (not timed).
    let mut via = (leader + 1) % 3;
    let fw = framework::subscribe(
        inst[via].as_ref().unwrap().offers(),
        MesosContentType::Json,
        None,
    )
    .await;
    let id = fw.id.clone();
    let mut book = OfferBook::new(fw);
    accept_one(&mut book, "warm-up", Instant::now()).await;

    let mut runs = Vec::new();
    for run in 0..p.runs {
        if via == leader {
            // The instance the framework knows leads now: it moves to a follower's address
            // (a framework pointed at a dead leader would have nothing to follow).
            via = (leader + 1) % 3;
            let offers = inst[via].as_ref().unwrap().offers().to_string();
            book = resubscribe(&offers, &id, Instant::now()).await;
        }
        let offers = inst[via].as_ref().unwrap().offers().to_string();
        let survivors: Vec<String> = admins(&inst)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, a)| a)
            .collect();
        // The kill comes at a random point of the leader's keep-alive period (TTL/3), so the
        // lease time left at the kill is spread as after a real crash instead of being set by
        // this loop's own rhythm (which would kill at the same phase every run).
        let keep_alive = Duration::from_secs(p.ttl_secs) / 3;
        tokio::time::sleep(keep_alive.mul_f64(rand::random::<f64>())).await;
        let victim = inst[leader].take().unwrap();
        let killed = Instant::now();
        victim.kill9();
        let fw_side = async {
            // The stream ends with the leader; then SUBSCRIBE again, and operate.
            while book.recv(BOUND).await.is_ok() {}
            let mut b = resubscribe(&offers, &id, killed).await;
            let subscribed = killed.elapsed();
            let (accepted, finished, refused) =
                accept_one(&mut b, &format!("run-{run}"), killed).await;
            (b, subscribed, accepted, finished, refused)
        };
        let (elected, (b, subscribed, accepted, finished, refused)) =
            tokio::join!(new_leader(&http, &survivors, killed), fw_side);
        book = b;
        let r = Run {
            elected,
            subscribed,
            accepted,
            finished,
            refused,
        };
        eprintln!(
            "failover {}/{}: elected {:.3} s, subscribed {:.3} s, 202 {:.3} s, FINISHED {:.3} s after the kill",
            run + 1,
            p.runs,
            r.elected.as_secs_f64(),
            r.subscribed.as_secs_f64(),
            r.accepted.as_secs_f64(),
            r.finished.as_secs_f64()
        );
        runs.push(r);
        // Three instances again before the next run.
        inst[leader] = Some(Instance::start(&cfg).await);
        leader = settle(admins(&inst)).await;
    }
    let volumes = polly::client::AdminClient::new(inst[leader].as_ref().unwrap().admin(), None)
        .volumes(false)
        .await
        .unwrap()
        .volumes
        .len();
    assert_eq!(volumes, p.runs + 1, "one volume per accepted CREATE_DISK");
    drop(inst);
    drop(server);
    table(p, &runs)
}

fn table(p: &Params, runs: &[Run]) -> String {
    let ttl = Duration::from_secs(p.ttl_secs);
    let series = |f: &dyn Fn(&Run) -> Duration| -> Latencies {
        Latencies::from(
            runs.iter()
                .map(|r| f(r).as_micros() as u64)
                .collect::<Vec<_>>(),
        )
    };
    let el = series(&|r| r.elected);
    let sub = series(&|r| r.subscribed);
    let acc = series(&|r| r.accepted);
    let fin = series(&|r| r.finished);
    let own = series(&|r| r.accepted.saturating_sub(r.elected));
    let refused: usize = runs.iter().map(|r| r.refused).sum();
    let etcd_version = std::process::Command::new(etcd::binary().unwrap())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mut t = String::new();
    writeln!(
        t,
        "Failover: etcd {etcd_version} on loopback (one member, data on the bench disk) and three \
         `polly serve` processes (release build) with `[ha]` `lease_ttl_secs = {}` and \
         `[store] backend = \"etcd\"`, one shared `vfs` back end, one agent, offers at their \
         defaults (an allocation round every 1 s). A framework knows only a follower's \
         storage-offer address and follows the 307 to the leader. {} runs, each: SIGKILL the \
         leader, then time from the kill until a survivor reports itself leader on \
         `/admin/health` (polled every 10 ms), until the framework (its stream ended by the \
         kill) is subscribed again through the same address (SUBSCRIBE with its id retried \
         every 20 ms: 503 while electing, or a 307 to the dead leader), until its first ACCEPT \
         (CREATE_DISK of 16 MB, an offer from the new leader) is answered 202, and until that \
         operation's OPERATION_FINISHED (volume created, reserved, attached, each step \
         durable in etcd) is on its stream. Between runs the killed instance is started again \
         and the next run begins once all three agree on the leader, after a random pause \
         (uniform over one keep-alive period, TTL/3). Baseline: the configured lease TTL \
         ({} s): a leader that dies without resigning keeps its key until its lease runs out; \
         the lease is renewed every TTL/3, so at a kill at a random moment it has between 2/3 \
         of the TTL and the whole TTL left. Spread: p10 – p90 and min – max over the runs.",
        p.ttl_secs,
        runs.len(),
        p.ttl_secs
    )
    .unwrap();
    writeln!(t).unwrap();
    writeln!(
        t,
        "| from the kill until | runs | median | p10 – p90 | min – max | median / lease TTL |"
    )
    .unwrap();
    writeln!(t, "|---|---:|---:|---|---|---:|").unwrap();
    writeln!(
        t,
        "| baseline: the lease TTL | | {:.3} s | | | 1.00× |",
        ttl.as_secs_f64()
    )
    .unwrap();
    for (what, l) in [
        ("a survivor reports itself leader", &el),
        ("the framework is subscribed again", &sub),
        ("its first ACCEPT is answered 202", &acc),
        ("that operation is OPERATION_FINISHED", &fin),
    ] {
        writeln!(
            t,
            "| {what} | {} | {:.3} s | {:.3} – {:.3} s | {:.3} – {:.3} s | {:.2}× |",
            l.len(),
            l.ms(0.5) / 1e3,
            l.ms(0.1) / 1e3,
            l.ms(0.9) / 1e3,
            l.ms(0.0) / 1e3,
            l.max_ms() / 1e3,
            l.ms(0.5) / 1e3 / ttl.as_secs_f64()
        )
        .unwrap();
    }
    writeln!(t).unwrap();
    writeln!(
        t,
        "Kill → first ACCEPT answered 202 by the new leader: **{:.2} s** median ({:.2}× the \
         {} s lease TTL), kill → its OPERATION_FINISHED **{:.2} s** ({:.2}×); kill → new \
         leader {:.2} s ({:.2}×). After the election, the new leader's own share (leader → \
         202, per run) is {:.2} s median (p10 – p90 {:.2} – {:.2} s): the framework's \
         re-subscription, the new leader's first offer to it and the ACCEPT. \
         ACCEPTs refused before the first 202: {refused} in {} runs.",
        acc.ms(0.5) / 1e3,
        acc.ms(0.5) / 1e3 / ttl.as_secs_f64(),
        p.ttl_secs,
        fin.ms(0.5) / 1e3,
        fin.ms(0.5) / 1e3 / ttl.as_secs_f64(),
        el.ms(0.5) / 1e3,
        el.ms(0.5) / 1e3 / ttl.as_secs_f64(),
        own.ms(0.5) / 1e3,
        own.ms(0.1) / 1e3,
        own.ms(0.9) / 1e3,
        runs.len()
    )
    .unwrap();
    t
}

fn main() {
    if cluster::etcd_missing("failover") {
        return;
    }
    let p = params();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(bench(&p));
    println!("{t}");
    load::write_table("failover", &t);
}
