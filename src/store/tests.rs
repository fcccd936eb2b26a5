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

/// Readers that miss the decoded volume list at the same moment share one decode (one list
/// in memory, not one per reader); a write makes the next reader decode a fresh one.
#[test]
fn concurrent_readers_share_one_decoded_volume_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let vol = |i: usize| Volume {
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
    };
    let ops: Vec<Op> = (0..5000).map(|i| Op::PutVolume(vol(i))).collect();
    store.apply(&ops).unwrap();
    for _ in 0..3 {
        let n = 8;
        let barrier = std::sync::Barrier::new(n);
        let lists: Vec<Arc<Vec<Volume>>> = std::thread::scope(|s| {
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
        assert_eq!(lists[0].len(), 5000);
        assert_eq!(lists[0].capacity(), 5000, "kept without spare room");
        for l in &lists[1..] {
            assert!(Arc::ptr_eq(&lists[0], l), "a second decoded copy");
        }
        // A write: the next readers must see it, in a list of their own.
        store.apply(&[Op::PutVolume(vol(9999))]).unwrap();
        let after = store.volumes_shared().unwrap();
        assert!(!Arc::ptr_eq(&lists[0], &after));
        assert!(after.iter().any(|v| v.id == "pv-09999"));
        store.apply(&[Op::DeleteVolume("pv-09999".into())]).unwrap();
    }
}
