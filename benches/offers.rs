//! Benchmarks of one offer round of the pure allocation core (`polly::offers::allocate`) at
//! 1k, 10k and 100k agents × 100 and 1000 frameworks × 100 pools, from an empty round and,
//! for 10k × 1000, a steady round where the previous round's offers are all outstanding. The
//! issue's target is a median of at most 100 ms for 10k agents × 1000 frameworks × 100 pools.
//! Under `cargo test` (no `--bench`) criterion runs each round once, and the 100k-agent
//! sizes are left out to keep that smoke run short.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use polly::offers::{
    allocate, Agent, Config, ExistingVolume, Framework, Pool, Quota, Reservation, Snapshot,
    VolumeKind,
};

const ZONES: usize = 10;

/// 100 pools: 9 per zone plus 10 without a zone; agents spread over the zones; frameworks in
/// 4 roles with weights 1-3, every tenth with a quota; one reservation per framework and one
/// existing volume per ten agents.
fn snapshot(n_agents: usize, n_frameworks: usize, n_pools: usize) -> Snapshot {
    let zone = |i: usize| Some(format!("zone-{}", i % ZONES));
    let pools: Vec<Pool> = (0..n_pools)
        .map(|i| {
            let z = if i % 10 == 9 { None } else { zone(i) };
            Pool {
                id: format!("ebs/pool-{i}/{}", z.as_deref().unwrap_or("-")),
                service: "ebs".into(),
                pool: format!("pool-{i}"),
                profile: ["fast", "gold", "bulk"][i % 3].into(),
                zone: z,
                total_mb: 10_000_000,
                free_mb: 5_000_000 + (i as u64) * 1_000,
                available: true,
            }
        })
        .collect();
    let agents: Vec<Agent> = (0..n_agents)
        .map(|i| Agent {
            id: format!("agent-{i}"),
            hostname: format!("node-{i}.example"),
            zone: zone(i),
        })
        .collect();
    let frameworks: Vec<Framework> = (0..n_frameworks)
        .map(|i| Framework {
            id: format!("framework-{i}"),
            role: format!("role-{}", i % 4),
            weight: (1 + i % 3) as f64,
            quota: if i % 10 == 0 {
                Quota {
                    max_mb: Some(200_000),
                    max_volumes: Some(20),
                }
            } else {
                Quota::default()
            },
            suppressed: i % 50 == 49,
            filters: Vec::new(),
        })
        .collect();
    let reservations: Vec<Reservation> = (0..n_frameworks)
        .map(|i| Reservation {
            framework_id: format!("framework-{i}"),
            pool_id: pools[i % pools.len()].id.clone(),
            volume_id: None,
            mb: 1_000,
            provisioned: false,
        })
        .collect();
    let volumes: Vec<ExistingVolume> = (0..n_agents / 10)
        .map(|i| {
            let p = &pools[i % pools.len()];
            ExistingVolume {
                volume_id: format!("vol-{i}"),
                pool_id: p.id.clone(),
                zone: p.zone.clone(),
                mb: 10_000,
                frameworks: if i % 2 == 0 {
                    vec![format!("framework-{}", i % n_frameworks)]
                } else {
                    Vec::new()
                },
                reserved_by: (i % 3 == 0).then(|| format!("framework-{}", (i + 1) % n_frameworks)),
                attached_to_agent: None,
                kind: if i % 4 == 0 {
                    VolumeKind::Block
                } else {
                    VolumeKind::Mount
                },
            }
        })
        .collect();
    Snapshot {
        now_ms: 1_000_000,
        next_offer_id: 1,
        config: Config {
            headroom_mb: 10_000,
            offer_timeout_ms: 60_000,
            min_offer_mb: 100,
        },
        pools,
        agents,
        frameworks,
        reservations,
        volumes,
        ..Snapshot::default()
    }
}

fn round(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let mut group = c.benchmark_group("offer_round");
    for &(agents, frameworks) in &[
        (1_000, 100),
        (1_000, 1_000),
        (10_000, 100),
        (10_000, 1_000),
        (100_000, 100),
        (100_000, 1_000),
    ] {
        if agents > 10_000 && !full {
            continue;
        }
        let s = snapshot(agents, frameworks, 100);
        // A round that offers nothing would time nothing worth timing.
        let out = allocate(&s);
        assert!(
            !out.new_offers.is_empty(),
            "{agents} agents × {frameworks} frameworks: no offer"
        );
        let name = format!("{agents}_agents_{frameworks}_frameworks_100_pools");
        if agents * frameworks >= 1_000_000 {
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(5));
        } else {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(3));
        }
        group.bench_with_input(BenchmarkId::new("empty", &name), &s, |b, s| {
            b.iter(|| allocate(s))
        });
        if agents == 10_000 && frameworks == 1_000 {
            // Everything offered last round is still outstanding: checks and rescinds only.
            let mut steady = s.clone();
            let first = allocate(&s);
            steady.next_offer_id = first.next_offer_id;
            steady.outstanding = first.new_offers;
            steady.now_ms += 1_000;
            group.bench_with_input(BenchmarkId::new("steady", &name), &steady, |b, s| {
                b.iter(|| allocate(s))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, round);
criterion_main!(benches);
