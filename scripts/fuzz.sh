#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: SECONDS each (default 60).
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them, since no other toolchain can be installed here.
# A crash fails the run; its input is kept under fuzz/artifacts/TARGET/, to
# be turned into a regression test beside the tests of the code at fault.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
mkdir -p target
for target in chunker args shm_log; do
    # An input that takes 20 s is a hang: a reader of the log must never.
    args=(-max_total_time="$seconds" -timeout=20 -print_final_stats=1)
    if [ -f "fuzz/$target.dict" ]; then
        args+=(-dict="$PWD/fuzz/$target.dict")
    fi
    log=target/fuzz-$target.log
    echo "== fuzzing $target for ${seconds}s (log: $log)"
    if ! (cd fuzz && cargo fuzz run "$target" -- "${args[@]}") >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $target failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
