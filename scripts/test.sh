#!/usr/bin/env bash
# Run Polly's whole test suite: unit tests, the driver conformance suite, the store model
# test, and the integration tests that start the real `polly serve` on 127.0.0.1:0 (crash
# tests among them kill it with SIGKILL). This is the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets --locked "$@"
