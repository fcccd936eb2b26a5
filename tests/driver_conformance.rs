//! One conformance suite for every driver: the behaviours csi-sanity checks (idempotency,
//! not-found and conflict outcomes, access modes, snapshots, capacity), run against `vfs` and
//! `fault(vfs)`, each test in its own temporary root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use polly::driver::fault::{FaultConfig, FaultDriver};
use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::driver::{AccessMode, AttachOptions, CreateRequest, DriverVolume, DynDriver, Error};

/// Builds a driver over `root`, with an optional quota. Called again with the same root to
/// model a restart.
type Factory = fn(&Path, Option<u64>) -> DynDriver;

fn vfs_config(root: &Path, quota: Option<u64>) -> VfsConfig {
    VfsConfig {
        root: root.to_path_buf(),
        quota_bytes: quota,
        pool: "default".to_string(),
        zone: None,
    }
}

fn make_vfs(root: &Path, quota: Option<u64>) -> DynDriver {
    Arc::new(VfsDriver::open(vfs_config(root, quota)).unwrap())
}

fn make_fault_vfs(root: &Path, quota: Option<u64>) -> DynDriver {
    let cfg = FaultConfig {
        latency_ms: 1,
        error_rate: 0.0,
        ..Default::default()
    };
    cfg.validate().unwrap();
    Arc::new(FaultDriver::new(make_vfs(root, quota), cfg))
}

const MIB: u64 = 1 << 20;

fn req(name: &str, size: u64) -> CreateRequest {
    CreateRequest {
        name: name.to_string(),
        size_bytes: size,
        pool: None,
        zone: None,
        access_mode: AccessMode::SingleWriter,
        fields: BTreeMap::new(),
    }
}

fn data_path(vol: &DriverVolume) -> PathBuf {
    PathBuf::from(vol.path.as_deref().expect("volume exposes a data path"))
}

fn no_opts() -> AttachOptions {
    AttachOptions::default()
}

async fn round_trip(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    assert!(d.list().await.unwrap().is_empty());

    let mut r = req("alpha", 8 * MIB);
    r.fields.insert("type".into(), "fast".into());
    let v = d.create(&r).await.unwrap();
    assert_eq!(v.name, "alpha");
    assert_eq!(v.size_bytes, 8 * MIB);
    assert_eq!(v.pool, "default");
    assert_eq!(v.fields.get("type").map(String::as_str), Some("fast"));
    assert!(v.attachments.is_empty());
    assert!(data_path(&v).is_dir());

    assert_eq!(d.inspect(&v.id).await.unwrap(), v);
    let w = d.create(&req("beta", MIB)).await.unwrap();
    assert_ne!(v.id, w.id);
    let listed = d.list().await.unwrap();
    assert_eq!(listed, vec![v.clone(), w.clone()], "list is sorted by id");

    d.remove(&v.id).await.unwrap();
    assert!(matches!(
        d.inspect(&v.id).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(!data_path(&v).exists());
    assert_eq!(d.list().await.unwrap(), vec![w]);
}

async fn idempotent_create_attach_detach_remove(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let first = d.create(&req("idem", MIB)).await.unwrap();
    for _ in 0..10 {
        assert_eq!(d.create(&req("idem", MIB)).await.unwrap().id, first.id);
    }
    assert_eq!(d.list().await.unwrap().len(), 1);

    let opts = AttachOptions {
        device_hint: Some("/dev/xvdf".into()),
    };
    let att = d.attach(&first.id, "host-1", &opts).await.unwrap();
    assert_eq!(att.instance_id, "host-1");
    assert_eq!(att.device, "/dev/xvdf");
    for _ in 0..10 {
        assert_eq!(
            d.attach(&first.id, "host-1", &no_opts()).await.unwrap(),
            att
        );
    }
    assert_eq!(d.inspect(&first.id).await.unwrap().attachments, vec![att]);

    for _ in 0..10 {
        d.detach(&first.id, "host-1").await.unwrap();
    }
    assert!(d.inspect(&first.id).await.unwrap().attachments.is_empty());

    for _ in 0..10 {
        d.remove(&first.id).await.unwrap();
    }
    assert!(d.list().await.unwrap().is_empty());
}

async fn same_name_different_size_conflicts(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let v = d.create(&req("conflict", MIB)).await.unwrap();
    let err = d.create(&req("conflict", 2 * MIB)).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { name, .. } if name == "conflict"),
        "{err:?}"
    );
    assert_eq!(d.list().await.unwrap(), vec![v]);
}

