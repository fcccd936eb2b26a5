//! High availability on etcd (cargo feature `etcd`, `[ha]`): a real etcd on loopback and the
//! real `polly` binary. Three instances elect exactly one leader; followers forward admin and
//! libStorage calls to it and answer the storage-offer endpoint with 307; after the leader is
//! SIGKILLed another takes over with the state intact. At the election level, a leader whose
//! lease is revoked behind its back has its next store write refused by the fence.
#![cfg(feature = "etcd")]

mod common;
mod etcd;
mod framework;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polly::client::AdminClient;
use polly::config::EtcdConfig;
use polly::store::election::{Campaign, Election};
use polly::store::{Error, Op, Store};
use polly::volumes::CreateVolume;
use serde_json::Value;
use support::{refs, Polly};

fn etcd_config(url: &str, prefix: &str) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![url.to_string()],
        prefix: prefix.to_string(),
        ..Default::default()
    }
}

/// (b) A leader cut off from etcd (its lease revoked behind its back, as when its session
/// expires during a partition) learns it lost, and its next write is refused by etcd itself;
/// the new leader writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write() {
    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let cfg = etcd_config(&server.url(), &etcd::unique_prefix("fence"));
    let ttl = Duration::from_secs(3);

    let a = Election::connect(&cfg, ttl).await.unwrap();
    let Campaign::Won(term_a) = a.campaign(b"a".to_vec()).await.unwrap() else {
        panic!("the first candidate lost an empty election");
    };
    let c = cfg.clone();
    let fence_a = term_a.fence.clone();
    let store_a = tokio::task::spawn_blocking(move || Store::open_etcd(&c, Some(fence_a)))
        .await
        .unwrap()
        .unwrap();
    let fenced = Arc::new(AtomicUsize::new(0));
    let f = fenced.clone();
    store_a.on_fenced(Arc::new(move |_| {
        f.fetch_add(1, Ordering::SeqCst);
    }));
    let put = |k: &str| vec![Op::PutMeta(k.into(), "v".into())];
    store_a.apply(&put("while-leading")).unwrap();

    // A second candidate loses and sees the leader's announcement.
    let b = Election::connect(&cfg, ttl).await.unwrap();
    let revision = match b.campaign(b"b".to_vec()).await.unwrap() {
        Campaign::Lost { leader, revision } => {
            assert_eq!(leader, b"a");
            revision
        }
        Campaign::Won(_) => panic!("two leaders at once"),
    };

    // The partition: the lease ends without the leader doing anything.
    server.ctl(&["lease", "revoke", &format!("{:x}", term_a.lease_id)]);
    tokio::time::timeout(Duration::from_secs(10), term_a.lost().cancelled())
        .await
        .expect("the deposed leader never noticed");
    tokio::time::timeout(Duration::from_secs(10), b.wait_vacant(revision))
        .await
        .expect("the follower never saw the key go")
        .unwrap();
    let Campaign::Won(term_b) = b.campaign(b"b".to_vec()).await.unwrap() else {
        panic!("the follower lost a vacant election");
    };
    assert!(term_b.fence.create_revision > term_a.fence.create_revision);

    // The old leader's write is refused in etcd's Txn; nothing of it lands.
    match store_a.apply(&put("after-deposed")) {
        Err(Error::Fenced {
            expected, found, ..
        }) => {
            assert_eq!(expected, term_a.fence.create_revision);
            assert_eq!(found, term_b.fence.create_revision);
        }
        other => panic!("a deposed leader's write was not fenced: {other:?}"),
    }
    assert_eq!(
        fenced.load(Ordering::SeqCst),
        1,
        "the fenced hook did not run"
    );
    let c = cfg.clone();
    let fence_b = term_b.fence.clone();
    let store_b = tokio::task::spawn_blocking(move || Store::open_etcd(&c, Some(fence_b)))
        .await
        .unwrap()
        .unwrap();
    let meta = store_b.dump().unwrap().meta;
    assert!(meta.contains_key("while-leading"), "{meta:?}");
    assert!(!meta.contains_key("after-deposed"), "{meta:?}");
    store_b.apply(&put("new-leader")).unwrap();
    // The old leader stays fenced for good.
    assert!(matches!(
        store_a.apply(&put("again")),
        Err(Error::Fenced { .. })
    ));
}

