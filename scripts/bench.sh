#!/usr/bin/env bash
# The benchmark command: filebus vs the Python original vs a raw pipe (and,
# for isolated messages, `cat | cat` with the CLI path's process hops, GNU
# tail -F and the library path, a program publishing through filebus_rs; for
# a lossless stream, a Python program using the module filebus_rs), on
# /dev/shm and on a disk directory. Writes BENCHMARKS.md and the throughput
# chart at the repository root (a full run takes several minutes).
#
#   scripts/bench.sh           full run (release build)
#   scripts/bench.sh --smoke   tiny sizes into target/bench/smoke/: proves the
#                              benchmark works, measures nothing (run by
#                              scripts/test.sh)
#   scripts/bench.sh --only STEP...
#                              full sizes, only these steps (bench.py's step
#                              names: throughput, bindings, floor, firehose,
#                              spaced, latency, fanout, tethered, idle,
#                              neighbours, memory), into
#                              target/bench/only/: a section's figures
#                              without the whole run
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
smoke=()
only=()
if [ "${1:-}" = "--smoke" ]; then
    smoke=(--smoke)
    shift
elif [ "${1:-}" = "--only" ] && [ $# -gt 1 ]; then
    shift
    only=(--only "$@")
    set --
fi
if [ $# -gt 0 ]; then
    echo "usage: scripts/bench.sh [--smoke | --only STEP...]" >&2
    exit 2
fi

# matplotlib draws the chart; it lives in its own venv in the build area.
venv=target/bench/venv
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    mkdir -p target/bench
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib >&2
fi
peer=$(scripts/setup-peers.sh)
# The module filebus_rs for the Python consumer of section 1c, installed the
# way its users do: `pip install .` (a release build, reused by cargo).
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$root"

if [ ${#smoke[@]} -gt 0 ]; then
    cargo build --locked --quiet
    filebus=target/debug/filebus
    out=target/bench/smoke
else
    cargo build --locked --quiet --release
    filebus=target/release/filebus
    out=.
    [ ${#only[@]} -eq 0 ] || out=target/bench/only
fi
# The per-chunk floor: the protocol's system calls in a minimal C loop; the
# firehose's writer and reader (numbered 4 KiB blocks, counted at > 1 GB/s).
mkdir -p target/bench
cc -O2 -Wall -Werror -o target/bench/chunk-floor scripts/chunk-floor.c
cc -O2 -Wall -Werror -o target/bench/firehose scripts/firehose.c
exec "$venv/bin/python" scripts/bench.py "${smoke[@]}" "${only[@]}" \
    --filebus "$root/$filebus" --python-filebus "$peer" \
    --chunk-floor "$root/target/bench/chunk-floor" \
    --firehose "$root/target/bench/firehose" \
    --disk-dir "$root/target/bench/disk" --out "$out" \
    --command "scripts/bench.sh${smoke:+ ${smoke[*]}}${only:+ ${only[*]}}"
