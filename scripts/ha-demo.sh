#!/usr/bin/env bash
# High availability on one machine: builds polly with the `etcd` feature, starts a throwaway
# etcd on free loopback ports and three `polly serve` instances sharing it (`[ha]`, a 2 s
# lease, one vfs root), shows which one leads and that the others forward to it, creates a
# volume through a follower, SIGKILLs the leader, waits for another instance to take over,
# and shows the volume is still there and new writes are served. Needs etcd and etcdctl
# (`apt-get install etcd-server etcd-client`) and protoc. Exits 0 when every step behaved as
# shown. Honours CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$PWD"

step() { printf '\n== %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
health() { curl -fsS "http://$1/admin/health"; }
role_of() { health "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role","?"))'; }

for tool in etcd etcdctl curl python3; do
  command -v "$tool" >/dev/null || { echo "ha-demo: $tool is not installed" >&2; exit 1; }
done

step "build polly with the etcd store (cargo feature etcd)"
cargo build --locked --quiet --features etcd --bin polly
polly="${CARGO_TARGET_DIR:-$repo/target}/debug/polly"
[ -x "$polly" ] || { echo "ha-demo: $polly was not built" >&2; exit 1; }

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

step "start etcd on loopback"
client_port="$(free_port)"
peer_port="$(free_port)"
etcd_url="http://127.0.0.1:$client_port"
etcd --name ha-demo --data-dir "$tmp/etcd" \
  --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "ha-demo=http://127.0.0.1:$peer_port" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && break
  sleep 0.1
done
curl -fsS "$etcd_url/health" | grep -q '"health":"true"' || { cat "$tmp/etcd.log" >&2; exit 1; }
echo "etcd at $etcd_url"

cat >"$tmp/polly.toml" <<TOML
[[services]]
name = "vfs"
driver = "vfs"
root = "$tmp/vfs"

[store]
backend = "etcd"

[store.etcd]
endpoints = ["$etcd_url"]
prefix = "/polly-demo/"

[ha]
enabled = true
lease_ttl_secs = 2
TOML
echo "config ($tmp/polly.toml):"
sed 's/^/  /' "$tmp/polly.toml"

admins=()
for n in 1 2 3; do
  step "start polly #$n"
  POLLY_LOG=warn "$polly" serve --config "$tmp/polly.toml" --data-dir "$tmp/data$n" \
    --admin-listen 127.0.0.1:0 --libstorage-listen 127.0.0.1:0 --offers-listen 127.0.0.1:0 \
    >"$tmp/serve$n.out" 2>"$tmp/serve$n.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    grep -qx 'polly: ready' "$tmp/serve$n.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -qx 'polly: ready' "$tmp/serve$n.out" || { cat "$tmp/serve$n.err" >&2; exit 1; }
  cat "$tmp/serve$n.out"
  admins+=("$(sed -n 's|^polly: admin API on http://||p' "$tmp/serve$n.out")")
done

step "roles (GET /admin/health on each)"
leader=""
for i in 0 1 2; do
  echo "polly #$((i + 1)) (${admins[$i]}): $(health "${admins[$i]}")"
  [ "$(role_of "${admins[$i]}")" = leader ] && leader="$i"
done
[ -n "$leader" ] || { echo "ha-demo: no leader" >&2; exit 1; }
follower=$(((leader + 1) % 3))
echo "the election key in etcd:"
ETCDCTL_API=3 etcdctl --endpoints "$etcd_url" get /polly-demo/leader

step "create a volume through follower #$((follower + 1)) (it forwards to the leader)"
"$polly" --admin-url "http://${admins[$follower]}" volume create --service vfs --size 1MiB before

step "kill -9 the leader, polly #$((leader + 1))"
kill -9 "${pids[$((leader + 1))]}"
{ wait "${pids[$((leader + 1))]}"; } 2>/dev/null || true
killed_at=$(date +%s.%N)
new=""
for _ in $(seq 1 200); do
  for i in 0 1 2; do
    [ "$i" = "$leader" ] && continue
    if [ "$(role_of "${admins[$i]}" 2>/dev/null || true)" = leader ]; then new="$i"; fi
  done
  [ -n "$new" ] && break
  sleep 0.05
done
[ -n "$new" ] || { echo "ha-demo: no instance took over" >&2; exit 1; }
python3 -c "import sys,time; print(f'polly #$((new + 1)) leads, {time.time()-float(sys.argv[1]):.1f} s after the kill')" "$killed_at"
for i in 0 1 2; do
  [ "$i" = "$leader" ] && continue
  echo "polly #$((i + 1)): $(health "${admins[$i]}")"
done

step "the volume is still there, and the new leader serves writes"
"$polly" --admin-url "http://${admins[$new]}" volume ls
"$polly" --admin-url "http://${admins[$new]}" volume create --service vfs --size 1MiB after
listing="$("$polly" --admin-url "http://${admins[$new]}" volume ls)"
grep -q before <<<"$listing" || { echo "ha-demo: volume lost" >&2; exit 1; }

step "done"
