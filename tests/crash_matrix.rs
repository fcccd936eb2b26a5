//! The crash matrix: for every (operation, failpoint) pair in the tables below, start the real
//! `polly serve` with that one failpoint armed (`FAILPOINTS=<name>=return`, a build with
//! `--features failpoints`), drive the operation through its real surface (the admin API,
//! the libStorage façade, or a framework on the storage-offer endpoint), and check that the
//! process died by SIGKILL at exactly that point (a point never reached fails the case).
//! Then restart it on the same data dir without failpoints and check the invariants: no
//! intent left, no orphan and no missing volume (the store and the vfs back-end's directories
//! agree one to one, attachments and sizes included), no duplicate, at most one attachment,
//! no lost or dangling reservation, the outcome the step implies, and for offer operations the
//! terminal status delivered to the re-subscribing framework, again after each re-subscribe
//! until it is acknowledged. Idempotent operations are run again after the restart and must
//! succeed without creating anything twice.
//!
//! Cases are independent (one temp dir and server each) and run concurrently.
#![cfg(feature = "failpoints")]

mod harness;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::fakes::framework::{create_disk, subscribe, Framework};
use harness::{stderr_log, vfs_volume_dirs, Polly};
use polly::admin::{VolumeStatusView, VolumeView};
use polly::client::AdminClient;
use polly::mesos::client::MesosContentType;
use polly::volumes::CreateVolume;
use serde_json::{json, Value};

/// One vfs service in one zone and one static agent standing for instance `i-a`.
const CONFIG: &str = r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "zone-a"
quota_bytes = 10737418240

[mesos]
agents = [{ id = "agent-a", hostname = "host-a", region = "eu", zone = "zone-a" }]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 50
offer_timeout_secs = 600
[offers.instances]
agent-a = "i-a"
"#;

/// The framework id every offer case subscribes with (no master: the id is taken as given).
const FW: &str = "fw-crash";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Attach,
    Detach,
    Delete,
    Snapshot,
    CreateDisk,
    DestroyDisk,
    Reserve,
    Unreserve,
    GrowVolume,
}
use Operation::*;

/// The matrix: each operation with every failpoint on its path. The volume manager's points
/// are listed for the surface that reaches them (grow only through GROW_VOLUME), plus those
/// an offer operation passes through on its way.
const MATRIX: &[(Operation, &[&str])] = &[
    (
        Create,
        &[
            "volume.create.before_intent",
            "volume.create.after_intent",
            "volume.create.after_driver",
            "volume.create.after_record",
        ],
    ),
    (
        Attach,
        &[
            "volume.attach.before_intent",
            "volume.attach.after_intent",
            "volume.attach.after_driver",
            "volume.attach.after_record",
        ],
    ),
    (
        Detach,
        &[
            "volume.detach.before_intent",
            "volume.detach.after_intent",
            "volume.detach.after_driver",
            "volume.detach.after_record",
        ],
    ),
    (
        Delete,
        &[
            "volume.delete.before_intent",
            "volume.delete.after_intent",
            "volume.delete.after_driver",
            "volume.delete.after_record",
        ],
    ),
    (
        Snapshot,
        &[
            "volume.snapshot.before_driver",
            "volume.snapshot.after_driver",
        ],
    ),
    (
        CreateDisk,
        &[
            "mesos.create_disk.after_pending",
            "volume.create.after_intent",
            "volume.create.after_driver",
            "mesos.create_disk.after_create",
            "mesos.create_disk.after_reserve",
            "volume.attach.after_intent",
            "volume.attach.after_driver",
            "mesos.create_disk.after_attach",
            "mesos.create_disk.after_status_stored",
            "mesos.create_disk.after_status_sent",
        ],
    ),
    (
        DestroyDisk,
        &[
            "mesos.destroy_disk.after_pending",
            "volume.detach.after_driver",
            "mesos.destroy_disk.after_detach",
            "volume.delete.after_intent",
            "volume.delete.after_driver",
            "mesos.destroy_disk.after_delete",
            "mesos.destroy_disk.after_unreserve",
            "mesos.destroy_disk.after_status_stored",
            "mesos.destroy_disk.after_status_sent",
        ],
    ),
    (
        Reserve,
        &[
            "mesos.reserve.after_pending",
            "mesos.reserve.after_reserve",
            "volume.attach.after_driver",
            "mesos.reserve.after_attach",
            "mesos.reserve.after_status_stored",
            "mesos.reserve.after_status_sent",
        ],
    ),
    (
        Unreserve,
        &[
            "mesos.unreserve.after_pending",
            "volume.detach.after_driver",
            "mesos.unreserve.after_detach",
            "mesos.unreserve.after_unreserve",
            "mesos.unreserve.after_status_stored",
            "mesos.unreserve.after_status_sent",
        ],
    ),
    (
        GrowVolume,
        &[
            "mesos.grow_volume.after_pending",
            "mesos.grow_volume.after_target",
            "volume.grow.before_intent",
            "volume.grow.after_intent",
            "volume.grow.after_driver",
            "volume.grow.after_record",
            "mesos.grow_volume.after_grow",
            "mesos.grow_volume.after_status_stored",
            "mesos.grow_volume.after_status_sent",
        ],
    ),
];

