//! The `ebs` driver's state machine against the fake cloud: attach races, zones, stuck
//! attachments, device names, pagination, idempotency, bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::attach::{device_names, device_slot};
use super::fake::{FakeCloud, FakeCloudConfig, FakeInstanceConfig};
use super::*;

const ZONE_A: &str = "us-east-1a";
const ZONE_B: &str = "us-east-1b";

struct Rig {
    cloud: Arc<FakeCloud>,
    /// Two instances in zone a, one in zone b.
    a1: String,
    a2: String,
    b1: String,
}

fn rig(tune: impl FnOnce(&mut FakeCloudConfig)) -> Rig {
    let mut cfg = FakeCloudConfig {
        instances: vec![
            FakeInstanceConfig {
                zone: ZONE_A.into(),
                hostname: Some("ip-10-0-0-1.ec2.internal".into()),
                ip: Some("10.0.0.1".into()),
            },
            FakeInstanceConfig {
                zone: ZONE_A.into(),
                hostname: None,
                ip: None,
            },
            FakeInstanceConfig {
                zone: ZONE_B.into(),
                hostname: None,
                ip: None,
            },
        ],
        ..FakeCloudConfig::default()
    };
    tune(&mut cfg);
    let cloud = Arc::new(FakeCloud::new(cfg));
    let ids = cloud.instance_ids();
    Rig {
        cloud,
        a1: ids[0].clone(),
        a2: ids[1].clone(),
        b1: ids[2].clone(),
    }
}

fn driver_cfg(tune: impl FnOnce(&mut EbsConfig)) -> EbsConfig {
    let mut cfg = EbsConfig::new(vec![ZONE_A.into(), ZONE_B.into()]);
    cfg.poll_interval_ms = 10;
    cfg.attach_timeout_secs = 5.0;
    tune(&mut cfg);
    cfg
}

fn driver(r: &Rig, tune: impl FnOnce(&mut EbsConfig)) -> Arc<EbsDriver> {
    Arc::new(EbsDriver::new(driver_cfg(tune), "svc", r.cloud.clone()).unwrap())
}

fn req(name: &str, gib: u64) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        size_bytes: gib * GIB,
        pool: None,
        zone: None,
        access_mode: AccessMode::SingleWriter,
        fields: BTreeMap::new(),
    }
}

fn opts() -> AttachOptions {
    AttachOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_attaches_of_one_volume_exactly_one_wins() {
    let r = rig(|c| {
        c.latency_ms = 5;
        c.attach_delay_ms = 30;
    });
    // Two drivers: two Polly processes, so no in-process lock helps; EC2's rule decides.
    let d1 = driver(&r, |_| {});
    let d2 = driver(&r, |_| {});
    for round in 0..10 {
        let v = d1.create(&req(&format!("race-{round}"), 1)).await.unwrap();
        let o = opts();
        let (x, y) = tokio::join!(d1.attach(&v.id, &r.a1, &o), d2.attach(&v.id, &r.a2, &o));
        let wins = [&x, &y].iter().filter(|o| o.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {x:?} {y:?}");
        let loser = if x.is_ok() { &y } else { &x };
        assert!(
            matches!(loser, Err(Error::AttachedElsewhere { .. })),
            "round {round}: {loser:?}"
        );
        let atts = r.cloud.attachments(&v.id);
        assert_eq!(atts.len(), 1, "round {round}: {atts:?}");
    }
    // And within one process, the same.
    let v = d1.create(&req("race-same", 1)).await.unwrap();
    let o = opts();
    let (x, y) = tokio::join!(d1.attach(&v.id, &r.a1, &o), d1.attach(&v.id, &r.a2, &o));
    assert_eq!([x.is_ok(), y.is_ok()].iter().filter(|b| **b).count(), 1);
    assert_eq!(r.cloud.attachments(&v.id).len(), 1);
}

#[tokio::test]
async fn cross_zone_attach_is_refused_before_any_attach_call() {
    let r = rig(|_| {});
    let d = driver(&r, |_| {});
    let v = d.create(&req("zoned", 1)).await.unwrap();
    assert_eq!(v.zone.as_deref(), Some(ZONE_A));
    let e = d.attach(&v.id, &r.b1, &opts()).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(msg.contains(ZONE_A) && msg.contains(ZONE_B), "{msg}");
    assert_eq!(r.cloud.calls("AttachVolume"), 0);
    // The instance's zone is known now: the second refusal needs no DescribeInstances.
    let described = r.cloud.calls("DescribeInstances");
    assert!(d.attach(&v.id, &r.b1, &opts()).await.is_err());
    assert_eq!(r.cloud.calls("DescribeInstances"), described);
    assert_eq!(r.cloud.calls("AttachVolume"), 0);
    assert!(r.cloud.attachments(&v.id).is_empty());
}

#[tokio::test]
async fn stuck_attach_times_out_is_retried_idempotently_and_never_leaves_two() {
    let r = rig(|c| c.attach_delay_ms = 20);
    let d = driver(&r, |c| c.attach_timeout_secs = 0.3);
    let v = d.create(&req("stuck", 1)).await.unwrap();
    r.cloud.stick(&v.id);
    for _ in 0..3 {
        let e = d.attach(&v.id, &r.a1, &opts()).await.unwrap_err();
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("attaching")),
            "{e:?}"
        );
    }
    // One AttachVolume in all; the retries waited for it.
    assert_eq!(r.cloud.calls("AttachVolume"), 1);
    // Another instance cannot take it meanwhile, and nothing new is attached.
    let e = d.attach(&v.id, &r.a2, &opts()).await.unwrap_err();
    assert!(
        matches!(e, Error::AttachedElsewhere { ref holders, .. } if holders == std::slice::from_ref(&r.a1))
    );
    assert_eq!(r.cloud.attachments(&v.id).len(), 1);
    // Once EC2 finishes, the retry succeeds with the device it was given.
    let device = r.cloud.attachments(&v.id)[0].device.clone();
    r.cloud.unstick(&v.id);
    let att = d.attach(&v.id, &r.a1, &opts()).await.unwrap();
    assert_eq!(att.device, device);
    assert_eq!(r.cloud.calls("AttachVolume"), 1);
    assert_eq!(r.cloud.attachments(&v.id).len(), 1);
    assert_eq!(d.inspect(&v.id).await.unwrap().attachments.len(), 1);
}

