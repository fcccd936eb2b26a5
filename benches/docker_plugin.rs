//! Latency of Polly's Docker volume plugin (`polly node`) beside Docker's built-in `local`
//! driver, measured in the same run against a private real `dockerd`
//! (`tests/harness/docker.rs`), one real `polly serve` with a `vfs` and a `loop` service and
//! one `polly node` serving the plugin under a name of its own:
//!
//! 1. `docker volume create` and `docker volume rm` (the CLI end to end) with the plugin
//!    (`vfs`, and `loop` with a 64 MiB image) and with `--driver local`; as the floor of any
//!    CLI call, `docker container ls --quiet` (one API call the daemon answers from memory).
//! 2. Mount + Unmount as Docker does them: `docker run --rm --network none -v VOL:/m IMAGE
//!    true` on a Polly `vfs` volume, a Polly `loop` volume and a `local` volume, and the same
//!    container with no volume at all (the floor: starting a container), so a volume's share
//!    is the difference. Whether the plugin volume was already unmounted when `docker run`
//!    returned is counted.
//! 3. The plugin calls alone, straight on the socket: `VolumeDriver.Create`, a first
//!    `VolumeDriver.Mount` (attach through central, then mount), a second `Mount` of the
//!    mounted volume (reference count only), the `Unmount` of that second user (reference
//!    count only), the last `Unmount` (unmount, then detach at central) and `Remove`, on a
//!    `vfs` and a `loop` volume. `local` has no socket: its baseline is the Docker-level
//!    figures above; these are the breakdown of Polly's share.
//!
//! Each round runs every variant of each step once, the order rotating from round to round,
//! so machine noise falls on all variants alike; a few warm-up rounds are discarded.
//!
//! `cargo bench --bench docker_plugin` runs `POLLY_DOCKER_ROUNDS` rounds (default 100, about
//! 1.5 s each: a container start varies by tens of ms, the plugin's share is a few) and
//! writes `<target>/polly-bench/docker_plugin.md` for `scripts/bench.sh`. It needs root,
//! `dockerd` and a static busybox (`apt-get install docker.io busybox-static`); without them
//! it says so loudly and writes nothing. Without `--bench` (as under
//! `cargo test --all-targets`) it starts nothing: no Docker in the test run; it only renders
//! the table from made-up samples so that code stays working. Polly's files go under
//! `POLLY_BENCH_DIR` (default cargo's `CARGO_TARGET_TMPDIR`), Docker's under /tmp.

#[path = "../tests/harness/mod.rs"]
mod harness;
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use harness::docker::{plugin_name, plugin_socket, Dockerd};
use harness::node::{mounts_under, plugin_call, Node, NodeDirs};
use harness::{wait_until, Polly};
use load::Latencies;

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[[services]]\nname = \"loop\"\ndriver = \"loop\"\n";

/// Rounds discarded before the measured ones (first container start, caches).
const WARMUP: usize = 2;

/// The volume kinds compared: Docker's `local`, Polly's `vfs` and `loop` services.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Local,
    Vfs,
    Loop,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Local, Kind::Vfs, Kind::Loop];
    const POLLY: [Kind; 2] = [Kind::Vfs, Kind::Loop];

    fn label(self) -> &'static str {
        match self {
            Kind::Local => "`local`",
            Kind::Vfs => "Polly `vfs`",
            Kind::Loop => "Polly `loop` (64 MiB ext4 image)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Vfs => "vfs",
            Kind::Loop => "loop",
        }
    }

    /// `docker volume create` arguments after `--driver`.
    fn create_args(self, plugin: &str) -> Vec<String> {
        let mut a = vec!["volume".into(), "create".into(), "--driver".into()];
        match self {
            Kind::Local => a.push("local".into()),
            _ => {
                a.push(plugin.into());
                for o in [format!("service={}", self.short()), "size=64m".into()] {
                    a.extend(["--opt".into(), o]);
                }
            }
        }
        a
    }
}

/// Every series of one run, in µs.
#[derive(Default)]
struct Samples {
    /// `docker container ls --quiet` (the floor of a CLI call).
    cli_floor: Vec<u64>,
    create: BTreeMap<Kind, Vec<u64>>,
    rm: BTreeMap<Kind, Vec<u64>>,
    /// `docker run` with no volume (`None`) or a volume of the kind.
    run: BTreeMap<Option<Kind>, Vec<u64>>,
    /// `docker run` on a Polly volume that was still mounted when `docker run` returned.
    still_mounted: BTreeMap<Kind, usize>,
    /// Plugin calls on the socket, by call and kind.
    call: BTreeMap<(Call, Kind), Vec<u64>>,
}

