//! Store tests: a model test (random batches against `BTreeMap`s, then a reopen) and the
//! basic invariants of `apply`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::sled_backend::SyncPoint;
use super::*;
use crate::driver::AccessMode;

fn vol(id: u8, service: u8, name: u8, size: u64) -> Volume {
    Volume {
        id: format!("pv-{id}"),
        service: format!("svc{service}"),
        driver_id: Some(format!("d-{id}")),
        name: format!("n{name}"),
        size_bytes: size,
        pool: None,
        zone: None,
        access_mode: AccessMode::SingleWriter,
        labels: BTreeMap::from([("k".to_string(), size.to_string())]),
        restrict_services: Default::default(),
        restrict_frameworks: Default::default(),
        status: VolumeStatus::Available,
        attachments: vec![],
        created_at: 1,
        path: None,
    }
}

fn intent(id: u64) -> Intent {
    Intent {
        id,
        volume_id: format!("pv-{id}"),
        service: "svc0".into(),
        op: IntentOp::Attach {
            instance_id: format!("i-{id}"),
        },
        created_at: id,
    }
}

/// The reference the store is checked against.
#[derive(Default, Clone, Debug)]
struct Model {
    volumes: BTreeMap<String, Volume>,
    intents: BTreeMap<u64, Intent>,
    instances: BTreeMap<(String, String), Instance>,
    meta: BTreeMap<String, String>,
    reservations: BTreeMap<(String, String), Reservation>,
    operations: BTreeMap<(String, String), OperationRecord>,
    nodes: BTreeMap<String, NodeRecord>,
}

impl Model {
    /// All-or-nothing, like the store: returns false (and changes nothing) on a name clash.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let mut next = self.clone();
        for op in ops {
            match op {
                Op::PutVolume(v) => {
                    let clash = next
                        .volumes
                        .values()
                        .any(|o| o.id != v.id && o.service == v.service && o.name == v.name);
                    if clash {
                        return false;
                    }
                    next.volumes.insert(v.id.clone(), v.clone());
                }
                Op::DeleteVolume(id) => {
                    next.volumes.remove(id);
                }
                Op::PutIntent(i) => {
                    next.intents.insert(i.id, i.clone());
                }
                Op::DeleteIntent(id) => {
                    next.intents.remove(id);
                }
                Op::PutInstance(i) => {
                    next.instances
                        .insert((i.driver.clone(), i.instance_id.clone()), i.clone());
                }
                Op::PutMeta(k, v) => {
                    next.meta.insert(k.clone(), v.clone());
                }
                Op::DeleteMeta(k) => {
                    next.meta.remove(k);
                }
                Op::PutReservation(r) => {
                    next.reservations
                        .insert((r.framework_id.clone(), r.volume_id.clone()), r.clone());
                }
                Op::DeleteReservation {
                    framework_id,
                    volume_id,
                } => {
                    next.reservations
                        .remove(&(framework_id.clone(), volume_id.clone()));
                }
                Op::PutOperation(o) => {
                    next.operations
                        .insert((o.framework_id.clone(), o.operation_id.clone()), o.clone());
                }
                Op::DeleteOperation {
                    framework_id,
                    operation_id,
                } => {
                    next.operations
                        .remove(&(framework_id.clone(), operation_id.clone()));
                }
                Op::PutNode(n) => {
                    next.nodes.insert(n.id.clone(), n.clone());
                }
                Op::DeleteNode(id) => {
                    next.nodes.remove(id);
                }
            }
        }
        *self = next;
        true
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..2, 0u8..4, 1u64..1000).prop_map(|(i, s, n, z)| Op::PutVolume(vol(i, s, n, z))),
        2 => (0u8..6).prop_map(|i| Op::DeleteVolume(format!("pv-{i}"))),
        1 => (0u64..5).prop_map(|i| Op::PutIntent(intent(i))),
        1 => (0u64..5).prop_map(Op::DeleteIntent),
        1 => (0u8..3, 0u64..100).prop_map(|(i, t)| Op::PutInstance(Instance {
            driver: "vfs".into(),
            instance_id: format!("host{i}"),
            hostname: Some(format!("h{i}")),
            last_seen: t,
            fields: Default::default(),
        })),
        1 => (0u8..2, 0u8..9).prop_map(|(k, v)| Op::PutMeta(format!("k{k}"), format!("v{v}"))),
        1 => (0u8..2).prop_map(|k| Op::DeleteMeta(format!("k{k}"))),
        1 => (0u8..3, 0u8..4, 1u64..1000).prop_map(|(f, v, b)| Op::PutReservation(Reservation {
            framework_id: format!("fw{f}"),
            role: "r".into(),
            principal: (b % 2 == 0).then(|| "p".into()),
            volume_id: format!("pv-{v}"),
            bytes: b,
            created_at: b,
        })),
        1 => (0u8..3, 0u8..4).prop_map(|(f, v)| Op::DeleteReservation {
            framework_id: format!("fw{f}"),
            volume_id: format!("pv-{v}"),
        }),
        1 => (0u8..3, 0u8..4, any::<bool>(), 0u8..3).prop_map(|(f, o, ack, st)| Op::PutOperation(OperationRecord {
            operation_id: format!("op{o}"),
            framework_id: format!("fw{f}"),
            agent_id: "a1".into(),
            kind: "CREATE_DISK".into(),
            state: ["OPERATION_PENDING", "OPERATION_FINISHED", "OPERATION_FAILED"][st as usize].into(),
            message: None,
            converted_resources: (st == 1).then(|| "[]".into()),
            acknowledged: ack,
            uuid: format!("u{o}{st}"),
            request: "{}".into(),
            volume_id: None,
            target_bytes: None,
            role: "*".into(),
            principal: None,
            updated_at: 1,
        })),
        1 => (0u8..3, 0u8..4).prop_map(|(f, o)| Op::DeleteOperation {
            framework_id: format!("fw{f}"),
            operation_id: format!("op{o}"),
        }),
        1 => (0u8..3, 0u8..3, 0u64..100).prop_map(|(n, st, t)| Op::PutNode(NodeRecord {
            id: format!("agent{n}"),
            hostname: Some(format!("h{n}")),
            zone: None,
            instance_ids: [format!("i-{n}")].into(),
            state: [NodeState::Lost, NodeState::Fencing, NodeState::Fenced][st as usize],
            reason: "lost".into(),
            lost_at: t,
            fenced_by: (st > 0).then(|| "operator".into()),
            fence_requested_at: (st > 0).then_some(t),
            pending: if st == 1 { vec![format!("pv-{t}")] } else { vec![] },
            released: vec![],
            fenced_at: (st == 2).then_some(t),
        })),
        1 => (0u8..3).prop_map(|n| Op::DeleteNode(format!("agent{n}"))),
    ]
}