#[tokio::test]
async fn stuck_detach_times_out_then_force_detach_clears_it() {
    let r = rig(|c| c.stuck_detach = true);
    let d = driver(&r, |c| c.attach_timeout_secs = 0.2);
    let v = d.create(&req("sticky", 1)).await.unwrap();
    d.attach(&v.id, &r.a1, &opts()).await.unwrap();
    let e = d.detach(&v.id, &r.a1).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("detaching")),
        "{e:?}"
    );
    // A retry does not detach again (EC2 would say IncorrectState); it waits.
    let calls = r.cloud.calls("DetachVolume");
    assert!(d.detach(&v.id, &r.a1).await.is_err());
    assert_eq!(r.cloud.calls("DetachVolume"), calls);
    d.force_detach(&v.id).await.unwrap();
    assert!(r.cloud.attachments(&v.id).is_empty());
    d.remove(&v.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attaches_to_one_instance_never_share_a_device() {
    let r = rig(|c| {
        c.latency_ms = 10;
        c.attach_delay_ms = 30;
    });
    let d = driver(&r, |_| {});
    let mut vols = Vec::new();
    for i in 0..20 {
        vols.push(d.create(&req(&format!("dev-{i}"), 1)).await.unwrap());
    }
    let tasks: Vec<_> = vols
        .iter()
        .map(|v| {
            let (d, id, inst) = (d.clone(), v.id.clone(), r.a1.clone());
            tokio::spawn(async move { d.attach(&id, &inst, &AttachOptions::default()).await })
        })
        .collect();
    let mut devices = BTreeSet::new();
    for t in tasks {
        let att = t.await.unwrap().unwrap();
        assert_ne!(att.device, "/dev/xvda", "the root device was handed out");
        assert!(devices.insert(att.device.clone()), "{} twice", att.device);
    }
    assert_eq!(devices.len(), 20);
    // The allocator never even tried a taken name.
    assert_eq!(r.cloud.device_clashes(), 0);

    // Two processes attaching to one instance may pick the same name; EC2 refuses the
    // second, which then takes another. Every attach still succeeds with its own device.
    let d2 = driver(&r, |_| {});
    let mut more = Vec::new();
    for i in 0..6 {
        more.push(d.create(&req(&format!("two-{i}"), 1)).await.unwrap());
    }
    let tasks: Vec<_> = more
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let d = if i % 2 == 0 { d.clone() } else { d2.clone() };
            let (id, inst) = (v.id.clone(), r.a2.clone());
            tokio::spawn(async move { d.attach(&id, &inst, &AttachOptions::default()).await })
        })
        .collect();
    let mut devices = BTreeSet::new();
    for t in tasks {
        assert!(devices.insert(t.await.unwrap().unwrap().device));
    }
    assert_eq!(devices.len(), 6);
}

