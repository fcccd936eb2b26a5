//! Replays every committed fuzz input (`fuzz/corpus/<target>/` seeds and
//! `fuzz/regressions/<target>/` crash reproducers) through the same `polly::fuzzing` entry
//! points the cargo fuzz targets call, on the stable toolchain, so a fixed crash stays fixed
//! in the ordinary test run.

use std::fs;
use std::path::{Path, PathBuf};

use polly::fuzzing::{target, TARGETS};
use prost::Message;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files directly under `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Sub-directories of `dir` must all be target names: a typo would silently replay nothing.
fn assert_only_targets(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.expect("read dir entry").path();
        if p.is_dir() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                target(&name).is_some(),
                "{} is not a fuzz target",
                p.display()
            );
        }
    }
}

fn replay(kind: &str) -> usize {
    let root = fuzz_dir().join(kind);
    assert_only_targets(&root);
    let mut n = 0;
    for (name, run) in TARGETS {
        for f in files(&root.join(name)) {
            let data = fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{} fails target {name}", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_seed_passes_its_target() {
    for (name, _) in TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name} has no seeds"
        );
    }
    assert!(replay("corpus") >= TARGETS.len());
}

#[test]
fn every_crash_regression_passes_its_target() {
    replay("regressions");
}

/// The fuzz crate has one target per entry point, each a one-liner calling it.
#[test]
fn fuzz_crate_has_one_target_per_entry_point() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let src = fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(
            src.contains(&format!("polly::fuzzing::{name}(data)")),
            "{name}"
        );
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
    }
}

/// The protobuf call seeds are the JSON call seeds encoded (`<name>.pb`), so both decoders
/// start from the same calls. `POLLY_FUZZ_WRITE_SEEDS=1` rewrites them.
#[test]
fn protobuf_call_seeds_match_the_json_ones() {
    let write = std::env::var_os("POLLY_FUZZ_WRITE_SEEDS").is_some();
    let pb_dir = fuzz_dir().join("corpus/mesos_call_protobuf");
    let mut decoded = 0;
    for f in files(&fuzz_dir().join("corpus/mesos_call_json")) {
        let text = fs::read(&f).unwrap();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let Ok(call) = polly::mesos::json::from_value::<polly::mesos::v1::scheduler::Call>(&v)
        else {
            continue;
        };
        decoded += 1;
        let pb = pb_dir.join(f.file_stem().unwrap()).with_extension("pb");
        let bytes = call.encode_to_vec();
        if write {
            fs::create_dir_all(&pb_dir).unwrap();
            fs::write(&pb, &bytes).unwrap();
        }
        assert_eq!(
            fs::read(&pb).ok(),
            Some(bytes),
            "{} is not the encoding of {}",
            pb.display(),
            f.display()
        );
    }
    // Every call type has a JSON seed that decodes (pymesos' acknowledgement shape is the
    // endpoint's rewrite, not plain Mesos JSON, and UNKNOWN decodes too).
    assert!(decoded >= 17, "only {decoded} JSON call seeds decode");
}