/// The plugin calls timed on the socket, in the order of a round.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Call {
    Create,
    FirstMount,
    SecondMount,
    SecondUnmount,
    LastUnmount,
    Remove,
}

impl Call {
    const ALL: [Call; 6] = [
        Call::Create,
        Call::FirstMount,
        Call::SecondMount,
        Call::SecondUnmount,
        Call::LastUnmount,
        Call::Remove,
    ];

    fn label(self) -> &'static str {
        match self {
            Call::Create => "`VolumeDriver.Create` (size 64m): create at central",
            Call::FirstMount => "first `VolumeDriver.Mount`: attach through central, then mount",
            Call::SecondMount => "second `Mount` of the mounted volume: reference count only",
            Call::SecondUnmount => "`Unmount` of that second user: reference count only",
            Call::LastUnmount => "last `Unmount`: unmount, then detach at central",
            Call::Remove => "`VolumeDriver.Remove`: delete at central",
        }
    }
}

/// Central polly, the node agent serving the plugin, and the Docker daemon. Fields drop in
/// order: Docker first (removing its containers calls the plugin), then the agent (its socket
/// removed), then central, then the temp dir.
struct Cluster {
    docker: Dockerd,
    node: Node,
    _polly: Polly,
    plugin: String,
    _dir: tempfile::TempDir,
}

/// The facts the table states about the run.
struct Setup {
    rounds: usize,
    storage_driver: String,
    docker_version: String,
}

fn us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let docker = Dockerd::start()?;
        let base = load::base_dir();
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("docker-plugin")
            .tempdir_in(&base)
            .unwrap();
        let polly = Polly::start_with(&dir.path().join("data"), Some(SERVICES), None);
        let plugin = plugin_name();
        let dirs = NodeDirs::new(dir.path(), "bench-node", &plugin_socket(&plugin));
        let node = Node::start(&polly.admin, &dirs, &[]);
        docker.image();
        Some(Cluster {
            docker,
            node,
            _polly: polly,
            plugin,
            _dir: dir,
        })
    }

    fn socket(&self) -> &Path {
        &self.node.dirs.socket
    }

    fn mount_root(&self) -> PathBuf {
        self.node.dirs.mount_root.clone()
    }

    /// `docker args…`, which must succeed; its duration.
    fn timed(&self, args: &[&str]) -> u64 {
        let t = Instant::now();
        self.docker.ok(args);
        us(t)
    }

    fn create(&self, kind: Kind, name: &str) -> u64 {
        let mut args = kind.create_args(&self.plugin);
        args.extend(["--name".into(), name.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.timed(&args)
    }

    /// `docker run --rm` of `true`, with `volume` at /m when given.
    fn run(&self, volume: Option<&str>) -> u64 {
        let image = self.docker.image().to_string();
        let mut args = vec!["run", "--rm", "--network", "none"];
        let spec = volume.map(|v| format!("{v}:/m"));
        if let Some(spec) = &spec {
            args.extend(["-v", spec]);
        }
        args.extend([image.as_str(), "true"]);
        self.timed(&args)
    }

    /// One plugin call on the socket, which must succeed; its duration.
    fn call(&self, call: &str, body: serde_json::Value) -> u64 {
        let t = Instant::now();
        let (status, v) = plugin_call(self.socket(), call, &body.to_string());
        let took = us(t);
        assert!(
            status == 200 && v["Err"].as_str().unwrap_or("").is_empty(),
            "{call} {body}: {status} {v}"
        );
        took
    }
}

/// `items` rotated left by `round`: each variant goes first in turn.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    v.rotate_left(round % items.len());
    v
}