/// Whether the crash happened after the step's side effect on the back-end (for the volume
/// manager's points: after the driver call).
fn after_driver(point: &str) -> bool {
    point.ends_with(".after_driver") || point.ends_with(".after_record")
}

/// Run every case of `op` concurrently; fail with the list of failing cases.
async fn run(op: Operation) {
    let points = MATRIX
        .iter()
        .find(|(o, _)| *o == op)
        .map(|(_, p)| *p)
        .unwrap();
    let tasks: Vec<_> = points
        .iter()
        .map(|point| (point, tokio::spawn(case(op, point))))
        .collect();
    let mut failed = Vec::new();
    for (point, t) in tasks {
        if let Err(e) = t.await {
            let msg = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_default();
            failed.push(format!("{op:?} × {point}: {msg}"));
        }
    }
    assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
}

/// What the set-up made before the crash, for the checks after it.
#[derive(Default)]
struct Setup {
    volume: Option<String>,
    fw: Option<Framework>,
    /// The offer the operation uses.
    offer: Option<Value>,
}

/// One case: set up, crash at `point` during `op`, restart, check.
async fn case(op: Operation, point: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut polly = Polly::start_failing(&data, Some(CONFIG), &format!("{point}=return"));
    let mut setup = set_up(op, &polly).await;
    trigger(op, &polly, &mut setup).await;
    let status = tokio::task::block_in_place(|| polly.wait_exit(Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("not killed: failpoint {point} never reached"));
    assert_eq!(status.signal(), Some(9), "not a SIGKILL: {status:?}");
    let log = std::fs::read_to_string(stderr_log(&data)).unwrap();
    assert!(
        log.contains(&format!("polly: crash at failpoint {point}\n")),
        "killed, but not at {point}:\n{log}"
    );
    drop(polly);
    let offer_op = setup.fw.take().is_some();

    let polly = Polly::start_with(&data, Some(CONFIG), None);
    let c = polly.client();
    if !offer_op {
        invariants(&c, &data).await;
    }
    // An offer operation left unfinished is resumed once the server is ready: its checks wait
    // for its terminal status first.
    check_outcome(op, point, &polly, &setup).await;
    invariants(&c, &data).await;
}

fn req(name: &str) -> CreateVolume {
    CreateVolume {
        service: "vfs".into(),
        name: name.into(),
        size_bytes: 8 << 20,
        ..Default::default()
    }
}

async fn set_up(op: Operation, polly: &Polly) -> Setup {
    let c = polly.client();
    let mut s = Setup::default();
    match op {
        Create => {}
        Attach | Delete | Snapshot => s.volume = Some(c.create(&req("v")).await.unwrap().id),
        Detach => {
            let id = c.create(&req("v")).await.unwrap().id;
            c.attach(&id, None, "i-a", None).await.unwrap();
            s.volume = Some(id);
        }
        CreateDisk => {
            let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(FW)).await;
            s.offer = Some(offer_where(&mut fw, |o| disk_of(o, "RAW", None).is_some()).await);
            s.fw = Some(fw);
        }
        Reserve => {
            let mut r = req("r");
            r.restrict_frameworks = BTreeSet::from([FW.to_string()]);
            let id = c.create(&r).await.unwrap().id;
            let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(FW)).await;
            s.offer =
                Some(offer_where(&mut fw, |o| disk_of(o, "MOUNT", Some(&id)).is_some()).await);
            s.volume = Some(id);
            s.fw = Some(fw);
        }
        DestroyDisk | Unreserve | GrowVolume => {
            // A volume the framework holds, made by a CREATE_DISK that finished and was
            // acknowledged.
            let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(FW)).await;
            let raw = offer_where(&mut fw, |o| disk_of(o, "RAW", None).is_some()).await;
            fw.call(create_disk(FW, &raw, "op-setup", 64.0)).await;
            let done = outcome(&mut fw, "op-setup").await;
            assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
            acknowledge(&fw, &done).await;
            let id = done["converted_resources"][0]["disk"]["source"]["id"]
                .as_str()
                .unwrap()
                .to_string();
            let want = |o: &Value| {
                disk_of(o, "MOUNT", Some(&id)).is_some()
                    && (op != GrowVolume || disk_of(o, "RAW", None).is_some())
            };
            s.offer = Some(offer_where(&mut fw, want).await);
            s.volume = Some(id);
            s.fw = Some(fw);
        }
    }
    s
}