#[tokio::test]
async fn device_hint_is_used_when_free_and_valid() {
    let r = rig(|_| {});
    let d = driver(&r, |_| {});
    let v = d.create(&req("hinted", 1)).await.unwrap();
    let w = d.create(&req("hinted-2", 1)).await.unwrap();
    let hint = AttachOptions {
        device_hint: Some("/dev/xvdk".into()),
    };
    assert_eq!(
        d.attach(&v.id, &r.a1, &hint).await.unwrap().device,
        "/dev/xvdk"
    );
    // Taken now: the next volume gets another name.
    let other = d.attach(&w.id, &r.a1, &hint).await.unwrap().device;
    assert_ne!(other, "/dev/xvdk");
    // Not a data-volume name: ignored.
    let x = d.create(&req("hinted-3", 1)).await.unwrap();
    let bad = AttachOptions {
        device_hint: Some("/dev/xvda".into()),
    };
    assert_ne!(
        d.attach(&x.id, &r.a1, &bad).await.unwrap().device,
        "/dev/xvda"
    );
}

#[tokio::test]
async fn list_follows_pagination_and_sees_only_polly_volumes() {
    let r = rig(|_| {});
    let d = driver(&r, |c| c.page_size = 5);
    for i in 0..23 {
        d.create(&req(&format!("p{i:02}"), 1)).await.unwrap();
    }
    let before = r.cloud.calls("DescribeVolumes");
    let listed = d.list().await.unwrap();
    assert_eq!(listed.len(), 23);
    assert!(
        r.cloud.calls("DescribeVolumes") - before >= 5,
        "pages were followed"
    );
    let mut ids: Vec<_> = listed.iter().map(|v| v.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, listed.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
    // Another service's driver (another owner) on the same cloud sees none of them, and
    // the instances' root volumes are nobody's.
    let other = Arc::new(EbsDriver::new(driver_cfg(|_| {}), "other", r.cloud.clone()).unwrap());
    assert!(other.list().await.unwrap().is_empty());
    assert!(matches!(
        other.inspect(&listed[0].id).await,
        Err(Error::NotFound { .. })
    ));
    other.remove(&listed[0].id).await.unwrap();
    assert!(
        d.inspect(&listed[0].id).await.is_ok(),
        "not touched by another owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_in_two_processes_make_one_volume() {
    let r = rig(|c| c.latency_ms = 20);
    let d1 = driver(&r, |_| {});
    let d2 = driver(&r, |_| {});
    let once = req("once", 3);
    let (x, y) = tokio::join!(d1.create(&once), d2.create(&once));
    // Both looked the name up before either created: the ClientToken made it one volume.
    assert_eq!(x.unwrap().id, y.unwrap().id);
    assert_eq!(d1.list().await.unwrap().len(), 1);
    // The same name after a delete is a new volume, not the token's old one.
    let first = d1.list().await.unwrap()[0].id.clone();
    d1.remove(&first).await.unwrap();
    let again = d1.create(&req("once", 3)).await.unwrap();
    assert_ne!(again.id, first);
    assert_eq!(d1.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn create_waits_for_available_and_attach_for_attached() {
    let r = rig(|c| {
        c.create_delay_ms = 60;
        c.attach_delay_ms = 60;
        c.detach_delay_ms = 60;
    });
    let d = driver(&r, |_| {});
    let v = d.create(&req("slow", 1)).await.unwrap();
    let att = d.attach(&v.id, &r.a1, &opts()).await.unwrap();
    assert_eq!(
        r.cloud.attachments(&v.id)[0].state,
        model::AttachState::Attached
    );
    assert_eq!(att.instance_id, r.a1);
    d.detach(&v.id, &r.a1).await.unwrap();
    assert!(r.cloud.attachments(&v.id).is_empty());
}

#[tokio::test]
async fn bad_input_is_named_and_nothing_is_created() {
    let r = rig(|c| c.max_attachments = 2);
    let d = driver(&r, |_| {});
    let cases: Vec<(CreateRequest, &str)> = vec![
        (req("zero", 0), "greater than 0"),
        (req("huge", 20_000), "1-16384 GiB"),
        (
            CreateRequest {
                zone: Some("us-east-1z".into()),
                ..req("nowhere", 1)
            },
            "us-east-1z",
        ),
        (
            CreateRequest {
                pool: Some("io2".into()),
                ..req("no-iops", 8)
            },
            "iops",
        ),
        (
            CreateRequest {
                access_mode: AccessMode::MultiWriter,
                ..req("shared-gp3", 8)
            },
            "io1 and io2",
        ),
        (
            CreateRequest {
                fields: BTreeMap::from([("iops".into(), "lots".into())]),
                ..req("iops-word", 8)
            },
            "lots",
        ),
    ];
    for (bad, needle) in cases {
        match d.create(&bad).await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m} lacks {needle}"),
            other => panic!("{}: expected InvalidArgument, got {other:?}", bad.name),
        }
    }
    match d
        .create(&CreateRequest {
            pool: Some("floppy".into()),
            ..req("typo", 1)
        })
        .await
    {
        Err(Error::NotFound { kind: "pool", id }) => assert_eq!(id, "floppy"),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.cloud.calls("CreateVolume"), 0);
    assert!(d.list().await.unwrap().is_empty());

    // Not an instance id; an unknown instance.
    let v = d.create(&req("ok", 1)).await.unwrap();
    assert!(matches!(
        d.attach(&v.id, "host-1", &opts()).await,
        Err(Error::InvalidArgument(m)) if m.contains("host-1")
    ));
    assert!(matches!(
        d.attach(&v.id, "i-0000000000000ffff", &opts()).await,
        Err(Error::NotFound {
            kind: "instance",
            ..
        })
    ));
    // A back-end refusal carries EC2's code: the instance holds 2 attachments at most.
    d.attach(&v.id, &r.a1, &opts()).await.unwrap();
    let w = d.create(&req("ok-2", 1)).await.unwrap();
    match d.attach(&w.id, &r.a1, &opts()).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("AttachmentLimitExceeded"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(r.cloud.attachments(&w.id).is_empty());
}

#[tokio::test]
async fn libstorage_type_field_picks_the_volume_type() {
    let r = rig(|_| {});
    let d = driver(&r, |_| {});
    let v = d
        .create(&CreateRequest {
            fields: BTreeMap::from([("type".into(), "io2".into()), ("iops".into(), "500".into())]),
            ..req("typed", 8)
        })
        .await
        .unwrap();
    assert_eq!(v.pool, "io2");
    assert_eq!(v.fields.get("iops").map(String::as_str), Some("500"));
}

#[tokio::test]
async fn hostnames_and_addresses_resolve_to_instance_ids() {
    let r = rig(|_| {});
    let d = driver(&r, |_| {});
    for host in ["ip-10-0-0-1.ec2.internal", "10.0.0.1", r.a1.as_str()] {
        assert_eq!(
            d.resolve_instance(host).await.unwrap().as_deref(),
            Some(r.a1.as_str()),
            "{host}"
        );
    }
    assert_eq!(d.resolve_instance("elsewhere.example").await.unwrap(), None);
}

#[tokio::test]
async fn capacity_is_quota_minus_provisioned_per_zone_and_type() {
    let r = rig(|_| {});
    let d = driver(&r, |c| {
        c.quotas = vec![
            EbsQuota {
                volume_type: "gp3".into(),
                zone: None,
                gib: 100,
            },
            EbsQuota {
                volume_type: "gp3".into(),
                zone: Some(ZONE_B.into()),
                gib: 10,
            },
            EbsQuota {
                volume_type: "io2".into(),
                zone: None,
                gib: 50,
            },
        ]
    });
    d.create(&req("a", 30)).await.unwrap();
    let caps = d.capacity().await.unwrap();
    let get = |pool: &str, zone: &str| {
        caps.iter()
            .find(|c| c.pool == pool && c.zone.as_deref() == Some(zone))
            .map(|c| (c.total_bytes / GIB, c.free_bytes / GIB))
            .unwrap()
    };
    assert_eq!(caps.len(), 4);
    assert_eq!(get("gp3", ZONE_A), (100, 70));
    assert_eq!(get("gp3", ZONE_B), (10, 10));
    assert_eq!(get("io2", ZONE_A), (50, 50));
    let e = d
        .create(&CreateRequest {
            zone: Some(ZONE_B.into()),
            ..req("b", 11)
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InsufficientCapacity { ref pool, .. } if pool == "gp3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_call_holds_only_its_own_volume() {
    let r = rig(|c| c.latency_ms = 20);
    let d = driver(&r, |c| c.call_timeout_secs = 30.0);
    let mut vols = Vec::new();
    for i in 0..8 {
        vols.push(d.create(&req(&format!("h{i}"), 1)).await.unwrap().id);
    }
    r.cloud.hang("AttachVolume", Some(&vols[0]), 1);
    let hung = {
        let (d, id, inst) = (d.clone(), vols[0].clone(), r.a1.clone());
        tokio::spawn(async move { d.attach(&id, &inst, &AttachOptions::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Every other volume attaches to the same instance, detaches, and is removed meanwhile.
    let started = Instant::now();
    for id in &vols[1..] {
        d.attach(id, &r.a1, &opts()).await.unwrap();
        d.detach(id, &r.a1).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!hung.is_finished(), "the hung call is still hung");
    r.cloud.release_hangs();
    let att = hung.await.unwrap().unwrap();
    assert_eq!(att.instance_id, r.a1);
}

#[tokio::test]
async fn a_call_that_never_answers_is_cut_at_call_timeout() {
    let r = rig(|_| {});
    let d = driver(&r, |c| c.call_timeout_secs = 0.2);
    let v = d.create(&req("cut", 1)).await.unwrap();
    r.cloud.hang("AttachVolume", Some(&v.id), 1);
    let e = d.attach(&v.id, &r.a1, &opts()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if m.contains("Transport")),
        "{e:?}"
    );
    // The volume is not wedged: the next attach goes through.
    d.attach(&v.id, &r.a1, &opts()).await.unwrap();
    r.cloud.release_hangs();
}

#[test]
fn device_names_are_the_recommended_ones_and_distinct() {
    let names: Vec<String> = device_names().collect();
    assert_eq!(names[0], "/dev/xvdf");
    assert_eq!(names[20], "/dev/xvdz");
    assert_eq!(names[21], "/dev/xvdba");
    let set: BTreeSet<_> = names.iter().collect();
    assert_eq!(set.len(), names.len());
    assert_eq!(device_slot("/dev/sdf"), device_slot("/dev/xvdf"));
}

#[test]
fn config_validation_names_the_problem() {
    let ok = EbsConfig::new(vec![ZONE_A.into()]);
    ok.validate().unwrap();
    let mut c = ok.clone();
    c.zones.clear();
    assert!(c.validate().unwrap_err().to_string().contains("zones"));
    let mut c = ok.clone();
    c.default_type = "gp9".into();
    assert!(c.validate().unwrap_err().to_string().contains("gp9"));
    let mut c = ok.clone();
    c.quotas.push(EbsQuota {
        volume_type: "gp3".into(),
        zone: Some("us-west-2a".into()),
        gib: 1,
    });
    assert!(c.validate().unwrap_err().to_string().contains("us-west-2a"));
    let mut c = ok;
    c.page_size = 1000;
    assert!(c.validate().unwrap_err().to_string().contains("page_size"));
    // The texts operators see are the ones they always saw.
    assert_eq!(
        ConfigError::DefaultType("gp9".into()).to_string(),
        "ebs.default_type \"gp9\" is not an EBS volume type (gp3, gp2, io1, io2, st1, sc1, standard)"
    );
    assert_eq!(
        ConfigError::QuotaZone {
            zone: "us-west-2a".into(),
            zones: vec![ZONE_A.into()],
        }
        .to_string(),
        "ebs.quotas: zone \"us-west-2a\" is not one of ebs.zones [\"us-east-1a\"]"
    );
}

#[tokio::test]
async fn copy_leaves_no_snapshot_behind_even_after_an_interrupted_copy() {
    let r = rig(|_| {});
    let d = driver(&r, |_| {});
    let v = d.create(&req("src", 2)).await.unwrap();
    r.cloud.write_file(&v.id, "f", b"data");
    // A copy cut short: its transient snapshot and the new volume exist, the snapshot was
    // never removed.
    let snap = d.snapshot_tagged(&v.id, TAG_COPY, "dst").await.unwrap();
    let s = d.find_snapshot(&snap.id).await.unwrap().unwrap();
    d.create_volume(&req("dst", 2), Some(&s)).await.unwrap();
    let c = d.copy(&v.id, &req("dst", 2)).await.unwrap();
    assert_eq!(r.cloud.read_file(&c.id, "f").unwrap(), b"data");
    let left = d.snapshots_where(vec![d.owner_filter()]).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}
