//! One conformance suite for every driver: the behaviours csi-sanity checks (idempotency,
//! not-found and conflict outcomes, access modes, snapshots, capacity), run against `vfs`,
//! `fault(vfs)`, `loop` (real loop devices and ext4: needs root, skipped with a message
//! otherwise), `rbd` (a real Ceph cluster; see `rbd_cluster`), `ebs` on the in-process fake
//! cloud, and, with the `ebs` feature, `ebs` through the AWS SDK against moto (see `moto`),
//! each test in its own temporary root.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use polly::driver::ebs::fake::{FakeCloud, FakeCloudConfig, FakeInstanceConfig};
use polly::driver::ebs::{EbsConfig, EbsDriver, EbsQuota};
use polly::driver::fault::{FaultConfig, FaultDriver};
use polly::driver::r#loop::{LoopConfig, LoopDriver};
use polly::driver::rbd::{RbdConfig, RbdDriver};
use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::driver::{
    AccessMode, AttachOptions, CreateRequest, DriverVolume, DynDriver, Error, Listed,
};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One back-end under test: how to build it and how to reach a volume's data from outside
/// the driver.
#[derive(Clone, Copy)]
struct Backend {
    kind: &'static str,
    /// The pool a driver built by `make` serves.
    pool: &'static str,
    /// Builds a driver over `root`, with an optional quota. Called again with the same root
    /// to model a restart.
    make: fn(PathBuf, Option<u64>) -> BoxFuture<'static, DynDriver>,
    /// `Some(reason)` when this host cannot run the back-end.
    skip: fn() -> Option<String>,
    /// Writes `data` to file `rel` inside the volume.
    write: fn(&DriverVolume, &str, &[u8]),
    /// Reads file `rel` inside the volume.
    read: fn(&DriverVolume, &str) -> Vec<u8>,
    /// Whether attach reports the caller's device hint as the device.
    device_is_hint: bool,
    /// The size unit the tests count in (EBS sizes are whole GiB).
    unit: u64,
    /// The two instance ids attach tests use, for a driver built over `root`.
    hosts: fn(&Path) -> [String; 2],
    /// Turns a request into one the back-end can attach to several instances.
    shared: fn(&mut CreateRequest),
    /// Whether `write`/`read` reach real data (moto keeps none).
    has_data: bool,
    /// Whether a volume can be attached to two instances at once (moto keeps one attachment
    /// per volume, so EBS Multi-Attach cannot be checked there).
    shares: bool,
    /// Ids of the driver's own shape that name nothing.
    unknown_volume: &'static str,
    unknown_snapshot: &'static str,
}

impl Backend {
    /// The driver, or `None` (after saying why) when this host cannot run the back-end.
    async fn start(&self, root: &Path, quota: Option<u64>) -> Option<DynDriver> {
        if let Some(why) = (self.skip)() {
            eprintln!("skipped: {why}");
            return None;
        }
        Some((self.make)(root.to_path_buf(), quota).await)
    }

    /// Writes into the volume, on back-ends that hold data.
    fn put(&self, vol: &DriverVolume, rel: &str, data: &[u8]) {
        if self.has_data {
            (self.write)(vol, rel, data);
        }
    }

