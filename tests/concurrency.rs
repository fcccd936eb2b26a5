//! Concurrency with real `polly serve` processes over loopback HTTP: two REX-Ray clients
//! racing for one single-writer volume through the libStorage façade, attach/detach storms
//! on one node, and a back-end call that hangs forever while a thousand other operations
//! proceed. Every check is about outcomes (who holds what, in the store and in the back-end,
//! what each client was told, which intents remain), never about how long anything took; the
//! only timeouts are generous ones that turn a deadlock into a failure instead of a hang.

mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use harness::{iid, tx, Polly, Reply, LD};
use serde_json::Value;

/// Long enough for any honest run on a loaded 2-core machine; only a deadlock reaches it.
const DEADLOCK: Duration = Duration::from_secs(120);

/// The façade headers of instance `who` of service `vfs`.
fn h(who: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Libstorage-Instanceid", iid("vfs", who)),
        ("Libstorage-Localdevices", LD.to_string()),
        ("Libstorage-Tx", tx()),
    ]
}

async fn call(p: &Polly, method: &str, path: &str, who: &str, body: Option<&str>) -> Reply {
    let hd = h(who);
    let hd: Vec<(&str, &str)> = hd.iter().map(|(k, v)| (*k, v.as_str())).collect();
    tokio::time::timeout(DEADLOCK, p.req(method, path, &hd, body))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} as {who}: no answer (deadlock?)"))
}

async fn attach(p: &Polly, vol: &str, who: &str, force: bool) -> Reply {
    let body = if force {
        r#"{"nextDeviceName":"/dev/xvdb","force":true}"#
    } else {
        r#"{"nextDeviceName":"/dev/xvdb"}"#
    };
    call(
        p,
        "POST",
        &format!("/volumes/vfs/{vol}?attach"),
        who,
        Some(body),
    )
    .await
}

async fn detach(p: &Polly, vol: &str, who: &str) -> Reply {
    call(
        p,
        "POST",
        &format!("/volumes/vfs/{vol}?detach"),
        who,
        Some("{}"),
    )
    .await
}

/// Create through the façade; returns (Polly id, back-end id).
async fn create(p: &Polly, name: &str) -> (String, String) {
    let r = call(
        p,
        "POST",
        "/volumes/vfs",
        "node1",
        Some(&format!(r#"{{"name":"{name}","size":1}}"#)),
    )
    .await;
    assert_eq!(r.status, 201, "create {name}: {}", r.raw);
    let id = r.json["id"].as_str().unwrap().to_string();
    let vol = store_volume(p, &id).await;
    (id, vol["driver_id"].as_str().unwrap().to_string())
}

async fn store_volume(p: &Polly, id: &str) -> Value {
    p.volumes()
        .await
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("volume {id} not in the store"))
}

/// Instances holding `id` per the admin API.
async fn store_holders(p: &Polly, id: &str) -> Vec<String> {
    holders(&store_volume(p, id).await["attachments"])
}

fn holders(atts: &Value) -> Vec<String> {
    let mut v: Vec<String> = atts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Instances holding back-end volume `driver_id` per the vfs back-end's own metadata file.
fn backend_holders(data_dir: &Path, driver_id: &str) -> Vec<String> {
    let path = data_dir
        .join("vfs/vfs/volumes")
        .join(driver_id)
        .join("volume.json");
    let meta: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    holders(&meta["attachments"])
}

async fn intents(p: &Polly) -> Vec<Value> {
    p.admin_get("/admin/operations")
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn health(p: &Polly) {
    let v = tokio::time::timeout(DEADLOCK, p.admin_get("/admin/health"))
        .await
        .expect("admin health did not answer");
    assert_eq!(v["status"], "ok");
}

/// The fault driver's call log as (method, subject, ok) triples.
fn call_log(path: &Path) -> Vec<(String, String, bool)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "bad call-log line {l:?}");
            (f[0].to_string(), f[1].to_string(), f[2] == "ok")
        })
        .collect()
}

