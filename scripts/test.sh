#!/usr/bin/env bash
# Run Polly's whole test suite: unit tests, the driver conformance suite, the store model
# test, and the integration tests that start the real `polly serve` on 127.0.0.1:0 (crash
# tests among them kill it with SIGKILL). This is the command CI runs.
#
# Then the `ebs` driver through the AWS SDK against moto (cargo feature `ebs`; the SDK takes
# minutes to build, so only this one narrow test target builds it). It runs when moto is
# installed (`.venv-moto/` as `.ci/run` makes it, `POLLY_MOTO_SERVER`, or `moto_server` on
# PATH), and always in CI (`CI` set), where a missing moto fails the run instead of skipping.
# `POLLY_SKIP_MOTO=1` skips it outside CI.
#
# Between the suite and moto, the crash matrix (tests/crash_matrix.rs): polly built with the
# `failpoints` feature is SIGKILLed at every step of every operation and restarted.
#
# Last, the etcd store backend (cargo feature `etcd`, whose build needs `protoc`): the store
# suite, `polly serve` on etcd and high availability (`tests/ha.rs`: three instances, leader
# election, failover, fencing), against a real etcd the tests start on loopback. It runs
# when protoc and etcd are installed (`apt-get install protobuf-compiler etcd-server
# etcd-client`, which `.ci/run` does), and always in CI, where a missing one fails the run.
# Elsewhere a missing one is reported loudly at the end. `POLLY_SKIP_ETCD=1` skips it outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets --locked "$@"
cargo test --locked --features failpoints --test crash_matrix

if [ -n "${CI:-}" ] || { [ -z "${POLLY_SKIP_MOTO:-}" ] && {
    [ -x .venv-moto/bin/moto_server ] || [ -n "${POLLY_MOTO_SERVER:-}" ] ||
        command -v moto_server >/dev/null 2>&1
}; }; then
    cargo test --locked --features ebs --test driver_conformance ebs_
fi

if [ -n "${CI:-}" ] || { [ -z "${POLLY_SKIP_ETCD:-}" ] &&
    command -v protoc >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; }; then
    cargo test --locked --features etcd --test store_backends --test etcd_serve --test ha
else
    echo "*** skipped: the etcd store backend tests did NOT run (they need protoc and etcd:" \
        "apt-get install protobuf-compiler etcd-server etcd-client; POLLY_SKIP_ETCD=${POLLY_SKIP_ETCD:-}) ***" >&2
fi