    /// Checks what the volume holds, on back-ends that hold data.
    fn expect(&self, vol: &DriverVolume, rel: &str, want: &[u8]) {
        if self.has_data {
            assert_eq!((self.read)(vol, rel), want, "{rel} in {}", vol.id);
        }
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

fn vfs_driver(root: &Path, quota: Option<u64>) -> DynDriver {
    Arc::new(VfsDriver::open(vfs_config(root, quota)).unwrap())
}

fn make_vfs(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
    Box::pin(async move { vfs_driver(&root, quota) })
}

fn make_fault_vfs(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
    Box::pin(async move { fault_vfs(&root, quota) })
}

fn fault_vfs(root: &Path, quota: Option<u64>) -> DynDriver {
    let cfg = FaultConfig {
        latency_ms: 1,
        error_rate: 0.0,
        ..Default::default()
    };
    cfg.validate().unwrap();
    Arc::new(FaultDriver::new(vfs_driver(root, quota), cfg))
}

fn never_skip() -> Option<String> {
    None
}

fn named_hosts(_: &Path) -> [String; 2] {
    ["host-1".into(), "host-2".into()]
}

fn as_is(_: &mut CreateRequest) {}

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
    unit: MIB,
    hosts: named_hosts,
    shared: as_is,
    has_data: true,
    shares: true,
    unknown_volume: "vfs-999999",
    unknown_snapshot: "snap-999999",
};

const FAULT_VFS: Backend = Backend {
    make: make_fault_vfs,
    ..VFS
};

fn make_loop(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
    Box::pin(async move {
        let mut cfg = LoopConfig::new(root);
        cfg.quota_bytes = quota;
        Arc::new(LoopDriver::open(cfg).unwrap()) as DynDriver
    })
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
    unit: MIB,
    hosts: named_hosts,
    shared: as_is,
    has_data: true,
    shares: true,
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

fn make_rbd(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
    Box::pin(async move {
        let mut cfg = RbdConfig::new(ceph_conf().unwrap());
        cfg.prefix = rbd_prefix(&root);
        cfg.quota_bytes = quota;
        Arc::new(RbdDriver::new(cfg).unwrap()) as DynDriver
    })
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
    unit: MIB,
    hosts: named_hosts,
    shared: as_is,
    has_data: true,
    shares: true,
    unknown_volume: "rbd:ffffffffffff",
    unknown_snapshot: "rbd:ffffffffffff@9",
};

/// The `ebs` driver's zone in these tests.
const EBS_ZONE: &str = "us-east-1a";
const GIB: u64 = 1 << 30;

/// Fake clouds by test root, so a second `make` over one root (a restart) finds the same
/// cloud.
fn fake_clouds() -> &'static Mutex<HashMap<PathBuf, Arc<FakeCloud>>> {
    static CLOUDS: OnceLock<Mutex<HashMap<PathBuf, Arc<FakeCloud>>>> = OnceLock::new();
    CLOUDS.get_or_init(Default::default)
}

/// The fake cloud of a test: two instances in `EBS_ZONE`, and attach, detach and create
/// that take a little while, as EC2's do.
fn fake_cloud(root: &Path) -> Arc<FakeCloud> {
    let mut clouds = fake_clouds().lock().unwrap();
    clouds
        .entry(root.to_path_buf())
        .or_insert_with(|| {
            let instance = FakeInstanceConfig {
                zone: EBS_ZONE.into(),
                hostname: None,
                ip: None,
            };
            Arc::new(FakeCloud::new(FakeCloudConfig {
                instances: vec![instance.clone(), instance],
                latency_ms: 1,
                create_delay_ms: 10,
                attach_delay_ms: 20,
                detach_delay_ms: 20,
                ..FakeCloudConfig::default()
            }))
        })
        .clone()
}

/// One zone, gp3 by default; a quota (bytes) becomes a gp3 quota in GiB.
fn ebs_config(quota: Option<u64>) -> EbsConfig {
    let mut cfg = EbsConfig::new(vec![EBS_ZONE.into()]);
    cfg.poll_interval_ms = 10;
    if let Some(q) = quota {
        cfg.quotas = vec![EbsQuota {
            volume_type: "gp3".into(),
            zone: None,
            gib: q / GIB,
        }];
    }
    cfg
}

fn make_ebs_fake(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
    Box::pin(async move {
        let cloud = fake_cloud(&root);
        Arc::new(EbsDriver::new(ebs_config(quota), "conformance", cloud).unwrap()) as DynDriver
    })
}

fn fake_hosts(root: &Path) -> [String; 2] {
    let ids = fake_cloud(root).instance_ids();
    [ids[0].clone(), ids[1].clone()]
}

/// The fake cloud holding a volume (ids are unique across the process's clouds).
fn cloud_of(vol: &DriverVolume) -> Arc<FakeCloud> {
    let clouds = fake_clouds().lock().unwrap();
    clouds
        .values()
        .find(|c| c.has_volume(&vol.id))
        .cloned()
        .expect("no fake cloud holds the volume")
}

fn fake_write(vol: &DriverVolume, rel: &str, data: &[u8]) {
    assert!(cloud_of(vol).write_file(&vol.id, rel, data));
}

fn fake_read(vol: &DriverVolume, rel: &str) -> Vec<u8> {
    cloud_of(vol).read_file(&vol.id, rel).expect("no such file")
}

/// EBS shares a volume between instances only with Multi-Attach: io2, with IOPS, 4 GiB up.
fn ebs_shared(r: &mut CreateRequest) {
    r.pool = Some("io2".into());
    r.fields.insert("iops".into(), "1000".into());
    r.size_bytes = r.size_bytes.max(4 * GIB);
}

const EBS_FAKE: Backend = Backend {
    kind: "ebs",
    pool: "gp3",
    make: make_ebs_fake,
    skip: never_skip,
    write: fake_write,
    read: fake_read,
    device_is_hint: true,
    unit: GIB,
    hosts: fake_hosts,
    shared: ebs_shared,
    has_data: true,
    shares: true,
    unknown_volume: "vol-0000000000000dead",
    unknown_snapshot: "snap-0000000000000dead",
};

/// The `ebs` driver through the AWS SDK against moto (`reference/backends.md` §1): each test
/// resets moto and launches two instances; tests run one at a time (moto is shared).
#[cfg(feature = "ebs")]
mod moto {
    use super::*;
    use std::cell::RefCell;
    use std::sync::MutexGuard;

