#!/usr/bin/env bash
set -euo pipefail
# Runs the benchmarks and rewrites their blocks of BENCHMARKS.md: `cargo bench --bench ops`
# (between the bench:begin / bench:end markers, from criterion's estimates: medians, the
# baselines measured in the same run, the ratios, and the machine), then the façade load
# benchmark `cargo bench --bench facade` (between the facade markers).
# Then the Mesos decoding and offer round benchmarks (criterion markers) and the disk offer /
# provisioning load benchmark `cargo bench --bench offer_ops` (offer-ops markers).
# Extra arguments go to criterion for `ops`, e.g. `scripts/bench.sh cycle/`.
# Then `cargo bench --bench restart`: restart to serving with 100k volumes (restart markers) and
# the memory of a server with 100k volumes and 10k agents (rss markers).
# Then the soak: 1,000 REX-Ray clients and 100 frameworks on one server (soak markers).
# Then the etcd parts (cargo feature `etcd`; they need `protoc` to build and an etcd binary to
# run, and are skipped with a message, their blocks left as they are, when either is
# missing): `cargo bench --features etcd --bench failover`, kill -9 of the leader of three
# HA instances → new leader, first ACCEPT answered 202 and its OPERATION_FINISHED, 20 runs
# (failover markers); and `--bench etcd_ops` + `--bench store_backends`, libStorage and
# store operations on the etcd store beside sled in the same run (etcd markers).
# Then `cargo bench --bench docker_plugin`: `docker volume create`/`rm` and Mount + Unmount
# (`docker run -v`) through Polly's Docker volume plugin beside Docker's `local` driver in the
# same run, with the plugin calls alone on its socket (docker markers); it needs root, dockerd
# and a static busybox, and is skipped with a message, its block left as it is, without them.
# Then `cargo bench --bench csi`: CSI `CreateVolume` and `ControllerPublishVolume` beside the
# libStorage façade's create and attach on one real `polly serve`, at 1 and 64 clients, same
# run (csi markers; `POLLY_CSI_OPS` calls per cell at 64 clients, default 2,000).
# POLLY_BENCH_ONLY="offer_ops facade" runs only the named parts (ops, facade, criterion,
# offer_ops, ebs, restart, rss, soak, failover, etcd, docker, csi) and rewrites only their
# blocks.

