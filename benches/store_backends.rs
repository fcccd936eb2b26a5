//! Store operation latency on each backend, in the same run: sled on local disk (the
//! default) beside etcd (Debian's etcd on loopback, its data on the same disk), through the
//! same `Store` API: a durable one-volume `apply` (alone, and amortised over 16 concurrent
//! writers), a batch creating a volume with its intent (the name check's reads, then the
//! write), a one-volume read, and a list of 200 volumes.
//! Needs the cargo feature `etcd` and an etcd binary (`cargo bench --features etcd --bench
//! store_backends`); without etcd only the sled figures run.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use polly::store::{Intent, IntentOp, Op, Store, Volume, VolumeStatus};

use harness::etcd;

fn base_dir() -> PathBuf {
    let base = std::env::var_os("POLLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("create the bench base dir");
    base
}

fn volume(i: u64) -> Volume {
    Volume {
        id: format!("pv-{i:06}"),
        service: "bench".into(),
        driver_id: Some(format!("vfs-{i}")),
        name: format!("vol-{i:06}"),
        size_bytes: 1 << 20,
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
    }
}

fn run(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    store: &Store,
) {
    for i in 0..200 {
        store.apply(&[Op::PutVolume(volume(i))]).expect("seed");
    }
    let mut v = volume(0);
    g.bench_function(format!("{name}/apply_put_volume"), |b| {
        b.iter(|| {
            v.created_at += 1;
            store.apply(&[Op::PutVolume(v.clone())]).expect("apply");
        })
    });
    g.bench_function(format!("{name}/get_volume"), |b| {
        b.iter(|| store.volume("pv-000100").expect("get").expect("present"))
    });
    // Before the creates below add volumes: both backends list the same 200.
    g.bench_function(format!("{name}/list_volumes"), |b| {
        b.iter(|| store.volumes().expect("list").len())
    });
    // 16 writers at once: time per apply, amortised (sled shares flushes; etcd batches
    // concurrent Txns into its raft log).
    g.bench_function(format!("{name}/apply_put_volume_16_writers"), |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..16u64 {
                    s.spawn(move || {
                        let mut v = volume(t);
                        for i in (t..iters).step_by(16) {
                            v.created_at = i;
                            store.apply(&[Op::PutVolume(v.clone())]).expect("apply");
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    let mut next = 1_000_000u64;
    g.bench_function(format!("{name}/apply_create_with_intent"), |b| {
        b.iter(|| {
            next += 1;
            let v = volume(next);
            let intent = Intent {
                id: store.next_id().expect("id"),
                volume_id: v.id.clone(),
                service: v.service.clone(),
                op: IntentOp::Attach {
                    instance_id: "i-bench".into(),
                },
                created_at: 0,
            };
            store
                .apply(&[Op::PutVolume(v), Op::PutIntent(intent)])
                .expect("apply");
        })
    });
}

fn backends(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_backend");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    let base = base_dir();
    let dir = tempfile::tempdir_in(&base).expect("sled dir");
    let sled = Store::open(dir.path()).expect("open sled");
    run(&mut g, "sled", &sled);
    drop(sled);
    if etcd::binary().is_none() {
        eprintln!("*** skipped: etcd not installed; only the sled figures ran ***");
        g.finish();
        return;
    }
    let server = etcd::Etcd::start_under(&base, &[], "http");
    let cfg = polly::store::EtcdConfig {
        endpoints: vec![server.url()],
        prefix: "/bench/".into(),
        ..Default::default()
    };
    let store = Store::open_etcd(&cfg, None).expect("open etcd");
    run(&mut g, "etcd", &store);
    g.finish();
}

criterion_group!(benches, backends);
criterion_main!(benches);
