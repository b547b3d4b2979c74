#!/usr/bin/env bash
# Installs the reference peers (filebus 0.3.5 from PyPI, with watchdog for its
# file monitoring) into a virtualenv inside the ignored build area, so that
# the cross-implementation tests and the benchmark run against the original.
# Idempotent: an existing, working venv is left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${FILEBUS_PEERS_VENV:-$root/target/peers/venv}
if [ -x "$venv/bin/filebus" ] && "$venv/bin/python" -c 'import filebus, watchdog' 2>/dev/null; then
    echo "$venv/bin/filebus"
    exit 0
fi
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check filebus==0.3.5 watchdog >&2
"$venv/bin/python" -c 'import filebus, watchdog' >&2
echo "$venv/bin/filebus"