/// A leader that cannot reach etcd any more (etcd SIGKILLed) gives up leadership on its own
/// once keep-alives go unacknowledged, without any answer from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_gives_up() {
    if etcd::skip().is_some() {
        return;
    }
    let mut own = etcd::Etcd::start();
    let cfg = etcd_config(&own.url(), &etcd::unique_prefix("cutoff"));
    let a = Election::connect(&cfg, Duration::from_secs(3))
        .await
        .unwrap();
    let Campaign::Won(term) = a.campaign(b"a".to_vec()).await.unwrap() else {
        panic!("lost an empty election");
    };
    // Still leading after a few keep-alive rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!term.lost().is_cancelled(), "gave up while etcd was there");
    own.kill9();
    let cut = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), term.lost().cancelled())
        .await
        .expect("a leader cut off from etcd kept leading");
    eprintln!("cut off: gave up {:?} after etcd died", cut.elapsed());
}

fn ha_config(url: &str, prefix: &str, root: &std::path::Path) -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
root = "{}"

[store]
backend = "etcd"

[store.etcd]
endpoints = ["{url}"]
prefix = "{prefix}"

[ha]
enabled = true
lease_ttl_secs = 2
"#,
        root.display()
    )
}

fn ls_headers(instance: &str) -> Vec<(&'static str, String)> {
    support::ls_headers("vfs", instance)
}

