#!/usr/bin/env bash
# Conformance of the admin API and /metrics, checked by tools Polly did not write, against a
# real `polly serve` (debug build, temp data dir, free loopback ports, an admin token):
# schemathesis (PyPI) fuzzes every operation of the served OpenAPI document with every check
# on (status codes, content types, response schemas, valid requests accepted, invalid ones
# refused, auth, 405s with Allow, stateful runs over the spec's links), and
# `promtool check metrics` (Debian `prometheus`) lints real scrapes in the default text
# format, of the server and of a `polly node` reporting to it. Any failure fails the script. The two things left out, and why, are in
# scripts/schemathesis_hooks.py: create bodies naming a zone (which zones a service serves is
# configuration the document cannot state) and sizes over 1 GiB (refused with 507 past the
# disk's size, which depends on the machine). Builds `.venv-schemathesis` at the repo root (or
# POLLY_SCHEMATHESIS_VENV) with a pinned schemathesis once. Under CI a missing tool is a
# failure; elsewhere the script ends with a loud `*** skipped ***` line when schemathesis
# cannot be installed or promtool is missing. POLLY_CONFORMANCE_EXAMPLES sets schemathesis'
# examples per operation (default 30), POLLY_CONFORMANCE_SEED its seed.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$PWD"
venv="${POLLY_SCHEMATHESIS_VENV:-$PWD/.venv-schemathesis}"
python="${PYTHON:-python3}"
examples="${POLLY_CONFORMANCE_EXAMPLES:-30}"
seed="${POLLY_CONFORMANCE_SEED:-20}"
# Pinned: new releases add checks, which should land with a change of this line.
package="schemathesis==4.32.5"

skip() {
  if [ -n "${CI:-}" ]; then
    echo "check-conformance: FAIL: $1 (CI set: nothing is skipped)" >&2
    exit 1
  fi
  echo "*** skipped: check-conformance did NOT run: $1 ***" >&2
  exit 0
}

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version ${package#*==}"; then
  echo "check-conformance: installing $package into $venv"
  if ! { "$python" -m venv "$venv" &&
    "$venv/bin/pip" --disable-pip-version-check --quiet install "$package"; }; then
    skip "cannot install $package into $venv (needs python3 with venv and PyPI)"
  fi
fi
command -v promtool >/dev/null ||
  skip "promtool is missing (apt-get install prometheus)"

cargo build --locked --bin polly
polly="${CARGO_TARGET_DIR:-$PWD/target}/debug/polly"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

token="conformance-$RANDOM$RANDOM"
# Made before the processes start, so the polls below never read a file not there yet.
: >"$work/serve.out"
: >"$work/node.out"
POLLY_ADMIN_TOKEN="$token" "$polly" serve --data-dir "$work/data" \
  --admin-listen 127.0.0.1:0 --libstorage-listen 127.0.0.1:0 --offers-listen 127.0.0.1:0 \
  >"$work/serve.out" 2>"$work/serve.log" &
pid=$!
admin=""
for _ in $(seq 100); do
  admin="$(sed -n 's|^polly: admin API on \(http://[^ ]*\)$|\1|p' "$work/serve.out")"
  grep -q '^polly: ready$' "$work/serve.out" && [ -n "$admin" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "check-conformance: FAIL: polly serve exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$admin" ] || { echo "check-conformance: FAIL: polly serve did not get ready in 20 s" >&2; exit 1; }
auth="Authorization: Bearer $token"

# A volume, so that lists are not empty and the metrics have samples of every kind.
curl -sSf -H "$auth" -d '{"service":"vfs","name":"conformance","size_bytes":1048576}' \
  "$admin/admin/volumes" >/dev/null

echo "check-conformance: promtool check metrics on $admin/metrics"
curl -sSf "$admin/metrics" >"$work/metrics.txt"
promtool check metrics <"$work/metrics.txt"

# polly node's /metrics (its health listener), reporting to this server.
mkdir -p "$work/node"
"$polly" node --server "$admin" --token "$token" --instance-id conformance-node \
  --socket "$work/node/plugin.sock" --mount-root "$work/node/mnt" --state-dir "$work/node/state" \
  --listen 127.0.0.1:0 >"$work/node.out" 2>"$work/node.log" &
node_pid=$!
health=""
for _ in $(seq 100); do
  health="$(sed -n 's|^polly node: health on \(http://[^ ]*\)$|\1|p' "$work/node.out")"
  grep -q '^polly node: ready$' "$work/node.out" && [ -n "$health" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; echo "check-conformance: FAIL: polly node exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$health" ] || { echo "check-conformance: FAIL: polly node did not get ready in 20 s" >&2; exit 1; }
echo "check-conformance: promtool check metrics on $health/metrics (polly node)"
curl -sSf "$health/metrics" >"$work/node-metrics.txt"
kill "$node_pid"
wait "$node_pid" 2>/dev/null || true
promtool check metrics <"$work/node-metrics.txt"

echo "check-conformance: schemathesis --checks all on $admin/admin/openapi.json"
# From the temp dir: schemathesis keeps its cache in ./.schemathesis.
(cd "$work" && SCHEMATHESIS_HOOKS="$repo/scripts/schemathesis_hooks.py" "$venv/bin/schemathesis" run "$admin/admin/openapi.json" --checks all -H "$auth" \
  --max-examples "$examples" --seed "$seed" --workers 2 --generation-database none \
  --request-timeout 30 --no-color)

# Still alive and answering after the fuzzing.
curl -sSf "$admin/admin/health" >/dev/null
echo "check-conformance: ok"