fn assert_matches(store: &Store, model: &Model) {
    let vols: Vec<Volume> = model.volumes.values().cloned().collect();
    assert_eq!(store.volumes().unwrap(), vols);
    assert_eq!(
        *store.volumes_shared().unwrap(),
        vols,
        "cached list is stale"
    );
    for v in &vols {
        assert_eq!(
            store.volume_by_name(&v.service, &v.name).unwrap().as_ref(),
            Some(v)
        );
    }
    assert_eq!(
        store.intents().unwrap(),
        model.intents.values().cloned().collect::<Vec<_>>()
    );
    for i in model.intents.values() {
        assert_eq!(store.intent(i.id).unwrap().as_ref(), Some(i));
    }
    assert_eq!(
        store.instances().unwrap(),
        model.instances.values().cloned().collect::<Vec<_>>()
    );
    assert_eq!(store.dump().unwrap().meta, model.meta);
    assert_eq!(
        store.reservations().unwrap(),
        model.reservations.values().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        store.operations().unwrap(),
        model.operations.values().cloned().collect::<Vec<_>>()
    );
    for ((f, o), r) in &model.operations {
        assert_eq!(store.operation(f, o).unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        store.nodes().unwrap(),
        model.nodes.values().cloned().collect::<Vec<_>>()
    );
    for n in model.nodes.values() {
        assert_eq!(store.node(&n.id).unwrap().as_ref(), Some(n));
    }
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn store_matches_model(batches in prop::collection::vec(prop::collection::vec(op_strategy(), 1..4), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Model::default();
        {
            let store = Store::open(dir.path()).unwrap();
            for batch in &batches {
                let accepted = model.apply(batch);
                let res = store.apply(batch);
                prop_assert_eq!(res.is_ok(), accepted, "batch {:?} gave {:?}", batch, res);
                if let Err(e) = res {
                    prop_assert!(matches!(e, Error::NameTaken { .. }), "{e}");
                }
                assert_matches(&store, &model);
            }
        }
        let store = Store::open(dir.path()).unwrap();
        assert_matches(&store, &model);
    }
}

#[test]
fn rename_frees_the_old_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
    store.apply(&[Op::PutVolume(vol(1, 0, 2, 5))]).unwrap();
    assert!(store.volume_by_name("svc0", "n1").unwrap().is_none());
    store.apply(&[Op::PutVolume(vol(2, 0, 1, 5))]).unwrap();
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn erase_keeps_schema_and_clears_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(&[
            Op::PutVolume(vol(1, 0, 1, 5)),
            Op::PutIntent(intent(3)),
            Op::PutMeta("framework_id".into(), "f1".into()),
        ])
        .unwrap();
    store.erase().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let d = store.dump().unwrap();
    assert!(d.volumes.is_empty() && d.intents.is_empty() && d.meta.is_empty());
    assert_eq!(d.schema_version, SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.sled().force_schema(SCHEMA_VERSION + 1).unwrap();
    }
    match Store::open(dir.path()) {
        Err(Error::SchemaTooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn intent_ids_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path()).unwrap().next_id().unwrap();
    let b = Store::open(dir.path()).unwrap().next_id().unwrap();
    assert!(b > a, "{b} <= {a}");
}

/// Run `n` threads that each apply one `PutMeta("w/<i>")` at the same moment; returns each
/// thread's result, in thread order.
fn apply_concurrently(store: &Store, n: usize) -> Vec<Result<()>> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (store, barrier) = (store.clone(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    store.apply(&[Op::PutMeta(format!("w/{i:02}"), i.to_string())])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn written_keys(store: &Store) -> std::collections::BTreeSet<String> {
    written_keys_in(store.backend())
}

fn written_keys_in(b: &dyn Backend) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    b.scan(Tree::Meta, b"w/", &mut |k, _| {
        keys.insert(String::from_utf8_lossy(k).into_owned());
        Ok(())
    })
    .unwrap();
    keys
}

#[test]
fn concurrent_applies_share_flushes_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A slow disk: writers arriving while a flush runs must wait for the next one together.
    store.sled().set_sync_hook(std::sync::Arc::new(|_, point| {
        if point == SyncPoint::Start {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }));
    let before = store.durable_syncs();
    let n = 24;
    let results = apply_concurrently(&store, n);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let syncs = store.durable_syncs() - before;
    assert!(
        syncs >= 1 && syncs < n as u64,
        "{n} concurrent applies ran {syncs} flushes"
    );
    let expected: std::collections::BTreeSet<_> = (0..n).map(|i| format!("w/{i:02}")).collect();
    assert_eq!(written_keys(&store), expected);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(written_keys(&store), expected);
    assert_eq!(store.meta("w/07").unwrap().as_deref(), Some("7"));
}

#[test]
fn a_lone_apply_flushes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..3u64 {
        let before = store.durable_syncs();
        store
            .apply(&[Op::PutMeta("k".into(), i.to_string())])
            .unwrap();
        assert_eq!(store.durable_syncs() - before, 1);
    }
}

#[test]
fn an_apply_returns_only_after_a_flush_that_started_after_its_write() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // (writes visible when the running flush started, writes covered by a completed flush)
    let seen: Arc<Mutex<(BTreeSet<String>, BTreeSet<String>)>> = Default::default();
    let s2 = seen.clone();
    store.sled().set_sync_hook(Arc::new(move |store, point| {
        match point {
            SyncPoint::Start => {
                let visible = written_keys_in(store);
                s2.lock().unwrap().0 = visible;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            SyncPoint::End => {
                let mut g = s2.lock().unwrap();
                let started = std::mem::take(&mut g.0);
                g.1.extend(started);
            }
        }
        Ok(())
    }));
    let n = 16;
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        for i in 0..n {
            let (store, barrier, seen) = (store.clone(), &barrier, &seen);
            s.spawn(move || {
                barrier.wait();
                for round in 0..4 {
                    let key = format!("w/{i:02}-{round}");
                    store
                        .apply(&[Op::PutMeta(key.clone(), "x".into())])
                        .unwrap();
                    assert!(
                        seen.lock().unwrap().1.contains(&key),
                        "{key} returned before a flush that started after it was written"
                    );
                }
            });
        }
    });
    assert!(store.durable_syncs() < (n * 4) as u64 + 1);
}

