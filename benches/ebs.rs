//! Attach/detach throughput of the `ebs` driver against the fake cloud with 100 ms per EC2
//! call and 1,000 volumes (spread over 40 instances, 25 each), and the effect of one hung
//! call on a 1,000-attach burst: the other 999 must finish within 2× the time of the same
//! burst without the hang. Writes its table to `<target>/polly-bench/ebs.md` for
//! `scripts/bench.sh`.
//!
//! `cargo bench --bench ebs` runs the full size; without `--bench` (as under
//! `cargo test --all-targets`) a small, fast version keeps the code working.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polly::driver::ebs::fake::{FakeCloud, FakeCloudConfig};
use polly::driver::ebs::{EbsConfig, EbsDriver};
use polly::driver::{AccessMode, AttachOptions, CreateRequest, Driver};

const ZONE: &str = "us-east-1a";
const PER_INSTANCE: usize = 25;

struct Params {
    volumes: usize,
    latency_ms: u64,
}

/// Attach (or detach) every volume at once; returns the time until all but `skip` finished.
async fn burst(
    d: &Arc<EbsDriver>,
    work: &[(String, String)],
    attach: bool,
    skip: Option<&str>,
) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (vol, inst) in work {
        if skip == Some(vol.as_str()) {
            continue;
        }
        let (d, vol, inst) = (d.clone(), vol.clone(), inst.clone());
        tasks.push(tokio::spawn(async move {
            if attach {
                d.attach(&vol, &inst, &AttachOptions::default())
                    .await
                    .map(|_| ())
            } else {
                d.detach(&vol, &inst).await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    start.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let p = if full {
        Params {
            volumes: 1000,
            latency_ms: 100,
        }
    } else {
        Params {
            volumes: 50,
            latency_ms: 10,
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let cloud = Arc::new(FakeCloud::new(FakeCloudConfig {
            zones: vec![ZONE.into()],
            ..FakeCloudConfig::default()
        }));
        let instances: Vec<String> = (0..p.volumes.div_ceil(PER_INSTANCE))
            .map(|_| cloud.add_instance(ZONE, None, None))
            .collect();
        let mut cfg = EbsConfig::new(vec![ZONE.into()]);
        cfg.poll_interval_ms = p.latency_ms;
        cfg.call_timeout_secs = 60.0;
        cfg.attach_timeout_secs = 60.0;
        let d = Arc::new(EbsDriver::new(cfg, "bench", cloud.clone()).unwrap());

        // Volumes made with no latency: the benchmark is attach and detach.
        let mut work = Vec::new();
        for i in 0..p.volumes {
            let v = d
                .create(&CreateRequest {
                    name: format!("bench-{i:04}"),
                    size_bytes: 1 << 30,
                    pool: None,
                    zone: None,
                    access_mode: AccessMode::SingleWriter,
                    fields: BTreeMap::new(),
                })
                .await
                .unwrap();
            work.push((v.id, instances[i / PER_INSTANCE].clone()));
        }
        let mut cc = cloud.config();
        cc.latency_ms = p.latency_ms;
        cloud.set_config(cc);

        let attach = burst(&d, &work, true, None).await;
        let calls = cloud.calls("AttachVolume");
        let detach = burst(&d, &work, false, None).await;

        // The same burst with the first volume's AttachVolume hung until the rest are done.
        let hung_vol = work[0].0.clone();
        cloud.hang("AttachVolume", Some(&hung_vol), 1);
        let hung = {
            let (d, vol, inst) = (d.clone(), hung_vol.clone(), work[0].1.clone());
            tokio::spawn(async move { d.attach(&vol, &inst, &AttachOptions::default()).await })
        };
        let others = burst(&d, &work, true, Some(&hung_vol)).await;
        assert!(!hung.is_finished(), "the hung attach finished early");
        cloud.release_hangs();
        hung.await.unwrap().unwrap();
        for (vol, _) in &work {
            assert_eq!(cloud.attachments(vol).len(), 1, "{vol}");
        }
        assert_eq!(cloud.device_clashes(), 0);
        let ratio = others.as_secs_f64() / attach.as_secs_f64();
        assert!(
            ratio <= 2.0,
            "one hung call slowed the other {} attaches {ratio:.2}×",
            p.volumes - 1
        );

        let table = format!(
            "`ebs` driver on the fake cloud: {v} volumes on {i} instances ({per} each), {l} ms per \
             EC2 call, every operation of a burst started at once (attach = DescribeVolumes, \
             DescribeInstances, AttachVolume, DescribeVolumes; detach = DescribeVolumes, \
             DetachVolume, DescribeVolumes).\n\n\
             | burst | time | volumes/s |\n|---|---:|---:|\n\
             | attach {v} | {a:.2} s | {ar:.0} |\n\
             | detach {v} | {dt:.2} s | {dr:.0} |\n\
             | attach {o} while one AttachVolume hangs | {h:.2} s | {hr:.0} |\n\n\
             With one call hung, the other {o} attaches took **{ratio:.2}×** the time of the \
             burst without it (limit 2×); {calls} AttachVolume calls for {v} attaches, no device \
             name clash.\n",
            v = p.volumes,
            i = instances.len(),
            per = PER_INSTANCE,
            l = p.latency_ms,
            a = attach.as_secs_f64(),
            ar = p.volumes as f64 / attach.as_secs_f64(),
            dt = detach.as_secs_f64(),
            dr = p.volumes as f64 / detach.as_secs_f64(),
            o = p.volumes - 1,
            h = others.as_secs_f64(),
            hr = (p.volumes - 1) as f64 / others.as_secs_f64(),
        );
        println!("{table}");
        if full {
            let out = std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
                .join("polly-bench");
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join("ebs.md"), table).unwrap();
        }
    });
}
