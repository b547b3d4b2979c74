#!/usr/bin/env bash
# Runs every test of the project: style and lints, the unit, integration,
# cross-implementation and documentation tests, and the smoke runs of the
# tools that have one. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The cross-implementation tests need the reference peers; installing them
# up front keeps the download out of the tests' deadlines. The checks of the
# manual pages and completion scripts need man, groff and the shells.
scripts/setup-peers.sh >/dev/null
scripts/setup-tools.sh
# Includes tests/upstream.rs: the original's own test suite, from shared/
# beside the repository, run against our binary alone and mixed with the peers.
cargo test --locked
# The portable path (src/sys/portable.rs: polling, named staging, read/write
# copies, blocking writes), forced on Linux: every test again but two, whose
# promise only the Linux calls keep: a stalled pipe or terminal never holds
# the lock (tests/matrix.rs, tests/stalled.rs). README: Platform support.
portable_tests=()
for t in tests/*.rs; do
    name=$(basename "$t" .rs)
    case $name in matrix | stalled) ;; *) portable_tests+=(--test "$name") ;; esac
done
FILEBUS_PORTABLE=1 cargo test --locked --lib "${portable_tests[@]}"
FILEBUS_PORTABLE=1 cargo test --locked --doc
# The API documentation builds without a warning (broken links included).
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --locked --quiet
# What `cargo package` would publish: the license, and no build output,
# fuzzing state or CI files. (Its one warning, no repository or homepage, is
# true: Cargo.toml says why.)
package=$(cargo package --list --allow-dirty --locked 2>/dev/null)
if ! grep -qx LICENSE <<<"$package" || grep -E '^(target|fuzz|\.ci)/' <<<"$package"; then
    echo "cargo package --list: LICENSE missing or the files above included" >&2
    exit 1
fi
# The Python wheel: built with maturin, pip-installed into a fresh virtualenv,
# and run from there.
scripts/wheel.sh
# The benchmark's smoke run: tiny sizes, proves the benchmark command works
# end to end (about a minute, most of it the Python original's start-ups and
# sleeps); it asserts nothing about timings.
scripts/bench.sh --smoke
# Promise 9: each fuzz target for a bounded time (FUZZ_SECONDS, default 60).
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