async fn unknown_ids(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    d.remove("vfs-999999").await.unwrap();
    d.remove("no-such-volume").await.unwrap();
    assert!(matches!(
        d.inspect("vfs-999999").await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.attach("vfs-999999", "host-1", &no_opts()).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.grow("vfs-999999", MIB).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.snapshot_create("vfs-999999", "s").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.copy("vfs-999999", &req("c", MIB)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.create_from_snapshot("snap-999999", &req("c", MIB)).await,
        Err(Error::NotFound { .. })
    ));
    d.snapshot_remove("snap-999999").await.unwrap();
    d.detach("vfs-999999", "host-1").await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
}

async fn zero_size_and_unknown_pool_are_rejected(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    assert!(matches!(
        d.create(&req("zero", 0)).await,
        Err(Error::InvalidArgument(_))
    ));
    let mut r = req("pooled", MIB);
    r.pool = Some("nope".into());
    assert!(matches!(
        d.create(&r).await,
        Err(Error::NotFound { kind: "pool", .. })
    ));
    assert!(d.list().await.unwrap().is_empty());
}

async fn single_writer_and_multi_writer(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let single = d.create(&req("single", MIB)).await.unwrap();
    d.attach(&single.id, "host-1", &no_opts()).await.unwrap();
    let err = d
        .attach(&single.id, "host-2", &no_opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AttachedElsewhere { holders, .. } if holders == &["host-1"]),
        "{err:?}"
    );
    // After the holder detaches, another instance may take it.
    d.detach(&single.id, "host-1").await.unwrap();
    d.attach(&single.id, "host-2", &no_opts()).await.unwrap();

    let mut r = req("shared", MIB);
    r.access_mode = AccessMode::MultiWriter;
    let shared = d.create(&r).await.unwrap();
    d.attach(&shared.id, "host-1", &no_opts()).await.unwrap();
    d.attach(&shared.id, "host-2", &no_opts()).await.unwrap();
    let mut holders: Vec<_> = d
        .inspect(&shared.id)
        .await
        .unwrap()
        .attachments
        .into_iter()
        .map(|a| a.instance_id)
        .collect();
    holders.sort();
    assert_eq!(holders, ["host-1", "host-2"]);
    // Detaching one instance leaves the other's attachment alone.
    d.detach(&shared.id, "host-1").await.unwrap();
    let left = d.inspect(&shared.id).await.unwrap().attachments;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance_id, "host-2");
}

async fn remove_while_attached_then_force_detach(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let mut r = req("busy", MIB);
    r.access_mode = AccessMode::MultiReader;
    let v = d.create(&r).await.unwrap();
    d.attach(&v.id, "host-1", &no_opts()).await.unwrap();
    d.attach(&v.id, "host-2", &no_opts()).await.unwrap();
    let err = d.remove(&v.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::InUse { volume, .. } if volume == &v.id),
        "{err:?}"
    );
    assert!(d.inspect(&v.id).await.is_ok(), "a refused remove keeps it");

    d.force_detach(&v.id).await.unwrap();
    assert!(d.inspect(&v.id).await.unwrap().attachments.is_empty());
    d.force_detach(&v.id).await.unwrap();
    d.remove(&v.id).await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
}

