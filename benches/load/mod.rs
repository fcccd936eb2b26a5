//! What the load benchmarks (`facade`, `offer_ops`, `soak`) share: whether this is the full
//! run or the smoke under `cargo test`, where their files and tables go, and latency
//! summaries. Each bench includes it with `mod load;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs the same binary without it,
/// and the benchmarks then run a seconds-long smoke version so their code stays working.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Where benchmark files (stores, `vfs` roots) go: `POLLY_BENCH_DIR`, default cargo's
/// `CARGO_TARGET_TMPDIR`. Not a tmpfs: fsync is free there.
pub fn base_dir() -> PathBuf {
    std::env::var_os("POLLY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// `<target>/polly-bench`, where each benchmark leaves its markdown table for
/// `scripts/bench.sh`.
pub fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("polly-bench")
}

/// Write `table` to `<target>/polly-bench/<name>.md`.
pub fn write_table(name: &str, table: &str) {
    let out = out_dir();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{name}.md")), table).unwrap();
}

/// Latencies in µs → (median, p99) in ms.
pub fn summary(us: Vec<u64>) -> (f64, f64) {
    let l = Latencies::from(us);
    (l.ms(0.5), l.ms(0.99))
}

/// Sorted latency samples in µs.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl From<Vec<u64>> for Latencies {
    fn from(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        Latencies(us)
    }
}

impl Latencies {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (nearest rank below) in ms; 0 without samples.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0[((self.0.len() - 1) as f64 * q) as usize] as f64 / 1000.0
    }

    /// The largest sample in ms.
    pub fn max_ms(&self) -> f64 {
        self.0.last().copied().unwrap_or(0) as f64 / 1000.0
    }
}
