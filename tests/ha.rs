//! High availability on etcd (cargo feature `etcd`, `[ha]`): a real etcd on loopback and the
//! real `polly` binary. Three instances elect exactly one leader; followers forward admin and
//! libStorage calls to it and answer the storage-offer endpoint with 307; after the leader is
//! SIGKILLed another takes over with the state intact. At the election level, a leader whose
//! lease is revoked behind its back has its next store write refused by the fence.
#![cfg(feature = "etcd")]

mod harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::etcd;
use harness::fakes::framework;
use harness::{refs, Polly};
use polly::client::AdminClient;
use polly::store::election::{Campaign, Election};
use polly::store::EtcdConfig;
use polly::store::{Error, Op, Store};
use polly::volumes::CreateVolume;
use serde_json::Value;

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
    harness::ls_headers("vfs", instance)
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
    let Some(mut cluster) = etcd::cluster(3, "ha", ha_config, Polly::start_config) else {
        return;
    };
    let mut ps = std::mem::take(&mut cluster.nodes);

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
    let after = write_within(&cn, "vfs", killed, bound).await;
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
    let dirs = std::fs::read_dir(cluster.root.path().join("volumes"))
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
    let Some(mut cluster) = etcd::cluster(2, "ha-lease", ha_config, Polly::start_config) else {
        return;
    };
    let mut ps = std::mem::take(&mut cluster.nodes);
    let mut li = None;
    for (i, p) in ps.iter().enumerate() {
        if health(p).await["role"] == "leader" {
            li = Some(i);
        }
    }
    let li = li.expect("no leader");
    let got: Value = serde_json::from_str(&cluster.etcd.ctl(&[
        "get",
        &format!("{}leader", cluster.prefix),
        "-w",
        "json",
    ]))
    .unwrap();
    let lease = got["kvs"][0]["lease"]
        .as_i64()
        .expect("leader key has a lease");
    cluster
        .etcd
        .ctl(&["lease", "revoke", &format!("{lease:x}")]);

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
    let long_lease = |url: &str, prefix: &str, root: &std::path::Path| {
        ha_config(url, prefix, root).replace("lease_ttl_secs = 2", "lease_ttl_secs = 30")
    };
    let Some(mut cluster) = etcd::cluster(2, "ha-resign", long_lease, Polly::start_config) else {
        return;
    };
    let mut ps = std::mem::take(&mut cluster.nodes);
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

/// CSI on a follower: Identity answers (Probe: not ready), every Controller call is
/// UNAVAILABLE naming the leader, and nothing it is asked reaches the store; the leader's
/// CSI serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_csi_unavailable_naming_the_leader() {
    use harness::csi::{create_req, rwo};
    use polly::csi::v1::{ListVolumesRequest, ProbeRequest};
    let Some(mut cluster) = etcd::cluster(2, "ha-csi", ha_config, Polly::start_config) else {
        return;
    };
    let ps = std::mem::take(&mut cluster.nodes);
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let (leader, follower) = (&ps[li], &ps[1 - li]);
    let since = Instant::now();
    while health(follower).await["role"] != "follower" {
        assert!(since.elapsed() < Duration::from_secs(10), "no follower");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut f = follower.csi().await;
    let probe = f
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(false));
    let err = f
        .controller
        .create_volume(create_req("on-follower", 1 << 20, rwo(), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.message().contains(hostport(&leader.admin)),
        "{} does not name the leader {}",
        err.message(),
        leader.admin
    );
    let err = f
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        leader.volumes().await.is_empty(),
        "the follower created something"
    );
    let mut l = leader.csi().await;
    let probe = l
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    l.controller
        .create_volume(create_req("on-leader", 1 << 20, rwo(), &[]))
        .await
        .unwrap();
    assert_eq!(leader.volumes().await.len(), 1);
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

