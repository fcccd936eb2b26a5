//! Manager tests on a real vfs driver (optionally behind the fault injector) and a real
//! sled store in temp dirs: races, timeouts, failed and uncertain driver calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::driver::fault::{FaultConfig, FaultDriver, HangPhase};
use crate::driver::vfs::{VfsConfig, VfsDriver};
use crate::driver::{AccessMode, Driver};

struct Fixture {
    _dir: tempfile::TempDir,
    manager: Manager,
    fault: Arc<FaultDriver>,
    vfs: Arc<VfsDriver>,
}

fn fixture(timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let vfs = Arc::new(VfsDriver::open(VfsConfig::new(dir.path().join("vfs"))).unwrap());
    let fault = Arc::new(FaultDriver::new(vfs.clone(), FaultConfig::default()));
    let services = BTreeMap::from([(
        "vfs".to_string(),
        Service {
            name: "vfs".into(),
            driver: fault.clone(),
        },
    )]);
    Fixture {
        _dir: dir,
        manager: Manager::with_services(store, services, timeout),
        fault,
        vfs,
    }
}

fn req(name: &str) -> CreateVolume {
    CreateVolume {
        service: "vfs".into(),
        name: name.into(),
        size_bytes: 4096,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_of_a_single_writer_volume_leave_one_holder() {
    let f = fixture(Duration::from_secs(10));
    let v = f.manager.create(req("race")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let m = f.manager.clone();
        let id = v.id.clone();
        tasks.push(tokio::spawn(async move {
            m.attach(&id, &format!("host-{i}"), None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    let rec = f.manager.volume(&v.id).unwrap();
    assert_eq!(rec.attachments.len(), 1);
    let backend = f
        .vfs
        .inspect(rec.driver_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(backend.attachments.len(), 1);
    assert_eq!(
        backend.attachments[0].instance_id,
        rec.attachments[0].instance_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_one_volume() {
    let f = fixture(Duration::from_secs(10));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let m = f.manager.clone();
        tasks.push(tokio::spawn(async move { m.create(req("same")).await }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(f.vfs.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_create_leaves_no_record_and_no_intent() {
    let f = fixture(Duration::from_secs(10));
    let mut big = req("big");
    big.pool = Some("no-such-pool".into());
    assert!(matches!(
        f.manager.create(big).await,
        Err(Error::NotFound { .. })
    ));
    assert!(f.manager.volumes().unwrap().is_empty());
    assert!(f.manager.store().intents().unwrap().is_empty());
}

#[tokio::test]
async fn an_uncertain_failure_is_resolved_against_the_backend() {
    let f = fixture(Duration::from_secs(10));
    // The back-end creates the volume, then the call fails as if the reply were lost.
    f.fault.set_config(FaultConfig {
        hang: vec!["create".into()],
        hang_phase: HangPhase::After,
        ..Default::default()
    });
    let m = f.manager.clone();
    let short = Manager::with_services(
        m.store().clone(),
        BTreeMap::from([(
            "vfs".to_string(),
            Service {
                name: "vfs".into(),
                driver: f.fault.clone(),
            },
        )]),
        Duration::from_millis(200),
    );
    // The timeout's resolver lists the back-end: the hang only affects create.
    let v = short.create(req("lost-reply")).await.unwrap();
    assert_eq!(v.status, VolumeStatus::Available);
    assert!(v.driver_id.is_some());
    assert!(short.store().intents().unwrap().is_empty());
    assert_eq!(f.vfs.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_timeout_before_the_side_effect_rolls_back() {
    let f = fixture(Duration::from_millis(200));
    f.fault.set_config(FaultConfig {
        hang: vec!["create".into()],
        hang_phase: HangPhase::Before,
        ..Default::default()
    });
    assert!(matches!(
        f.manager.create(req("slow")).await,
        Err(Error::Timeout { .. })
    ));
    assert!(f.manager.volumes().unwrap().is_empty());
    assert!(f.manager.store().intents().unwrap().is_empty());
    f.fault.set_config(FaultConfig::default());
    f.manager.create(req("slow")).await.unwrap();
}

#[tokio::test]
async fn injected_errors_leave_state_consistent() {
    let f = fixture(Duration::from_secs(10));
    let v = f.manager.create(req("e")).await.unwrap();
    f.fault.set_config(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    // Unavailable is uncertain: the resolver asks the back-end (also failing), so the intent
    // stays for a later pass and the record is unchanged.
    assert!(f.manager.attach(&v.id, "h", None).await.is_err());
    assert_eq!(f.manager.store().intents().unwrap().len(), 1);
    assert!(f.manager.volume(&v.id).unwrap().attachments.is_empty());
    f.fault.set_config(FaultConfig::default());
    assert_eq!(f.manager.resolve_pending().await.unwrap(), 0);
    assert!(f.manager.store().intents().unwrap().is_empty());
    assert!(f.manager.volume(&v.id).unwrap().attachments.is_empty());
    // A volume with a pending intent is not half-changed by other calls meanwhile.
    f.manager.attach(&v.id, "h", None).await.unwrap();
}

#[tokio::test]
async fn delete_retries_until_the_backend_removes() {
    let f = fixture(Duration::from_secs(10));
    let v = f.manager.create(req("d")).await.unwrap();
    f.fault.set_config(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    assert!(f.manager.delete(&v.id).await.is_err());
    assert_eq!(
        f.manager.volume(&v.id).unwrap().status,
        VolumeStatus::Deleting
    );
    f.fault.set_config(FaultConfig::default());
    f.manager.resolve_pending().await.unwrap();
    assert!(f.manager.store().volume(&v.id).unwrap().is_none());
    assert!(f.vfs.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn capacity_poller_records_readings_and_marks_failing_services_unavailable() {
    let f = fixture(Duration::from_millis(300));
    let interval = Duration::from_secs(10);
    assert!(f.manager.poll_capacity("vfs", interval).await);
    let r = f.manager.capacity_readings()["vfs"].clone();
    assert!(r.available && r.read_at_ms.is_some() && !r.pools.is_empty());
    let first = r.read_at_ms;
    // Not due again until the interval has passed.
    assert_eq!(f.manager.poll_due_capacity(interval).await, 0);

    f.fault.set_config(FaultConfig {
        hang: vec!["capacity".into()],
        ..Default::default()
    });
    assert!(!f.manager.poll_capacity("vfs", interval).await);
    assert!(!f.manager.poll_capacity("vfs", interval).await);
    let r = f.manager.capacity_readings()["vfs"].clone();
    assert!(!r.available);
    assert_eq!(r.failures, 2);
    assert_eq!(r.read_at_ms, first, "a failed poll is not a reading");
    assert!(r.last_error.unwrap().contains("timed out"));
    // Backed off: the next poll is at least 4 intervals away.
    assert!(r.next_poll_ms >= first.unwrap() + 4 * 10_000 - 1000);
    let infos = f.manager.service_infos().await.unwrap();
    assert!(!infos[0].available && infos[0].poll_error.is_some());
    assert!(f
        .manager
        .metrics()
        .render(crate::metrics::Format::Text)
        .contains("polly_capacity_available{service=\"vfs\"} 0"));

    f.fault.set_config(FaultConfig::default());
    assert!(f.manager.poll_capacity("vfs", interval).await);
    let r = f.manager.capacity_readings()["vfs"].clone();
    assert!(r.available && r.failures == 0 && r.last_error.is_none());
}

#[tokio::test]
async fn repeated_instance_reports_write_once_until_something_changes() {
    let f = fixture(Duration::from_secs(10));
    let m = &f.manager;
    m.record_instance("vfs", "host-a", Some("a".into()), BTreeMap::new())
        .await
        .unwrap();
    let g = m.store().generation();
    for _ in 0..5 {
        m.record_instance("vfs", "host-a", Some("a".into()), BTreeMap::new())
            .await
            .unwrap();
    }
    assert_eq!(m.store().generation(), g, "an unchanged report wrote again");
    m.record_instance("vfs", "host-a", Some("renamed".into()), BTreeMap::new())
        .await
        .unwrap();
    assert!(
        m.store().generation() > g,
        "a changed hostname was not written"
    );
    let i = m.store().instance("vfs", "host-a").unwrap().unwrap();
    assert_eq!(i.hostname.as_deref(), Some("renamed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_detach_releases_only_the_fenced_instances_of_a_shared_volume() {
    let f = fixture(Duration::from_secs(10));
    let log = f._dir.path().join("calls.log");
    f.fault.set_config(FaultConfig {
        call_log: Some(log.clone()),
        ..Default::default()
    });
    let mut r = req("shared");
    r.access_mode = AccessMode::MultiWriter;
    let v = f.manager.create(r).await.unwrap();
    f.manager.attach(&v.id, "dead", None).await.unwrap();
    f.manager.attach(&v.id, "alive", None).await.unwrap();
    let fenced = BTreeSet::from(["dead".to_string()]);
    let after = f
        .manager
        .fence_detach(&v.id, &fenced)
        .await
        .unwrap()
        .unwrap();
    let holders: Vec<_> = after
        .attachments
        .iter()
        .map(|a| a.instance_id.as_str())
        .collect();
    assert_eq!(holders, vec!["alive"]);
    let backend = f
        .vfs
        .inspect(v.driver_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(backend.attachments.len(), 1);
    assert_eq!(backend.attachments[0].instance_id, "alive");
    // Again: nothing held, no back-end call.
    f.manager.fence_detach(&v.id, &fenced).await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let detaches: Vec<_> = text.lines().filter(|l| l.contains("detach")).collect();
    assert_eq!(detaches.len(), 1, "{text}");
    assert!(detaches[0].starts_with("detach "), "{text}");
    // An unknown volume is `None`, not an error (it may have been deleted meanwhile).
    assert!(f
        .manager
        .fence_detach("pv-gone", &fenced)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_detach_resolves_a_leftover_intent_instead_of_detaching_twice() {
    let f = fixture(Duration::from_millis(300));
    let log = f._dir.path().join("calls.log");
    let v = f.manager.create(req("solo")).await.unwrap();
    f.manager.attach(&v.id, "dead", None).await.unwrap();
    // The force-detach reaches the back-end but its reply is lost; the intent stays when the
    // resolution right after it cannot run either (inspect hangs too).
    f.fault.set_config(FaultConfig {
        call_log: Some(log.clone()),
        hang: vec!["force_detach".into(), "inspect".into()],
        hang_phase: HangPhase::After,
        ..Default::default()
    });
    assert!(f.manager.detach(&v.id, None).await.is_err());
    assert_eq!(f.manager.store().intents().unwrap().len(), 1);
    assert_eq!(f.manager.volume(&v.id).unwrap().attachments.len(), 1);
    f.fault.set_config(FaultConfig {
        call_log: Some(log.clone()),
        ..Default::default()
    });
    let fenced = BTreeSet::from(["dead".to_string()]);
    let after = f
        .manager
        .fence_detach(&v.id, &fenced)
        .await
        .unwrap()
        .unwrap();
    assert!(after.attachments.is_empty());
    assert!(f.manager.store().intents().unwrap().is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.contains("detach")).count(),
        1,
        "{text}"
    );
}

#[tokio::test]
async fn creates_grows_and_deletes_change_known_free_capacity_before_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut cfg = VfsConfig::new(dir.path().join("vfs"));
    cfg.quota_bytes = Some(1 << 30);
    let vfs = Arc::new(VfsDriver::open(cfg).unwrap());
    let services = BTreeMap::from([(
        "vfs".to_string(),
        Service {
            name: "vfs".into(),
            driver: vfs.clone(),
        },
    )]);
    let m = Manager::with_services(store, services, Duration::from_secs(10));
    let free = |m: &Manager| m.capacity_readings()["vfs"].pools[0].free_bytes;
    let interval = Duration::from_secs(3600);
    assert!(m.poll_capacity("vfs", interval).await);
    let start = free(&m);
    assert_eq!(start, 1 << 30);

    // A create through the manager (any surface) counts at once, and drops its claim in the
    // same step.
    let claim = m.claim_capacity();
    assert!(m.capacity_view().1.contains(&claim));
    let mut r = req("a");
    r.size_bytes = 64 << 20;
    let v = m.create_claimed(r.clone(), Some(claim)).await.unwrap();
    assert_eq!(free(&m), start - (64 << 20));
    assert!(m.capacity_view().1.is_empty(), "the claim is accounted");
    // The same create again changes nothing.
    m.create(r).await.unwrap();
    assert_eq!(free(&m), start - (64 << 20));

    // A grow counts its addition.
    let claim = m.claim_capacity();
    m.grow_claimed(&v.id, 96 << 20, Some(claim)).await.unwrap();
    assert_eq!(free(&m), start - (96 << 20));
    assert!(m.capacity_view().1.is_empty());

    // The next reading replaces the known value; the driver sees the same.
    assert!(m.poll_capacity("vfs", interval).await);
    assert_eq!(free(&m), start - (96 << 20));

    // A delete gives the space back at once.
    m.delete(&v.id).await.unwrap();
    assert_eq!(free(&m), start);
    assert!(m.poll_capacity("vfs", interval).await);
    assert_eq!(free(&m), start);
}

/// Wraps a driver so that `create` and `attach` return only once `n` calls of that method
/// are in the driver together: if anything in Polly serialized driver calls of different
/// volumes, the first call would wait for the others forever.
struct Rendezvous {
    inner: crate::driver::DynDriver,
    create: tokio::sync::Barrier,
    attach: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl Driver for Rendezvous {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    async fn capacity(&self) -> crate::driver::Result<Vec<crate::driver::PoolCapacity>> {
        self.inner.capacity().await
    }
    async fn list(&self) -> crate::driver::Result<Vec<crate::driver::DriverVolume>> {
        self.inner.list().await
    }
    async fn inspect(&self, id: &str) -> crate::driver::Result<crate::driver::DriverVolume> {
        self.inner.inspect(id).await
    }
    async fn create(
        &self,
        req: &crate::driver::CreateRequest,
    ) -> crate::driver::Result<crate::driver::DriverVolume> {
        self.create.wait().await;
        self.inner.create(req).await
    }
    async fn remove(&self, id: &str) -> crate::driver::Result<()> {
        self.inner.remove(id).await
    }
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &crate::driver::AttachOptions,
    ) -> crate::driver::Result<crate::driver::DriverAttachment> {
        self.attach.wait().await;
        self.inner.attach(id, instance_id, opts).await
    }
    async fn detach(&self, id: &str, instance_id: &str) -> crate::driver::Result<()> {
        self.inner.detach(id, instance_id).await
    }
    async fn force_detach(&self, id: &str) -> crate::driver::Result<()> {
        self.inner.force_detach(id).await
    }
    async fn snapshot_create(
        &self,
        volume_id: &str,
        name: &str,
    ) -> crate::driver::Result<crate::driver::Snapshot> {
        self.inner.snapshot_create(volume_id, name).await
    }
    async fn snapshot_list(
        &self,
        volume_id: Option<&str>,
    ) -> crate::driver::Result<Vec<crate::driver::Snapshot>> {
        self.inner.snapshot_list(volume_id).await
    }
    async fn snapshot_remove(&self, snapshot_id: &str) -> crate::driver::Result<()> {
        self.inner.snapshot_remove(snapshot_id).await
    }
    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &crate::driver::CreateRequest,
    ) -> crate::driver::Result<crate::driver::DriverVolume> {
        self.inner.create_from_snapshot(snapshot_id, req).await
    }
    async fn copy(
        &self,
        volume_id: &str,
        req: &crate::driver::CreateRequest,
    ) -> crate::driver::Result<crate::driver::DriverVolume> {
        self.inner.copy(volume_id, req).await
    }
    async fn grow(
        &self,
        id: &str,
        new_size_bytes: u64,
    ) -> crate::driver::Result<crate::driver::DriverVolume> {
        self.inner.grow(id, new_size_bytes).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_calls_for_different_volumes_run_concurrently() {
    const N: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let vfs = Arc::new(VfsDriver::open(VfsConfig::new(dir.path().join("vfs"))).unwrap());
    let driver = Arc::new(Rendezvous {
        inner: vfs.clone(),
        create: tokio::sync::Barrier::new(N),
        attach: tokio::sync::Barrier::new(N),
    });
    let services = BTreeMap::from([(
        "vfs".to_string(),
        Service {
            name: "vfs".into(),
            driver,
        },
    )]);
    let m = Manager::with_services(store, services, Duration::from_secs(120));
    // The bound only turns a serialization bug into a failure instead of a hang.
    let all = async {
        let creates: Vec<_> = (0..N)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move { m.create(req(&format!("v{i}"))).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in creates {
            ids.push(t.await.unwrap().unwrap().id);
        }
        let attaches: Vec<_> = ids
            .iter()
            .map(|id| {
                let (m, id) = (m.clone(), id.clone());
                tokio::spawn(async move { m.attach(&id, "node-1", None).await })
            })
            .collect();
        for t in attaches {
            t.await.unwrap().unwrap();
        }
        ids
    };
    let ids = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("driver calls of different volumes were serialized");
    assert_eq!(vfs.list().await.unwrap().len(), N);
    for id in ids {
        assert_eq!(m.volume(&id).unwrap().attachments.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciler_pass_does_not_wait_for_an_operation_in_flight() {
    // Regression: a pass used to queue on the volume lock of an operation whose back-end
    // call hung, so one stuck call stopped every other intent from being retried (and the
    // inventory comparison) until the driver timeout.
    let f = fixture(Duration::from_secs(3600));
    let stuck = f.manager.create(req("stuck")).await.unwrap();
    let other = f.manager.create(req("other")).await.unwrap();
    // `other` gets an intent a pass must finish: a delete the back-end failed.
    f.fault.set_config(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    assert!(f.manager.delete(&other.id).await.is_err());
    f.fault.set_config(FaultConfig {
        hang: vec!["attach".into()],
        hang_only: vec![stuck.driver_id.clone().unwrap()],
        ..Default::default()
    });
    let m = f.manager.clone();
    let id = stuck.id.clone();
    let hung = tokio::spawn(async move { m.attach(&id, "host", None).await });
    for _ in 0..500 {
        if f.manager.store().intents().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.manager.store().intents().unwrap().len(), 2);

    let st = tokio::time::timeout(
        Duration::from_secs(30),
        f.manager.reconcile_pass(Duration::from_secs(30)),
    )
    .await
    .expect("the pass waited for the hung attach")
    .unwrap();
    assert_eq!(st.unresolved_intents, 0, "{st:?}");
    assert!(f.manager.store().volume(&other.id).unwrap().is_none());
    // The hung attach keeps its intent; the pass neither finished nor rolled it back.
    let left = f.manager.store().intents().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].volume_id, stuck.id);
    assert!(!hung.is_finished());
    assert!(f.manager.volume(&stuck.id).unwrap().attachments.is_empty());
    hung.abort();
}

/// The reconciler's report with many volumes: every record matched to its back-end volume by
/// driver id (sets, not a scan per volume), a back-end volume claimed by the name of a create
/// in flight is not an orphan, a back-end volume nobody claims is one, and a record whose
/// back-end volume is gone is missing.
#[tokio::test]
async fn reconcile_report_matches_many_volumes_by_id_and_creates_in_flight_by_name() {
    let f = fixture(Duration::from_secs(10));
    let mut vols = Vec::new();
    for i in 0..300 {
        vols.push(f.manager.create(req(&format!("v{i:03}"))).await.unwrap());
    }
    let report = f.manager.reconcile_report().await.unwrap();
    assert!(report.orphans.is_empty(), "{report:?}");
    assert!(report.missing.is_empty(), "{report:?}");

    let back_end = |name: &str| crate::driver::CreateRequest {
        name: name.into(),
        size_bytes: 4096,
        pool: None,
        zone: None,
        access_mode: Default::default(),
        fields: BTreeMap::new(),
    };
    let orphan = f.vfs.create(&back_end("nobody")).await.unwrap();
    let claimed = f.vfs.create(&back_end("in-flight")).await.unwrap();
    let mut creating = vols[0].clone();
    creating.id = "pv-in-flight".into();
    creating.name = "in-flight".into();
    creating.driver_id = None;
    creating.status = crate::store::VolumeStatus::Creating;
    f.manager
        .store()
        .apply(&[crate::store::Op::PutVolume(creating)])
        .unwrap();
    let gone = &vols[150];
    f.vfs
        .remove(gone.driver_id.as_deref().unwrap())
        .await
        .unwrap();

    let report = f.manager.reconcile_report().await.unwrap();
    let orphans: Vec<_> = report
        .orphans
        .iter()
        .map(|o| o.driver_id.as_str())
        .collect();
    assert_eq!(orphans, [orphan.id.as_str()], "{report:?}");
    assert_ne!(claimed.id, orphan.id);
    let missing: Vec<_> = report
        .missing
        .iter()
        .map(|m| m.volume_id.as_str())
        .collect();
    assert_eq!(missing, [gone.id.as_str()], "{report:?}");
}