    static SERIAL: Mutex<()> = Mutex::new(());

    thread_local! {
        /// Held from a test's first `make` until its thread ends.
        static HELD: RefCell<Option<MutexGuard<'static, ()>>> = const { RefCell::new(None) };
    }

    fn hosts_by_root() -> &'static Mutex<HashMap<PathBuf, [String; 2]>> {
        static HOSTS: OnceLock<Mutex<HashMap<PathBuf, [String; 2]>>> = OnceLock::new();
        HOSTS.get_or_init(Default::default)
    }

    /// `moto_server`: `POLLY_MOTO_SERVER`, else the venv `.ci/run` makes, else `PATH`.
    fn moto_server() -> Option<PathBuf> {
        if let Ok(p) = std::env::var("POLLY_MOTO_SERVER") {
            return Some(PathBuf::from(p));
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server");
        if venv.exists() {
            return Some(venv);
        }
        Command::new("moto_server")
            .arg("--help")
            .output()
            .ok()
            .map(|_| PathBuf::from("moto_server"))
    }

    /// moto's URL: `POLLY_TEST_MOTO_URL`, else a `moto_server` this process starts on
    /// 127.0.0.1 (it stops when the test process exits).
    pub fn url() -> Option<String> {
        static URL: OnceLock<Option<String>> = OnceLock::new();
        URL.get_or_init(|| {
            // The SDK's standard chain finds these; moto accepts any key.
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            if let Ok(u) = std::env::var("POLLY_TEST_MOTO_URL") {
                return Some(u);
            }
            let server = moto_server()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut watcher = Command::new("sh")
                .args([
                    "-c",
                    r#""$0" -H 127.0.0.1 -p "$1" >/dev/null 2>&1 & m=$!
                       while kill -0 "$2" 2>/dev/null; do sleep 1; done; kill "$m""#,
                ])
                .arg(&server)
                .arg(port.to_string())
                .arg(std::process::id().to_string())
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // The watcher lives as long as this process; reap it if it ever ends.
            std::thread::spawn(move || watcher.wait());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "moto_server did not listen on 127.0.0.1:{port} within 60 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Some(format!("http://127.0.0.1:{port}"))
        })
        .clone()
    }

    pub fn skip() -> Option<String> {
        if url().is_some() {
            return None;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the ebs tests against moto: install it (.ci/run makes .venv-moto) or set POLLY_MOTO_SERVER"
        );
        Some("moto_server not found (python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server,ec2]>=5,<6')".into())
    }

    /// Reset moto and launch two instances in `EBS_ZONE` from the first Amazon AMI.
    async fn fresh_cloud(url: &str) -> [String; 2] {
        let reset = reqwest::Client::new()
            .post(format!("{url}/moto-api/reset"))
            .send()
            .await
            .unwrap();
        assert!(
            reset.status().is_success(),
            "moto reset: {}",
            reset.status()
        );
        let conf =
            polly::driver::ebs::sdk::sdk_config(Some("us-east-1".into()), Some(url.to_string()))
                .await;
        let ec2 = aws_sdk_ec2::Client::new(&conf);
        let images = ec2.describe_images().owners("amazon").send().await.unwrap();
        let image = images.images()[0].image_id().unwrap().to_string();
        let run = ec2
            .run_instances()
            .image_id(image)
            .min_count(2)
            .max_count(2)
            .placement(
                aws_sdk_ec2::types::Placement::builder()
                    .availability_zone(EBS_ZONE)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let ids: Vec<String> = run
            .instances()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        [ids[0].clone(), ids[1].clone()]
    }

    pub fn make(root: PathBuf, quota: Option<u64>) -> BoxFuture<'static, DynDriver> {
        Box::pin(async move {
            HELD.with(|h| {
                if h.borrow().is_none() {
                    *h.borrow_mut() = Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
                }
            });
            let url = url().unwrap();
            let known = hosts_by_root().lock().unwrap().contains_key(&root);
            if !known {
                let hosts = fresh_cloud(&url).await;
                hosts_by_root().lock().unwrap().insert(root.clone(), hosts);
            }
            let mut cfg = ebs_config(quota);
            cfg.region = Some("us-east-1".into());
            cfg.endpoint = Some(url);
            cfg.poll_interval_ms = 20;
            Arc::new(EbsDriver::from_config(cfg, "conformance").unwrap()) as DynDriver
        })
    }

    pub fn hosts(root: &Path) -> [String; 2] {
        hosts_by_root().lock().unwrap()[root].clone()
    }

    fn no_data(_: &DriverVolume, _: &str, _: &[u8]) {}

    fn no_read(_: &DriverVolume, _: &str) -> Vec<u8> {
        Vec::new()
    }

    pub const EBS_MOTO: Backend = Backend {
        make,
        skip,
        write: no_data,
        read: no_read,
        hosts,
        has_data: false,
        shares: false,
        ..EBS_FAKE
    };
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

async fn round_trip(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    assert!(d.list().await.unwrap().is_empty());

    let mut r = req("alpha", 8 * u);
    r.fields.insert("type".into(), "fast".into());
    let v = d.create(&r).await.unwrap();
    assert_eq!(v.name, "alpha");
    assert_eq!(v.size_bytes, 8 * u);
    assert_eq!(v.pool, b.pool);
    assert_eq!(v.fields.get("type").map(String::as_str), Some("fast"));
    assert!(v.attachments.is_empty());
    if let Some(path) = &v.path {
        assert!(Path::new(path).exists(), "{path}");
    }

    assert_eq!(d.inspect(&v.id).await.unwrap(), v);
    let w = d.create(&req("beta", u)).await.unwrap();
    assert_ne!(v.id, w.id);
    let listed = d.list().await.unwrap();
    let mut want = vec![v.clone(), w.clone()];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, want, "list is sorted by id");
    inventory_matches_list(&d).await;

    d.remove(&v.id).await.unwrap();
    assert!(matches!(
        d.inspect(&v.id).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    if let Some(path) = &v.path {
        assert!(!Path::new(path).exists(), "{path} outlived its volume");
    }
    assert_eq!(d.list().await.unwrap(), vec![w]);
    inventory_matches_list(&d).await;
}

/// The inventory (what the reconciler compares with the store) names the listed volumes, in
/// the listing's order, with their names and sizes.
async fn inventory_matches_list(d: &DynDriver) {
    let listed: Vec<Listed> = d
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect();
    assert_eq!(d.inventory().await.unwrap(), listed);
}

async fn idempotent_create_attach_detach_remove(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let h = (b.hosts)(dir.path());
    let first = d.create(&req("idem", u)).await.unwrap();
    for _ in 0..10 {
        assert_eq!(d.create(&req("idem", u)).await.unwrap().id, first.id);
    }
    assert_eq!(d.list().await.unwrap().len(), 1);

    let opts = AttachOptions {
        device_hint: Some("/dev/xvdf".into()),
    };
    let att = d.attach(&first.id, &h[0], &opts).await.unwrap();
    assert_eq!(att.instance_id, h[0]);
    if b.device_is_hint {
        assert_eq!(att.device, "/dev/xvdf");
    } else {
        assert!(!att.device.is_empty());
    }
    for _ in 0..10 {
        assert_eq!(d.attach(&first.id, &h[0], &no_opts()).await.unwrap(), att);
    }
    assert_eq!(d.inspect(&first.id).await.unwrap().attachments, vec![att]);

    for _ in 0..10 {
        d.detach(&first.id, &h[0]).await.unwrap();
    }
    assert!(d.inspect(&first.id).await.unwrap().attachments.is_empty());

    for _ in 0..10 {
        d.remove(&first.id).await.unwrap();
    }
    assert!(d.list().await.unwrap().is_empty());
}

async fn same_name_different_size_conflicts(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let v = d.create(&req("conflict", u)).await.unwrap();
    let err = d.create(&req("conflict", 2 * u)).await.unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { name, .. } if name == "conflict"),
        "{err:?}"
    );
    assert_eq!(d.list().await.unwrap(), vec![v]);
}

async fn unknown_ids(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let h = (b.hosts)(dir.path());
    d.remove(b.unknown_volume).await.unwrap();
    d.remove("no-such-volume").await.unwrap();
    assert!(matches!(
        d.inspect(b.unknown_volume).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.attach(b.unknown_volume, &h[0], &no_opts()).await,
        Err(Error::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        d.grow(b.unknown_volume, u).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.snapshot_create(b.unknown_volume, "s").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.copy(b.unknown_volume, &req("c", u)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        d.create_from_snapshot(b.unknown_snapshot, &req("c", u))
            .await,
        Err(Error::NotFound { .. })
    ));
    d.snapshot_remove(b.unknown_snapshot).await.unwrap();
    d.detach(b.unknown_volume, &h[0]).await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
}

async fn zero_size_and_unknown_pool_are_rejected(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    assert!(matches!(
        d.create(&req("zero", 0)).await,
        Err(Error::InvalidArgument(_))
    ));
    let mut r = req("pooled", u);
    r.pool = Some("nope".into());
    assert!(matches!(
        d.create(&r).await,
        Err(Error::NotFound { kind: "pool", .. })
    ));
    assert!(d.list().await.unwrap().is_empty());
}

async fn single_writer_and_multi_writer(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let h = (b.hosts)(dir.path());
    let single = d.create(&req("single", u)).await.unwrap();
    d.attach(&single.id, &h[0], &no_opts()).await.unwrap();
    let err = d.attach(&single.id, &h[1], &no_opts()).await.unwrap_err();
    assert!(
        matches!(&err, Error::AttachedElsewhere { holders, .. } if holders == &[h[0].clone()]),
        "{err:?}"
    );
    // After the holder detaches, another instance may take it.
    d.detach(&single.id, &h[0]).await.unwrap();
    d.attach(&single.id, &h[1], &no_opts()).await.unwrap();

    d.force_detach(&single.id).await.unwrap();
    if !b.shares {
        eprintln!(
            "skipped: this {} back-end cannot attach one volume to two instances (moto keeps one attachment per volume)",
            b.kind
        );
        return;
    }
    let mut r = req("shared", u);
    r.access_mode = AccessMode::MultiWriter;
    (b.shared)(&mut r);
    let shared = d.create(&r).await.unwrap();
    d.attach(&shared.id, &h[0], &no_opts()).await.unwrap();
    d.attach(&shared.id, &h[1], &no_opts()).await.unwrap();
    let mut holders: Vec<_> = d
        .inspect(&shared.id)
        .await
        .unwrap()
        .attachments
        .into_iter()
        .map(|a| a.instance_id)
        .collect();
    holders.sort();
    let mut want = h.to_vec();
    want.sort();
    assert_eq!(holders, want);
    // Detaching one instance leaves the other's attachment alone.
    d.detach(&shared.id, &h[0]).await.unwrap();
    let left = d.inspect(&shared.id).await.unwrap().attachments;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance_id, h[1]);
    // Real devices (loop) outlive the test's directory unless released.
    for v in [&single, &shared] {
        d.force_detach(&v.id).await.unwrap();
    }
}

async fn remove_while_attached_then_force_detach(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let h = (b.hosts)(dir.path());
    let mut r = req("busy", u);
    r.access_mode = AccessMode::MultiReader;
    (b.shared)(&mut r);
    let v = d.create(&r).await.unwrap();
    d.attach(&v.id, &h[0], &no_opts()).await.unwrap();
    if b.shares {
        d.attach(&v.id, &h[1], &no_opts()).await.unwrap();
    }
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
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let v = d.create(&req("source", 4 * u)).await.unwrap();
    let other = d.create(&req("other", u)).await.unwrap();
    b.put(&v, "sub/hello.txt", b"before");

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
    let mut both = vec![s.clone(), s_other.clone()];
    both.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(d.snapshot_list(None).await.unwrap(), both);

    // Later writes to the volume do not reach the snapshot.
    b.put(&v, "sub/hello.txt", b"after");

    let restored = d
        .create_from_snapshot(&s.id, &req("restored", 4 * u))
        .await
        .unwrap();
    assert_ne!(restored.id, v.id);
    b.expect(&restored, "sub/hello.txt", b"before");
    // Idempotent by name, like create.
    let again = d
        .create_from_snapshot(&s.id, &req("restored", 4 * u))
        .await
        .unwrap();
    assert_eq!(again.id, restored.id);
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("restored", 8 * u)).await,
        Err(Error::AlreadyExists { .. })
    ));
    // A volume smaller than its snapshot could not hold it.
    assert!(matches!(
        d.create_from_snapshot(&s.id, &req("tiny", u)).await,
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
            .create_from_snapshot(&c.id, &req("from-copy", 4 * u))
            .await
            .unwrap();
        b.expect(&from_copy, "sub/hello.txt", b"before");
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
        d.create_from_snapshot(&s.id, &req("late", 4 * u)).await,
        Err(Error::NotFound { .. })
    ));
    // The restored volume owns its data; removing the snapshot left it intact.
    b.expect(&restored, "sub/hello.txt", b"before");
}

