#!/usr/bin/env bash
# Starts a throw-away Ceph cluster for the rbd driver's tests: one mon, one memstore OSD and
# one mgr (without a mgr `ceph df` reports zeros) on 127.0.0.1, no cephx, pool size 1, and an
# `rbd` pool (reference: backends.md section 3).
# Prints the path of its ceph.conf on stdout (everything else goes to stderr).
#
#   scripts/ceph-test-cluster.sh [DIR]     start in DIR (default: a new temp dir)
#   scripts/ceph-test-cluster.sh stop DIR  stop the cluster started in DIR and delete DIR
#
# POLLY_CEPH_PORT picks the mon port (default 33000). When POLLY_CEPH_OWNER_PID is set, a
# watcher stops the cluster and deletes DIR as soon as that process exits, so a test run
# that starts a cluster never leaves daemons behind.
set -euo pipefail

stop() {
    local dir=$1
    if [[ -f "$dir/pids" ]]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$dir/pids"
        sleep 0.5
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done <"$dir/pids"
    fi
    rm -rf "$dir"
}

if [[ "${1:-}" == "stop" ]]; then
    stop "${2:?usage: $0 stop DIR}"
    exit 0
fi

for bin in ceph-mon ceph-osd ceph monmaptool rbd uuidgen; do
    command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install ceph-mon ceph-osd ceph-common)" >&2; exit 2; }
done

dir=${1:-$(mktemp -d /tmp/polly-ceph.XXXXXX)}
mkdir -p "$dir/mon" "$dir/run"
port=${POLLY_CEPH_PORT:-33000}
fsid=$(uuidgen)
conf="$dir/ceph.conf"
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port/0
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
run dir = $dir/run
log file = $dir/\$name.log
admin socket = $dir/run/\$name.asok
[client]
# No admin socket for CLI clients: many run at once and would fight over one path.
admin socket =
[mon]
mon data = $dir/mon/\$id
# A test cluster must start on a nearly full disk too (the default refuses below 5% free).
mon data avail crit = 0
mon data avail warn = 0
[mgr]
mgr data = $dir/mgr/\$id
[osd]
osd data = $dir/osd\$id
osd objectstore = memstore
memstore device bytes = 1073741824
CONF

if [[ -n "${POLLY_CEPH_OWNER_PID:-}" ]]; then
    owner=$POLLY_CEPH_OWNER_PID
    script=$(readlink -f "$0")
    (
        while kill -0 "$owner" 2>/dev/null; do sleep 1; done
        "$script" stop "$dir"
    ) </dev/null >/dev/null 2>&1 &
    disown
fi

monmaptool --clobber --create --addv a "[v2:127.0.0.1:$port]" --fsid "$fsid" "$dir/monmap" >&2
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >&2
ceph-mon -c "$conf" -i a -f </dev/null >"$dir/mon.out" 2>&1 &
echo $! >>"$dir/pids"

osd_uuid=$(uuidgen)
osd_id=$(timeout 60 ceph -c "$conf" osd new "$osd_uuid")
mkdir -p "$dir/osd$osd_id"
ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >&2 2>/dev/null
ceph-osd -c "$conf" -i "$osd_id" -f </dev/null >"$dir/osd.out" 2>&1 &
echo $! >>"$dir/pids"

for _ in $(seq 1 120); do
    if ceph -c "$conf" osd stat 2>/dev/null | grep -q '1 up'; then break; fi
    sleep 0.5
done
ceph -c "$conf" osd stat | grep -q '1 up' || { echo "osd did not come up; logs in $dir" >&2; exit 1; }
ceph -c "$conf" osd pool create rbd 8 8 >&2
rbd -c "$conf" pool init rbd >&2
mkdir -p "$dir/mgr/x"
ceph-mgr -c "$conf" -i x -f </dev/null >"$dir/mgr.out" 2>&1 &
echo $! >>"$dir/pids"
# Capacity comes from `ceph df`, which is empty until the mgr has its first pool stats.
for _ in $(seq 1 120); do
    if ceph -c "$conf" df --format json 2>/dev/null | grep -q '"max_avail":[1-9]'; then break; fi
    sleep 0.5
done
ceph -c "$conf" df --format json | grep -q '"max_avail":[1-9]' || { echo "mgr reports no pool stats; logs in $dir" >&2; exit 1; }
echo "$conf"