/// Checks that no attach or detach ever failed in the back-end and that, per volume, the
/// back-end saw attaches and detaches strictly alternate (never a second attach of a
/// single-writer volume before it was detached, never a detach of a detached one). Returns
/// how many attachments each back-end volume holds at the end (0 or 1).
fn check_alternation(log: &[(String, String, bool)]) -> BTreeMap<String, u32> {
    let mut held: BTreeMap<String, u32> = BTreeMap::new();
    for (method, subject, ok) in log {
        if !matches!(method.as_str(), "attach" | "detach" | "force_detach") {
            continue;
        }
        assert!(
            ok,
            "the back-end refused {method} {subject}: Polly sent it a conflicting call"
        );
        let n = held.entry(subject.clone()).or_default();
        if method == "attach" {
            assert_eq!(*n, 0, "second attachment of {subject} in the back-end");
            *n = 1;
        } else {
            assert_eq!(*n, 1, "{method} of {subject}, which was not attached");
            *n = 0;
        }
    }
    held
}

fn fault_config(log: &Path) -> String {
    format!(
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[services.fault]\ncall_log = {:?}\n",
        log.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_for_one_single_writer_volume() {
    let logs = tempfile::tempdir().unwrap();
    let log: PathBuf = logs.path().join("calls.log");
    let p = Arc::new(Polly::start_config(&fault_config(&log)));
    let (id, did) = create(&p, "shared").await;
    let (a, b) = ("hostA", "hostB");

    // A watcher samples both views as fast as it can for the whole race: never two holders.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (p, id, did, stop) = (p.clone(), id.clone(), did.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = 0u32;
            while !stop.load(Ordering::Acquire) {
                let s = store_holders(&p, &id).await;
                assert!(s.len() <= 1, "store: {id} held by {s:?} at once");
                let b = backend_holders(&p.data_dir, &did);
                assert!(b.len() <= 1, "back-end: {did} held by {b:?} at once");
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples
        })
    };

    const ROUNDS: usize = 40;
    for round in 0..ROUNDS {
        // Plain, both forced, and each one alone forcing.
        let (fa, fb) = [(false, false), (true, true), (true, false), (false, true)][round % 4];
        if !fa && !fb {
            // A plain race starts from a free volume: its holder lets go first.
            for who in store_holders(&p, &id).await {
                assert_eq!(detach(&p, &id, &who).await.status, 205);
            }
        }
        let (ra, rb) = tokio::join!(attach(&p, &id, a, fa), attach(&p, &id, b, fb));
        let mut winners = Vec::new();
        for (who, r) in [(a, &ra), (b, &rb)] {
            match r.status.as_u16() {
                200 => {
                    r.check_servername();
                    assert_eq!(r.json["attachToken"], "/dev/xvdb", "{}", r.raw);
                    winners.push(who.to_string());
                }
                // The loser: the façade's error, in libStorage's own format.
                500 => r.check_error(500, &format!("volume {id} is attached to")),
                s => panic!("round {round}: {who} got {s}: {}", r.raw),
            }
        }
        let held = store_holders(&p, &id).await;
        assert_eq!(held.len(), 1, "round {round}: holders {held:?}");
        assert!(
            winners.contains(&held[0]),
            "round {round}: {} holds it but was told it lost",
            held[0]
        );
        match (fa, fb) {
            (false, false) => assert_eq!(winners.len(), 1, "round {round}: both won"),
            // Pre-emption and attach are one step: a forced attach always succeeds, and
            // never loses to a plain attach that slipped in between (it used to).
            (true, true) => assert_eq!(winners.len(), 2, "round {round}: a forced attach lost"),
            (true, false) => assert_eq!(held, [a], "round {round}: the forced attach lost"),
            (false, true) => assert_eq!(held, [b], "round {round}: the forced attach lost"),
        }
        assert_eq!(backend_holders(&p.data_dir, &did), held, "round {round}");
        assert!(intents(&p).await.is_empty(), "round {round}: intent left");
    }
    stop.store(true, Ordering::Release);
    let samples = watcher.await.expect("watcher saw two holders");
    assert!(samples > 0);

    let log = call_log(&log);
    let held = check_alternation(&log);
    assert_eq!(held.get(&did), Some(&1));
    let attaches = log.iter().filter(|(m, _, _)| m == "attach").count();
    assert!(attaches >= ROUNDS / 2, "only {attaches} back-end attaches");
    health(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_detach_storms_on_one_node() {
    let logs = tempfile::tempdir().unwrap();
    let log: PathBuf = logs.path().join("calls.log");
    let p = Arc::new(Polly::start_config(&fault_config(&log)));
    const VOLS: usize = 16;
    const NODE: &str = "node1";

    // The volumes are created concurrently too.
    let vols: Vec<(String, String)> = futures::future::join_all((0..VOLS).map(|i| {
        let p = p.clone();
        async move { create(&p, &format!("storm-{i}")).await }
    }))
    .await;

    // Every request answers at once with a success (one node: attach is idempotent, detach of
    // what it does not hold is a no-op), so any other status is a failure.
    let storm = |ops: Vec<(String, bool)>| {
        let p = p.clone();
        async move {
            let replies: Vec<(bool, Reply)> = futures::stream::iter(ops)
                .map(|(id, att)| {
                    let p = p.clone();
                    async move {
                        let r = if att {
                            attach(&p, &id, NODE, false).await
                        } else {
                            detach(&p, &id, NODE).await
                        };
                        (att, r)
                    }
                })
                .buffer_unordered(48)
                .collect()
                .await;
            for (att, r) in replies {
                let want = if att { 200 } else { 205 };
                assert_eq!(r.status, want, "attach={att}: {}", r.raw);
                r.check_servername();
            }
        }
    };
    let consistent = |want: Option<bool>| {
        let (p, vols) = (p.clone(), vols.clone());
        async move {
            let all = p.volumes().await;
            for (id, did) in &vols {
                let v = all.iter().find(|v| &v["id"] == id).unwrap();
                let s = holders(&v["attachments"]);
                assert_eq!(s, backend_holders(&p.data_dir, did), "{id}");
                assert!(s.iter().all(|h| h == NODE), "{id}: {s:?}");
                if let Some(attached) = want {
                    assert_eq!(s.len(), usize::from(attached), "{id}: {s:?}");
                }
            }
            assert!(intents(&p).await.is_empty(), "intent left behind");
        }
    };

    // Everything attached, each volume by three concurrent requests.
    let all = |att: bool, copies: usize| {
        let mut ops = Vec::new();
        for _ in 0..copies {
            ops.extend(vols.iter().map(|(id, _)| (id.clone(), att)));
        }
        ops
    };
    storm(all(true, 3)).await;
    consistent(Some(true)).await;
    // Everything detached, likewise.
    storm(all(false, 3)).await;
    consistent(Some(false)).await;
    // Mixed storms: attaches and detaches of the same volumes racing each other.
    for round in 0..3 {
        let mut ops = Vec::new();
        for (i, (id, _)) in vols.iter().enumerate() {
            for k in 0..6 {
                ops.push((id.clone(), (i + k + round) % 2 == 0));
            }
        }
        storm(ops).await;
        consistent(None).await;
    }
    // Detach-all for the node, racing single detaches: nothing left attached.
    let detach_all = async {
        let r = call(&p, "POST", "/volumes/vfs?detach", NODE, Some("{}")).await;
        assert_eq!(r.status, 205, "{}", r.raw);
    };
    tokio::join!(detach_all, storm(all(false, 1)));
    consistent(Some(false)).await;

    // The back-end saw each volume attached and detached in strict turns, and nothing is
    // attached there now.
    let held = check_alternation(&call_log(&log));
    assert_eq!(held.len(), VOLS, "every volume reached the back-end");
    assert!(held.values().all(|n| *n == 0), "{held:?}");
    health(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_call_blocks_only_its_own_volume() {
    const OTHERS: usize = 20;
    const OPS: usize = 1000;
    let p = Polly::start_config("[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n");
    let (stuck, stuck_did) = create(&p, "stuck").await;
    let mut others = Vec::new();
    for i in 0..OTHERS {
        others.push(create(&p, &format!("other-{i}")).await.0);
    }
    // Restart with the fault driver: attaching `stuck` (by its back-end id) and creating
    // `stuck-new` never return, and the driver timeout will not rescue them during the test.
    let p = Arc::new(p.restart(&format!(
        r#"driver_timeout_secs = 3600
[reconciler]
interval_secs = 0.2
[[services]]
name = "vfs"
driver = "vfs"
[services.fault]
hang = ["attach", "create"]
hang_only = ["{stuck_did}", "stuck-new"]
"#
    )));
    let hung_attach = {
        let (p, stuck) = (p.clone(), stuck.clone());
        tokio::spawn(async move { attach(&p, &stuck, "node1", false).await })
    };
    let hung_create = {
        let p = p.clone();
        tokio::spawn(async move {
            let body = r#"{"name":"stuck-new","size":1}"#;
            call(&p, "POST", "/volumes/vfs", "node1", Some(body)).await
        })
    };
    // Both intents are durable, so both calls have reached the back-end and hang there.
    let mut seen = 0;
    for _ in 0..1500 {
        seen = intents(&p).await.len();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 2, "the two hung calls' intents");

    // A thousand other operations: creates, attaches, detaches, inspects (of the stuck volume
    // too: reads take no lock), lists and admin health checks. Every one must complete.
    let done = Arc::new(AtomicUsize::new(0));
    let results: Vec<(usize, u16, String)> = futures::stream::iter(0..OPS)
        .map(|i| {
            let (p, others, stuck, done) = (p.clone(), &others, &stuck, done.clone());
            async move {
                let other = &others[i % OTHERS];
                let (want, r) = match i % 5 {
                    0 => (
                        201,
                        call(
                            &p,
                            "POST",
                            "/volumes/vfs",
                            "node1",
                            Some(&format!(r#"{{"name":"bulk-{i}","size":1}}"#)),
                        )
                        .await,
                    ),
                    1 => (200, attach(&p, other, "node1", false).await),
                    2 => (205, detach(&p, other, "node1").await),
                    3 if i % 2 == 0 => (
                        200,
                        call(&p, "GET", &format!("/volumes/vfs/{stuck}"), "node1", None).await,
                    ),
                    3 => (200, call(&p, "GET", "/volumes/vfs", "node1", None).await),
                    _ => {
                        health(&p).await;
                        done.fetch_add(1, Ordering::Relaxed);
                        return (i, 200, String::new());
                    }
                };
                done.fetch_add(1, Ordering::Relaxed);
                if r.status.as_u16() == want {
                    (i, want, String::new())
                } else {
                    (i, r.status.as_u16(), r.raw)
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(results.len(), OPS);
    assert_eq!(done.load(Ordering::Relaxed), OPS);
    let failed: Vec<_> = results.iter().filter(|(_, _, e)| !e.is_empty()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..1]
    );

    // The hung calls are still hung, their intents are the only ones left and untouched by
    // the reconciler, which keeps making passes meanwhile.
    assert!(!hung_attach.is_finished() && !hung_create.is_finished());
    let left = intents(&p).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|i| i["volume_id"] == stuck.as_str()));
    assert!(store_holders(&p, &stuck).await.is_empty());
    let runs = |v: Value| v["runs"].as_u64().unwrap_or(0);
    let before = runs(p.admin_get("/admin/reconciler").await);
    let mut now = before;
    for _ in 0..1500 {
        now = runs(p.admin_get("/admin/reconciler").await);
        if now >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(now >= before + 2, "reconciler stalled behind the hung call");
    let st = p.admin_get("/admin/reconciler").await;
    assert_eq!(st["unresolved_intents"], 0, "{st}");
    // The other creates all landed, once each, in the store and the back-end.
    let vols = p.volumes().await;
    let mut bulk: Vec<&str> = vols
        .iter()
        .filter_map(|v| v["name"].as_str().filter(|n| n.starts_with("bulk-")))
        .collect();
    bulk.sort();
    bulk.dedup();
    assert_eq!(bulk.len(), OPS / 5);
    let backend = harness::vfs_volume_dirs(&p.data_dir, "vfs").len();
    assert_eq!(
        backend,
        1 + OTHERS + OPS / 5,
        "stuck-new never reached the back-end"
    );
    health(&p).await;
    hung_attach.abort();
    hung_create.abort();
}
