//! One conformance suite for every driver: the behaviours csi-sanity checks (idempotency,
//! not-found and conflict outcomes, access modes, snapshots, capacity), run against `vfs`,
//! `fault(vfs)`, `loop` (real loop devices and ext4: needs root, skipped with a message
//! otherwise) and `rbd` (a real Ceph cluster; see `rbd_cluster`), each test in its own
//! temporary root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use polly::driver::fault::{FaultConfig, FaultDriver};
use polly::driver::r#loop::{LoopConfig, LoopDriver};
use polly::driver::rbd::{RbdConfig, RbdDriver};
use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::driver::{AccessMode, AttachOptions, CreateRequest, DriverVolume, DynDriver, Error};

/// One back-end under test: how to build it and how to reach a volume's data from outside
/// the driver.
#[derive(Clone, Copy)]
struct Backend {
    kind: &'static str,
    /// The pool a driver built by `make` serves.
    pool: &'static str,
    /// Builds a driver over `root`, with an optional quota. Called again with the same root
    /// to model a restart.
    make: fn(&Path, Option<u64>) -> DynDriver,
    /// `Some(reason)` when this host cannot run the back-end.
    skip: fn() -> Option<String>,
    /// Writes `data` to file `rel` inside the volume.
    write: fn(&DriverVolume, &str, &[u8]),
    /// Reads file `rel` inside the volume.
    read: fn(&DriverVolume, &str) -> Vec<u8>,
    /// Whether attach reports the caller's device hint as the device.
    device_is_hint: bool,
    /// Ids of the driver's own shape that name nothing.
    unknown_volume: &'static str,
    unknown_snapshot: &'static str,
}

impl Backend {
    /// The driver, or `None` (after saying why) when this host cannot run the back-end.
    fn start(&self, root: &Path, quota: Option<u64>) -> Option<DynDriver> {
        if let Some(why) = (self.skip)() {
            eprintln!("skipped: {why}");
            return None;
        }
        Some((self.make)(root, quota))
    }
}

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

fn never_skip() -> Option<String> {
    None
}

fn dir_write(vol: &DriverVolume, rel: &str, data: &[u8]) {
    let path = data_path(vol).join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn dir_read(vol: &DriverVolume, rel: &str) -> Vec<u8> {
    std::fs::read(data_path(vol).join(rel)).unwrap()
}

const VFS: Backend = Backend {
    kind: "vfs",
    pool: "default",
    make: make_vfs,
    skip: never_skip,
    write: dir_write,
    read: dir_read,
    device_is_hint: true,
    unknown_volume: "vfs-999999",
    unknown_snapshot: "snap-999999",
};

const FAULT_VFS: Backend = Backend {
    make: make_fault_vfs,
    ..VFS
};

fn make_loop(root: &Path, quota: Option<u64>) -> DynDriver {
    let mut cfg = LoopConfig::new(root);
    cfg.quota_bytes = quota;
    Arc::new(LoopDriver::open(cfg).unwrap())
}

fn loop_skip() -> Option<String> {
    polly::driver::r#loop::host_supports_loop()
        .err()
        .map(|why| format!("needs root and loop devices ({why})"))
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mounts a loop volume's image on a temporary directory for the length of `f`.
fn with_mounted<T>(vol: &DriverVolume, f: impl FnOnce(&Path) -> T) -> T {
    let mnt = tempfile::tempdir().unwrap();
    let mnt_path = mnt.path().to_str().unwrap();
    sh(
        "mount",
        &["-o", "loop", &data_path(vol).to_string_lossy(), mnt_path],
    );
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt.path())));
    sh("umount", &[mnt_path]);
    out.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn image_write(vol: &DriverVolume, rel: &str, data: &[u8]) {
    with_mounted(vol, |mnt| {
        let path = mnt.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    })
}

fn image_read(vol: &DriverVolume, rel: &str) -> Vec<u8> {
    with_mounted(vol, |mnt| std::fs::read(mnt.join(rel)).unwrap())
}

