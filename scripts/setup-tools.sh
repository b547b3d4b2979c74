#!/usr/bin/env bash
# Installs, when missing, the programs that tests/generate.rs checks the
# manual pages and completion scripts with: man (man-db) and groff to render
# the pages, zsh, fish and elvish to load the completions, and script(1) to
# give elvish the terminal it insists on. Debian packages through apt-get,
# which needs root (as CI is); otherwise says what to install and fails.
set -euo pipefail
declare -A package=(
    [man]=man-db
    [groff]=groff-base
    [zsh]=zsh
    [fish]=fish
    [elvish]=elvish
    [script]=bsdutils
)
missing=()
for program in "${!package[@]}"; do
    command -v "$program" >/dev/null || missing+=("${package[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup-tools.sh: the tests need these packages: ${missing[*]} (apt-get install, as root)" >&2
    exit 1
fi
echo "== installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup-tools.sh: apt-get could not install ${missing[*]}" >&2
    exit 1
fi
for program in "${!package[@]}"; do
    command -v "$program" >/dev/null || { echo "setup-tools.sh: $program still missing" >&2; exit 1; }
done