/// Send the operation; the server dies while handling it, so the answer is not looked at.
async fn trigger(op: Operation, polly: &Polly, s: &mut Setup) {
    let c = polly.client();
    let vol = s.volume.clone().unwrap_or_default();
    match op {
        Create => drop(c.create(&req("v")).await),
        Attach => drop(c.attach(&vol, None, "i-a", None).await),
        Detach => drop(c.detach(&vol, None, Some("i-a".into()), false).await),
        Delete => drop(c.delete(&vol, None).await),
        Snapshot => drop(snapshot(polly, &vol).await),
        _ => {
            let fw = s.fw.as_ref().unwrap();
            let offer = s.offer.as_ref().unwrap();
            let call = match op {
                CreateDisk => create_disk(FW, offer, "op-x", 64.0),
                DestroyDisk => accept(
                    offer,
                    json!({"type": "DESTROY_DISK", "id": {"value": "op-x"},
                        "destroy_disk": {"source": disk_of(offer, "MOUNT", Some(&vol)).unwrap()}}),
                ),
                Reserve => accept(
                    offer,
                    json!({"type": "RESERVE", "id": {"value": "op-x"},
                        "reserve": {"resources": [disk_of(offer, "MOUNT", Some(&vol)).unwrap()]}}),
                ),
                Unreserve => accept(
                    offer,
                    json!({"type": "UNRESERVE", "id": {"value": "op-x"},
                        "unreserve": {"resources": [disk_of(offer, "MOUNT", Some(&vol)).unwrap()]}}),
                ),
                GrowVolume => {
                    let mut add = disk_of(offer, "RAW", None).unwrap();
                    add["scalar"]["value"] = json!(16.0);
                    accept(
                        offer,
                        json!({"type": "GROW_VOLUME", "id": {"value": "op-x"},
                            "grow_volume": {"volume": disk_of(offer, "MOUNT", Some(&vol)).unwrap(),
                                "addition": add}}),
                    )
                }
                _ => unreachable!(),
            };
            // The crash may come before the 202 (the PENDING record is written first).
            let _ = fw
                .http
                .post(format!("{}/api/v1/scheduler", fw.base))
                .header("content-type", "application/json")
                .header("mesos-stream-id", &fw.stream_id)
                .body(call.to_string())
                .send()
                .await;
        }
    }
}

