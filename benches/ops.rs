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
use std::time::Duration;

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
    g.finish();
}

criterion_group!(benches, cycle, store, disk);
criterion_main!(benches);
