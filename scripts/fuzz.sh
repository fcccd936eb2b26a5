#!/usr/bin/env bash
# Coverage-guided fuzzing of Polly's parsers with cargo fuzz (libFuzzer), on the stable
# toolchain (see scripts/README.md for why that works).
#
#   scripts/fuzz.sh smoke              every target for a few seconds (CI): POLLY_FUZZ_SMOKE_RUNS
#                                      (default 20000) inputs from a fixed seed, at most 30 s, on
#                                      an unoptimized build (`cargo fuzz --dev`: minutes less to
#                                      build, fewer exec/s; POLLY_FUZZ_RELEASE=1 optimizes)
#   scripts/fuzz.sh run SECS [TARGET…] every (or the named) target for SECS seconds
#   scripts/fuzz.sh build              build the targets only
#   scripts/fuzz.sh list               print the target names
#
# Seeds are read from fuzz/corpus/<target> (committed); what libFuzzer adds goes to
# fuzz/corpus-work/<target> and crashes to fuzz/artifacts/<target> (both ignored by git). A
# crash reproducer, once fixed, belongs in fuzz/regressions/<target>/ (tests/fuzz_corpus.rs
# replays it in the ordinary test run). Prints per target: executions, exec/s, new coverage
# (units added, final edge coverage), corpus size and crashes; exits 1 if any target crashed.
#
# Environment: POLLY_FUZZ_TARGET_DIR (cargo target dir of the fuzz crate; default
# CARGO_TARGET_DIR, else fuzz/target), POLLY_FUZZ_SANITIZER (none by default; `address`
# turns on ASan, which needs RUSTC_BOOTSTRAP=1 on stable and is set here), POLLY_FUZZ_ARGS
# (extra libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_fuzz_version=0.13.2
sanitizer="${POLLY_FUZZ_SANITIZER:-none}"
# Extra cargo fuzz flags: `--dev` for the smoke (set below).
profile=()
if [ -n "${POLLY_FUZZ_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$POLLY_FUZZ_TARGET_DIR"
fi
# Only the stable toolchain is assumed; with rustup, pin it so a nightly default is not used.
if command -v rustup >/dev/null 2>&1; then
  export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"
fi
if [ "$sanitizer" != none ]; then
  # -Zsanitizer is an unstable flag; the stable compiler accepts it with RUSTC_BOOTSTRAP.
  export RUSTC_BOOTSTRAP=1
fi

targets() {
  sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^polly-fuzz$'
}

ensure_cargo_fuzz() {
  if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
  fi
}

build() {
  ensure_cargo_fuzz
  cargo fuzz build "${profile[@]}" --sanitizer "$sanitizer"
}

# One target with the libFuzzer limits in $limits; appends a summary row to $summary.
run_one() {
  local target=$1 log rc=0
  mkdir -p "fuzz/corpus-work/$target" "fuzz/artifacts/$target" "fuzz/corpus/$target"
  log=$(mktemp)
  # shellcheck disable=SC2086 # POLLY_FUZZ_ARGS is a list of flags
  cargo fuzz run "${profile[@]}" --sanitizer "$sanitizer" "$target" \
    "fuzz/corpus-work/$target" "fuzz/corpus/$target" -- \
    "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" ${POLLY_FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  local execs eps added cov corpus crashes
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "fuzz/corpus-work/$target" "fuzz/corpus/$target" -type f | wc -l)
  crashes=$(grep -c 'Test unit written to' "$log" || true)
  if [ "$rc" -ne 0 ]; then
    echo "--- $target failed (exit $rc); last lines of its log:" >&2
    # The panic (or libFuzzer's report) and the reproducer, without cargo-fuzz's backtrace.
    grep -m1 -A12 -E "panicked at|ERROR: libFuzzer|==ERROR" "$log" >&2 || true
    grep -A2 "^Failing input:" "$log" >&2 || tail -20 "$log" >&2
    [ "$crashes" -gt 0 ] || crashes="error"
    failed=1
  fi
  printf '%-22s %12s %9s %9s %7s %8s %8s\n' "$target" "${execs:-?}" "${eps:-?}" \
    "${added:-?}" "${cov:-?}" "$corpus" "$crashes" >>"$summary"
  rm -f "$log"
}

# run_all TARGET… (all when none), with the libFuzzer limits in $limits.
run_all() {
  local list=("$@")
  [ ${#list[@]} -gt 0 ] || mapfile -t list < <(targets)
  build
  summary=$(mktemp)
  failed=0
  for t in "${list[@]}"; do
    echo "fuzzing $t (${limits[*]})" >&2
    run_one "$t"
  done
  printf '%-22s %12s %9s %9s %7s %8s %8s\n' target executions exec/s new_units edges corpus crashes
  cat "$summary"
  rm -f "$summary"
  return "$failed"
}

case "${1:-}" in
  smoke)
    # A fixed seed and input count: the same inputs on every CI run, so it is not flaky.
    limits=(-seed=1 -runs="${POLLY_FUZZ_SMOKE_RUNS:-20000}" -max_total_time=30)
    # The smoke checks that every target builds and survives its seeds and a fixed set of
    # mutations; the optimized build (11 min here, 90% of it one codegen unit at opt-level 3)
    # is for long runs.
    [ -n "${POLLY_FUZZ_RELEASE:-}" ] || profile=(--dev)
    run_all
    ;;
  run)
    [ $# -ge 2 ] || { echo "usage: $0 run SECS [TARGET...]" >&2; exit 2; }
    limits=(-max_total_time="$2")
    shift 2
    run_all "$@"
    ;;
  build) build ;;
  list) targets ;;
  *)
    echo "usage: $0 smoke | run SECS [TARGET...] | build | list" >&2
    exit 2
    ;;
esac
