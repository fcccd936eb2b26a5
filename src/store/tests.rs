//! Tests of the sled backend's own machinery: the schema check and group commit (flush
//! sharing, ordering, failure). The store suite that runs against every backend (model test,
//! durability, transactions, concurrency) is `tests/store_backends.rs`.

use super::sled_backend::SyncPoint;
use super::*;

/// Open the store in `dir` again after this process dropped its handle. sled releases its
/// file lock only once its background I/O threads (shared by every database in the
/// process) have let go of the dropped handle, which under a busy test run can take a
/// moment: retry while the lock is held, for at most 10 s. Any other result is returned.
fn reopen(dir: &std::path::Path) -> Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.sled().force_schema(SCHEMA_VERSION + 1).unwrap();
    }
    match reopen(dir.path()) {
        Err(Error::SchemaTooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
        other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
    }
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
    let store = reopen(dir.path()).unwrap();
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
            1 => return Err(Error::Io("injected: disk gone".into())),
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
    let store = reopen(dir.path()).unwrap();
    let keys = written_keys(&store);
    for (i, r) in results.iter().enumerate() {
        if r.is_ok() {
            assert!(keys.contains(&format!("w/{i:02}")), "w/{i:02} lost");
        }
    }
}

#[test]
fn sled_cannot_be_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let fence = Fence {
        key: b"/leader".to_vec(),
        create_revision: 7,
    };
    assert!(matches!(
        store.set_fence(Some(fence)),
        Err(Error::Unsupported(_))
    ));
    store.apply(&[Op::PutMeta("k".into(), "v".into())]).unwrap();
}

fn vol(i: usize) -> Volume {
    Volume {
        id: format!("pv-{i:05}"),
        service: "vfs".into(),
        driver_id: Some(format!("vfs-{i}")),
        name: format!("v{i}"),
        size_bytes: 1 << 30,
        pool: None,
        zone: None,
        access_mode: crate::driver::AccessMode::SingleWriter,
        labels: Default::default(),
        restrict_services: Default::default(),
        restrict_frameworks: Default::default(),
        status: VolumeStatus::Available,
        attachments: vec![],
        created_at: 1,
        path: None,
    }
}

/// The shared list as plain volumes, to compare with [`Store::volumes`].
fn shared(store: &Store) -> Vec<Volume> {
    store
        .volumes_shared()
        .unwrap()
        .iter()
        .map(|v| (**v).clone())
        .collect()
}

/// Readers that find the shared volume list out of date at the same moment share one
/// update (one list in memory, not one per reader); a write makes the next reader get a
/// list of its own that has it.
#[test]
fn concurrent_readers_share_one_decoded_volume_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ops: Vec<Op> = (0..5000).map(|i| Op::PutVolume(vol(i))).collect();
    store.apply(&ops).unwrap();
    for round in 0..3 {
        let n = 8;
        let barrier = std::sync::Barrier::new(n);
        let lists: Vec<VolumeList> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| {
                    let (store, barrier) = (store.clone(), &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store.volumes_shared().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(lists[0].len(), 5000, "round {round}");
        assert_eq!(lists[0].capacity(), 5000, "kept without spare room");
        for l in &lists[1..] {
            assert!(
                Arc::ptr_eq(&lists[0], l),
                "a second decoded copy in round {round}"
            );
        }
        // A write: the next readers must see it, in a list of their own.
        store.apply(&[Op::PutVolume(vol(9999))]).unwrap();
        let after = store.volumes_shared().unwrap();
        assert!(!Arc::ptr_eq(&lists[0], &after));
        assert!(after.iter().any(|v| v.id == "pv-09999"));
        store.apply(&[Op::DeleteVolume("pv-09999".into())]).unwrap();
    }
}

/// After the first read, a write is applied to the shared list by reading only the volumes
/// it wrote: every other volume is the same allocation as before, inserts, updates and
/// deletes at the start, middle and end land in id order, and writes to other trees leave
/// the list (and its version) as they were.
#[test]
fn the_shared_volume_list_is_patched_with_the_volumes_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ops: Vec<Op> = (1..200).step_by(2).map(|i| Op::PutVolume(vol(i))).collect();
    store.apply(&ops).unwrap();
    let before = store.volumes_shared().unwrap();
    assert_eq!(before.len(), 100);

    let version = store.volumes_version();
    store
        .apply(&[
            Op::PutMeta("k".into(), "v".into()),
            Op::PutReservation(Reservation {
                framework_id: "fw".into(),
                role: "*".into(),
                principal: None,
                volume_id: "pv-00001".into(),
                bytes: 1,
                created_at: 1,
            }),
        ])
        .unwrap();
    assert_eq!(store.volumes_version(), version, "no volume was written");
    assert!(Arc::ptr_eq(&before, &store.volumes_shared().unwrap()));

    let mut grown = vol(101);
    grown.size_bytes *= 2;
    store
        .apply(&[
            Op::PutVolume(vol(0)),   // before the first
            Op::PutVolume(vol(100)), // in the middle
            Op::PutVolume(vol(500)), // after the last
            Op::PutVolume(grown.clone()),
            Op::DeleteVolume("pv-00001".into()),
            Op::DeleteVolume("pv-00199".into()),
            Op::DeleteVolume("pv-00300".into()), // never existed
        ])
        .unwrap();
    assert!(store.volumes_version() > version);
    let after = store.volumes_shared().unwrap();
    assert_eq!(shared(&store), store.volumes().unwrap());
    let ids: Vec<&str> = after.iter().map(|v| v.id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    assert_eq!(after.len(), 100 + 3 - 2);
    assert_eq!(
        after
            .iter()
            .find(|v| v.id == grown.id)
            .map(|v| v.size_bytes),
        Some(grown.size_bytes)
    );
    // Untouched volumes were not decoded again.
    let written = [
        "pv-00000", "pv-00100", "pv-00500", "pv-00101", "pv-00001", "pv-00199",
    ];
    for v in after.iter().filter(|v| !written.contains(&v.id.as_str())) {
        let old = before.iter().find(|b| b.id == v.id).unwrap();
        assert!(Arc::ptr_eq(old, v), "{} was decoded again", v.id);
    }
}

/// Writers and readers at once: every list a reader gets has every write that returned
/// before its call, and once the writers stop the shared list equals the tree.
#[test]
fn the_shared_volume_list_keeps_up_with_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ops: Vec<Op> = (0..300).map(|i| Op::PutVolume(vol(i))).collect();
    store.apply(&ops).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    /// Ends the readers when a writer ends, also by a failed assertion (they would spin on).
    struct Done<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        for w in 0..4usize {
            let (store, done) = (store.clone(), &done);
            s.spawn(move || {
                let _done = Done(done);
                for n in 0..150usize {
                    let i = 1000 + w * 1000 + n;
                    store.apply(&[Op::PutVolume(vol(i))]).unwrap();
                    // Its own write is in the very next list it reads.
                    assert!(store
                        .volumes_shared()
                        .unwrap()
                        .iter()
                        .any(|v| v.id == vol(i).id));
                    let mut v = vol(i);
                    v.status = VolumeStatus::Deleting;
                    store.apply(&[Op::PutVolume(v)]).unwrap();
                    let list = store.volumes_shared().unwrap();
                    let seen = list.iter().find(|v| v.id == vol(i).id).map(|v| v.status);
                    assert_eq!(seen, Some(VolumeStatus::Deleting));
                    if n % 3 == 0 {
                        store.apply(&[Op::DeleteVolume(vol(i).id)]).unwrap();
                        assert!(!store
                            .volumes_shared()
                            .unwrap()
                            .iter()
                            .any(|v| v.id == vol(i).id));
                    }
                }
            });
        }
        for _ in 0..2 {
            let (store, done) = (store.clone(), &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let list = store.volumes_shared().unwrap();
                    assert!(list.windows(2).all(|w| w[0].id < w[1].id));
                }
            });
        }
    });
    assert_eq!(shared(&store), store.volumes().unwrap());
    assert_eq!(store.volumes().unwrap().len(), 300 + 4 * 100);
}

