#!/usr/bin/env bash
# Runs every test of the project: style and lints, the unit, integration,
# cross-implementation and documentation tests, and the smoke runs of the
# tools that have one. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The Python bindings (python/, a workspace member that the commands above
# and below leave out unless asked).
cargo clippy -p filebus-python --all-targets --locked -- -D warnings
# Other systems take the portable path (src/sys/): the library and the
# binary must build and pass the lints there too. Nothing can run them here,
# so their tests are not built.
for target in x86_64-unknown-freebsd aarch64-apple-darwin; do
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    cargo clippy --locked --target "$target" --lib --bins -- -D warnings
done
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
# beside the repository, run against our binary alone and mixed with the
# peers; tests/docs.rs: every shell example of README.md and docs/guide.md,
# and their links; and the doctests, README.md's and the guide's included.
cargo test --locked
# The portable path (src/sys/portable.rs: polling, named staging, read/write
# copies, blocking writes), forced on Linux: the whole suite again, but for
# the tests of two promises that only the Linux calls keep (docs/guide.md:
# Platforms): an output whose reader stalls never holds the bus lock (without
# pipe sizes and private non-blocking descriptors a write may block), and
# `-v` names a shared filesystem (that takes Linux's statfs magic numbers).
portable_skips=(
    into_a_pipe_read_after_the_producer_exited
    into_a_pipe_never_read_beside_a_ready_consumer
    into_a_socket_never_read_beside_a_ready_consumer
    stalled_lossless_reader_does_not_hold_the_bus
    small_chunks_into_a_stalled_pipe_never_freeze_the_bus
    small_chunks_are_packed_into_a_pipe_as_write_packs_them
    a_stalled_socket_never_freezes_the_bus
    a_terminal_stopped_with_xoff_never_freezes_the_bus
    participants_say_once_with_v_that_they_poll_and_stage_in_named_files
)
FILEBUS_PORTABLE=1 cargo test --locked -- "${portable_skips[@]/#/--skip=}" --exact
# The shared-memory log off (FILEBUS_NO_SHM_LOG=1): the whole suite again,
# as our participants run where there can be no log (another user's log, a
# filesystem that cannot map it). The portable pass above has no log either,
# but takes the portable path everywhere else too.
FILEBUS_NO_SHM_LOG=1 cargo test --locked
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
# and run from there: the filebus command and the module filebus_rs with its
# pytest suite (python/tests/); then `pip install .` into another one.
scripts/wheel.sh
# The benchmark's smoke run: tiny sizes, proves the benchmark command works
# end to end (about a minute, most of it the Python original's start-ups and
# sleeps); it asserts nothing about timings.
scripts/bench.sh --smoke
# ... and the fan-out rounds script's, at 1 MiB (the design note's figures).
target/bench/venv/bin/python scripts/fanout-rounds.py --mib 1 --rounds 1 --runs 1 --dir target/bench \
    target/debug/filebus >/dev/null
# Promise 9: each fuzz target for a bounded time (FUZZ_SECONDS, default 60).
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