fn bench(c: &Cluster, rounds: usize) -> Samples {
    let mut s = Samples::default();
    // The volumes the containers use, and the plugin's own volumes for the socket calls:
    // created once, so the runs measure mount and unmount only.
    for k in Kind::ALL {
        c.create(k, &format!("run-{}", k.short()));
    }
    let root = c.mount_root();
    let started = Instant::now();
    for round in 0..WARMUP + rounds {
        let keep = round >= WARMUP;
        let push = |series: &mut Vec<u64>, v: u64| {
            if keep {
                series.push(v);
            }
        };

        // 1. docker volume create / rm, and the CLI floor.
        let t = Instant::now();
        c.docker.ok(&["container", "ls", "--quiet"]);
        push(&mut s.cli_floor, us(t));
        for k in rotated(&Kind::ALL, round) {
            let took = c.create(k, &format!("c{round}-{}", k.short()));
            push(s.create.entry(k).or_default(), took);
        }

        // 2. docker run: no volume, local, Polly vfs, Polly loop.
        let runs = [None, Some(Kind::Local), Some(Kind::Vfs), Some(Kind::Loop)];
        for k in rotated(&runs, round) {
            let name = k.map(|k| format!("run-{}", k.short()));
            let took = c.run(name.as_deref());
            push(s.run.entry(k).or_default(), took);
            if let Some(k @ (Kind::Vfs | Kind::Loop)) = k {
                if !mounts_under(&root).is_empty() {
                    if keep {
                        *s.still_mounted.entry(k).or_default() += 1;
                    }
                    wait_until("the plugin volume unmounted after docker run", || {
                        mounts_under(&root).is_empty()
                    });
                }
            }
        }

        for k in rotated(&Kind::ALL, round) {
            let name = format!("c{round}-{}", k.short());
            let took = c.timed(&["volume", "rm", &name]);
            push(s.rm.entry(k).or_default(), took);
        }

        // 3. The plugin calls alone, on the socket.
        for k in rotated(&Kind::POLLY, round) {
            let name = format!("s{round}-{}", k.short());
            let ids = [format!("{name}-a"), format!("{name}-b")];
            let bodies = [
                (
                    Call::Create,
                    "VolumeDriver.Create",
                    json!({"Name": name, "Opts": {"service": k.short(), "size": "64m"}}),
                ),
                (
                    Call::FirstMount,
                    "VolumeDriver.Mount",
                    json!({"Name": name, "ID": ids[0]}),
                ),
                (
                    Call::SecondMount,
                    "VolumeDriver.Mount",
                    json!({"Name": name, "ID": ids[1]}),
                ),
                (
                    Call::SecondUnmount,
                    "VolumeDriver.Unmount",
                    json!({"Name": name, "ID": ids[1]}),
                ),
                (
                    Call::LastUnmount,
                    "VolumeDriver.Unmount",
                    json!({"Name": name, "ID": ids[0]}),
                ),
                (Call::Remove, "VolumeDriver.Remove", json!({"Name": name})),
            ];
            for (call, path, body) in bodies {
                let took = c.call(path, body);
                push(s.call.entry((call, k)).or_default(), took);
                let mounted = !mounts_under(&root).is_empty();
                let want = matches!(
                    call,
                    Call::FirstMount | Call::SecondMount | Call::SecondUnmount
                );
                assert_eq!(mounted, want, "mounted after {call:?} of {name}");
            }
        }
        if round == 0 || (round + 1) % 10 == 0 {
            eprintln!(
                "docker_plugin: round {}/{} after {:.0} s",
                round + 1,
                WARMUP + rounds,
                started.elapsed().as_secs_f64()
            );
        }
    }
    for k in Kind::ALL {
        c.docker
            .ok(&["volume", "rm", &format!("run-{}", k.short())]);
    }
    s
}

fn ms(us: f64) -> String {
    let x = us / 1000.0;
    if x.abs() >= 100.0 {
        format!("{x:.0} ms")
    } else if x.abs() >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

/// Median and p90 (nearest rank below) in µs.
fn stats(v: &[u64]) -> (f64, f64) {
    let l = Latencies::from(v.to_vec());
    (l.ms(0.5) * 1000.0, l.ms(0.9) * 1000.0)
}

/// The median of the per-round differences `a[i] - b[i]` and its distribution-free 95%
/// confidence interval (the order statistics of ranks n/2 − 0.98·√n and 1 + n/2 + 0.98·√n),
/// in µs. The two samples of a round are neighbours in time, so drift of the machine's speed
/// cancels out.
fn paired(a: &[u64], b: &[u64]) -> (f64, f64, f64) {
    assert_eq!(a.len(), b.len(), "one sample of each per round");
    let mut d: Vec<i64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x as i64 - y as i64)
        .collect();
    if d.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    d.sort_unstable();
    let n = d.len() as f64;
    let half = 0.98 * n.sqrt();
    // 1-based rank, clamped to the samples.
    let at = |rank: f64| d[rank.clamp(1.0, n) as usize - 1] as f64;
    (
        d[(d.len() - 1) / 2] as f64,
        at((n / 2.0 - half).floor()),
        at((1.0 + n / 2.0 + half).ceil()),
    )
}

