//! Benchmarks of Polly's volume lifecycle and durable store writes, each beside a baseline
//! measured in the same run: the bare `vfs` driver for the create + attach + detach + delete
//! cycle, and a raw `write` + `fsync` of the same disk for store writes. `scripts/bench.sh`
//! runs them and writes the medians and ratios into BENCHMARKS.md.
//!
//! Every file lives under one base directory (`POLLY_BENCH_DIR`, default cargo's
//! `CARGO_TARGET_TMPDIR`), so the store, the driver and the raw fsync baseline hit one disk.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use tempfile::TempDir;

use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::driver::{
    self, AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, DynDriver,
    PoolCapacity, Snapshot,
};
use polly::store::{Op, Store, Volume, VolumeStatus};
use polly::volumes::{CreateVolume, Manager, Service};

const SERVICE: &str = "bench";
const INSTANCE: &str = "i-bench";
const SIZE: u64 = 1 << 20;

/// Where the benchmarks put their files: one disk for the store, the driver and the baseline.
fn base_dir() -> PathBuf {
    std::env::var_os("POLLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn tempdir(prefix: &str) -> TempDir {
    let base = base_dir();
    std::fs::create_dir_all(&base).expect("create the bench base dir");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("create a bench temp dir")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// A driver that does nothing and answers at once, so a cycle through the manager with it
/// measures Polly alone: validation, locks, intents and durable store writes.
#[derive(Default)]
struct NoopDriver {
    next: AtomicU64,
}

impl NoopDriver {
    fn volume(&self, id: String, req: &CreateRequest) -> DriverVolume {
        DriverVolume {
            id,
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: req.pool.clone().unwrap_or_else(|| "default".into()),
            zone: req.zone.clone(),
            access_mode: req.access_mode,
            attachments: vec![],
            fields: req.fields.clone(),
            path: None,
        }
    }

    fn not_found(kind: &'static str, id: &str) -> driver::Error {
        driver::Error::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

#[async_trait]
impl Driver for NoopDriver {
    fn kind(&self) -> &str {
        "noop"
    }
    async fn capacity(&self) -> driver::Result<Vec<PoolCapacity>> {
        Ok(vec![PoolCapacity {
            pool: "default".into(),
            zone: None,
            total_bytes: u64::MAX,
            free_bytes: u64::MAX,
        }])
    }
    async fn list(&self) -> driver::Result<Vec<DriverVolume>> {
        Ok(vec![])
    }
    async fn inspect(&self, id: &str) -> driver::Result<DriverVolume> {
        Err(Self::not_found("volume", id))
    }
    async fn create(&self, req: &CreateRequest) -> driver::Result<DriverVolume> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(self.volume(format!("noop-{n}"), req))
    }
    async fn remove(&self, _id: &str) -> driver::Result<()> {
        Ok(())
    }
    async fn attach(
        &self,
        _id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> driver::Result<DriverAttachment> {
        Ok(DriverAttachment {
            instance_id: instance_id.to_string(),
            device: opts.device_hint.clone().unwrap_or_default(),
        })
    }
    async fn detach(&self, _id: &str, _instance_id: &str) -> driver::Result<()> {
        Ok(())
    }
    async fn force_detach(&self, _id: &str) -> driver::Result<()> {
        Ok(())
    }
    async fn snapshot_create(&self, volume_id: &str, _name: &str) -> driver::Result<Snapshot> {
        Err(Self::not_found("volume", volume_id))
    }
    async fn snapshot_list(&self, _volume_id: Option<&str>) -> driver::Result<Vec<Snapshot>> {
        Ok(vec![])
    }
    async fn snapshot_remove(&self, _snapshot_id: &str) -> driver::Result<()> {
        Ok(())
    }
    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        _req: &CreateRequest,
    ) -> driver::Result<DriverVolume> {
        Err(Self::not_found("snapshot", snapshot_id))
    }
    async fn copy(&self, volume_id: &str, _req: &CreateRequest) -> driver::Result<DriverVolume> {
        Err(Self::not_found("volume", volume_id))
    }
    async fn grow(&self, id: &str, _new_size_bytes: u64) -> driver::Result<DriverVolume> {
        Err(Self::not_found("volume", id))
    }
}

/// Wraps a driver and adds up the time spent inside its calls, so a cycle through the manager
/// can report Polly's own share (total minus driver time) from the very same iterations.
struct TimedDriver {
    inner: DynDriver,
    nanos: Arc<AtomicU64>,
}

impl TimedDriver {
    async fn timed<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = fut.await;
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        out
    }
}

#[async_trait]
impl Driver for TimedDriver {
    fn kind(&self) -> &str {
        self.inner.kind()
    }
    async fn capacity(&self) -> driver::Result<Vec<PoolCapacity>> {
        self.timed(self.inner.capacity()).await
    }
    async fn list(&self) -> driver::Result<Vec<DriverVolume>> {
        self.timed(self.inner.list()).await
    }
    async fn inspect(&self, id: &str) -> driver::Result<DriverVolume> {
        self.timed(self.inner.inspect(id)).await
    }
    async fn create(&self, req: &CreateRequest) -> driver::Result<DriverVolume> {
        self.timed(self.inner.create(req)).await
    }
    async fn remove(&self, id: &str) -> driver::Result<()> {
        self.timed(self.inner.remove(id)).await
    }
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> driver::Result<DriverAttachment> {
        self.timed(self.inner.attach(id, instance_id, opts)).await
    }
    async fn detach(&self, id: &str, instance_id: &str) -> driver::Result<()> {
        self.timed(self.inner.detach(id, instance_id)).await
    }
    async fn force_detach(&self, id: &str) -> driver::Result<()> {
        self.timed(self.inner.force_detach(id)).await
    }
    async fn snapshot_create(&self, volume_id: &str, name: &str) -> driver::Result<Snapshot> {
        self.timed(self.inner.snapshot_create(volume_id, name))
            .await
    }
    async fn snapshot_list(&self, volume_id: Option<&str>) -> driver::Result<Vec<Snapshot>> {
        self.timed(self.inner.snapshot_list(volume_id)).await
    }
    async fn snapshot_remove(&self, snapshot_id: &str) -> driver::Result<()> {
        self.timed(self.inner.snapshot_remove(snapshot_id)).await
    }
    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> driver::Result<DriverVolume> {
        self.timed(self.inner.create_from_snapshot(snapshot_id, req))
            .await
    }
    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> driver::Result<DriverVolume> {
        self.timed(self.inner.copy(volume_id, req)).await
    }
    async fn grow(&self, id: &str, new_size_bytes: u64) -> driver::Result<DriverVolume> {
        self.timed(self.inner.grow(id, new_size_bytes)).await
    }
}

/// A manager over a fresh store with one service; the temp dirs live as long as it does.
struct Fixture {
    manager: Manager,
    _dirs: Vec<TempDir>,
    names: AtomicU64,
}

impl Fixture {
    fn new(driver: DynDriver, mut dirs: Vec<TempDir>) -> Fixture {
        let store_dir = tempdir("store-");
        let store = Store::open(store_dir.path()).expect("open the bench store");
        dirs.push(store_dir);
        let services = BTreeMap::from([(
            SERVICE.to_string(),
            Service {
                name: SERVICE.to_string(),
                driver,
            },
        )]);
        Fixture {
            manager: Manager::with_services(store, services, Duration::from_secs(30)),
            _dirs: dirs,
            names: AtomicU64::new(0),
        }
    }

    /// One create → attach → detach → delete through the manager, returning how long each
    /// of the four calls took, minus the time `driver_nanos` (if any) grew during it.
    async fn timed_cycle(&self, driver_nanos: Option<&AtomicU64>) -> [Duration; 4] {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let m = &self.manager;
        let mut out = [Duration::ZERO; 4];
        let spent = |slot: &mut Duration, start: Instant, before: u64| {
            let driver = driver_nanos.map_or(0, |d| d.load(Ordering::Relaxed) - before);
            *slot = start.elapsed().saturating_sub(Duration::from_nanos(driver));
        };
        let now = || driver_nanos.map_or(0, |d| d.load(Ordering::Relaxed));

        let (start, before) = (Instant::now(), now());
        let v = m
            .create(CreateVolume {
                service: SERVICE.into(),
                name: format!("op-{n}"),
                size_bytes: SIZE,
                ..Default::default()
            })
            .await
            .expect("create");
        spent(&mut out[0], start, before);
        let (start, before) = (Instant::now(), now());
        m.attach(&v.id, INSTANCE, None).await.expect("attach");
        spent(&mut out[1], start, before);
        let (start, before) = (Instant::now(), now());
        m.detach(&v.id, Some(INSTANCE)).await.expect("detach");
        spent(&mut out[2], start, before);
        let (start, before) = (Instant::now(), now());
        m.delete(&v.id).await.expect("delete");
        spent(&mut out[3], start, before);
        out
    }

    /// One create → attach → detach → delete through the manager.
    async fn cycle(&self) {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let m = &self.manager;
        let v = m
            .create(CreateVolume {
                service: SERVICE.into(),
                name: format!("vol-{n}"),
                size_bytes: SIZE,
                ..Default::default()
            })
            .await
            .expect("create");
        m.attach(&v.id, INSTANCE, None).await.expect("attach");
        m.detach(&v.id, Some(INSTANCE)).await.expect("detach");
        m.delete(&v.id).await.expect("delete");
    }
}

fn vfs_driver() -> (VfsDriver, TempDir) {
    let root = tempdir("vfs-");
    let driver = VfsDriver::open(VfsConfig::new(root.path())).expect("open the vfs driver");
    (driver, root)
}

fn cycle(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("cycle");
    g.sample_size(30).measurement_time(Duration::from_secs(5));

    let (vfs, root) = vfs_driver();
    let fx = Fixture::new(Arc::new(vfs), vec![root]);
    g.bench_function("polly_vfs", |b| b.to_async(&rt).iter(|| fx.cycle()));
    drop(fx);

    // The same cycle again, timed per iteration as total minus the time spent in the driver:
    // Polly's overhead without the noise of subtracting two separately measured medians.
    let (vfs, root) = vfs_driver();
    let nanos = Arc::new(AtomicU64::new(0));
    let timed = TimedDriver {
        inner: Arc::new(vfs),
        nanos: nanos.clone(),
    };
    let fx = Fixture::new(Arc::new(timed), vec![root]);
    g.bench_function("polly_vfs_overhead", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let fx = &fx;
            let nanos = nanos.clone();
            async move {
                nanos.store(0, Ordering::Relaxed);
                let start = Instant::now();
                for _ in 0..iters {
                    fx.cycle().await;
                }
                let total = start.elapsed();
                total.saturating_sub(Duration::from_nanos(nanos.load(Ordering::Relaxed)))
            }
        })
    });
    drop(fx);

    // The same four driver calls the manager makes, with nothing of Polly around them.
    let (vfs, _root) = vfs_driver();
    let names = AtomicU64::new(0);
    g.bench_function("driver_only_vfs", |b| {
        b.to_async(&rt).iter(|| async {
            let n = names.fetch_add(1, Ordering::Relaxed);
            let req = CreateRequest {
                name: format!("vol-{n}"),
                size_bytes: SIZE,
                pool: None,
                zone: None,
                access_mode: Default::default(),
                fields: BTreeMap::new(),
            };
            let v = vfs.create(&req).await.expect("create");
            vfs.attach(&v.id, INSTANCE, &AttachOptions::default())
                .await
                .expect("attach");
            vfs.detach(&v.id, INSTANCE).await.expect("detach");
            vfs.remove(&v.id).await.expect("remove");
        })
    });

    let fx = Fixture::new(Arc::new(NoopDriver::default()), vec![]);
    g.bench_function("polly_noop", |b| b.to_async(&rt).iter(|| fx.cycle()));
    g.finish();
}

