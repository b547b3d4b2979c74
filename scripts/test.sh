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
# The cross-host tests (tests/cluster.rs) run on a GlusterFS volume mounted
# twice; scripts/cluster.sh installs GlusterFS with apt-get if needed and
# brings it up, and it goes down again at the end, pass or fail. A cluster
# that was up already is left up. Without root (outside CI) those tests say
# SKIPPED; under CI a missing cluster fails them.
cluster_started=
if ! scripts/cluster.sh status >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
        trap 'scripts/cluster.sh down' EXIT
        cluster_started=1
        scripts/cluster.sh up
    else
        echo "test.sh: not root, so no cluster: tests/cluster.rs will be SKIPPED" >&2
    fi
fi
# Includes tests/upstream.rs: the original's own test suite, from shared/
# beside the repository, run against our binary alone and mixed with the peers.
cargo test --locked
# The portable path (src/sys/portable.rs: polling, named staging, read/write
# copies, blocking writes), forced on Linux: every test again but three,
# whose promises only the Linux calls keep: a stalled pipe or terminal never
# holds the lock (tests/matrix.rs, tests/stalled.rs), and a bus on a shared
# filesystem is recognised as one (tests/cluster.rs: statfs). README:
# Platform support.
portable_tests=()
for t in tests/*.rs; do
    name=$(basename "$t" .rs)
    case $name in matrix | stalled | cluster) ;; *) portable_tests+=(--test "$name") ;; esac
done
FILEBUS_PORTABLE=1 cargo test --locked --lib "${portable_tests[@]}"
FILEBUS_PORTABLE=1 cargo test --locked --doc
# The cross-host benchmark's smoke run (tiny sizes, asserts nothing about
# timings), while the cluster is up.
if scripts/cluster.sh status >/dev/null 2>&1; then
    scripts/cluster-bench.py --smoke --filebus target/debug/filebus >/dev/null
fi
if [ -n "$cluster_started" ]; then
    trap - EXIT
    scripts/cluster.sh down
fi
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
