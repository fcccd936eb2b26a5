#!/usr/bin/env bash
# A local, single-machine tour of Polly without Vagrant: builds polly with cargo, starts
# `polly serve` on a temporary data dir and free ports (the Polly of marathon/polly.toml),
# drives the CLI (create, restrict, label, attach/detach, marathon check/provision on the
# examples), the libStorage façade over HTTP and the example Mesos framework
# (examples/consumer.rs) taking disk offers from the storage-offer endpoint, printing each
# step; then stops the server. Exits 0 when every step behaved as shown. Honours
# CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$PWD"

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "build (polly and the example framework)"
cargo build --locked --quiet --bins --example consumer
polly="${CARGO_TARGET_DIR:-$repo/target}/debug/polly"
consumer="${CARGO_TARGET_DIR:-$repo/target}/debug/examples/consumer"
[ -x "$polly" ] || { echo "demo: $polly was not built" >&2; exit 1; }
[ -x "$consumer" ] || { echo "demo: $consumer was not built" >&2; exit 1; }

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# marathon/polly.toml plus one Mesos agent in the pools' zone, so frameworks get offers for
# it; volumes created through offers are attached to the instance "demo-host" (the host the
# façade requests below report as well).
cat marathon/polly.toml - >"$tmp/polly.toml" <<'TOML'

[mesos]
agents = [{ id = "demo-agent", hostname = "demo-host", region = "us-east-1", zone = "us-east-1a" }]

[offers]
allocation_interval_ms = 200
[offers.instances]
demo-agent = "demo-host"
TOML

step "start polly serve (data in $tmp/data, free ports)"
POLLY_LOG=warn "$polly" serve --config "$tmp/polly.toml" --data-dir "$tmp/data" \
  --admin-listen 127.0.0.1:0 --libstorage-listen 127.0.0.1:0 --offers-listen 127.0.0.1:0 \
  >"$tmp/serve.out" 2>"$tmp/serve.err" &
server_pid=$!
for _ in $(seq 1 300); do
  grep -qx 'polly: ready' "$tmp/serve.out" 2>/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.err" >&2; exit 1; }
  sleep 0.1
done
grep -qx 'polly: ready' "$tmp/serve.out" || { echo "demo: polly did not start" >&2; exit 1; }
cat "$tmp/serve.out"
admin="$(sed -n 's/^polly: admin API on //p' "$tmp/serve.out")"
facade="$(sed -n 's/^polly: libStorage on //p' "$tmp/serve.out")"
offers="$(sed -n 's/^polly: storage offers on //p' "$tmp/serve.out")"
export POLLY_ADMIN_URL="$admin"
unset POLLY_ADMIN_TOKEN

# HTTP requests to the façade: curl when present, python3's urllib otherwise.
# http METHOD PATH [BODY]; sends the instance id header REX-Ray sends.
iid="vfs:vfs=demo-host"
http() {
  local method="$1" path="$2" body="${3:-}"
  printf '> %s %s %s\n' "$method" "$path" "$body"
  if command -v curl >/dev/null 2>&1; then
    local args=(-fsS -X "$method" -H "Libstorage-Instanceid: $iid")
    if [ -n "$body" ]; then
      args+=(--data "$body")
    fi
    curl "${args[@]}" "$facade$path"
  else
    python3 - "$method" "$facade$path" "$body" "$iid" <<'PY'
import sys, urllib.request
method, url, body, iid = sys.argv[1:5]
req = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                             headers={"Libstorage-Instanceid": iid})
print(urllib.request.urlopen(req).read().decode())
PY
  fi
  echo
}

step "the CLI: services, create, restrict, label"
run "$polly" version
run "$polly" service ls
run "$polly" volume create demo-data --size 1GiB --label app=demo
run "$polly" volume restrict demo-data --to-service vfs
run "$polly" volume label demo-data tier=gold
run "$polly" volume ls

step "attach, a refused second writer, detach"
run "$polly" volume attach demo-data --instance node-1 --device /dev/xvdb
if "$polly" volume attach demo-data --instance node-2 2>"$tmp/err"; then
  echo "demo: a second writer was let in" >&2
  exit 1
fi
printf '(refused as expected) %s\n' "$(cat "$tmp/err")"
run "$polly" volume detach demo-data --instance node-1
run "$polly" volume unlabel demo-data tier

step "Marathon: check every example, then a definition that must fail"
for f in marathon/*.json; do
  run "$polly" marathon check "$f"
done
set +e
"$polly" marathon check tests/fixtures/marathon/two-instances.json
code=$?
set -e
[ "$code" -eq 1 ] || { echo "demo: expected exit code 1, got $code" >&2; exit 1; }
echo "(exit code $code: problems found, as expected)"

step "Marathon: provision twice (the second run creates nothing)"
run "$polly" marathon provision marathon/postgres.json
run "$polly" marathon provision marathon/postgres.json
run "$polly" marathon provision marathon/shop.json
run "$polly" volume ls

step "the libStorage façade, as REX-Ray uses it ($facade)"
http GET /services
created="$(http POST /volumes/vfs '{"name":"hellopersistence","size":1}')"
printf '%s\n' "$created"
id="$(printf '%s' "$created" | sed -n 's/.*"id":"\(pv-[0-9a-f]*\)".*/\1/p' | head -n 1)"
[ -n "$id" ] || { echo "demo: no volume id in the create answer" >&2; exit 1; }
http POST "/volumes/vfs/$id?attach" '{"nextDeviceName":"/dev/xvda"}'
http GET "/volumes/vfs/$id?attachments=1"
http POST "/volumes/vfs/$id?detach" '{}'
run "$polly" volume inspect hellopersistence

step "a Mesos framework takes a disk offer ($offers, examples/consumer.rs)"
# The example framework subscribes like to a Mesos master, prints the offers, accepts one
# with a CREATE_DISK of 64 MB and acknowledges PENDING and FINISHED.
run "$consumer" --master "$offers" --size 64MB --timeout 60s | tee "$tmp/consumer.out"
result="$(sed -n 's/^consumer: result //p' "$tmp/consumer.out")"
framework="$(printf '%s\n' "$result" | tr ' ' '\n' | sed -n 's/^framework=//p')"
volume="$(printf '%s\n' "$result" | tr ' ' '\n' | sed -n 's/^volume=//p')"
if [ -z "$framework" ] || [ -z "$volume" ]; then
  echo "demo: the consumer printed no result" >&2
  exit 1
fi
run "$polly" framework ls
run "$polly" reservation ls
run "$polly" volume ls
"$polly" --json volume inspect "$volume" >"$tmp/volume.json"
grep -q "\"$framework\"" "$tmp/volume.json" ||
  { echo "demo: volume $volume is not restricted to framework $framework" >&2; exit 1; }
grep -q '"instance_id": *"demo-host"' "$tmp/volume.json" ||
  { echo "demo: volume $volume is not attached to demo-host" >&2; exit 1; }
echo "(volume $volume: reserved to framework $framework, attached to demo-host)"

step "the same framework over protobuf: create a volume, then DESTROY_DISK it"
run "$consumer" --master "$offers" --content-type protobuf --size 32MB --destroy --timeout 60s
run "$polly" volume ls

step "stop the server"
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
echo "demo: done"