/// What must hold after any crash, once the restarted server is ready: every intent
/// resolved; no orphan or missing volume, and the store's volumes are exactly the back-end's
/// (driver ids, attachments and sizes); names unique; no volume attached twice; every
/// reservation names an existing volume, once; no volume left creating or deleting.
async fn invariants(c: &AdminClient, data: &Path) -> Vec<VolumeView> {
    assert!(
        c.operations().await.unwrap().is_empty(),
        "intent left unresolved"
    );
    let r = c.orphans().await.unwrap();
    assert!(r.orphans.is_empty(), "orphans: {:?}", r.orphans);
    assert!(r.missing.is_empty(), "missing: {:?}", r.missing);
    let vols = c.volumes(false).await.unwrap().volumes;
    let backend = backend_volumes(data);
    assert_eq!(
        vols.len(),
        backend.len(),
        "store {vols:?} vs back-end {backend:?}"
    );
    let mut names = BTreeSet::new();
    for v in &vols {
        assert_eq!(v.status, VolumeStatusView::Available, "{v:?}");
        assert!(v.attachments.len() <= 1, "double attachment: {v:?}");
        assert!(names.insert(v.name.clone()), "duplicate name: {v:?}");
        let b = backend
            .iter()
            .find(|b| Some(b["id"].as_str().unwrap()) == v.driver_id.as_deref())
            .unwrap_or_else(|| panic!("{v:?} has no back-end volume in {backend:?}"));
        let held: Vec<&str> = b["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["instance_id"].as_str().unwrap())
            .collect();
        let recorded: Vec<&str> = v
            .attachments
            .iter()
            .map(|a| a.instance_id.as_str())
            .collect();
        assert_eq!(held, recorded, "attachments differ: {v:?} vs {b}");
        assert_eq!(b["size_bytes"], v.size_bytes, "sizes differ: {v:?} vs {b}");
    }
    let res = c.reservations().await.unwrap();
    let mut held = BTreeSet::new();
    for r in &res {
        assert!(
            vols.iter().any(|v| v.id == r.volume_id),
            "reservation of a volume that does not exist: {r:?}"
        );
        assert!(held.insert(r.volume_id.clone()), "reserved twice: {r:?}");
    }
    vols
}

/// The vfs back-end's volumes: each directory's `volume.json`.
fn backend_volumes(data: &Path) -> Vec<Value> {
    vfs_volume_dirs(data, "vfs")
        .iter()
        .map(|d| {
            let meta = std::fs::read_to_string(d.join("volume.json"))
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            serde_json::from_str(&meta).unwrap()
        })
        .collect()
}

fn snapshot_dirs(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("vfs").join("vfs").join("snapshots");
    std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// What the restarted server must show for `op` crashed at `point`, and the operation run
/// again where it is idempotent.
async fn check_outcome(op: Operation, point: &str, polly: &Polly, s: &Setup) {
    let c = polly.client();
    let data = &polly.data_dir;
    let vol = s.volume.clone().unwrap_or_default();
    let one = |vols: &[VolumeView]| -> VolumeView {
        assert_eq!(vols.len(), 1, "{vols:?}");
        vols[0].clone()
    };
    match op {
        Create => {
            let vols = c.volumes(false).await.unwrap().volumes;
            // Reached the back-end: adopted; else rolled back.
            assert_eq!(vols.len(), usize::from(after_driver(point)), "{vols:?}");
            let again = c.create(&req("v")).await.unwrap();
            let v = one(&invariants(&c, data).await);
            assert_eq!((&v.id, v.name.as_str()), (&again.id, "v"));
            if let Some(before) = vols.first() {
                assert_eq!(before.id, again.id, "the retry returns the adopted volume");
            }
        }
        Attach => {
            let v = c.inspect(&vol, None).await.unwrap();
            assert_eq!(v.attachments.len(), usize::from(after_driver(point)));
            let v = c.attach(&vol, None, "i-a", None).await.unwrap();
            assert_eq!(v.attachments.len(), 1, "{v:?}");
            match c.attach(&vol, None, "i-b", None).await {
                Err(polly::client::Error::Api { status: 409, .. }) => {}
                other => panic!("a second instance attached: {other:?}"),
            }
        }
        Detach => {
            let v = c.inspect(&vol, None).await.unwrap();
            assert_eq!(v.attachments.len(), usize::from(!after_driver(point)));
            let v = c
                .detach(&vol, None, Some("i-a".into()), false)
                .await
                .unwrap();
            assert!(v.attachments.is_empty(), "{v:?}");
        }
        Delete => {
            let vols = c.volumes(false).await.unwrap().volumes;
            // Once the delete intent is durable, the restart finishes the delete.
            let gone = point != "volume.delete.before_intent";
            assert_eq!(vols.len(), usize::from(!gone), "{vols:?}");
            match c.delete(&vol, None).await {
                Ok(()) => assert!(!gone),
                Err(polly::client::Error::Api { status: 404, .. }) => assert!(gone),
                Err(e) => panic!("delete again: {e}"),
            }
            assert!(invariants(&c, data).await.is_empty());
        }
        Snapshot => {
            let before = snapshot_dirs(data).len();
            assert_eq!(before, usize::from(point.ends_with("after_driver")));
            let (status, body) = snapshot(polly, &vol).await;
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["name"], "snap1");
            assert_eq!(snapshot_dirs(data).len(), 1, "one snapshot, not two");
            let listed: Value = reqwest::get(format!("{}/snapshots/vfs", polly.libstorage))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(listed.as_object().unwrap().len(), 1, "{listed}");
        }
        _ => check_offer_operation(op, polly, s).await,
    }
}

/// An offer operation after the crash: the re-subscribing framework gets the terminal status
/// (again on each re-subscribe until it acknowledges it), and the store shows its effect.
async fn check_offer_operation(op: Operation, polly: &Polly, s: &Setup) {
    let c = polly.client();
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(FW)).await;
    let st = outcome(&mut fw, "op-x").await;
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    // Not acknowledged: sent again to the next subscription.
    drop(fw);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(FW)).await;
    let again = outcome(&mut fw, "op-x").await;
    assert_eq!(again["state"], st["state"]);
    assert_eq!(again["uuid"], st["uuid"], "the same status, re-delivered");
    acknowledge(&fw, &again).await;
    let rec = c
        .dump()
        .await
        .unwrap()
        .operations
        .into_iter()
        .find(|r| r.operation_id == "op-x")
        .expect("operation record");
    assert!(rec.acknowledged && rec.is_terminal(), "{rec:?}");

    let vols = invariants(&c, &polly.data_dir).await;
    let res = c.reservations().await.unwrap();
    let held = |id: &str| {
        res.iter()
            .any(|r| r.framework_id == FW && r.volume_id == id)
    };
    match op {
        CreateDisk => {
            let id = st["converted_resources"][0]["disk"]["source"]["id"]
                .as_str()
                .unwrap();
            assert_eq!(vols.len(), 1, "one volume, no duplicate: {vols:?}");
            assert_eq!(vols[0].id, id);
            assert_eq!(vols[0].size_bytes, 64 << 20);
            assert_eq!(vols[0].attachments[0].instance_id, "i-a");
            assert!(held(id), "reservation lost: {res:?}");
            // The same operation id again: reported from its record, never run twice.
            let raw = offer_where(&mut fw, |o| disk_of(o, "RAW", None).is_some()).await;
            fw.call(create_disk(FW, &raw, "op-x", 64.0)).await;
            let repeat = outcome(&mut fw, "op-x").await;
            assert_eq!(repeat["state"], "OPERATION_FINISHED", "{repeat}");
            let after = invariants(&c, &polly.data_dir).await;
            assert_eq!(after.len(), 1, "created twice: {after:?}");
        }
        DestroyDisk => {
            assert!(vols.is_empty(), "{vols:?}");
            assert!(res.is_empty(), "{res:?}");
        }
        Reserve | Unreserve | GrowVolume => {
            let id = s.volume.as_deref().unwrap();
            assert_eq!(vols.len(), 1, "{vols:?}");
            let v = &vols[0];
            assert_eq!(v.id, id);
            match op {
                Reserve => {
                    assert!(held(id), "reservation lost: {res:?}");
                    assert_eq!(v.attachments[0].instance_id, "i-a");
                }
                Unreserve => {
                    assert!(res.is_empty(), "{res:?}");
                    assert!(v.attachments.is_empty(), "{v:?}");
                }
                _ => {
                    assert_eq!(v.size_bytes, 80 << 20, "grown once, by 16 MB: {v:?}");
                    let r = res.iter().find(|r| r.volume_id == id).expect("held");
                    assert_eq!(r.bytes, v.size_bytes);
                }
            }
        }
        _ => unreachable!(),
    }
}