/// `forget_cache` (another process may have written) and `erase` drop the shared list: the
/// next reader reads the whole tree again.
#[test]
fn forget_cache_and_erase_drop_the_shared_volume_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.apply(&[Op::PutVolume(vol(1))]).unwrap();
    let first = store.volumes_shared().unwrap();
    let version = store.volumes_version();
    store.forget_cache();
    assert!(store.volumes_version() > version);
    let again = store.volumes_shared().unwrap();
    assert!(!Arc::ptr_eq(&first, &again));
    assert!(!Arc::ptr_eq(&first[0], &again[0]), "not read again");
    store.erase().unwrap();
    assert!(store.volumes_shared().unwrap().is_empty());
}

#[test]
fn merged_puts_fresh_volumes_in_id_order() {
    let base: Vec<Arc<Volume>> = [2, 4, 6].into_iter().map(|i| Arc::new(vol(i))).collect();
    let fresh = vec![
        ("pv-00001".to_string(), Some(vol(1))),
        ("pv-00003".to_string(), None), // a delete of a volume the list does not have
        ("pv-00004".to_string(), None),
        ("pv-00006".to_string(), Some(vol(6))),
        ("pv-00007".to_string(), Some(vol(7))),
        ("pv-00008".to_string(), Some(vol(8))),
    ];
    let out = merged(&base, fresh);
    let ids: Vec<&str> = out.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(
        ids,
        ["pv-00001", "pv-00002", "pv-00006", "pv-00007", "pv-00008"]
    );
    assert!(Arc::ptr_eq(&out[1], &base[0]));
    assert!(
        !Arc::ptr_eq(&out[2], &base[2]),
        "replaced by the fresh copy"
    );
    assert_eq!(out.capacity(), out.len());
}

/// A conditional delete of an operation record removes it only while the record still has
/// the status uuid the caller read (the endpoint's retention pass must not remove a record
/// the same operation id got again meanwhile).
#[test]
fn an_operation_record_is_deleted_only_while_it_has_the_status_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = |uuid: &str| OperationRecord {
        operation_id: "op-1".into(),
        framework_id: "fw".into(),
        agent_id: "a1".into(),
        kind: "CREATE_DISK".into(),
        state: "OPERATION_FINISHED".into(),
        message: None,
        converted_resources: None,
        acknowledged: true,
        uuid: uuid.into(),
        request: "{}".into(),
        volume_id: None,
        target_bytes: None,
        role: "*".into(),
        principal: None,
        updated_at: 1,
    };
    let delete = |if_status: Option<&str>| Op::DeleteOperation {
        framework_id: "fw".into(),
        operation_id: "op-1".into(),
        if_status: if_status.map(str::to_string),
    };
    store.apply(&[Op::PutOperation(rec("u-2"))]).unwrap();
    store.apply(&[delete(Some("u-1"))]).unwrap();
    assert_eq!(store.operation("fw", "op-1").unwrap(), Some(rec("u-2")));
    store.apply(&[delete(Some("u-2"))]).unwrap();
    assert_eq!(store.operation("fw", "op-1").unwrap(), None);
    // Nothing to delete: no error either way.
    store.apply(&[delete(Some("u-2")), delete(None)]).unwrap();
    store.apply(&[Op::PutOperation(rec("u-3"))]).unwrap();
    store.apply(&[delete(None)]).unwrap();
    assert_eq!(store.operation("fw", "op-1").unwrap(), None);
}
