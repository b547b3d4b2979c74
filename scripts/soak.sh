#!/usr/bin/env bash
# Promise 12, on demand: a bounded soak of both modes (SOAK_SECONDS each,
# default 90), one after the other, checking that the resident memory and
# open descriptors of every participant stay flat. Prints the figures that
# docs/reliability.md records.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS=${1:-${SOAK_SECONDS:-90}}
cargo test --release --test soak -- --ignored --nocapture --test-threads 1 soak