const LOOP: Backend = Backend {
    kind: "loop",
    pool: "default",
    make: make_loop,
    skip: loop_skip,
    write: image_write,
    read: image_read,
    device_is_hint: false,
    unknown_volume: "loop-999999",
    unknown_snapshot: "snap-999999",
};

/// The Ceph cluster the rbd tests use: `POLLY_TEST_CEPH_CONF` if set, else one this test
/// process starts with `scripts/ceph-test-cluster.sh` (which stops it when the process
/// exits), else `None` when the Ceph binaries are not installed.
fn ceph_conf() -> Option<String> {
    static CONF: OnceLock<Option<String>> = OnceLock::new();
    CONF.get_or_init(|| {
        if let Ok(conf) = std::env::var("POLLY_TEST_CEPH_CONF") {
            return Some(conf);
        }
        if Command::new("ceph-mon").arg("--version").output().is_err() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ceph-test-cluster.sh");
        let out = Command::new(script)
            .env("POLLY_CEPH_PORT", port.to_string())
            .env("POLLY_CEPH_OWNER_PID", std::process::id().to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "ceph-test-cluster.sh failed");
        Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
    })
    .clone()
}

fn rbd_skip() -> Option<String> {
    ceph_conf()
        .is_none()
        .then(|| "ceph not installed (apt-get install ceph-mon ceph-osd ceph-common)".into())
}

/// Each test root gets its own image-name prefix, so tests share the cluster but not images.
fn rbd_prefix(root: &Path) -> String {
    let tag: String = root
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("polly-t{tag}-")
}

fn make_rbd(root: &Path, quota: Option<u64>) -> DynDriver {
    let mut cfg = RbdConfig::new(ceph_conf().unwrap());
    cfg.prefix = rbd_prefix(root);
    cfg.quota_bytes = quota;
    Arc::new(RbdDriver::new(cfg).unwrap())
}

/// `pool/image` of an rbd volume.
fn rbd_spec(vol: &DriverVolume) -> String {
    let conf = ceph_conf().unwrap();
    let (pool, id) = vol.id.split_once(':').unwrap();
    let info = sh(
        "rbd",
        &[
            "-c",
            &conf,
            "info",
            "--pool",
            pool,
            "--image-id",
            id,
            "--format",
            "json",
        ],
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    format!("{pool}/{}", info["name"].as_str().unwrap())
}

/// An RBD image holds no file system here (`rbd map` is impossible), so the probe keeps a
/// little table of "files" at offset 0: a length, then JSON.
fn rbd_files(vol: &DriverVolume) -> BTreeMap<String, Vec<u8>> {
    let conf = ceph_conf().unwrap();
    let out = Command::new("rbd")
        .args(["-c", &conf, "export", "--no-progress", &rbd_spec(vol), "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = u32::from_le_bytes(out.stdout[..4].try_into().unwrap()) as usize;
    if len == 0 {
        return BTreeMap::new();
    }
    serde_json::from_slice(&out.stdout[4..4 + len]).unwrap()
}

/// Writes through librbd (so snapshots keep their copy): import the new bytes as a scratch
/// image, then apply its diff to the volume.
fn rbd_write(vol: &DriverVolume, rel: &str, data: &[u8]) {
    let conf = ceph_conf().unwrap();
    let mut files = rbd_files(vol);
    files.insert(rel.to_string(), data.to_vec());
    let json = serde_json::to_vec(&files).unwrap();
    let scratch = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = (json.len() as u32).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.resize(vol.size_bytes as usize, 0);
    std::fs::write(scratch.path(), bytes).unwrap();
    let spec = rbd_spec(vol);
    let tmp = format!("{spec}-probe");
    let path = scratch.path().to_str().unwrap();
    sh(
        "rbd",
        &[
            "-c",
            &conf,
            "import",
            "--no-progress",
            "--image-feature",
            "layering",
            path,
            &tmp,
        ],
    );
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "rbd -c {conf} export-diff --no-progress {tmp} - | rbd -c {conf} import-diff --no-progress - {spec}"
            ),
        ],
    );
    sh("rbd", &["-c", &conf, "rm", "--no-progress", &tmp]);
}

