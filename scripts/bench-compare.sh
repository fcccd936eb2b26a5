#!/usr/bin/env bash
set -euo pipefail
# Same-run comparison of two commits on the benchmarks a change must not slow down:
# `scripts/bench-compare.sh BASE` builds BASE (in a scratch copy of its tree, its own target
# directory) and the working tree, then runs the `ops` (criterion), `facade` and `offer_ops`
# benchmarks of each, alternating BASE and the working tree for POLLY_COMPARE_ROUNDS rounds
# (default 2) so that both see the same machine, and prints one markdown table: each figure's
# median over the rounds for BASE and for the working tree, and their ratio. It also writes
# the table to <target>/polly-compare/compare.md. POLLY_COMPARE_PARTS picks the parts
# (default "ops facade offer_ops"). Honours CARGO_TARGET_DIR.

# One compound command, read in full before it runs (the script may change under a run).
{
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-compare.sh BASE-COMMIT}
base_rev=$(git rev-parse --short "$base^{commit}")
head_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches Cargo.toml Cargo.lock || echo +changes)"
parts=${POLLY_COMPARE_PARTS:-ops facade offer_ops}
rounds=${POLLY_COMPARE_ROUNDS:-2}

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
work="$target_dir/polly-compare"
base_src="$work/base-src"
base_target="$work/base-target"
rm -rf "$work/runs"
# The base tree is extracted again only when it is another commit (a kept tree keeps its
# mtimes, so cargo reuses its build).
if [[ "$(cat "$base_src/.polly-compare-rev" 2>/dev/null || true)" != "$base_rev" ]]; then
    rm -rf "$base_src"
    mkdir -p "$base_src"
    git archive "$base" | tar -x -C "$base_src"
    echo "$base_rev" >"$base_src/.polly-compare-rev"
fi
mkdir -p "$base_target" "$work/runs"

bench_args=()
for p in $parts; do bench_args+=(--bench "$p"); done
echo "building the benchmarks of $base_rev and of the working tree ($head_rev)"
(cd "$base_src" && CARGO_TARGET_DIR="$base_target" cargo bench --locked --no-run "${bench_args[@]}")
CARGO_TARGET_DIR="$target_dir" cargo bench --locked --no-run "${bench_args[@]}"

# run SIDE SRC TARGET ROUND: every part once on one side, its outputs kept per round.
run() {
    local side=$1 src=$2 tgt=$3 round=$4 out="$work/runs/$1/$4"
    mkdir -p "$out"
    for p in $parts; do
        echo "round $round: $p on $side"
        rm -rf "$tgt/criterion"
        (cd "$src" && CARGO_TARGET_DIR="$tgt" cargo bench --locked --bench "$p" >"$out/$p.log" 2>&1) || {
            tail -30 "$out/$p.log" >&2
            exit 1
        }
        case $p in
        ops) cp -r "$tgt/criterion" "$out/criterion" ;;
        *) cp "$tgt/polly-bench/$p.md" "$out/$p.md" ;;
        esac
    done
}
for round in $(seq 1 "$rounds"); do
    run base "$base_src" "$base_target" "$round"
    run head "$PWD" "$target_dir" "$round"
done

python3 - "$work/runs" "$base_rev" "$head_rev" "$parts" "$rounds" >"$work/compare.md" <<'PY'
import json, os, re, statistics, sys

runs, base_rev, head_rev, parts, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), int(sys.argv[5])


def criterion(d):
    """{bench id: median ns} from one criterion directory."""
    out = {}
    for dirpath, _, files in os.walk(d):
        if os.path.basename(dirpath) == "new" and "estimates.json" in files:
            bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
            out[bench["title"]] = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]["point_estimate"] / 1e6
    return out


NUM = re.compile(r"^\*{0,2}([0-9][0-9,]*(?:\.[0-9]+)?)\s*(ms|µs|s|/s)?\*{0,2}$")
# The columns compared, by header: latencies (lower is better) and throughputs (higher).
LATENCY = {"median", "median create"}
THROUGHPUT = {"requests/s", "volumes/s"}


def tables(path):
    """{(row label, column): (value, unit)} for the compared columns of every table."""
    out, header = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(line) <= set("|-: "):
            continue
        label = " / ".join(c for c, h in zip(cells, header) if h in ("what", "operation", "clients", "driver latency per call"))
        for c, h in zip(cells, header):
            m = NUM.match(c)
            if h in LATENCY | THROUGHPUT and m:
                out[(label, h)] = float(m.group(1).replace(",", ""))
    return out


def side(name, part):
    vals = {}
    for r in range(1, rounds + 1):
        d = os.path.join(runs, name, str(r))
        got = criterion(os.path.join(d, "criterion")) if part == "ops" else tables(os.path.join(d, f"{part}.md"))
        for k, v in got.items():
            vals.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in vals.items()}


print(f"Same-run comparison: `{base_rev}` (base) against `{head_rev}` (this tree), "
      f"{rounds} alternating rounds of `cargo bench` for {', '.join(f'`{p}`' for p in parts)}; "
      f"each figure is the median over the rounds. Ratio = this tree / base: above 1 is slower "
      f"for a latency, faster for a throughput.")
print()
print("| part | figure | base | this tree | ratio | better is |")
print("|---|---|---:|---:|---:|---|")
summary = []
for part in parts:
    b, h = side("base", part), side("head", part)
    ratios = []
    for key in sorted(set(b) & set(h), key=str):
        if part == "ops":
            fig, unit, better = f"`{key}`", "ms", "lower"
        else:
            fig = f"{key[0]}: {key[1]}"
            better = "lower" if key[1] in LATENCY else "higher"
            unit = "ms" if better == "lower" else "/s"
        if b[key] == 0:
            continue
        ratio = h[key] / b[key]
        # Slowdown factor whatever the direction: > 1 means this tree is slower.
        ratios.append(ratio if better == "lower" else 1 / ratio)
        print(f"| {part} | {fig} | {b[key]:,.3f} {unit} | {h[key]:,.3f} {unit} | {ratio:.2f}× | {better} |")
    if ratios:
        summary.append((part, statistics.median(ratios), min(ratios), max(ratios), len(ratios)))
print()
for part, med, lo, hi, n in summary:
    print(f"- `{part}`: median slowdown factor of this tree over base **{med:.2f}×** over {n} figures "
          f"(range {lo:.2f}× – {hi:.2f}×; 1.00× = same speed, below 1 = faster).")
PY
cat "$work/compare.md"
echo "wrote $work/compare.md"
exit 0
}