/// `POST /volumes/vfs/<id>?snapshot` through the libStorage façade: (status, body).
async fn snapshot(polly: &Polly, id: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/volumes/vfs/{id}?snapshot", polly.libstorage))
        .header("Libstorage-Instanceid", "vfs:vfs=i-a")
        .body(r#"{"snapshotName":"snap1"}"#)
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(_) => (0, Value::Null),
    }
}

fn accept(offer: &Value, operation: Value) -> Value {
    json!({"type": "ACCEPT", "framework_id": {"value": FW},
        "accept": {"offer_ids": [offer["id"].clone()], "operations": [operation],
            "filters": {"refuse_seconds": 0}}})
}

async fn acknowledge(fw: &Framework, status: &Value) {
    fw.call(
        json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": FW},
        "acknowledge_operation_status": status.clone()}),
    )
    .await;
}

/// The first status of `op` that is not PENDING.
async fn outcome(fw: &mut Framework, op: &str) -> Value {
    loop {
        let st = fw.status(op, 30).await;
        if st["state"] != "OPERATION_PENDING" {
            return st;
        }
    }
}

/// The disk of `offer` with source type `ty` (and volume id `id`, when given).
fn disk_of(offer: &Value, ty: &str, id: Option<&str>) -> Option<Value> {
    offer["resources"]
        .as_array()?
        .iter()
        .find(|r| {
            r["disk"]["source"]["type"] == ty && id.is_none_or(|i| r["disk"]["source"]["id"] == i)
        })
        .cloned()
}