async fn snapshots_round_trip_and_restore(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let v = d.create(&req("source", 4 * MIB)).await.unwrap();
    let other = d.create(&req("other", MIB)).await.unwrap();
    std::fs::create_dir(data_path(&v).join("sub")).unwrap();
    std::fs::write(data_path(&v).join("sub/hello.txt"), b"before").unwrap();

    let s = d.snapshot_create(&v.id, "s1").await.unwrap();
    assert_eq!(s.volume_id, v.id);
    assert_eq!(s.name, "s1");
    assert_eq!(s.size_bytes, v.size_bytes);
    for _ in 0..3 {
        assert_eq!(d.snapshot_create(&v.id, "s1").await.unwrap(), s);
    }
    let s_other = d.snapshot_create(&other.id, "s1").await.unwrap();
    assert_ne!(s_other.id, s.id);

    assert_eq!(d.snapshot_list(Some(&v.id)).await.unwrap(), vec![s.clone()]);
    assert_eq!(
        d.snapshot_list(None).await.unwrap(),
        vec![s.clone(), s_other.clone()]
    );

    // Later writes to the volume do not reach the snapshot.
    std::fs::write(data_path(&v).join("sub/hello.txt"), b"after").unwrap();

    let restored = d
        .create_from_snapshot(&s.id, &req("restored", 4 * MIB))
        .await
        .unwrap();
    assert_ne!(restored.id, v.id);
    assert_eq!(
        std::fs::read(data_path(&restored).join("sub/hello.txt")).unwrap(),
        b"before"
    );
    // Idempotent by name, like create.
    let again = d
        .create_from_snapshot(&s.id, &req("restored", 4 * MIB))
        .await
        .unwrap();
    assert_eq!(again.id, restored.id);
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("restored", 8 * MIB))
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    // A volume smaller than its snapshot could not hold it.
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("tiny", MIB)).await,
        Err(Error::InvalidArgument(_))
    ));

    // A copy of the snapshot holds the snapshot-time data, idempotent by name.
    let c = d.snapshot_copy(&s.id, "s1-copy").await.unwrap();
    assert_ne!(c.id, s.id);
    assert_eq!(c.volume_id, v.id);
    assert_eq!(c.size_bytes, s.size_bytes);
    assert_eq!(d.snapshot_copy(&s.id, "s1-copy").await.unwrap(), c);
    let from_copy = d
        .create_from_snapshot(&c.id, &req("from-copy", 4 * MIB))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(data_path(&from_copy).join("sub/hello.txt")).unwrap(),
        b"before"
    );
    assert!(matches!(
        d.snapshot_copy("snap-999999", "x").await,
        Err(Error::NotFound { .. })
    ));
    d.snapshot_remove(&c.id).await.unwrap();

    d.snapshot_remove(&s.id).await.unwrap();
    d.snapshot_remove(&s.id).await.unwrap();
    assert!(d.snapshot_list(Some(&v.id)).await.unwrap().is_empty());
    assert_eq!(d.snapshot_list(None).await.unwrap(), vec![s_other]);
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("late", 4 * MIB)).await,
        Err(Error::NotFound { .. })
    ));
    // The restored volume owns its data; removing the snapshot left it intact.
    assert_eq!(
        std::fs::read(data_path(&restored).join("sub/hello.txt")).unwrap(),
        b"before"
    );
}

async fn copy_carries_data(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let v = d.create(&req("orig", 2 * MIB)).await.unwrap();
    std::fs::write(data_path(&v).join("a.bin"), [1u8, 2, 3]).unwrap();
    let c = d.copy(&v.id, &req("dup", 2 * MIB)).await.unwrap();
    assert_ne!(c.id, v.id);
    assert_eq!(c.name, "dup");
    assert_eq!(
        std::fs::read(data_path(&c).join("a.bin")).unwrap(),
        [1, 2, 3]
    );
    assert_eq!(d.copy(&v.id, &req("dup", 2 * MIB)).await.unwrap().id, c.id);
    // The copy is independent of its source.
    std::fs::write(data_path(&c).join("a.bin"), [9u8]).unwrap();
    assert_eq!(
        std::fs::read(data_path(&v).join("a.bin")).unwrap(),
        [1, 2, 3]
    );
    assert_eq!(d.list().await.unwrap().len(), 2);
}