fn rbd_read(vol: &DriverVolume, rel: &str) -> Vec<u8> {
    rbd_files(vol).remove(rel).unwrap()
}

const RBD: Backend = Backend {
    kind: "rbd",
    pool: "rbd",
    make: make_rbd,
    skip: rbd_skip,
    write: rbd_write,
    read: rbd_read,
    device_is_hint: false,
    unknown_volume: "rbd:ffffffffffff",
    unknown_snapshot: "rbd:ffffffffffff@9",
};

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

async fn round_trip(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    assert!(d.list().await.unwrap().is_empty());

    let mut r = req("alpha", 8 * MIB);
    r.fields.insert("type".into(), "fast".into());
    let v = d.create(&r).await.unwrap();
    assert_eq!(v.name, "alpha");
    assert_eq!(v.size_bytes, 8 * MIB);
    assert_eq!(v.pool, b.pool);
    assert_eq!(v.fields.get("type").map(String::as_str), Some("fast"));
    assert!(v.attachments.is_empty());
    if let Some(path) = &v.path {
        assert!(Path::new(path).exists(), "{path}");
    }

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
    if let Some(path) = &v.path {
        assert!(!Path::new(path).exists(), "{path} outlived its volume");
    }
    assert_eq!(d.list().await.unwrap(), vec![w]);
}

async fn idempotent_create_attach_detach_remove(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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
    if b.device_is_hint {
        assert_eq!(att.device, "/dev/xvdf");
    } else {
        assert!(!att.device.is_empty());
    }
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

async fn same_name_different_size_conflicts(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    let v = d.create(&req("conflict", MIB)).await.unwrap();
    let err = d.create(&req("conflict", 2 * MIB)).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { name, .. } if name == "conflict"),
        "{err:?}"
    );
    assert_eq!(d.list().await.unwrap(), vec![v]);
}

async fn unknown_ids(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    d.remove(b.unknown_volume).await.unwrap();
    d.remove("no-such-volume").await.unwrap();
    assert!(matches!(
        d.inspect(b.unknown_volume).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.attach(b.unknown_volume, "host-1", &no_opts()).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.grow(b.unknown_volume, MIB).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.snapshot_create(b.unknown_volume, "s").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.copy(b.unknown_volume, &req("c", MIB)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.create_from_snapshot(b.unknown_snapshot, &req("c", MIB))
            .await,
        Err(Error::NotFound { .. })
    ));
    d.snapshot_remove(b.unknown_snapshot).await.unwrap();
    d.detach(b.unknown_volume, "host-1").await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
}

async fn zero_size_and_unknown_pool_are_rejected(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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

async fn single_writer_and_multi_writer(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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
    // Real devices (loop) outlive the test's directory unless released.
    for v in [&single, &shared] {
        d.force_detach(&v.id).await.unwrap();
    }
}

async fn remove_while_attached_then_force_detach(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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

async fn snapshots_round_trip_and_restore(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    let v = d.create(&req("source", 4 * MIB)).await.unwrap();
    let other = d.create(&req("other", MIB)).await.unwrap();
    (b.write)(&v, "sub/hello.txt", b"before");

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
    (b.write)(&v, "sub/hello.txt", b"after");

    let restored = d
        .create_from_snapshot(&s.id, &req("restored", 4 * MIB))
        .await
        .unwrap();
    assert_ne!(restored.id, v.id);
    assert_eq!((b.read)(&restored, "sub/hello.txt"), b"before");
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

    // A copy of the snapshot holds the snapshot-time data, idempotent by name; a driver
    // that cannot copy snapshots says so, and says so clearly.
    if d.can_copy_snapshots() {
        let c = d.snapshot_copy(&s.id, "s1-copy").await.unwrap();
        assert_ne!(c.id, s.id);
        assert_eq!(c.volume_id, v.id);
        assert_eq!(c.size_bytes, s.size_bytes);
        assert_eq!(d.snapshot_copy(&s.id, "s1-copy").await.unwrap(), c);
        let from_copy = d
            .create_from_snapshot(&c.id, &req("from-copy", 4 * MIB))
            .await
            .unwrap();
        assert_eq!((b.read)(&from_copy, "sub/hello.txt"), b"before");
        assert!(matches!(
            d.snapshot_copy("snap-999999", "x").await,
            Err(Error::NotFound { .. })
        ));
        d.snapshot_remove(&c.id).await.unwrap();
    } else {
        match d.snapshot_copy(&s.id, "s1-copy").await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("cannot copy snapshots"), "{m}"),
            other => panic!("expected a clear refusal, got {other:?}"),
        }
    }

    d.snapshot_remove(&s.id).await.unwrap();
    d.snapshot_remove(&s.id).await.unwrap();
    assert!(d.snapshot_list(Some(&v.id)).await.unwrap().is_empty());
    assert_eq!(d.snapshot_list(None).await.unwrap(), vec![s_other]);
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("late", 4 * MIB)).await,
        Err(Error::NotFound { .. })
    ));
    // The restored volume owns its data; removing the snapshot left it intact.
    assert_eq!((b.read)(&restored, "sub/hello.txt"), b"before");
}