async fn copy_carries_data(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let v = d.create(&req("orig", 2 * u)).await.unwrap();
    b.put(&v, "a.bin", &[1u8, 2, 3]);
    let c = d.copy(&v.id, &req("dup", 2 * u)).await.unwrap();
    assert_ne!(c.id, v.id);
    assert_eq!(c.name, "dup");
    b.expect(&c, "a.bin", &[1, 2, 3]);
    assert_eq!(d.copy(&v.id, &req("dup", 2 * u)).await.unwrap().id, c.id);
    // The copy is independent of its source.
    b.put(&c, "a.bin", &[9u8]);
    b.expect(&v, "a.bin", &[1, 2, 3]);
    assert_eq!(d.list().await.unwrap().len(), 2);
}

async fn grow(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let v = d.create(&req("growing", 2 * u)).await.unwrap();
    let g = d.grow(&v.id, 4 * u).await.unwrap();
    assert_eq!(g.size_bytes, 4 * u);
    assert_eq!(d.inspect(&v.id).await.unwrap().size_bytes, 4 * u);
    assert_eq!(d.grow(&v.id, 4 * u).await.unwrap(), g);
    assert!(matches!(
        d.grow(&v.id, u).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(d.inspect(&v.id).await.unwrap().size_bytes, 4 * u);
}

async fn capacity_and_quota(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let caps = d.capacity().await.unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!(caps[0].pool, b.pool);
    assert!(caps[0].total_bytes > 0);
    assert!(caps[0].total_bytes >= caps[0].free_bytes);
    drop(d);

    let quota_dir = tempfile::tempdir().unwrap();
    let Some(q) = b.start(quota_dir.path(), Some(4 * u)).await else {
        return;
    };
    let before = q.capacity().await.unwrap()[0].clone();
    assert_eq!(before.total_bytes, 4 * u);
    assert_eq!(before.free_bytes, 4 * u);
    let v = q.create(&req("q1", 3 * u)).await.unwrap();
    let after = q.capacity().await.unwrap()[0].clone();
    assert_eq!(after.total_bytes, 4 * u);
    assert_eq!(after.free_bytes, u);

    let err = q.create(&req("q2", 2 * u)).await.unwrap_err();
    assert_eq!(
        err,
        Error::InsufficientCapacity {
            pool: b.pool.into(),
            free_bytes: u,
            wanted_bytes: 2 * u,
        }
    );
    assert!(matches!(
        q.grow(&v.id, 5 * u).await,
        Err(Error::InsufficientCapacity { .. })
    ));
    q.grow(&v.id, 4 * u).await.unwrap();
    assert_eq!(q.capacity().await.unwrap()[0].free_bytes, 0);
    // Removing a volume gives its bytes back.
    q.remove(&v.id).await.unwrap();
    assert_eq!(q.capacity().await.unwrap()[0].free_bytes, 4 * u);
}

async fn concurrent_creates_make_one_volume(b: Backend) {
    let u = b.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = b.start(dir.path(), None).await else {
        return;
    };
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.create(&req("racy", u)).await })
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
    let u = backend.unit;
    let dir = tempfile::tempdir().unwrap();
    let Some(d) = backend.start(dir.path(), None).await else {
        return;
    };
    let a = d.create(&req("a", u)).await.unwrap();
    let b = d.create(&req("b", u)).await.unwrap();
    let s = d.snapshot_create(&b.id, "s").await.unwrap();
    // Snapshot first: rbd keeps snapshots inside their image and refuses to remove an image
    // that still has some.
    d.snapshot_remove(&s.id).await.unwrap();
    d.remove(&b.id).await.unwrap();
    drop(d);

    let Some(d) = backend.start(dir.path(), None).await else {
        return;
    };
    assert_eq!(d.list().await.unwrap(), vec![a.clone()]);
    let c = d.create(&req("b", u)).await.unwrap();
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
    let Some(d) = b.start(dir.path(), None).await else {
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
conformance!(ebs_fake, EBS_FAKE);
#[cfg(feature = "ebs")]
conformance!(ebs_moto, moto::EBS_MOTO);

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
    let Some(d) = LOOP.start(dir.path(), None).await else {
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
