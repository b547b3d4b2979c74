#!/usr/bin/env bash
# Builds the Python wheel (distribution filebus-rs, see pyproject.toml) with
# maturin, installs it into a fresh virtualenv and checks what it installed:
# the `filebus` command (the native binary: `--version`, and a lossless
# round trip checked byte for byte) and the module `filebus_rs` (its pytest
# suite, python/tests/, which also runs the command and the original
# filebus on the same buses). Then checks that `pip install .` from the
# repository, the README's one command, installs both into another fresh
# virtualenv, and says how long it took. Part of scripts/test.sh; fails on
# anything missing.
#
#   scripts/wheel.sh    the wheel ends up in target/wheel/dist/
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
maturin_version=1.16.0
work=$root/target/wheel

# maturin in a virtualenv of its own in the build area, installed once.
builder=$work/maturin
if [ "$("$builder/bin/maturin" --version 2>/dev/null)" != "maturin $maturin_version" ]; then
    rm -rf "$builder"
    mkdir -p "$work"
    python3 -m venv "$builder"
    "$builder/bin/pip" install --quiet --disable-pip-version-check "maturin==$maturin_version"
fi
# The original filebus, for the tests that share a bus with it.
peer=$(scripts/setup-peers.sh)

# A release build in cargo's own target directory, so that it is reused.
rm -rf "$work/dist"
"$builder/bin/maturin" build --quiet --release --locked --out "$work/dist"
wheels=("$work"/dist/filebus_rs-*.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "wheel.sh: expected one filebus_rs wheel in $work/dist, found: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}
expected_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
case $(basename "$wheel") in
    filebus_rs-"$expected_version"-cp39-abi3-*.whl) ;;
    *)
        echo "wheel.sh: $(basename "$wheel") is not an abi3 wheel of version $expected_version (python/Cargo.toml's version must follow Cargo.toml's)" >&2
        exit 1
        ;;
esac

# Checks that the virtualenv $1 has the wheel's `filebus` command on PATH,
# the native binary of this version, and the module filebus_rs from its
# site-packages.
check_installed() {
    local venv=$1 installed version
    # As for a user who activated the virtualenv: `filebus` on PATH is the wheel's.
    installed=$(PATH="$venv/bin:$PATH" command -v filebus || true)
    if [ "$installed" != "$venv/bin/filebus" ]; then
        echo "wheel.sh: no filebus command in $venv/bin" >&2
        exit 1
    fi
    if [ "$(head -c 4 "$installed" | od -An -c | tr -d ' ')" != '177ELF' ]; then
        echo "wheel.sh: $installed is not the native binary" >&2
        exit 1
    fi
    version=$("$installed" --version)
    if [ "$version" != "filebus $expected_version" ]; then
        echo "wheel.sh: the installed filebus says '$version', expected 'filebus $expected_version'" >&2
        exit 1
    fi
    (cd / && "$venv/bin/python" -c '
import sys, filebus_rs
assert filebus_rs.__file__.startswith(sys.prefix), filebus_rs.__file__
print(filebus_rs.Bus("/tmp/x").lossless)' >/dev/null)
}

# A fresh virtualenv each time: the wheel alone must give a working command
# and module (pytest is the only other package in it).
venv=$work/venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$wheel"
check_installed "$venv"
installed=$venv/bin/filebus
version=$("$installed" --version)

# Lossless round trip through the installed command: a producer and a
# consumer of the wheel's binary, 400 000 numbered lines, compared whole;
# each side gets a minute at most.
trip=$(mktemp -d "$root/target/wheel/trip.XXXXXX")
consumer=
trap '[ -z "$consumer" ] || kill "$consumer" 2>/dev/null; rm -rf "$trip"' EXIT
seq 1 400000 > "$trip/in"
timeout 60 "$installed" --filename "$trip/bus" --lossless consumer > "$trip/out" &
consumer=$!
timeout 60 "$installed" --filename "$trip/bus" --lossless producer < "$trip/in"
wait "$consumer"
consumer=
if ! cmp "$trip/in" "$trip/out"; then
    echo "wheel.sh: the round trip through the installed filebus changed the data" >&2
    exit 1
fi
echo "wheel.sh: $(basename "$wheel"): pip-installed $version, lossless round trip of $(wc -c < "$trip/in") bytes identical"

# The module's tests, against the installed wheel. pytest exits non-zero
# when a test fails and when it collected none (5). Then the type stubs
# against the installed module (mypy's stubtest, pinned: a newer one may
# check more), and the example under mypy --strict through them.
"$venv/bin/pip" install --quiet --disable-pip-version-check pytest mypy==2.4.1
FILEBUS_PEER=$peer "$venv/bin/python" -m pytest -p no:cacheprovider -q python/tests
# Again on the library's portable path (src/sys/portable.rs), as
# scripts/test.sh runs the Rust suite: the module and the command both take
# it, polling instead of waking on events.
FILEBUS_PORTABLE=1 FILEBUS_PEER=$peer "$venv/bin/python" -m pytest -p no:cacheprovider -q python/tests
(cd / && "$venv/bin/python" -m mypy.stubtest filebus_rs)
"$venv/bin/python" -m mypy --strict --cache-dir=/dev/null examples/python_bus.py

# The README's one command for pip users, in another fresh virtualenv.
fresh=$work/pip-install
rm -rf "$fresh"
python3 -m venv "$fresh"
start=$(date +%s.%N)
"$fresh/bin/pip" install --quiet --disable-pip-version-check .
took=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
check_installed "$fresh"
echo "wheel.sh: pip install . took ${took} s and installed the filebus command and filebus_rs"