async fn copy_carries_data(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    let v = d.create(&req("orig", 2 * MIB)).await.unwrap();
    (b.write)(&v, "a.bin", &[1u8, 2, 3]);
    let c = d.copy(&v.id, &req("dup", 2 * MIB)).await.unwrap();
    assert_ne!(c.id, v.id);
    assert_eq!(c.name, "dup");
    assert_eq!((b.read)(&c, "a.bin"), [1, 2, 3]);
    assert_eq!(d.copy(&v.id, &req("dup", 2 * MIB)).await.unwrap().id, c.id);
    // The copy is independent of its source.
    (b.write)(&c, "a.bin", &[9u8]);
    assert_eq!((b.read)(&v, "a.bin"), [1, 2, 3]);
    assert_eq!(d.list().await.unwrap().len(), 2);
}

async fn grow(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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

async fn capacity_and_quota(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    let caps = d.capacity().await.unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0].pool, b.pool);
    assert!(caps[0].total_bytes > 0);
    assert!(caps[0].total_bytes >= caps[0].free_bytes);
    drop(d);

    let quota_dir = tempfile::tempdir().unwrap();
    let Some(q) = b.start(quota_dir.path(), Some(4 * MIB)) else {
        return;
    };
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
            pool: b.pool.into(),
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

async fn concurrent_creates_make_one_volume(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
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

async fn ids_never_reused_after_remove_and_reopen(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = backend.start(dir.path(), None) else {
        return;
    };
    let a = d.create(&req("a", MIB)).await.unwrap();
    let b = d.create(&req("b", MIB)).await.unwrap();
    let s = d.snapshot_create(&b.id, "s").await.unwrap();
    // Snapshot first: rbd keeps snapshots inside their image and refuses to remove an image
    // that still has some.
    d.snapshot_remove(&s.id).await.unwrap();
    d.remove(&b.id).await.unwrap();
    drop(d);

    let Some(d) = backend.start(dir.path(), None) else {
        return;
    };
    assert_eq!(d.list().await.unwrap(), vec![a.clone()]);
    let c = d.create(&req("b", MIB)).await.unwrap();
    let s2 = d.snapshot_create(&c.id, "s").await.unwrap();
    assert!(c.id != b.id && c.id != a.id, "{} reuses an old id", c.id);
    assert_ne!(s2.id, s.id, "{} reuses {}", s2.id, s.id);
    if let (Some(old), Some(new)) = (numeric(&b.id), numeric(&c.id)) {
        assert!(new > old, "{} comes before {}", c.id, b.id);
    }
    // The surviving volume was not overwritten by the new one.
    assert_eq!(d.inspect(&a.id).await.unwrap(), a);
}

/// The number in a `<prefix>-<digits>` id, for drivers that count their ids.
fn numeric(id: &str) -> Option<u64> {
    id.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

async fn kind_matches(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None) else {
        return;
    };
    assert_eq!(d.kind(), b.kind);
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
            async fn kind_matches() {
                super::kind_matches($make).await
            }
        }
    };
}

