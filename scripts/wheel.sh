#!/usr/bin/env bash
# Builds the Python wheel of the `filebus` command (distribution filebus-rs,
# see pyproject.toml) with maturin, installs it into a fresh virtualenv and
# runs the installed command: `--version`, and a lossless round trip checked
# byte for byte. Part of scripts/test.sh; fails on anything missing.
#
#   scripts/wheel.sh    the wheel ends up in target/wheel/dist/
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
maturin_version=1.16.0
work=target/wheel

# maturin in a virtualenv of its own in the build area, installed once.
builder=$work/maturin
if [ "$("$builder/bin/maturin" --version 2>/dev/null)" != "maturin $maturin_version" ]; then
    rm -rf "$builder"
    mkdir -p "$work"
    python3 -m venv "$builder"
    "$builder/bin/pip" install --quiet --disable-pip-version-check "maturin==$maturin_version"
fi

# A release build in cargo's own target directory, so that it is reused.
rm -rf "$work/dist"
"$builder/bin/maturin" build --quiet --release --locked --out "$work/dist"
wheels=("$work"/dist/filebus_rs-*.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "wheel.sh: expected one filebus_rs wheel in $work/dist, found: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}

# A fresh virtualenv each time: the wheel alone must give a working command.
venv=$work/venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$wheel"
# As for a user who activated the virtualenv: `filebus` on PATH is the wheel's.
installed=$(PATH="$venv/bin:$PATH" command -v filebus || true)
if [ "$installed" != "$venv/bin/filebus" ]; then
    echo "wheel.sh: installing $wheel put no filebus command in $venv/bin" >&2
    exit 1
fi

version=$("$installed" --version)
expected="filebus $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
if [ "$version" != "$expected" ]; then
    echo "wheel.sh: the installed filebus says '$version', expected '$expected'" >&2
    exit 1
fi

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