async fn grow(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let v = d.create(&req("growing", 2 * MIB)).await.unwrap();
    let g = d.grow(&v.id, 4 * MIB).await.unwrap();
    assert_eq!(g.size_bytes, 4 * MIB);
    assert_eq!(d.inspect(&v.id).await.unwrap().size_bytes, 4 * MIB);
    assert_eq!(d.grow(&v.id, 4 * MIB).await.unwrap(), g);
    assert!(matches!(
        d.grow(&v.id, MIB).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(d.inspect(&v.id).await.unwrap().size_bytes, 4 * MIB);
}

async fn capacity_and_quota(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let caps = d.capacity().await.unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0].pool, "default");
    assert!(caps[0].total_bytes > 0);
    assert!(caps[0].total_bytes >= caps[0].free_bytes);
    drop(d);

    let quota_dir = tempfile::tempdir().unwrap();
    let q = make(quota_dir.path(), Some(4 * MIB));
    let before = q.capacity().await.unwrap()[0].clone();
    assert_eq!(before.total_bytes, 4 * MIB);
    assert_eq!(before.free_bytes, 4 * MIB);
    let v = q.create(&req("q1", 3 * MIB)).await.unwrap();
    let after = q.capacity().await.unwrap()[0].clone();
    assert_eq!(after.total_bytes, 4 * MIB);
    assert_eq!(after.free_bytes, MIB);

    let err = q.create(&req("q2", 2 * MIB)).await.unwrap_err();
    assert_eq!(
        err,
        Error::InsufficientCapacity {
            pool: "default".into(),
            free_bytes: MIB,
            wanted_bytes: 2 * MIB,
        }
    );
    assert!(matches!(
        q.grow(&v.id, 5 * MIB).await,
        Err(Error::InsufficientCapacity { .. })
    ));
    q.grow(&v.id, 4 * MIB).await.unwrap();
    assert_eq!(q.capacity().await.unwrap()[0].free_bytes, 0);
    // Removing a volume gives its bytes back.
    q.remove(&v.id).await.unwrap();
    assert_eq!(q.capacity().await.unwrap()[0].free_bytes, 4 * MIB);
}

async fn concurrent_creates_make_one_volume(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.create(&req("racy", MIB)).await })
        })
        .collect();
    let ids: Vec<String> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().id)
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let listed = d.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ids[0]);
}

async fn ids_never_reused_after_remove_and_reopen(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    let d = make(dir.path(), None);
    let a = d.create(&req("a", MIB)).await.unwrap();
    let b = d.create(&req("b", MIB)).await.unwrap();
    let s = d.snapshot_create(&b.id, "s").await.unwrap();
    d.remove(&b.id).await.unwrap();
    d.snapshot_remove(&s.id).await.unwrap();
    drop(d);

    let d = make(dir.path(), None);
    assert_eq!(d.list().await.unwrap(), vec![a.clone()]);
    let c = d.create(&req("b", MIB)).await.unwrap();
    let s2 = d.snapshot_create(&c.id, "s").await.unwrap();
    assert!(numeric(&c.id) > numeric(&b.id), "{} reuses {}", c.id, b.id);
    assert!(
        numeric(&s2.id) > numeric(&s.id),
        "{} reuses {}",
        s2.id,
        s.id
    );
    // The surviving volume was not overwritten by the new one.
    assert_eq!(d.inspect(&a.id).await.unwrap(), a);
}

/// The number in a `<prefix>-<digits>` id.
fn numeric(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

async fn kind_is_vfs(make: Factory) {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(make(dir.path(), None).kind(), "vfs");
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn round_trip() {
                super::round_trip($make).await
            }
            #[tokio::test]
            async fn idempotent_create_attach_detach_remove() {
                super::idempotent_create_attach_detach_remove($make).await
            }
            #[tokio::test]
            async fn same_name_different_size_conflicts() {
                super::same_name_different_size_conflicts($make).await
            }
            #[tokio::test]
            async fn unknown_ids() {
                super::unknown_ids($make).await
            }
            #[tokio::test]
            async fn zero_size_and_unknown_pool_are_rejected() {
                super::zero_size_and_unknown_pool_are_rejected($make).await
            }
            #[tokio::test]
            async fn single_writer_and_multi_writer() {
                super::single_writer_and_multi_writer($make).await
            }
            #[tokio::test]
            async fn remove_while_attached_then_force_detach() {
                super::remove_while_attached_then_force_detach($make).await
            }
            #[tokio::test]
            async fn snapshots_round_trip_and_restore() {
                super::snapshots_round_trip_and_restore($make).await
            }
            #[tokio::test]
            async fn copy_carries_data() {
                super::copy_carries_data($make).await
            }
            #[tokio::test]
            async fn grow() {
                super::grow($make).await
            }
            #[tokio::test]
            async fn capacity_and_quota() {
                super::capacity_and_quota($make).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_creates_make_one_volume() {
                super::concurrent_creates_make_one_volume($make).await
            }
            #[tokio::test]
            async fn ids_never_reused_after_remove_and_reopen() {
                super::ids_never_reused_after_remove_and_reopen($make).await
            }
            #[tokio::test]
            async fn kind_is_vfs() {
                super::kind_is_vfs($make).await
            }
        }
    };
}

conformance!(vfs, make_vfs);
conformance!(fault_vfs, make_fault_vfs);