async fn health(p: &Polly) -> Value {
    reqwest::get(format!("{}/admin/health", p.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn hostport(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// (a) Three instances, one leader; follower calls reach it; kill -9 the leader and another
/// serves within 5 s (a liveness bound with a 2 s lease, not a speed claim) with nothing lost,
/// duplicated or double-attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fail_over_without_losing_state() {
    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let prefix = etcd::unique_prefix("ha");
    let root = tempfile::tempdir().unwrap();
    let cfg = ha_config(&server.url(), &prefix, root.path());
    let mut ps: Vec<Polly> = (0..3).map(|_| Polly::start_config(&cfg)).collect();

    // Exactly one leader; the others name it.
    let mut roles = Vec::new();
    for p in &ps {
        roles.push(health(p).await);
    }
    let leaders: Vec<usize> = (0..3).filter(|i| roles[*i]["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{roles:?}");
    let li = leaders[0];
    for (i, r) in roles.iter().enumerate().filter(|(i, _)| *i != li) {
        assert_eq!(r["role"], "follower", "{r}");
        assert_eq!(
            r["leader"]["admin"],
            hostport(&ps[li].admin),
            "instance {i}: {r}"
        );
    }
    let ready: Value = reqwest::get(format!("{}/admin/ready", ps[(li + 1) % 3].admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["role"], "follower", "{ready}");
    let (f1, f2) = ((li + 1) % 3, (li + 2) % 3);

    // Admin calls through a follower: create and attach.
    let c1 = AdminClient::new(&ps[f1].admin, None);
    let a1 = c1
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "a1".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    c1.attach(&a1.id, None, "i-1", None).await.unwrap();
    // The same name with another size, through the other follower, is refused by the leader.
    let c2 = AdminClient::new(&ps[f2].admin, None);
    let dup = c2
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "a1".into(),
            size_bytes: 2 << 20,
            ..Default::default()
        })
        .await;
    assert!(dup.is_err(), "{dup:?}");

    // libStorage through the other follower, as REX-Ray: create, attach.
    let h = ls_headers("vm");
    let r = ps[f2]
        .req(
            "POST",
            "/volumes/vfs",
            &refs(&h),
            Some(r#"{"name":"demo1","availabilityZone":"","encrypted":false,"iops":0,"size":1,"type":""}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let ls_id = r.json["id"].as_str().unwrap().to_string();
    let h = ls_headers("vm");
    let r = ps[f2]
        .req(
            "POST",
            &format!("/volumes/vfs/{ls_id}?attach"),
            &refs(&h),
            Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);

    // The storage-offer endpoint on a follower: 307 to the leader's, protocol-relative.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .post(format!("{}/api/v1/scheduler", ps[f1].offers))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        format!("//{}/api/v1/scheduler", hostport(&ps[li].offers)).as_str()
    );

    let before = AdminClient::new(&ps[li].admin, None).dump().await.unwrap();
    assert_eq!(before.volumes.len(), 2);

    // kill -9 the leader; a survivor serves a write within the liveness bound.
    let leader = ps.remove(li);
    let killed = Instant::now();
    leader.kill9();
    let survivors = ps;
    let bound = Duration::from_secs(5);
    let new_leader = loop {
        let mut found = None;
        for (i, p) in survivors.iter().enumerate() {
            if health(p).await["role"] == "leader" {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(
            killed.elapsed() < bound,
            "no new leader within {bound:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let nl = &survivors[new_leader];
    let other = &survivors[1 - new_leader];
    let cn = AdminClient::new(&nl.admin, None);
    // The state is what it was: nothing lost, no intent left, no orphan or missing volume.
    assert_eq!(
        cn.dump().await.unwrap(),
        before,
        "state changed across the failover"
    );
    // The new leader serves a write at once (its driver reloaded what the old leader did to
    // the shared vfs root: no id reused).
    let after = cn
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "after".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let served = killed.elapsed();
    eprintln!("failover: first write served {served:?} after the kill");
    assert!(
        served < bound,
        "the new leader served its first write {served:?} after the kill"
    );
    // The other survivor follows the new leader.
    let h = loop {
        let h = health(other).await;
        if h["leader"]["admin"] == hostport(&nl.admin) || killed.elapsed() > bound * 2 {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(h["role"], "follower", "{h}");
    assert_eq!(h["leader"]["admin"], hostport(&nl.admin), "{h}");

    let vols = cn.volumes(false).await.unwrap().volumes;
    assert_eq!(vols.len(), 3, "{vols:?}");
    let a1v = vols.iter().find(|v| v.name == "a1").unwrap();
    assert_eq!(a1v.attachments.len(), 1, "{a1v:?}");
    assert!(vols.iter().any(|v| v.id == after.id));
    let r = cn.orphans().await.unwrap();
    assert!(r.orphans.is_empty() && r.missing.is_empty(), "{r:?}");
    assert!(
        cn.operations().await.unwrap().is_empty(),
        "intent left over"
    );
    // Exactly the volumes' directories on the shared vfs root: nothing created twice.
    let dirs = std::fs::read_dir(root.path().join("volumes"))
        .unwrap()
        .count();
    assert_eq!(dirs, 3, "vfs root holds {dirs} entries for 3 volumes");

    // libStorage through the remaining follower: the attachment made before the kill.
    let h = ls_headers("vm");
    let r = other
        .req(
            "GET",
            &format!("/volumes/vfs/{ls_id}?attachments=31"),
            &refs(&h),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.json["attachments"][0]["instanceID"]["id"], "vm",
        "{}",
        r.raw
    );
    assert_eq!(r.json["attachments"].as_array().map(Vec::len), Some(1));
    // And a detach through it lands on the new leader.
    let h = ls_headers("vm");
    let r = other
        .req(
            "POST",
            &format!("/volumes/vfs/{ls_id}?detach"),
            &refs(&h),
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, 205, "{}", r.raw);
    let demo = cn.inspect(&ls_id, None).await.unwrap();
    assert!(demo.attachments.is_empty(), "{demo:?}");
}

/// (b) end to end: the serving leader's lease is revoked behind its back (as if its etcd
/// session were cut); it stops at once with exit code 3 and the other instance takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_ends_exits_and_is_replaced() {
    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let prefix = etcd::unique_prefix("ha-lease");
    let root = tempfile::tempdir().unwrap();
    let cfg = ha_config(&server.url(), &prefix, root.path());
    let mut ps: Vec<Polly> = (0..2).map(|_| Polly::start_config(&cfg)).collect();
    let mut li = None;
    for (i, p) in ps.iter().enumerate() {
        if health(p).await["role"] == "leader" {
            li = Some(i);
        }
    }
    let li = li.expect("no leader");
    let got: Value =
        serde_json::from_str(&server.ctl(&["get", &format!("{prefix}leader"), "-w", "json"]))
            .unwrap();
    let lease = got["kvs"][0]["lease"]
        .as_i64()
        .expect("leader key has a lease");
    server.ctl(&["lease", "revoke", &format!("{lease:x}")]);

    let start = Instant::now();
    let code = loop {
        if let Some(c) = ps[li].exit_code() {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the deposed leader kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 3, "exit code of a deposed leader");
    let other = &ps[1 - li];
    loop {
        if health(other).await["role"] == "leader" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no instance took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    AdminClient::new(&other.admin, None)
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "after".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A leader stopped cleanly (SIGTERM) resigns: another instance leads long before its
/// 30 s lease could have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_cleanly_hands_over_at_once() {
    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let prefix = etcd::unique_prefix("ha-resign");
    let root = tempfile::tempdir().unwrap();
    let cfg = ha_config(&server.url(), &prefix, root.path())
        .replace("lease_ttl_secs = 2", "lease_ttl_secs = 30");
    let mut ps: Vec<Polly> = (0..2).map(|_| Polly::start_config(&cfg)).collect();
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let stopped = Instant::now();
    ps[li].sigterm();
    let code = loop {
        if let Some(c) = ps[li].exit_code() {
            break c;
        }
        assert!(stopped.elapsed() < Duration::from_secs(15), "no clean stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 0, "a clean stop of the leader");
    let leader = ps.remove(li);
    drop(leader);
    leader_among(&ps, stopped, Duration::from_secs(15)).await;
}

fn offers_config(url: &str, prefix: &str, root: &std::path::Path) -> String {
    ha_config(url, prefix, root).replace(
        "driver = \"vfs\"\n",
        "driver = \"vfs\"\nzone = \"zone-a\"\nquota_bytes = 10737418240\n",
    ) + r#"
[mesos]
agents = [{ id = "agent-a", hostname = "host-a", region = "eu", zone = "zone-a" }]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 600
[offers.instances]
agent-a = "i-a"
"#
}

async fn leader_among(ps: &[Polly], since: Instant, bound: Duration) -> usize {
    loop {
        for (i, p) in ps.iter().enumerate() {
            if health(p).await["role"] == "leader" {
                return i;
            }
        }
        assert!(since.elapsed() < bound, "no leader within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (c) A framework that only knows a follower's address: its SUBSCRIBE and calls follow the
/// 307 to the leader; the leader is SIGKILLed with a CREATE_DISK just accepted; the
/// framework re-subscribes with its id through the same address, gets that operation's
/// terminal status (not the one it acknowledged before), new offers, and a new CREATE_DISK
/// works; every volume it holds has exactly one back-end directory and attachment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_follows_the_307_across_a_failover() {
    use framework::{create_disk, offer_on, subscribe};
    use polly::config::MesosContentType;
    use serde_json::json;

    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let prefix = etcd::unique_prefix("ha-fw");
    let root = tempfile::tempdir().unwrap();
    let cfg = offers_config(&server.url(), &prefix, root.path());
    let mut ps: Vec<Polly> = (0..3).map(|_| Polly::start_config(&cfg)).collect();
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let fi = (li + 1) % 3;
    let base = ps[fi].offers.clone();

    let mut fw = subscribe(&base, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    fw.call(create_disk(
        &fw.id,
        offer_on(&offers, "agent-a"),
        "op-1",
        64.0,
    ))
    .await;
    let done = loop {
        let st = fw.status("op-1", 30).await;
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    fw.call(
        json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": fw.id},
        "acknowledge_operation_status": done.clone()}),
    )
    .await;
    let admin = AdminClient::new(&ps[fi].admin, None);
    let start = Instant::now();
    while !admin.dump().await.unwrap().operations[0].acknowledged {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "ack not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second CREATE_DISK, then kill -9 the leader as soon as it is accepted.
    let offers = fw.offers_for(&["agent-a"]).await;
    fw.call(create_disk(
        &fw.id,
        offer_on(&offers, "agent-a"),
        "op-2",
        32.0,
    ))
    .await;
    let leader = ps.remove(li);
    let killed = Instant::now();
    leader.kill9();
    let fi = ps.iter().position(|p| p.offers == base).unwrap();
    let nl = leader_among(&ps, killed, Duration::from_secs(10)).await;

    // Re-subscribe with the same id through the same (follower's) address.
    let id = fw.id.clone();
    let mut fw = subscribe(&ps[fi].offers, MesosContentType::Json, Some(&id)).await;
    assert_eq!(fw.id, id);
    let st2 = loop {
        let ev = fw
            .next_where("a status", 30, |e| e["type"] == "UPDATE_OPERATION_STATUS")
            .await;
        let st = ev["update_operation_status"]["status"].clone();
        assert_ne!(
            st["operation_id"]["value"], "op-1",
            "an acknowledged status came again"
        );
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(st2["operation_id"]["value"], "op-2");
    assert!(
        st2["state"] == "OPERATION_FINISHED" || st2["state"] == "OPERATION_FAILED",
        "{st2}"
    );
    fw.call(
        json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": id},
        "acknowledge_operation_status": st2.clone()}),
    )
    .await;

    // New offers from the new leader, and a new operation through the 307.
    let offers = fw.offers_for(&["agent-a"]).await;
    fw.call(create_disk(&id, offer_on(&offers, "agent-a"), "op-3", 16.0))
        .await;
    let st3 = loop {
        let st = fw.status("op-3", 30).await;
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(st3["state"], "OPERATION_FINISHED", "{st3}");

    let c = AdminClient::new(&ps[nl].admin, None);
    let vols = c.volumes(false).await.unwrap().volumes;
    let expected = if st2["state"] == "OPERATION_FINISHED" {
        3
    } else {
        2
    };
    assert_eq!(vols.len(), expected, "{vols:?}");
    for v in &vols {
        assert!(v.restrict_frameworks.contains(&id), "{v:?}");
        assert_eq!(v.attachments.len(), 1, "{v:?}");
        assert_eq!(v.attachments[0].instance_id, "i-a");
    }
    let dirs = std::fs::read_dir(root.path().join("volumes"))
        .unwrap()
        .count();
    assert_eq!(dirs, expected, "back-end volumes vs records");
    let r = c.orphans().await.unwrap();
    assert!(r.orphans.is_empty() && r.missing.is_empty(), "{r:?}");
    assert!(c.operations().await.unwrap().is_empty(), "intent left over");
}

/// A self-signed certificate for 127.0.0.1 (the address the leader advertises here) written
/// as PEM files in `dir`; returns the certificate's PEM and the two paths.
fn loopback_cert(
    dir: &std::path::Path,
    tag: &str,
) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (c, k) = (
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (ck.cert.pem(), c, k)
}

/// (e) The façade serves TLS on every instance (one certificate, as REX-Ray agents speak
/// TLS by default): a follower forwards libStorage calls to the leader over TLS, trusting
/// that certificate, and checks it: an instance told to trust another certificate
/// (`ha.leader_ca_file`) refuses to forward (502 in libStorage's error format) and keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_to_a_leader_serving_tls() {
    if etcd::skip().is_some() {
        return;
    }
    let server = etcd::Etcd::shared();
    let prefix = etcd::unique_prefix("ha-tls");
    let root = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (pem, cert, key) = loopback_cert(certs.path(), "polly");
    let tls = format!("\n[libstorage.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
    let cfg = ha_config(&server.url(), &prefix, root.path()) + &tls;
    let ps: Vec<Polly> = (0..3).map(|_| Polly::start_config(&cfg)).collect();
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let fi = (li + 1) % 3;
    // Followers know the leader (and that its façade is https) once they have read the key.
    let start = Instant::now();
    while health(&ps[fi]).await["leader"]["libstorage_scheme"] != "https" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "follower never saw the leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let https = Https::trusting(&pem);
    let h = ls_headers("vm-tls");
    let body =
        r#"{"name":"tls1","availabilityZone":"","encrypted":false,"iops":0,"size":1,"type":""}"#;
    let (status, created) = https
        .call(&ps[fi].ls, "POST", "/volumes/vfs", &h, body)
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // The leader has it; the follower's list (forwarded again) shows it.
    let (status, on_leader) = https
        .call(&ps[li].ls, "GET", &format!("/volumes/vfs/{id}"), &h, "")
        .await;
    assert_eq!(
        (status, &on_leader["name"]),
        (200, &Value::from("tls1")),
        "{on_leader}"
    );
    let (status, listed) = https.call(&ps[fi].ls, "GET", "/volumes/vfs", &h, "").await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.get(&id).is_some(), "{listed}");

    // A fourth instance that trusts only another certificate: its forward is refused.
    let (_, other, _) = loopback_cert(certs.path(), "other");
    let wrong = cfg.replace(
        "lease_ttl_secs = 2\n",
        &format!("lease_ttl_secs = 2\nleader_ca_file = {other:?}\n"),
    );
    let p4 = Polly::start_config(&wrong);
    let start = Instant::now();
    while health(&p4).await["role"] != "follower" {
        assert!(start.elapsed() < Duration::from_secs(10), "no follower");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = https.call(&p4.ls, "GET", "/volumes/vfs", &h, "").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["status"], 502, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("leader") && msg.contains("TLS"), "{body}");
    assert_eq!(health(&p4).await["role"], "follower");
}

/// HTTPS to a façade on loopback, trusting only one certificate: one HTTP/1.1 request per
/// connection (as a REX-Ray agent with TLS on speaks to it).
struct Https {
    tls: tokio_rustls::TlsConnector,
}

impl Https {
    fn trusting(pem: &str) -> Https {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
        let cc = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Https {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cc)),
        }
    }

    /// `base` is the façade's address as the harness has it (`SCHEME://127.0.0.1:PORT`);
    /// returns the status and JSON body.
    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        headers: &[(&'static str, String)],
        body: &str,
    ) -> (u16, Value) {
        let hostport = base.split_once("://").map_or(base, |(_, a)| a);
        let tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let stream = self.tls.connect(name, tcp).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", hostport);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(axum::body::Body::from(body.to_string())).unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 20)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }
}