/// The next offer on agent-a that `want` accepts. Offers that do not fit (the framework may
/// hold its RAW share and a volume in two offers) are gathered for a moment and declined
/// together without a filter, so the next round offers the agent again as one offer.
async fn offer_where(fw: &mut Framework, want: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..50 {
        let mut events = vec![fw.next("OFFERS", 20).await];
        let settle = tokio::time::Instant::now() + Duration::from_millis(150);
        while let Ok(Some(ev)) = tokio::time::timeout_at(settle, fw.events.recv()).await {
            if ev["type"] == "OFFERS" {
                events.push(ev);
            } else if ev["type"] != "HEARTBEAT" {
                fw.skipped.push_back(ev);
            }
        }
        let mut unwanted = Vec::new();
        for ev in &events {
            for o in ev["offers"]["offers"].as_array().unwrap() {
                if o["agent_id"]["value"] == "agent-a" && want(o) {
                    return o.clone();
                }
                unwanted.push(o["id"].clone());
            }
        }
        fw.call(json!({"type": "DECLINE", "framework_id": {"value": FW},
            "decline": {"offer_ids": unwanted, "filters": {"refuse_seconds": 0}}}))
            .await;
    }
    panic!("no wanted offer on agent-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create() {
    run(Create).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach() {
    run(Attach).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn detach() {
    run(Detach).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete() {
    run(Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_create() {
    run(Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_disk_op() {
    run(CreateDisk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroy_disk_op() {
    run(DestroyDisk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_op() {
    run(Reserve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreserve_op() {
    run(Unreserve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_volume_op() {
    run(GrowVolume).await;
}

/// Every failpoint in the sources is in the matrix, and every name in the matrix is in the
/// sources: a new step without a case, or a renamed point, fails here.
#[test]
fn the_matrix_covers_every_failpoint() {
    let mut in_code = BTreeSet::new();
    // The volume manager's steps: one file per operation.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/volumes");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(path).unwrap();
        for part in src.split("crash_point!(\"").skip(1) {
            in_code.insert(part.split('"').next().unwrap().to_string());
        }
    }
    // The offer operations' steps: one file per operation kind, and the shared finish.
    let mut ops = String::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/offer_endpoint/ops");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            ops.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let kinds = [
        "create_disk",
        "destroy_disk",
        "reserve",
        "unreserve",
        "grow_volume",
    ];
    for part in ops.split("crash_point!(").skip(1) {
        let arg = part.split(");").next().unwrap();
        if let Some(name) = arg.strip_prefix('"') {
            in_code.insert(name.split('"').next().unwrap().to_string());
        } else {
            // Per operation kind: `&format!("mesos.{}.<step>", kind)`.
            let step = arg.split("{}.").nth(1).unwrap().split('"').next().unwrap();
            for k in kinds {
                in_code.insert(format!("mesos.{k}.{step}"));
            }
        }
    }
    let in_matrix: BTreeSet<String> = MATRIX
        .iter()
        .flat_map(|(_, p)| p.iter().map(|s| s.to_string()))
        .collect();
    let untested: Vec<_> = in_code.difference(&in_matrix).collect();
    let unknown: Vec<_> = in_matrix.difference(&in_code).collect();
    assert!(
        untested.is_empty(),
        "failpoints without a case: {untested:?}"
    );
    assert!(unknown.is_empty(), "cases of no failpoint: {unknown:?}");
}