conformance!(vfs, VFS);
conformance!(fault_vfs, FAULT_VFS);
conformance!(loop_devices, LOOP);
conformance!(rbd, RBD);

/// Total bytes of the file system mounted at `path`.
fn fs_size(path: &Path) -> u64 {
    let out = sh("df", &["--output=size", "-B1", &path.to_string_lossy()]);
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The loop driver end to end on the host: the attached device holds a real ext4 that mounts,
/// keeps what was written, and is found bigger after an online grow and a remount.
#[tokio::test]
async fn loop_filesystem_mounts_grows_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = LOOP.start(dir.path(), None) else {
        return;
    };
    let v = d.create(&req("disk", 64 * MIB)).await.unwrap();
    let att = d.attach(&v.id, "host-1", &no_opts()).await.unwrap();
    assert!(att.device.starts_with("/dev/loop"), "{}", att.device);
    assert!(Path::new(&att.device).exists());

    let mnt = tempfile::tempdir().unwrap();
    let mnt_path = mnt.path().to_str().unwrap();
    sh("mount", &[&att.device, mnt_path]);
    std::fs::write(mnt.path().join("kept.txt"), b"still here").unwrap();
    let small = fs_size(mnt.path());
    sh("umount", &[mnt_path]);

    // Offline grow of the attached device: file, loop device, then resize2fs.
    let grown = d.grow(&v.id, 128 * MIB).await.unwrap();
    assert_eq!(grown.size_bytes, 128 * MIB);
    sh("mount", &[&att.device, mnt_path]);
    let big = fs_size(mnt.path());
    assert!(big > small + 48 * MIB, "{small} -> {big}");
    assert_eq!(
        std::fs::read(mnt.path().join("kept.txt")).unwrap(),
        b"still here"
    );

    // Online grow while mounted needs CAP_SYS_RESOURCE, which some hosts (containers,
    // sandboxes) withhold: then grow fails, names the cause, records nothing, and succeeds
    // once the file system is unmounted.
    let bigger = match d.grow(&v.id, 192 * MIB).await {
        Ok(_) => fs_size(mnt.path()),
        Err(e) => {
            assert!(e.to_string().contains("resize2fs"), "{e}");
            assert_eq!(d.inspect(&v.id).await.unwrap().size_bytes, 128 * MIB);
            sh("umount", &[mnt_path]);
            d.grow(&v.id, 192 * MIB).await.unwrap();
            sh("mount", &[&att.device, mnt_path]);
            fs_size(mnt.path())
        }
    };
    assert!(bigger > big + 48 * MIB, "{big} -> {bigger}");
    sh("umount", &[mnt_path]);

    // Removing an attached volume is refused; after detach the device is gone.
    assert!(matches!(d.remove(&v.id).await, Err(Error::InUse { .. })));
    d.detach(&v.id, "host-1").await.unwrap();
    let still = sh("losetup", &["-a"]);
    assert!(!still.contains(&*v.path.clone().unwrap()), "{still}");

    // Grow while detached works on the image file.
    d.grow(&v.id, 256 * MIB).await.unwrap();
    let mounted_size = with_mounted(&d.inspect(&v.id).await.unwrap(), |m| {
        assert_eq!(std::fs::read(m.join("kept.txt")).unwrap(), b"still here");
        fs_size(m)
    });
    assert!(
        mounted_size > bigger + 48 * MIB,
        "{bigger} -> {mounted_size}"
    );
    d.remove(&v.id).await.unwrap();
}