/// The new leader (`c`) creates a volume `after` in `service`, and has done so within `bound`
/// of the kill (issue 9's liveness bound, tied to the lease TTL, not a speed claim).
async fn write_within(
    c: &AdminClient,
    service: &str,
    killed: Instant,
    bound: Duration,
) -> polly::admin::VolumeView {
    let v = c
        .create(&CreateVolume {
            service: service.into(),
            name: "after".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let served = killed.elapsed();
    eprintln!("failover: the new leader served its first write {served:?} after the kill");
    assert!(
        served < bound,
        "the new leader served its first write {served:?} after the kill"
    );
    v
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
    use polly::mesos::client::MesosContentType;
    use serde_json::json;

    let Some(mut cluster) = etcd::cluster(3, "ha-fw", offers_config, Polly::start_config) else {
        return;
    };
    let mut ps = std::mem::take(&mut cluster.nodes);
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
    let dirs = std::fs::read_dir(cluster.root.path().join("volumes"))
        .unwrap()
        .count();
    assert_eq!(dirs, expected, "back-end volumes vs records");
    let r = c.orphans().await.unwrap();
    assert!(r.orphans.is_empty() && r.missing.is_empty(), "{r:?}");
    assert!(c.operations().await.unwrap().is_empty(), "intent left over");
}

/// Agents of the burst test: one per zone, each with its own pool (a service in its zone), so
/// concurrent ACCEPTs on different agents never spend the same share.
const BURST_AGENTS: [&str; 3] = ["a", "b", "c"];
/// Driver latency of the burst test (every back-end call), so operations and attaches are
/// still running when the leader is killed.
const BURST_LATENCY_MS: u64 = 200;

fn burst_config(url: &str, prefix: &str, root: &std::path::Path) -> String {
    let mut cfg = String::new();
    for a in BURST_AGENTS {
        cfg += &format!(
            r#"
[[services]]
name = "vfs-{a}"
driver = "vfs"
root = "{}"
zone = "zone-{a}"
quota_bytes = 10737418240
[services.fault]
latency_ms = {BURST_LATENCY_MS}
"#,
            root.join(format!("vfs-{a}")).display()
        );
    }
    cfg += &format!(
        r#"
[store]
backend = "etcd"

[store.etcd]
endpoints = ["{url}"]
prefix = "{prefix}"

[ha]
enabled = true
lease_ttl_secs = 2

[mesos]
agents = [
"#
    );
    for a in BURST_AGENTS {
        cfg += &format!(
            "  {{ id = \"agent-{a}\", hostname = \"host-{a}\", region = \"eu\", zone = \"zone-{a}\" }},\n"
        );
    }
    cfg += "]\n\n[offers]\npoll_interval_secs = 0.2\nallocation_interval_ms = 100\noffer_timeout_secs = 600\n[offers.instances]\n";
    for a in BURST_AGENTS {
        cfg += &format!("agent-{a} = \"i-{a}\"\n");
    }
    cfg
}

/// One UPDATE_OPERATION_STATUS as the framework received it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which subscription's stream carried it (1: before the kill, 2: after).
    sub: u32,
    op: String,
    state: String,
    /// `status.uuid.value`: set while the status awaits acknowledgement.
    uuid: Option<String>,
    status: Value,
}

/// What a framework needs to post calls on a subscription.
#[derive(Clone)]
struct Stream {
    base: String,
    id: String,
    stream_id: String,
    http: reqwest::Client,
}

impl Stream {
    /// POST a JSON call (following a follower's 307); the status code, or why none came.
    async fn post(&self, body: &Value) -> Result<u16, String> {
        let r = self
            .http
            .post(format!("{}/api/v1/scheduler", self.base))
            .header("content-type", "application/json")
            .header("mesos-stream-id", &self.stream_id)
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.status().as_u16())
    }
}

/// Read a subscription's events in a task, as a scheduler library does: record every
/// operation status in `seen`, acknowledge each terminal one that carries a uuid (at once,
/// best effort: one lost with the leader comes again on the next subscription), and pass
/// OFFERS and RESCIND events on.
fn pump(
    fw: framework::Framework,
    sub: u32,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
) -> (Stream, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let framework::Framework {
        base,
        id,
        stream_id,
        mut events,
        skipped,
        http,
        ..
    } = fw;
    let stream = Stream {
        base,
        id,
        stream_id,
        http,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let s = stream.clone();
    tokio::spawn(async move {
        let mut kept = skipped;
        loop {
            let ev = match kept.pop_front() {
                Some(ev) => ev,
                None => match events.recv().await {
                    Some(ev) => ev,
                    None => return,
                },
            };
            match ev["type"].as_str() {
                Some("UPDATE_OPERATION_STATUS") => {
                    let st = ev["update_operation_status"]["status"].clone();
                    let uuid = st["uuid"]["value"].as_str().map(String::from);
                    let state = st["state"].as_str().unwrap_or_default().to_string();
                    seen.lock().unwrap().push(Seen {
                        sub,
                        op: st["operation_id"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        state: state.clone(),
                        uuid: uuid.clone(),
                        status: st.clone(),
                    });
                    if uuid.is_some() && state != "OPERATION_PENDING" {
                        let s = s.clone();
                        tokio::spawn(async move {
                            let ack = serde_json::json!({"type": "ACKNOWLEDGE_OPERATION_STATUS",
                                "framework_id": {"value": s.id},
                                "acknowledge_operation_status": st});
                            let _ = s.post(&ack).await;
                        });
                    }
                }
                Some("OFFERS") | Some("RESCIND") => {
                    let _ = tx.send(ev);
                }
                _ => {}
            }
        }
    });
    (stream, rx)
}

/// Keep `offers` (agent id → its newest outstanding offer of RAW disk) up to date from the events (all
/// those already received first, so no rescinded offer is kept) until every agent in
/// `agents` has one.
async fn offers_for_all(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    offers: &mut std::collections::BTreeMap<String, Value>,
    agents: &[String],
) {
    let apply = |offers: &mut std::collections::BTreeMap<String, Value>, ev: Value| {
        if ev["type"] == "RESCIND" {
            let gone = &ev["rescind"]["offer_id"]["value"];
            offers.retain(|_, o| o["id"]["value"] != *gone);
        } else {
            // Only offers with a pool's RAW share: one showing just the framework's new
            // volumes does not replace the agent's outstanding RAW offer.
            for o in ev["offers"]["offers"].as_array().unwrap() {
                let raw = o["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["disk"]["source"]["type"] == "RAW");
                if raw {
                    let agent = o["agent_id"]["value"].as_str().unwrap().to_string();
                    offers.insert(agent, o.clone());
                }
            }
        }
    };
    while let Ok(ev) = rx.try_recv() {
        apply(offers, ev);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !agents.iter().all(|a| offers.contains_key(a)) {
        let ev = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no offers for all of {agents:?}: {offers:?}"))
            .expect("event pump ended");
        apply(offers, ev);
    }
}

/// An ACCEPT of `offer` with one CREATE_DISK of `mb` per operation id, from the offer's RAW
/// disk.
fn create_disks(fw: &str, offer: &Value, op_ids: &[String], mb: f64) -> Value {
    let mut source = offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["disk"]["source"]["type"] == "RAW")
        .unwrap_or_else(|| panic!("no RAW disk in {offer}"))
        .clone();
    source["scalar"]["value"] = serde_json::json!(mb);
    let operations: Vec<Value> = op_ids
        .iter()
        .map(|op| {
            serde_json::json!({"type": "CREATE_DISK", "id": {"value": op},
                "create_disk": {"source": source, "target_type": "MOUNT"}})
        })
        .collect();
    serde_json::json!({"type": "ACCEPT", "framework_id": {"value": fw},
        "accept": {"offer_ids": [offer["id"].clone()], "operations": operations,
            "filters": {"refuse_seconds": 0}}})
}

/// How a libStorage attach ended for its client.
#[derive(Debug, Clone, PartialEq)]
enum Attached {
    Yes,
    /// Refused: the volume is attached to another instance.
    Taken(String),
}

/// A libStorage attach as a REX-Ray agent makes it, through `ls` (a follower's façade),
/// retried on a connection error and on any 5xx but "attached to another instance" (a
/// leader going away shows as 502 or 503 from the follower, or a broken connection).
async fn ls_attach(ls: String, service: String, volume: String, instance: String) -> Attached {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let start = Instant::now();
    loop {
        let mut r = http.post(format!("{ls}/volumes/{service}/{volume}?attach"));
        for (k, v) in harness::ls_headers(&service, &instance) {
            r = r.header(k, v);
        }
        let (status, body) = match r.body(r#"{"nextDeviceName":"/dev/xvda"}"#).send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                (s, resp.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        match status {
            200 => return Attached::Yes,
            500 if body.contains("is attached to") => return Attached::Taken(body),
            0 | 500..=599 => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "attach of {volume} by {instance} still failing after 60 s: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("attach of {volume} by {instance}: {status} {body}"),
        }
    }
}

/// Issue 9: three instances; a framework subscribed through a follower sends a burst of
/// CREATE_DISK accepts on three agents while REX-Ray clients attach volumes through the
/// followers' façades (two instances racing for each of two single-writer volumes); the
/// leader is SIGKILLed in the middle of it. A new leader serves within 5 s; every accepted
/// operation ends FINISHED or FAILED with one terminal status, redelivered only while not
/// acknowledged durably and never changing; after everything is acknowledged nothing comes
/// again; every volume exists once in the back-end with at most one attachment, each
/// uncontested attach holds and each race has exactly one winner; no intent, orphan or
/// missing volume is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_accepts_and_attaches_survives_killing_the_leader() {
    use framework::{subscribe, try_subscribe};
    use polly::mesos::client::MesosContentType;
    use std::collections::{BTreeMap, BTreeSet};

    let Some(mut cluster) = etcd::cluster(3, "ha-burst", burst_config, Polly::start_config) else {
        return;
    };
    let mut ps = std::mem::take(&mut cluster.nodes);
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let (f1, f2) = ((li + 1) % 3, (li + 2) % 3);
    let agents: Vec<String> = BURST_AGENTS.iter().map(|a| format!("agent-{a}")).collect();

    // Volumes for the REX-Ray clients, made before the burst: six for one instance each,
    // two that two instances race for.
    let admin = AdminClient::new(&ps[f1].admin, None);
    let mut ls_vols = BTreeMap::new();
    for name in [
        "ls-0", "ls-1", "ls-2", "ls-3", "ls-4", "ls-5", "race-0", "race-1",
    ] {
        let v = admin
            .create(&CreateVolume {
                service: "vfs-a".into(),
                name: name.into(),
                size_bytes: 1 << 20,
                ..Default::default()
            })
            .await
            .unwrap();
        ls_vols.insert(name.to_string(), v.id);
    }

    let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let fw = subscribe(&ps[f1].offers, MesosContentType::Json, None).await;
    let fw_id = fw.id.clone();
    let (s1, mut events) = pump(fw, 1, seen.clone());
    let mut offers = BTreeMap::new();
    offers_for_all(&mut events, &mut offers, &agents).await;

    // Round 1: three ACCEPTs at once (one per agent), two CREATE_DISKs each.
    let mut accepted: BTreeSet<String> = BTreeSet::new();
    let mut all_ops: BTreeSet<String> = BTreeSet::new();
    let send_round = |round: u32, per_accept: u32, offers: &mut BTreeMap<String, Value>| {
        let mut handles = Vec::new();
        for a in &agents {
            let offer = offers.remove(a).unwrap();
            let ids: Vec<String> = (0..per_accept)
                .map(|k| format!("op-{round}-{a}-{k}"))
                .collect();
            let call = create_disks(&fw_id, &offer, &ids, 8.0);
            let s = s1.clone();
            handles.push(tokio::spawn(async move { (ids, s.post(&call).await) }));
        }
        handles
    };
    for h in send_round(1, 2, &mut offers) {
        let (ids, res) = h.await.unwrap();
        assert_eq!(res, Ok(202), "round 1 ACCEPT of {ids:?}");
        accepted.extend(ids.iter().cloned());
        all_ops.extend(ids);
    }
    // Until one of their terminal statuses is acknowledged durably (it must never come
    // again after the kill).
    let leader_admin = AdminClient::new(&ps[li].admin, None);
    let start = Instant::now();
    while !leader_admin
        .dump()
        .await
        .unwrap()
        .operations
        .iter()
        .any(|o| o.acknowledged)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no acknowledgement recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Round 2 on the next offers, five CREATE_DISKs per ACCEPT, with the attaches; the
    // leader is killed once the first of these ACCEPTs is taken.
    offers_for_all(&mut events, &mut offers, &agents).await;
    // The attaches, staggered over round 2 and the kill, each through one of the two followers.
    let mut attaches = Vec::new();
    let mut n = 0u64;
    let mut attach = |vol: &str, instance: String, via: usize| {
        let (ls, id) = (ps[via].libstorage.clone(), ls_vols[vol].clone());
        let delay = Duration::from_millis(30 * n);
        n += 1;
        let vol = vol.to_string();
        attaches.push((
            vol,
            instance.clone(),
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                ls_attach(ls, "vfs-a".into(), id, instance).await
            }),
        ));
    };
    for k in 0..6 {
        attach(&format!("ls-{k}"), format!("rex-{k}"), [f1, f2][k % 2]);
        if k < 2 {
            attach(&format!("race-{k}"), format!("racer-{k}-x"), f1);
            attach(&format!("race-{k}"), format!("racer-{k}-y"), f2);
        }
    }

    let round2 = send_round(2, 5, &mut offers);
    let (first, _, rest) = futures::future::select_all(round2).await;
    let (ids, res) = first.unwrap();
    assert_eq!(res, Ok(202), "round 2 ACCEPT of {ids:?}");
    accepted.extend(ids.iter().cloned());
    all_ops.extend(ids);
    let before = leader_admin.dump().await.unwrap();
    let leader = ps.remove(li);
    let killed = Instant::now();
    leader.kill9();
    // What the killed leader had durably: acknowledged statuses must never come again.
    let acked_before: BTreeSet<String> = before
        .operations
        .iter()
        .filter(|o| o.acknowledged)
        .map(|o| o.operation_id.clone())
        .collect();
    let running = before
        .operations
        .iter()
        .filter(|o| o.state == "OPERATION_PENDING")
        .count();
    assert!(
        running > 0,
        "the kill came after the burst: nothing was in flight"
    );
    assert!(!acked_before.is_empty());
    // The other ACCEPTs of round 2: taken (202) or lost with the leader (no answer, or an
    // error); a lost one may or may not have been recorded.
    let mut lost = 0;
    for h in rest {
        let (ids, res) = h.await.unwrap();
        all_ops.extend(ids.iter().cloned());
        if res == Ok(202) {
            accepted.extend(ids);
        } else {
            lost += 1;
        }
    }
    eprintln!(
        "burst: killed the leader with {running} operations pending, {} acknowledged, {} intents; {lost} ACCEPTs lost",
        acked_before.len(),
        before.intents.len()
    );

    // A survivor leads and serves a write within the liveness bound (2 s lease).
    let bound = Duration::from_secs(5);
    let nl = leader_among(&ps, killed, bound).await;
    let cn = AdminClient::new(&ps[nl].admin, None);
    write_within(&cn, "vfs-c", killed, bound).await;

    // The framework re-subscribes with its id through the same follower address, retrying
    // while that address still points at the dead leader.
    let fi = ps.iter().position(|p| p.offers == s1.base).unwrap();
    let fw = loop {
        match try_subscribe(&ps[fi].offers, MesosContentType::Json, Some(&fw_id)).await {
            Ok(fw) => break fw,
            Err(e) => {
                assert!(killed.elapsed() < Duration::from_secs(20), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(fw.id, fw_id);
    let (s2, _events2) = pump(fw, 2, seen.clone());

    // Wait for the attaches, for a terminal status of every accepted operation, and for the
    // store to hold every operation record terminal and acknowledged, with no intent.
    let mut outcomes = Vec::new();
    for (vol, instance, h) in attaches {
        outcomes.push((vol, instance, h.await.unwrap()));
    }
    let start = Instant::now();
    let dump = loop {
        let d = cn.dump().await.unwrap();
        let terminal: BTreeSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.state != "OPERATION_PENDING")
            .map(|x| x.op.clone())
            .collect();
        let settled = accepted.iter().all(|o| terminal.contains(o))
            && d.operations
                .iter()
                .all(|o| o.acknowledged && o.state != "OPERATION_PENDING")
            && d.intents.is_empty();
        if settled {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled after 60 s: statuses {:?}; records {:?}; intents {:?}",
            seen.lock().unwrap(),
            d.operations,
            d.intents
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Operations whose ACCEPT went unanswered count if the store has them.
    let recorded: BTreeMap<String, String> = dump
        .operations
        .iter()
        .map(|o| (o.operation_id.clone(), o.state.clone()))
        .collect();
    for op in recorded.keys() {
        assert!(
            all_ops.contains(op),
            "a record of an operation never sent: {op}"
        );
    }

    // Quiet: everything is acknowledged, so nothing is redelivered.
    let quiet = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        seen.lock().unwrap()[quiet..].len(),
        0,
        "statuses redelivered after every one was acknowledged: {:?}",
        &seen.lock().unwrap()[quiet..]
    );

    // The statuses as delivered (before the explicit reconciliation below).
    let delivered: Vec<Seen> = seen.lock().unwrap().clone();
    let mut terminal_of: BTreeMap<String, String> = BTreeMap::new();
    let mut dropped = 0;
    for op in &all_ops {
        let mine: Vec<&Seen> = delivered.iter().filter(|x| &x.op == op).collect();
        let Some(final_state) = recorded.get(op) else {
            // Never recorded: its ACCEPT died with the leader, or came too late for its
            // offer (rescinded as the pool's free capacity was read again) and was answered
            // OPERATION_DROPPED. Nothing was done, and no status to acknowledge came.
            assert!(
                mine.iter()
                    .all(|x| x.uuid.is_none() && x.sub == 1 && x.state == "OPERATION_DROPPED"),
                "unrecorded {op} got statuses {mine:?}"
            );
            if accepted.contains(op) {
                assert!(
                    !mine.is_empty(),
                    "{op} was taken (202) but is neither recorded nor dropped"
                );
                dropped += 1;
            }
            continue;
        };
        for x in &mine {
            assert!(
                [
                    "OPERATION_PENDING",
                    "OPERATION_FINISHED",
                    "OPERATION_FAILED"
                ]
                .contains(&x.state.as_str()),
                "{op}: unexpected status {x:?}"
            );
            assert!(
                x.uuid.is_some(),
                "{op}: a delivered status without uuid {x:?}"
            );
        }
        let terminal: Vec<&&Seen> = mine
            .iter()
            .filter(|x| x.state != "OPERATION_PENDING")
            .collect();
        assert!(!terminal.is_empty(), "{op}: no terminal status delivered");
        // One terminal status: the same state and uuid whenever it was (re)delivered, and
        // the state the store keeps.
        let (state, uuid) = (&terminal[0].state, &terminal[0].uuid);
        for x in &terminal {
            assert_eq!((&x.state, &x.uuid), (state, uuid), "{op}: {terminal:?}");
        }
        assert_eq!(
            state, final_state,
            "{op}: delivered {state}, stored {final_state}"
        );
        // Redelivered only across the failover, never within one stream.
        for sub in [1, 2] {
            let n = terminal.iter().filter(|x| x.sub == sub).count();
            assert!(
                n <= 1,
                "{op}: terminal status {n} times on stream {sub}: {terminal:?}"
            );
        }
        if acked_before.contains(op) {
            assert!(
                mine.iter().all(|x| x.sub == 1),
                "{op}: acknowledged before the kill, yet sent again: {mine:?}"
            );
        }
        terminal_of.insert(op.clone(), state.clone());
    }

    // An explicit reconciliation answers each operation once with its terminal state and no
    // uuid (nothing to acknowledge), and OPERATION_UNKNOWN for one never recorded.
    let ids: Vec<Value> = all_ops
        .iter()
        .map(|o| serde_json::json!({"operation_id": {"value": o}}))
        .collect();
    let r = s2
        .post(&serde_json::json!({"type": "RECONCILE_OPERATIONS",
            "framework_id": {"value": fw_id}, "reconcile_operations": {"operations": ids}}))
        .await;
    assert_eq!(r, Ok(202));
    let start = Instant::now();
    while seen.lock().unwrap().len() < quiet + all_ops.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "reconciliation unanswered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers: Vec<Seen> = seen.lock().unwrap()[quiet..].to_vec();
    assert_eq!(answers.len(), all_ops.len(), "{answers:?}");
    for op in &all_ops {
        let a: Vec<&Seen> = answers.iter().filter(|x| &x.op == op).collect();
        assert_eq!(a.len(), 1, "{op}: {a:?}");
        assert!(
            a[0].uuid.is_none(),
            "{op}: a reconciliation answer to acknowledge: {a:?}"
        );
        let want = terminal_of
            .get(op)
            .map_or("OPERATION_UNKNOWN", String::as_str);
        assert_eq!(a[0].state, want, "{op}");
    }

    // Volumes: one per finished operation, attached once to its agent's instance; none for
    // a failed or unrecorded one; each REX-Ray volume attached once, each race won once.
    let vols = cn.volumes(false).await.unwrap().volumes;
    for v in &vols {
        assert!(v.attachments.len() <= 1, "double attachment: {v:?}");
    }
    let finished: BTreeSet<&String> = terminal_of
        .iter()
        .filter(|(_, s)| *s == "OPERATION_FINISHED")
        .map(|(o, _)| o)
        .collect();
    eprintln!(
        "burst: {} operations, {} taken (202), {dropped} of them dropped, {} finished, {} failed",
        all_ops.len(),
        accepted.len(),
        finished.len(),
        terminal_of.len() - finished.len()
    );
    for op in &all_ops {
        let mine: Vec<_> = vols
            .iter()
            .filter(|v| v.labels.get("mesos.operation_id") == Some(op))
            .collect();
        if !finished.contains(op) {
            assert!(mine.is_empty(), "{op} did not finish yet left {mine:?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "{op}: {mine:?}");
        let v = mine[0];
        let agent = op.split('-').nth(3).unwrap();
        assert_eq!(v.service, format!("vfs-{agent}"));
        assert_eq!(v.attachments.len(), 1, "{v:?}");
        assert_eq!(v.attachments[0].instance_id, format!("i-{agent}"));
        assert!(v.restrict_frameworks.contains(&fw_id), "{v:?}");
        assert!(
            dump.reservations
                .iter()
                .any(|r| r.volume_id == v.id && r.framework_id == fw_id),
            "{op}: {} not reserved",
            v.id
        );
        let st = delivered
            .iter()
            .find(|x| &x.op == op && x.state == "OPERATION_FINISHED")
            .unwrap();
        assert_eq!(
            st.status["converted_resources"][0]["disk"]["source"]["id"], v.id,
            "{op}: the status names another volume"
        );
    }
    let by_name = |n: &str| vols.iter().find(|v| v.name == n).unwrap();
    for k in 0..2 {
        let race = format!("race-{k}");
        let won: Vec<&String> = outcomes
            .iter()
            .filter(|(v, _, o)| *v == race && *o == Attached::Yes)
            .map(|(_, i, _)| i)
            .collect();
        assert_eq!(won.len(), 1, "{race}: {outcomes:?}");
        let v = by_name(&race);
        assert_eq!(v.attachments.len(), 1, "{v:?}");
        assert_eq!(&v.attachments[0].instance_id, won[0], "{race}");
    }
    for (vol, instance, o) in &outcomes {
        if vol.starts_with("ls-") {
            assert_eq!(*o, Attached::Yes, "{vol} by {instance}");
            let v = by_name(vol);
            assert_eq!(v.attachments.len(), 1, "{v:?}");
            assert_eq!(&v.attachments[0].instance_id, instance);
        }
    }

    // The back-ends hold exactly the recorded volumes, each with the recorded attachment.
    for a in BURST_AGENTS {
        let service = format!("vfs-{a}");
        let records: BTreeMap<String, Vec<String>> = vols
            .iter()
            .filter(|v| v.service == service)
            .map(|v| {
                (
                    v.driver_id.clone().unwrap(),
                    v.attachments
                        .iter()
                        .map(|x| x.instance_id.clone())
                        .collect(),
                )
            })
            .collect();
        let mut backend = BTreeMap::new();
        for e in std::fs::read_dir(cluster.root.path().join(&service).join("volumes")).unwrap() {
            let e = e.unwrap();
            let meta: Value =
                serde_json::from_slice(&std::fs::read(e.path().join("volume.json")).unwrap())
                    .unwrap();
            let held: Vec<String> = meta["attachments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["instance_id"].as_str().unwrap().to_string())
                .collect();
            backend.insert(e.file_name().to_string_lossy().into_owned(), held);
        }
        assert_eq!(backend, records, "{service}: back-end vs records");
    }
    let r = cn.orphans().await.unwrap();
    assert!(r.orphans.is_empty() && r.missing.is_empty(), "{r:?}");
    assert!(
        cn.operations().await.unwrap().is_empty(),
        "intent left over"
    );
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
    let certs = tempfile::tempdir().unwrap();
    let (pem, cert, key) = loopback_cert(certs.path(), "polly");
    let tls = format!("\n[libstorage.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
    let with_tls =
        |url: &str, prefix: &str, root: &std::path::Path| ha_config(url, prefix, root) + &tls;
    let Some(cluster) = etcd::cluster(3, "ha-tls", with_tls, Polly::start_config) else {
        return;
    };
    let (ps, cfg) = (&cluster.nodes, &cluster.config);
    let li = leader_among(ps, Instant::now(), Duration::from_secs(10)).await;
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
        .call(&ps[fi].libstorage, "POST", "/volumes/vfs", &h, body)
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // The leader has it; the follower's list (forwarded again) shows it.
    let (status, on_leader) = https
        .call(
            &ps[li].libstorage,
            "GET",
            &format!("/volumes/vfs/{id}"),
            &h,
            "",
        )
        .await;
    assert_eq!(
        (status, &on_leader["name"]),
        (200, &Value::from("tls1")),
        "{on_leader}"
    );
    let (status, listed) = https
        .call(&ps[fi].libstorage, "GET", "/volumes/vfs", &h, "")
        .await;
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
    let (status, body) = https
        .call(&p4.libstorage, "GET", "/volumes/vfs", &h, "")
        .await;
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

/// (f) A server whose stdout nobody reads any more (a supervisor that stopped reading, a
/// closed pipe) keeps working: when it takes over it announces `polly: leader` into the
/// closed pipe, and still leads and serves writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_stdout_is_closed_still_takes_over() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let Some(mut cluster) = etcd::cluster(1, "ha-stdout", ha_config, Polly::start_config) else {
        return;
    };
    let first = cluster.nodes.remove(0);
    leader_among(
        std::slice::from_ref(&first),
        Instant::now(),
        Duration::from_secs(10),
    )
    .await;
    let cfg = cluster.root.path().join("second.toml");
    std::fs::write(&cfg, &cluster.config).unwrap();
    let mut second = Command::new(harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(cluster.root.path().join("second-data"))
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--libstorage-listen", "127.0.0.1:0"])
        .args(["--offers-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&cfg)
        .env("POLLY_LOG", "warn")
        .env_remove("POLLY_CONFIG")
        .env_remove("POLLY_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut admin = None;
    {
        let out = std::io::BufReader::new(second.stdout.take().unwrap());
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("polly: admin API on ") {
                admin = Some(a.to_string());
            }
            if line == "polly: ready" {
                break;
            }
        }
        // The reader goes away here: the pipe's read end is closed.
    }
    let admin = admin.expect("admin address printed");
    let role = |admin: String| async move {
        let v: Value = reqwest::get(format!("{admin}/admin/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["role"].clone()
    };
    assert_eq!(role(admin.clone()).await, "follower");

    let killed = Instant::now();
    first.kill9();
    while role(admin.clone()).await != "leader" {
        assert!(
            second.try_wait().unwrap().is_none(),
            "the second instance died announcing its new role"
        );
        assert!(killed.elapsed() < Duration::from_secs(15), "no take-over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = AdminClient::new(&admin, None);
    c.create(&CreateVolume {
        service: "vfs".into(),
        name: "after-takeover".into(),
        size_bytes: 1 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(second.try_wait().unwrap().is_none());
    second.kill().unwrap();
    second.wait().unwrap();
}

/// The Open Service Broker on a follower: the catalog (the same ids as the leader's, derived
/// from names), and 503 with Retry-After naming the leader for everything else, with nothing
/// written; the leader's broker provisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_broker_answers_503_naming_the_leader() {
    fn broker_config(url: &str, prefix: &str, root: &std::path::Path) -> String {
        format!(
            "{}\n[broker]\nlisten = \"127.0.0.1:0\"\nusername = \"{}\"\npassword = \"{}\"\n",
            ha_config(url, prefix, root),
            harness::broker::USER,
            harness::broker::PASSWORD
        )
    }
    let Some(mut cluster) = etcd::cluster(2, "ha-broker", broker_config, Polly::start_config)
    else {
        return;
    };
    let ps = std::mem::take(&mut cluster.nodes);
    let li = leader_among(&ps, Instant::now(), Duration::from_secs(10)).await;
    let (leader, follower) = (&ps[li], &ps[1 - li]);
    let since = Instant::now();
    while health(follower).await["role"] != "follower" {
        assert!(since.elapsed() < Duration::from_secs(10), "no follower");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (lb, fb) = (leader.broker(), follower.broker());
    let leader_admin = hostport(&leader.admin).to_string();
    let leader_volumes = tokio::task::spawn_blocking(move || {
        let catalog = lb.catalog();
        assert_eq!(catalog.status, 200, "{catalog}");
        let f_catalog = fb.catalog();
        assert_eq!(f_catalog.status, 200, "{f_catalog}");
        assert_eq!(catalog.body, f_catalog.body, "the catalogs differ");
        let service = &catalog.body["services"][0];
        let body = serde_json::json!({
            "service_id": service["id"],
            "plan_id": service["plans"][0]["id"],
            "organization_guid": "org",
            "space_guid": "space",
        });
        let r = fb.provision("on-follower", &body, true);
        assert_eq!(r.status, 503, "{r}");
        assert!(r.header("retry-after").is_some(), "{r}");
        assert!(
            r.description().contains(&leader_admin),
            "{} does not name the leader {leader_admin}",
            r.description()
        );
        let r = fb.fetch("on-follower");
        assert_eq!(r.status, 503, "{r}");
        let r = lb.provision("on-leader", &body, false);
        assert_eq!(r.status, 201, "{r}");
    });
    leader_volumes.await.unwrap();
    let names: Vec<String> = leader
        .volumes()
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, vec!["osb-on-leader".to_string()]);
}