# The whole script is one compound command, read in full before it runs: editing this file
# during a run (a full run takes many minutes) cannot change what the run executes.
{
cd "$(dirname "$0")/.."

only=" ${POLLY_BENCH_ONLY:-ops facade criterion offer_ops ebs restart rss soak failover etcd docker csi} "
want() { [[ "$only" == *" $1 "* ]]; }

# cargo metadata honours CARGO_TARGET_DIR and build.target-dir.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

# write_block MARKER HEADING FILE: the content of FILE replaces the MARKER block of
# BENCHMARKS.md (appended under `## HEADING` when the markers are missing).
write_block() {
    python3 scripts/bench_block.py BENCHMARKS.md "$1" "$2" "$3"
}

# part_header PART COMMAND [NOTE]: the first line of a block: when, at which commit, how to
# reproduce it, the machine, and how busy it was when the part ended.
part_header() {
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ) at commit \`$(git rev-parse --short HEAD 2>/dev/null || echo unknown)\`\
 with \`POLLY_BENCH_ONLY=$1 scripts/bench.sh\` (\`$2\`${3:-}):\
 $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)),\
 $(free -g | awk '/^Mem:/ { print $2 }') GiB memory, Linux $(uname -r), files on\
 $(df -T "${POLLY_BENCH_DIR:-$target_dir}" 2>/dev/null | awk 'NR == 2 { print $2 }' || true),\
 load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
}

# etcd_missing: why the etcd parts cannot run here (nothing when they can). The etcd-client
# crate needs protoc to build; the benchmarks start etcd (`POLLY_TEST_ETCD`, else `etcd`).
etcd_missing() {
    if [[ -z "${PROTOC:-}" ]] && ! command -v protoc >/dev/null 2>&1; then
        echo "protoc not installed (apt-get install protobuf-compiler, or set PROTOC)"
    elif [[ -z "${POLLY_TEST_ETCD:-}" ]] && ! command -v etcd >/dev/null 2>&1 &&
        [[ ! -x /usr/bin/etcd ]]; then
        echo "etcd not installed (apt-get install etcd-server, or set POLLY_TEST_ETCD)"
    fi
}

# docker_missing: why the docker part cannot run here (nothing when it can): it starts a
# private dockerd (tests/harness/docker.rs) and mounts volumes.
docker_missing() {
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "not root (it runs its own dockerd and mounts volumes)"
    elif ! command -v dockerd >/dev/null 2>&1 && [[ ! -x /usr/sbin/dockerd ]]; then
        echo "dockerd not installed (apt-get install docker.io)"
    elif [[ ! -x /bin/busybox ]]; then
        echo "no /bin/busybox for the container image (apt-get install busybox-static)"
    fi
}

mkdir -p "$target_dir/polly-bench"

if want ops; then
cargo bench --bench ops -- "$@"

BENCH_CRITERION_DIR="$target_dir/criterion"
BENCH_CORES=$(nproc)
BENCH_MEMORY_GIB=$(free -g | awk '/^Mem:/ { print $2 }')
BENCH_KERNEL=$(uname -r)
BENCH_CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
BENCH_FS=$(df -T "${POLLY_BENCH_DIR:-$target_dir}" 2>/dev/null | awk 'NR == 2 { print $2 }' || true)
BENCH_DATE=$(date -u +%Y-%m-%dT%H:%MZ)
BENCH_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export BENCH_CRITERION_DIR BENCH_CORES BENCH_MEMORY_GIB BENCH_KERNEL BENCH_CPU BENCH_FS \
    BENCH_DATE BENCH_COMMIT

python3 - >"$target_dir/polly-bench/ops.md" <<'PY'
import json, os, sys

root = os.environ["BENCH_CRITERION_DIR"]


def median(bench):
    """Median and its 95% confidence interval, in ns, or None if the bench did not run."""
    f = os.path.join(root, bench, "new", "estimates.json")
    if not os.path.exists(f):
        return None
    m = json.load(open(f))["median"]
    ci = m["confidence_interval"]
    return m["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def t(ns):
    if ns is None:
        return "n/a"
    if abs(ns) >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if abs(ns) >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def per_s(ns):
    return f"{1e9 / ns:,.0f}/s"


names = {
    "cycle/polly_vfs": "create + attach + detach + delete through Polly, `vfs` driver",
    "cycle/driver_only_vfs": "baseline: the same four calls on the bare `vfs` driver",
    "cycle/polly_vfs_overhead": "Polly's share of a `vfs` cycle, timed per iteration (total minus driver time)",
    "cycle/polly_noop": "the cycle through Polly on a driver that does nothing",
    "op/create_noop": "one create through Polly, no-op driver (timed alone within cycles)",
    "op/attach_noop": "one attach through Polly, no-op driver",
    "op/detach_noop": "one detach through Polly, no-op driver",
    "op/delete_noop": "one delete through Polly, no-op driver",
    "op/create_vfs_overhead": "one create through Polly on `vfs`, minus its driver time",
    "op/attach_vfs_overhead": "one attach on `vfs`, minus its driver time",
    "op/detach_vfs_overhead": "one detach on `vfs`, minus its driver time",
    "op/delete_vfs_overhead": "one delete on `vfs`, minus its driver time",
    "store/apply_flush": "one durable store write (`Store::apply`, one `PutVolume`, flushed)",
    "disk/raw_fsync": "baseline: append 200 bytes + `fdatasync` on the same disk",
    "disk/raw_sync_file_range": "append 200 bytes + `sync_file_range` (what sled's flush issues)",
}
m = {k: median(k) for k in names}

lines = []
lines.append(f"Run {os.environ['BENCH_DATE']} at commit `{os.environ['BENCH_COMMIT']}`: "
             f"{os.environ['BENCH_CORES']} cores ({os.environ['BENCH_CPU'] or 'unknown cpu'}), "
             f"{os.environ['BENCH_MEMORY_GIB']} GiB memory, Linux {os.environ['BENCH_KERNEL']}, "
             f"files on {os.environ['BENCH_FS'] or 'unknown'}.")
lines.append("")
lines.append("| benchmark | what it measures | median | 95% CI of the median |")
lines.append("|---|---|---:|---|")
for k, what in names.items():
    if m[k] is None:
        continue
    p, lo, hi = m[k]
    lines.append(f"| `{k}` | {what} | {t(p)} | {t(lo)} – {t(hi)} |")
lines.append("")

target_ns = 1e6
lines.append("Derived figures (each against its baseline from this run):")
lines.append("")
if m["cycle/polly_vfs"] and m["cycle/driver_only_vfs"]:
    pv, dv = m["cycle/polly_vfs"][0], m["cycle/driver_only_vfs"][0]
    spread = (m["cycle/polly_vfs"][2] - m["cycle/polly_vfs"][1]
              + m["cycle/driver_only_vfs"][2] - m["cycle/driver_only_vfs"][1]) / 2
    lines.append(f"- Polly overhead per `vfs` cycle, by subtraction (median `polly_vfs` − median "
                 f"`driver_only_vfs`): **{t(pv - dv)}** (± about {t(spread)} from the two "
                 f"confidence intervals); `polly_vfs` / `driver_only_vfs` = **{pv / dv:.3f}×**.")
if m["cycle/polly_vfs_overhead"]:
    o = m["cycle/polly_vfs_overhead"][0]
    verdict = "meets" if o <= target_ns else "misses"
    line = (f"- Polly overhead per `vfs` cycle, timed per iteration: **{t(o)}** median; "
            f"this {verdict} the ≤ 1 ms target ({o / target_ns:.2f}× the target)")
    if m["cycle/driver_only_vfs"]:
        line += f", and is {o / m['cycle/driver_only_vfs'][0]:.1%} of the bare driver's cycle"
    lines.append(line + ".")
if m["cycle/polly_noop"]:
    n = m["cycle/polly_noop"][0]
    verdict = "meets" if n <= target_ns else "misses"
    line = (f"- Polly alone (no-op driver): **{t(n)}** per cycle; {verdict} the ≤ 1 ms target "
            f"({n / target_ns:.2f}× the target)")
    if m["store/apply_flush"]:
        s = m["store/apply_flush"][0]
        line += (f". A cycle commits 8 durable batches (intent, then outcome, for each of the "
                 f"four operations): 8 × `apply_flush` = {t(8 * s)}, "
                 f"{8 * s / n:.0%} of the cycle")
    if m["disk/raw_fsync"]:
        line += (f"; no design that acknowledges each write durably goes below "
                 f"8 × `raw_fsync` = {t(8 * m['disk/raw_fsync'][0])} on this disk")
    lines.append(line + ".")
ops = ["create", "attach", "detach", "delete"]
per_op = [(o, m[f"op/{o}_noop"], m[f"op/{o}_vfs_overhead"]) for o in ops]
if all(n and v for _, n, v in per_op):
    worst = max(max(n[0], v[0]) for _, n, v in per_op)
    verdict = "meets" if worst <= target_ns else "misses"
    parts = ", ".join(f"{o} {t(n[0])} ({t(v[0])} on `vfs`)" for o, n, v in per_op)
    line = (f"- Polly's own overhead per operation (no-op driver; on `vfs` minus driver time): "
            f"{parts}. The slowest, **{t(worst)}**, {verdict} the ≤ 1 ms per operation target "
            f"({worst / target_ns:.2f}× the target)")
    if m["store/apply_flush"] and m["disk/raw_fsync"]:
        s, f = m["store/apply_flush"][0], m["disk/raw_fsync"][0]
        line += (f". Each operation commits 2 durable batches (its intent before the driver "
                 f"call, its outcome before the answer): 2 × `apply_flush` = {t(2 * s)}, and "
                 f"the disk's floor for two acknowledged writes is 2 × `raw_fsync` = {t(2 * f)}")
    lines.append(line + ".")
if m["store/apply_flush"] and m["disk/raw_fsync"]:
    s, f = m["store/apply_flush"][0], m["disk/raw_fsync"][0]
    lines.append(f"- Durable store writes: **{per_s(s)}** vs raw fsyncs of the same disk: "
                 f"**{per_s(f)}**; ratio store / raw fsync = **{f / s:.2f}×**.")
if m["store/apply_flush"] and m["disk/raw_sync_file_range"]:
    s, r = m["store/apply_flush"][0], m["disk/raw_sync_file_range"][0]
    lines.append(f"- Durable store writes vs raw `sync_file_range` calls: {per_s(s)} vs "
                 f"{per_s(r)}; ratio = {r / s:.2f}×.")
lines.append("")

print("\n".join(lines))
PY
write_block bench "Results" "$target_dir/polly-bench/ops.md"
cat "$target_dir/polly-bench/ops.md"
echo "wrote the results into BENCHMARKS.md"
fi

if want facade; then
# The façade load benchmark (its own harness: concurrent clients, not criterion) writes a
# markdown table; put it between the facade markers.
CARGO_TARGET_DIR="$target_dir" cargo bench --bench facade
write_block facade "libStorage façade under load" "$target_dir/polly-bench/facade.md"
echo "wrote the façade results into BENCHMARKS.md"
fi

if want criterion; then
# Mesos decoding and offer rounds (criterion): medians, throughput, and ratios against the
# baselines in the same run (untyped JSON parse for decoding; the smallest round for rounds).
cargo bench --bench mesos_decode --bench offers
python3 - "$target_dir/criterion" >"$target_dir/polly-bench/criterion.md" <<'PY'
import json, os, sys
root = sys.argv[1]

def entries(group):
    out = []
    gdir = os.path.join(root, group)
    for dirpath, _, files in os.walk(gdir):
        if os.path.basename(dirpath) == "new" and "estimates.json" in files:
            est = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]
            bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
            out.append((bench["title"], est["point_estimate"],
                        est["confidence_interval"]["lower_bound"],
                        est["confidence_interval"]["upper_bound"], bench.get("throughput")))
    return sorted(out)

def t(ns):
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.1f} µs"

lines = ["| benchmark | median | 95% CI | throughput |", "|---|---:|---|---:|"]
dec = entries("mesos_decode")
for title, p, lo, hi, tp in dec:
    thr = ""
    if tp and "Bytes" in tp:
        thr = f"{tp['Bytes'] / (p / 1e9) / 2**20:,.1f} MiB/s, {1e9 / p:,.0f} events/s"
    lines.append(f"| `{title}` | {t(p)} | {t(lo)} – {t(hi)} | {thr} |")
base = {x[0]: x[1] for x in dec}.get("mesos_decode/baseline_json_value_parse")
if base:
    lines.append("")
    for title, p, *_ in dec:
        if not title.endswith("baseline_json_value_parse"):
            lines.append(f"- `{title}` takes {p / base:.2f}× the untyped JSON parse of the same event.")
rounds = entries("offer_round")
lines.append("")
lines.append("| offer round | median | 95% CI |")
lines.append("|---|---:|---|")
for title, p, lo, hi, _ in rounds:
    lines.append(f"| `{title}` | {t(p)} | {t(lo)} – {t(hi)} |")
if rounds:
    small = min(rounds, key=lambda r: r[1])
    lines.append("")
    for title, p, *_ in rounds:
        lines.append(f"- `{title}`: {p / small[1]:.1f}× the smallest round (`{small[0]}`).")
    # How a round grows: empty rounds by agents (rows) and frameworks (columns).
    grid = {}
    for title, p, *_ in rounds:
        parts = title.split("/")
        if len(parts) == 3 and parts[1] == "empty":
            f = parts[2].split("_")
            grid[(int(f[0]), int(f[2]))] = p
    agents = sorted({a for a, _ in grid})
    fws = sorted({f for _, f in grid})
    if grid:
        lines.append("")
        lines.append("Empty round by size (100 pools), and its growth: ×10 agents is the ratio to "
                     "the row above, ×10 frameworks the ratio to the column on the left.")
        lines.append("")
        lines.append("| agents | " + " | ".join(f"{f:,} frameworks" for f in fws) + " | "
                     + " | ".join(f"×10 agents ({f:,} fw)" for f in fws) + " | ×10 frameworks |")
        lines.append("|---:|" + "---:|" * (2 * len(fws) + 1))
        for i, a in enumerate(agents):
            cells = [t(grid[(a, f)]) if (a, f) in grid else "" for f in fws]
            up = []
            for f in fws:
                prev = agents[i - 1] if i else None
                if prev and (a, f) in grid and (prev, f) in grid and a == 10 * prev:
                    up.append(f"{grid[(a, f)] / grid[(prev, f)]:.1f}×")
                else:
                    up.append("")
            side = ""
            if len(fws) == 2 and all((a, f) in grid for f in fws) and fws[1] == 10 * fws[0]:
                side = f"{grid[(a, fws[1])] / grid[(a, fws[0])]:.2f}×"
            lines.append(f"| {a:,} | " + " | ".join(cells) + " | " + " | ".join(up) + f" | {side} |")
    target = grid.get((10_000, 1_000))
    if target:
        verdict = "meets" if target <= 100e6 else "misses"
        lines.append("")
        lines.append(f"10,000 agents × 1,000 frameworks × 100 pools: **{t(target)}** median; it "
                     f"{verdict} the ≤ 100 ms target ({target / 100e6:.2f}× the target).")
print("\n".join(lines))
PY
write_block criterion "Mesos decoding and offer rounds" "$target_dir/polly-bench/criterion.md"
cat "$target_dir/polly-bench/criterion.md"
echo "wrote the Mesos decoding and offer round results into BENCHMARKS.md"
fi

if want offer_ops; then
# Disk offers and provisioning against the real server (its own harness: 100 frameworks
# accepting at once; concurrent creates on a driver with 100 ms per call, beside 0 ms):
# put its table between the offer-ops markers.
CARGO_TARGET_DIR="$target_dir" cargo bench --bench offer_ops
write_block offer-ops "Disk offers and provisioning" "$target_dir/polly-bench/offer_ops.md"
echo "wrote the disk offer and provisioning results into BENCHMARKS.md"
fi

if want ebs; then
# The ebs driver on the fake cloud (its own harness, no SDK needed): attach/detach throughput
# with 100 ms per EC2 call and 1,000 volumes, and a 1,000-attach burst with one hung call.
CARGO_TARGET_DIR="$target_dir" cargo bench --bench ebs
write_block ebs "EBS attach and detach (fake cloud)" "$target_dir/polly-bench/ebs.md"
echo "wrote the ebs results into BENCHMARKS.md"
fi

if want restart || want rss; then
# Restart to serving and RSS against the real `polly serve` binary (its own harness): one
# populated data dir of 100,000 `vfs` volumes serves both parts.
restart_parts=()
want restart && restart_parts+=(restart)
want rss && restart_parts+=(rss)
CARGO_TARGET_DIR="$target_dir" cargo bench --bench restart -- "${restart_parts[@]}"
if want restart; then
    write_block restart "Restart to serving" "$target_dir/polly-bench/restart.md"
    echo "wrote the restart results into BENCHMARKS.md"
fi
if want rss; then
    write_block rss "Memory" "$target_dir/polly-bench/rss.md"
    echo "wrote the memory results into BENCHMARKS.md"
fi
fi
if want soak; then
# Load and soak of one real `polly serve` (its own harness: 1,000 REX-Ray clients on the
# façade and 100 frameworks on the offer endpoint for POLLY_SOAK_SECS, default 60 s; it fails
# on any error): its table, with the machine, command, date and commit, between the soak
# markers. Each client and framework holds connections: raise the open-files limit first.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CARGO_TARGET_DIR="$target_dir" cargo bench --bench soak
soak_secs=""
if [[ -n "${POLLY_SOAK_SECS:-}" ]]; then soak_secs=", POLLY_SOAK_SECS=$POLLY_SOAK_SECS"; fi
SOAK_HEADER=$(part_header soak "cargo bench --bench soak" "$soak_secs")
{ echo "$SOAK_HEADER"; echo; cat "$target_dir/polly-bench/soak.md"; } >"$target_dir/polly-bench/soak-block.md"
write_block soak "Load and soak" "$target_dir/polly-bench/soak-block.md"
echo "wrote the soak results into BENCHMARKS.md"
fi

if want failover; then
why=$(etcd_missing)
if [[ -n "$why" ]]; then
    echo "*** skipped the failover part: $why; its block of BENCHMARKS.md is unchanged ***" >&2
else
# Failover of three real `polly serve` instances on a real etcd (its own harness): kill -9
# the leader 20 times; new leader, first ACCEPT answered 202, its OPERATION_FINISHED, beside
# the lease TTL.
CARGO_TARGET_DIR="$target_dir" cargo bench --features etcd --bench failover
{ part_header failover "cargo bench --features etcd --bench failover"; echo
  cat "$target_dir/polly-bench/failover.md"; } >"$target_dir/polly-bench/failover-block.md"
write_block failover "Failover" "$target_dir/polly-bench/failover-block.md"
echo "wrote the failover results into BENCHMARKS.md"
fi
fi

if want etcd; then
why=$(etcd_missing)
if [[ -n "$why" ]]; then
    echo "*** skipped the etcd part: $why; its block of BENCHMARKS.md is unchanged ***" >&2
else
# The etcd store beside sled in the same run: libStorage operations through two real
# servers (its own harness, raw etcd put and fdatasync as baselines), then the store API
# itself (criterion): both into the etcd block.
CARGO_TARGET_DIR="$target_dir" cargo bench --features etcd --bench etcd_ops
CARGO_TARGET_DIR="$target_dir" cargo bench --features etcd --bench store_backends
python3 - "$target_dir/criterion" "$target_dir/polly-bench/etcd_ops.json" \
    >"$target_dir/polly-bench/store_backends.md" <<'PY'
import json, os, sys
root, raw_file = sys.argv[1], sys.argv[2]
raw = json.load(open(raw_file)) if os.path.exists(raw_file) else {}

est = {}
for dirpath, _, files in os.walk(os.path.join(root, "store_backend")):
    if os.path.basename(dirpath) == "new" and "estimates.json" in files:
        m = json.load(open(os.path.join(dirpath, "estimates.json")))["median"]
        title = json.load(open(os.path.join(dirpath, "benchmark.json")))["title"]
        ci = m["confidence_interval"]
        est[title] = (m["point_estimate"], ci["lower_bound"], ci["upper_bound"])

def t(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"

names = {
    "apply_put_volume": "one durable `apply` (one `PutVolume`)",
    "apply_put_volume_16_writers": "the same, 16 writers at once (time per apply, amortised)",
    "apply_create_with_intent": "a create's batch: volume + intent (name check's reads, then the write)",
    "get_volume": "read one volume",
    "list_volumes": "list 200 volumes",
}
lines = ["The store API itself (`Store`, `benches/store_backends.rs`, criterion: 30 samples, "
         "medians with their 95% confidence interval), sled on the bench disk beside etcd "
         "(its own member on loopback, data on the same disk), in the same run.", "",
         "| store operation | sled: median | sled: 95% CI | etcd: median | etcd: 95% CI | etcd / sled |",
         "|---|---:|---|---:|---|---:|"]
for k, what in names.items():
    s, e = est.get(f"store_backend/sled/{k}"), est.get(f"store_backend/etcd/{k}")
    if not s:
        continue
    if e:
        lines.append(f"| {what} | {t(s[0])} | {t(s[1])} – {t(s[2])} | {t(e[0])} | "
                     f"{t(e[1])} – {t(e[2])} | {e[0] / s[0]:.2f}× |")
    else:
        lines.append(f"| {what} | {t(s[0])} | {t(s[1])} – {t(s[2])} | n/a | | |")
s, e = est.get("store_backend/sled/apply_put_volume"), est.get("store_backend/etcd/apply_put_volume")
if s and e and raw.get("put_ms") and raw.get("fdatasync_ms"):
    put, fsync = raw["put_ms"] * 1e6, raw["fdatasync_ms"] * 1e6
    lines.append("")
    lines.append(f"One durable `apply` on etcd: **{t(e[0])}**, {e[0] / s[0]:.2f}× sled's {t(s[0])}; "
                 f"against the raw durable write of each medium measured by `etcd_ops` in this "
                 f"part: etcd `apply` / raw `put` ({t(put)}) = **{e[0] / put:.2f}×**, sled "
                 f"`apply` / raw `fdatasync` ({t(fsync)}) = **{s[0] / fsync:.2f}×**.")
print("\n".join(lines))
PY
{ part_header etcd "cargo bench --features etcd --bench etcd_ops --bench store_backends"; echo
  cat "$target_dir/polly-bench/etcd_ops.md"; echo
  cat "$target_dir/polly-bench/store_backends.md"; } >"$target_dir/polly-bench/etcd-block.md"
write_block etcd "Store backends: etcd beside sled" "$target_dir/polly-bench/etcd-block.md"
cat "$target_dir/polly-bench/etcd-block.md"
echo "wrote the etcd store results into BENCHMARKS.md"
fi
fi

if want docker; then
why=$(docker_missing)
if [[ -n "$why" ]]; then
    echo "*** skipped the docker part: $why; its block of BENCHMARKS.md is unchanged ***" >&2
else
# Polly's Docker volume plugin beside Docker's `local` driver (its own harness: a private
# dockerd, one `polly serve`, one `polly node`): the CLI's create/rm, `docker run -v`, and the
# plugin calls alone on its socket, variants interleaved round by round.
rm -f "$target_dir/polly-bench/docker_plugin.md"
CARGO_TARGET_DIR="$target_dir" cargo bench --bench docker_plugin
if [[ ! -s "$target_dir/polly-bench/docker_plugin.md" ]]; then
    echo "*** skipped the docker part: the benchmark could not start Docker (see above); its block of BENCHMARKS.md is unchanged ***" >&2
else
rounds=""
if [[ -n "${POLLY_DOCKER_ROUNDS:-}" ]]; then rounds=", POLLY_DOCKER_ROUNDS=$POLLY_DOCKER_ROUNDS"; fi
{ part_header docker "cargo bench --bench docker_plugin" "$rounds"; echo
  cat "$target_dir/polly-bench/docker_plugin.md"; } >"$target_dir/polly-bench/docker-block.md"
write_block docker "Docker volume plugin" "$target_dir/polly-bench/docker-block.md"
echo "wrote the Docker volume plugin results into BENCHMARKS.md"
fi
fi
fi

if want csi; then
# CSI beside the libStorage façade on one real `polly serve` (its own harness): CreateVolume
# and ControllerPublishVolume against the façade's create and attach, at 1 and 64 clients
# with a connection each, the two surfaces alternating; it fails on any failed call.
rm -f "$target_dir/polly-bench/csi.md"
CARGO_TARGET_DIR="$target_dir" cargo bench --bench csi
csi_ops=""
if [[ -n "${POLLY_CSI_OPS:-}" ]]; then csi_ops=", POLLY_CSI_OPS=$POLLY_CSI_OPS"; fi
{ part_header csi "cargo bench --bench csi" "$csi_ops"; echo
  cat "$target_dir/polly-bench/csi.md"; } >"$target_dir/polly-bench/csi-block.md"
write_block csi "CSI beside the libStorage façade" "$target_dir/polly-bench/csi-block.md"
cat "$target_dir/polly-bench/csi-block.md"
echo "wrote the CSI results into BENCHMARKS.md"
fi
exit
}