#[test]
fn a_failed_flush_fails_every_write_it_covered() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let flushes = Arc::new(AtomicUsize::new(0));
    // Writes visible at the start of the first and of the second flush.
    let starts: Arc<Mutex<Vec<BTreeSet<String>>>> = Default::default();
    let (f2, s2) = (flushes.clone(), starts.clone());
    store.sled().set_sync_hook(Arc::new(move |store, point| {
        if point == SyncPoint::End {
            return Ok(());
        }
        let k = f2.fetch_add(1, Ordering::SeqCst);
        if k < 2 {
            s2.lock().unwrap().push(written_keys_in(store));
        }
        match k {
            // The first flush is slow so the other writers commit meanwhile and share the next.
            0 => std::thread::sleep(std::time::Duration::from_millis(100)),
            1 => return Err(Error::Sled("injected: disk gone".into())),
            _ => {}
        }
        Ok(())
    }));
    let n = 12;
    let results = apply_concurrently(&store, n);
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2, "two flushes at least");
    let failed: BTreeSet<_> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| format!("w/{i:02}"))
        .collect();
    // Several writers waited for the failed flush, and every one of them got its error.
    assert!(
        failed.len() >= 2,
        "the failed flush covered several writers: {results:?}"
    );
    // Only writes already visible when the failed flush started were covered by it.
    assert!(
        failed.is_subset(&starts[1]),
        "{failed:?} vs {:?}",
        starts[1]
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.to_string().contains("disk gone"), "{r}");
    }
    // The store keeps working after the failure, and the error is not handed out again.
    store
        .apply(&[Op::PutMeta("after".into(), "1".into())])
        .unwrap();
    assert!(store.sled().durability.lock().failures.is_empty());
    // Every write acknowledged as durable is there after a reopen.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let keys = written_keys(&store);
    for (i, r) in results.iter().enumerate() {
        if r.is_ok() {
            assert!(keys.contains(&format!("w/{i:02}")), "w/{i:02} lost");
        }
    }
}