/// A paired difference as `median (low – high)`.
fn diff_ms((m, lo, hi): (f64, f64, f64)) -> String {
    format!("{} ({} – {})", ms(m), ms(lo), ms(hi))
}

fn table(s: &Samples, setup: &Setup) -> String {
    let mut t = String::new();
    let w = &mut t;
    writeln!(
        w,
        "A private `dockerd` ({}, storage driver `{}`, its data under /tmp) with the \
         `polly node` plugin (release build) on one `polly serve` with a `vfs` and a `loop` \
         service (their files on the bench disk, the same disk here), all on this machine. \
         {} rounds after {WARMUP} warm-up rounds; each round runs every variant of each step \
         once, the order rotating from round to round. Medians and p90 (nearest rank) in ms; \
         × `local`: the median over `local`'s median in the same run; − columns: the median \
         of the per-round differences (the two runs of a round are neighbours in time), with \
         its 95% confidence interval in brackets.",
        setup.docker_version, setup.storage_driver, setup.rounds
    )
    .unwrap();
    writeln!(w).unwrap();

    let local = |m: &BTreeMap<Kind, Vec<u64>>| stats(&m[&Kind::Local]).0;
    let diff = |m: &BTreeMap<Kind, Vec<u64>>, k: Kind| paired(&m[&k], &m[&Kind::Local]);
    writeln!(
        w,
        "| `docker` command (CLI end to end) | driver | median | p90 | × `local` | − `local` |"
    )
    .unwrap();
    writeln!(w, "|---|---|---:|---:|---:|---:|").unwrap();
    let (f, f90) = stats(&s.cli_floor);
    writeln!(
        w,
        "| `docker container ls --quiet` (floor: the CLI and one API call, no volume driver) | none | {} | {} | | |",
        ms(f),
        ms(f90)
    )
    .unwrap();
    for (what, m) in [
        ("`docker volume create`", &s.create),
        ("`docker volume rm`", &s.rm),
    ] {
        let base = local(m);
        for k in Kind::ALL {
            let (med, p90) = stats(&m[&k]);
            let (ratio, delta) = if k == Kind::Local {
                ("baseline".to_string(), String::new())
            } else {
                (format!("**{:.2}×**", med / base), diff_ms(diff(m, k)))
            };
            writeln!(
                w,
                "| {what} | {} | {} | {} | {ratio} | {delta} |",
                k.label(),
                ms(med),
                ms(p90)
            )
            .unwrap();
        }
    }
    writeln!(w).unwrap();

    let run_local = stats(&s.run[&Some(Kind::Local)]).0;
    let run_diff = |a: Option<Kind>, b: Option<Kind>| paired(&s.run[&a], &s.run[&b]);
    writeln!(
        w,
        "| `docker run --rm --network none [-v VOL:/m] IMAGE true` | median | p90 | × `local` | − no volume | − `local` | still mounted when `docker run` returned |"
    )
    .unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for k in [None, Some(Kind::Local), Some(Kind::Vfs), Some(Kind::Loop)] {
        let (med, p90) = stats(&s.run[&k]);
        let (what, ratio, vs_local, mounted) = match k {
            None => (
                "no volume (floor: the container alone)".to_string(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(Kind::Local) => (
                format!("{} volume", Kind::Local.label()),
                "baseline".to_string(),
                String::new(),
                String::new(),
            ),
            Some(k) => (
                format!("{} volume", k.label()),
                format!("**{:.2}×**", med / run_local),
                diff_ms(run_diff(Some(k), Some(Kind::Local))),
                format!(
                    "{} of {}",
                    s.still_mounted.get(&k).copied().unwrap_or(0),
                    s.run[&Some(k)].len()
                ),
            ),
        };
        let share = if k.is_some() {
            diff_ms(run_diff(k, None))
        } else {
            String::new()
        };
        writeln!(
            w,
            "| {what} | {} | {} | {ratio} | {share} | {vs_local} | {mounted} |",
            ms(med),
            ms(p90)
        )
        .unwrap();
    }
    writeln!(w).unwrap();

    writeln!(
        w,
        "The plugin calls alone, straight on the plugin socket (one HTTP/1.1 request per \
         connection, as the harness's `plugin_call` sends them); `local` has no socket, so \
         these are the breakdown of Polly's share above, not a comparison:"
    )
    .unwrap();
    writeln!(w).unwrap();
    writeln!(
        w,
        "| plugin call | `vfs`: median | `vfs`: p90 | `loop`: median | `loop`: p90 |"
    )
    .unwrap();
    writeln!(w, "|---|---:|---:|---:|---:|").unwrap();
    let med = |call: Call, k: Kind| stats(&s.call[&(call, k)]).0;
    for call in Call::ALL {
        let (v, v90) = stats(&s.call[&(call, Kind::Vfs)]);
        let (l, l90) = stats(&s.call[&(call, Kind::Loop)]);
        writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            call.label(),
            ms(v),
            ms(v90),
            ms(l),
            ms(l90)
        )
        .unwrap();
    }
    writeln!(w).unwrap();

    let none = stats(&s.run[&None]).0;
    let mut derived = Vec::new();
    for k in Kind::POLLY {
        let extra = run_diff(Some(k), Some(Kind::Local)).0;
        let pair = med(Call::FirstMount, k) + med(Call::LastUnmount, k);
        derived.push(format!(
            "a `{}` volume costs **{}** more than a `local` one ({:.1}% of the container \
             alone), where its first `Mount` + last `Unmount` on the socket take {}",
            k.short(),
            ms(extra),
            100.0 * extra / none,
            ms(pair)
        ));
    }
    let c = |m: &BTreeMap<Kind, Vec<u64>>, k: Kind| stats(&m[&k]).0;
    writeln!(
        w,
        "In this run, per `docker run` (medians of the per-round differences): {}. A `local` \
         volume adds {} to the container alone ({} median). `docker volume create` with the \
         plugin takes {:.2}× (`vfs`) and {:.2}× (`loop`) the `local` driver's, where \
         `VolumeDriver.Create` itself takes {} and {}.",
        derived.join("; "),
        ms(run_diff(Some(Kind::Local), None).0),
        ms(none),
        c(&s.create, Kind::Vfs) / c(&s.create, Kind::Local),
        c(&s.create, Kind::Loop) / c(&s.create, Kind::Local),
        ms(med(Call::Create, Kind::Vfs)),
        ms(med(Call::Create, Kind::Loop)),
    )
    .unwrap();
    t
}

/// Made-up samples, for rendering the table under `cargo test`.
fn smoke_samples() -> Samples {
    let series = |base: u64| (0..5).map(|i| base + i * 100).collect::<Vec<u64>>();
    let mut s = Samples {
        cli_floor: series(40_000),
        ..Default::default()
    };
    for (i, k) in Kind::ALL.into_iter().enumerate() {
        let i = i as u64;
        s.create.insert(k, series(50_000 + 20_000 * i));
        s.rm.insert(k, series(45_000 + 10_000 * i));
        s.run.insert(Some(k), series(400_000 + 30_000 * i));
    }
    s.run.insert(None, series(380_000));
    for call in Call::ALL {
        for k in Kind::POLLY {
            s.call.insert((call, k), series(2_000));
        }
    }
    s
}

fn main() {
    if !load::full_run() {
        // Under `cargo test --all-targets`: no Docker, no processes; only the table.
        let t = table(
            &smoke_samples(),
            &Setup {
                rounds: 5,
                storage_driver: "overlay2".into(),
                docker_version: "Docker (smoke)".into(),
            },
        );
        assert!(
            t.contains("| `docker volume create` | Polly `vfs` |"),
            "{t}"
        );
        println!("docker_plugin: smoke only (the benchmark runs under `cargo bench --bench docker_plugin`)");
        return;
    }
    let rounds = std::env::var("POLLY_DOCKER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(100);
    let Some(c) = Cluster::start() else {
        // Dockerd::start said why, loudly; scripts/bench.sh leaves the block as it is.
        return;
    };
    let setup = Setup {
        rounds,
        storage_driver: c.docker.storage_driver().to_string(),
        docker_version: format!(
            "Docker {}",
            c.docker
                .ok(&["version", "--format", "{{.Server.Version}}"])
                .trim()
        ),
    };
    let started = Instant::now();
    let s = bench(&c, rounds);
    eprintln!(
        "docker_plugin: {} rounds in {:.0} s",
        WARMUP + rounds,
        started.elapsed().as_secs_f64()
    );
    drop(c);
    let t = table(&s, &setup);
    println!("{t}");
    load::write_table("docker_plugin", &t);
}