/// Each operation alone: full cycles run, but only the named call's time counts. On the
/// no-op driver that is Polly's whole cost of the call; on `vfs` it is the call's time minus
/// the time spent in the driver (Polly's own overhead per operation).
fn op(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("op");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let noop = Fixture::new(Arc::new(NoopDriver::default()), vec![]);
    let (vfs, root) = vfs_driver();
    let nanos = Arc::new(AtomicU64::new(0));
    let timed = TimedDriver {
        inner: Arc::new(vfs),
        nanos: nanos.clone(),
    };
    let vfs = Fixture::new(Arc::new(timed), vec![root]);
    for (slot, name) in ["create", "attach", "detach", "delete"]
        .into_iter()
        .enumerate()
    {
        g.bench_function(format!("{name}_noop"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let fx = &noop;
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += fx.timed_cycle(None).await[slot];
                    }
                    total
                }
            })
        });
        g.bench_function(format!("{name}_vfs_overhead"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (fx, nanos) = (&vfs, &nanos);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += fx.timed_cycle(Some(nanos)).await[slot];
                    }
                    total
                }
            })
        });
    }
    g.finish();
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let dir = tempdir("store-");
    let store = Store::open(dir.path()).expect("open the bench store");
    let mut vol = Volume {
        id: "pv-bench".into(),
        service: SERVICE.into(),
        driver_id: Some("vfs-1".into()),
        name: "vol-bench".into(),
        size_bytes: SIZE,
        pool: Some("default".into()),
        zone: None,
        access_mode: Default::default(),
        labels: BTreeMap::new(),
        restrict_services: Default::default(),
        restrict_frameworks: Default::default(),
        status: VolumeStatus::Available,
        attachments: vec![],
        created_at: 0,
        path: None,
    };
    // One durable write per iteration, each a real change so sled has something to flush.
    g.bench_function("apply_flush", |b| {
        b.iter(|| {
            vol.created_at += 1;
            store
                .apply(&[Op::PutVolume(vol.clone())])
                .expect("store apply");
        })
    });
    g.finish();
}

fn disk(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    let dir = tempdir("fsync-");
    let mut file: File = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("raw"))
        .expect("open the fsync file");
    let record = [0x5a_u8; 200];
    // The floor for any durable write on this disk: append 200 bytes, then fdatasync.
    g.bench_function("raw_fsync", |b| {
        b.iter(|| {
            file.write_all(&record).expect("write");
            file.sync_data().expect("fsync");
        })
    });

    // What sled's flush issues on Linux: sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER),
    // which writes the pages out but neither commits metadata nor flushes the disk cache.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        g.bench_function("raw_sync_file_range", |b| {
            b.iter(|| {
                let offset = file.metadata().expect("stat").len();
                file.write_all(&record).expect("write");
                let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                // SAFETY: the fd is open for the whole call and the range is plain numbers.
                let ret =
                    unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, 200, flags) };
                assert_eq!(
                    ret,
                    0,
                    "sync_file_range: {}",
                    std::io::Error::last_os_error()
                );
            })
        });
    }
    g.finish();
}

criterion_group!(benches, cycle, op, store, disk);
criterion_main!(benches);
