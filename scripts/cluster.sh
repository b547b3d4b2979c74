#!/usr/bin/env bash
# A bus across hosts, on one machine: a GlusterFS volume mounted twice, by two
# separate FUSE client processes that each stand for a host with its own
# caches. tests/cluster.rs runs producers on one mount and consumers on the
# other; a person can do the same by hand (see docs/across-hosts.md).
#
#   scripts/cluster.sh up       install GlusterFS if missing, start glusterd,
#                               the volume and both mounts (idempotent)
#   scripts/cluster.sh down     unmount, then stop every process it started,
#                               by PID
#   scripts/cluster.sh status   say what is running; exit 0 only when all is
#
# Needs root (glusterd, FUSE mounts) and Debian's packages. No systemd is
# assumed: the daemons are started directly and their PIDs kept in the state
# directory. Every wait has a deadline (FILEBUS_CLUSTER_TIMEOUT seconds,
# default 60).
#
# Where things are (environment variables, with their defaults):
#   FILEBUS_CLUSTER_A=/mnt/filebus-a      the first mount ("host A")
#   FILEBUS_CLUSTER_B=/mnt/filebus-b      the second mount ("host B")
#   FILEBUS_CLUSTER_STATE=/var/lib/filebus-cluster
#                                         brick, PID files and logs
#   FILEBUS_CLUSTER_HOST=127.0.0.2        the server address; Gluster refuses
#                                         127.0.0.1 for a brick
# glusterd itself keeps its configuration in /var/lib/glusterd, as packaged.
set -euo pipefail

MOUNT_A=${FILEBUS_CLUSTER_A:-/mnt/filebus-a}
MOUNT_B=${FILEBUS_CLUSTER_B:-/mnt/filebus-b}
STATE=${FILEBUS_CLUSTER_STATE:-/var/lib/filebus-cluster}
HOST=${FILEBUS_CLUSTER_HOST:-127.0.0.2}
TIMEOUT=${FILEBUS_CLUSTER_TIMEOUT:-60}
VOLUME=filebus
BRICK=$STATE/brick
LOGS=$STATE/log
GLUSTERD_PID=$STATE/glusterd.pid

# What the bus needs from the volume: no client may answer from its own cache
# what another client changed. Found by running tests/cluster.rs with each
# option back on (docs/across-hosts.md):
#  - stat-prefetch (md-cache) off: required. With it on, renames made through
#    the other mount showed up to seconds late: lossy consumers delivered 4 of
#    600 chunks, one of them twice, and a tick took 2 s to cross.
#  - open-behind off: recommended. It fakes open() and opens at the first
#    read, so a chunk replaced in between reads as the newer one or fails
#    with ENOENT/ESTALE (reported in issue 13, before consumers retried on
#    ESTALE); the tests pass with it on today.
#  - quick-read, io-cache, read-ahead, write-behind off: precautions. They
#    serve file contents from a client's cache, or acknowledge writes before
#    they reach the brick. No failure was seen with quick-read or write-behind
#    on, and turning them off cost nothing measurable here.
VOLUME_OPTIONS=(
    performance.stat-prefetch=off
    performance.open-behind=off
    performance.quick-read=off
    performance.io-cache=off
    performance.read-ahead=off
    performance.write-behind=off
)
# The kernel side of each client: no cached attributes (required: with the
# default second, lossy consumers delivered chunks twice) and no cached
# lookups, positive or negative.
CLIENT_OPTIONS=(--entry-timeout=0 --negative-timeout=0 --attribute-timeout=0)

say() { echo "cluster: $*" >&2; }
die() {
    echo "cluster: $*" >&2
    exit 1
}

# within SECS COMMAND...: runs COMMAND until it succeeds, for at most SECS.
within() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# wait_for WHAT COMMAND...: within TIMEOUT, or fail saying what it waited for.
wait_for() {
    local what=$1
    shift
    within "$TIMEOUT" "$@" || die "timed out after ${TIMEOUT}s waiting for $what"
}

# The gluster command line tool, never prompting, never hanging.
gcli() { timeout "$TIMEOUT" gluster --mode=script "$@"; }

# alive PID: the process exists and is not a zombie (a killed daemon may stay
# one for a while when nothing reaps it).
alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
        [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}

# pid_of FILE NAME: the PID in FILE if that process is alive and is NAME.
pid_of() {
    local file=$1 name=$2 pid
    [ -r "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    alive "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

# stop PID:WHAT...: SIGTERM to all at once (each takes a second or two to
# clean up), then SIGKILL to any still there after the deadline. Waits until
# each is gone altogether, zombie included: glusterd takes a brick whose PID
# still exists for a running one and would not start it again.
stop() {
    local deadline=$((SECONDS + TIMEOUT)) entry left
    for entry in "$@"; do
        kill -TERM "${entry%%:*}" 2>/dev/null || true
    done
    while :; do
        left=()
        for entry in "$@"; do
            if kill -0 "${entry%%:*}" 2>/dev/null; then left+=("$entry"); fi
        done
        ((${#left[@]})) || break
        if ((SECONDS >= deadline)); then
            for entry in "${left[@]}"; do
                say "${entry#*:} (pid ${entry%%:*}) ignored SIGTERM for ${TIMEOUT}s; SIGKILL"
                kill -KILL "${entry%%:*}" 2>/dev/null || true
            done
            break
        fi
        sleep 0.1
    done
    for entry in "$@"; do
        say "stopped ${entry#*:} (pid ${entry%%:*})"
    done
}

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (glusterd and FUSE mounts); try: sudo $0 $*"
}

install() {
    if command -v glusterd >/dev/null && command -v glusterfs >/dev/null &&
        command -v gluster >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "GlusterFS is missing and there is no apt-get to install it"
    say "installing glusterfs-server and glusterfs-client with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt-get may hold the package lock for a while; wait for it.
    local apt=(apt-get -q -o DPkg::Lock::Timeout="$TIMEOUT")
    timeout $((TIMEOUT * 5)) "${apt[@]}" update >&2 ||
        die "apt-get update failed"
    timeout $((TIMEOUT * 5)) "${apt[@]}" install -y --no-install-recommends \
        glusterfs-server glusterfs-client >&2 ||
        die "apt-get install glusterfs-server glusterfs-client failed"
}

# answers_or_gone PID: glusterd PID answers the command line tool, or exited.
answers_or_gone() { gcli volume list >/dev/null 2>&1 || ! alive "$1"; }

start_glusterd() {
    local pid
    # Ours, or one that someone else started, which serves us as well.
    # (Asking the CLI instead takes three seconds to fail when there is none.)
    if pid=$(pid_of "$GLUSTERD_PID" glusterd) ||
        { pid=$(pgrep -x glusterd | head -n1) && alive "$pid"; }; then
        wait_for "glusterd (pid $pid) to answer" answers_or_gone "$pid"
        if alive "$pid"; then
            return
        fi
        say "glusterd (pid $pid) exited; starting another"
    fi
    mkdir -p "$LOGS"
    glusterd -p "$GLUSTERD_PID" -l "$LOGS/glusterd.log" ||
        die "glusterd did not start; see $LOGS/glusterd.log"
    wait_for "glusterd to answer (log: $LOGS/glusterd.log)" gcli volume list
    say "started glusterd (pid $(cat "$GLUSTERD_PID"))"
}

# The brick of our volume as glusterd knows it, empty if there is no volume.
known_brick() {
    local info
    info=$(gcli volume info "$VOLUME" 2>/dev/null) || return 0
    sed -n 's/^Brick1: //p' <<<"$info"
}

ensure_volume() {
    local brick
    brick=$(known_brick)
    if [ -z "$brick" ]; then
        # A brick left by a deleted volume carries its old volume id; start
        # afresh (it only ever held test buses).
        rm -rf "$BRICK"
        mkdir -p "$BRICK"
        # force: the brick is on the root filesystem, which Gluster
        # otherwise refuses.
        gcli volume create "$VOLUME" "$HOST:$BRICK" force >&2 ||
            die "cannot create volume $VOLUME on $HOST:$BRICK"
        brick="$HOST:$BRICK"
    fi
    [ "$brick" = "$HOST:$BRICK" ] ||
        die "volume $VOLUME already exists with brick $brick, not $HOST:$BRICK; remove it (gluster volume stop/delete $VOLUME) or set FILEBUS_CLUSTER_STATE/HOST to match"
    local current option key value
    current=$(gcli volume get "$VOLUME" all)
    for option in "${VOLUME_OPTIONS[@]}"; do
        key=${option%%=*} value=${option#*=}
        if ! grep -Eq "^$key +$value( |$)" <<<"$current"; then
            gcli volume set "$VOLUME" "$key" "$value" >/dev/null ||
                die "cannot set $key=$value on volume $VOLUME"
        fi
    done
    if ! gcli volume info "$VOLUME" | grep -q '^Status: Started'; then
        gcli volume start "$VOLUME" >&2 || die "cannot start volume $VOLUME"
    fi
    # glusterd restarts the brick of a started volume by itself when it
    # starts; "start force" brings back one that died without it.
    if ! within 10 brick_online; then
        gcli volume start "$VOLUME" force >&2 || die "cannot start the brick of $VOLUME"
        wait_for "the brick process (log: /var/log/glusterfs/bricks/)" brick_online
    fi
}

brick_pidfile() {
    echo "/var/run/gluster/vols/$VOLUME/$HOST-$(sed 's|^/||; s|/|-|g' <<<"$BRICK").pid"
}

brick_online() { pid_of "$(brick_pidfile)" glusterfsd >/dev/null; }

# mounted DIR: a live FUSE mount of our volume answers at DIR.
mounted() {
    mountpoint -q "$1" 2>/dev/null && timeout 10 stat -f "$1" >/dev/null 2>&1
}

mount_client() {
    local name=$1 dir=$2 pidfile=$STATE/client-$1.pid pid
    if mounted "$dir" && pid=$(pid_of "$pidfile" glusterfs); then
        return
    fi
    # A mount whose client died (a killed session) answers ENOTCONN: drop it.
    if grep -qs " $dir fuse" /proc/mounts; then
        say "dropping the stale mount at $dir"
        umount -l "$dir" || die "cannot unmount the stale mount at $dir"
    fi
    mkdir -p "$dir" "$LOGS"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty; not mounting over it"
    glusterfs --process-name fuse --volfile-server="$HOST" --volfile-id="$VOLUME" \
        "${CLIENT_OPTIONS[@]}" -p "$pidfile" -l "$LOGS/client-$name.log" "$dir" ||
        die "glusterfs client $name did not start; see $LOGS/client-$name.log"
    wait_for "the mount at $dir (log: $LOGS/client-$name.log)" mounted "$dir"
    say "mounted $VOLUME at $dir (client pid $(cat "$pidfile"))"
}

# Each mount sees what the other writes, at once.
crosscheck() {
    local probe=".cluster-probe-$$" ok=0
    echo "$probe" >"$MOUNT_A/$probe"
    [ "$(cat "$MOUNT_B/$probe" 2>/dev/null)" = "$probe" ] && ok=1
    rm -f "$MOUNT_B/$probe"
    [ ! -e "$MOUNT_A/$probe" ] || ok=0
    ((ok)) || die "the two mounts do not see each other's changes"
}

up() {
    need_root up
    local start=$SECONDS
    [ -c /dev/fuse ] || modprobe fuse 2>/dev/null || true
    [ -c /dev/fuse ] || die "no /dev/fuse: this machine cannot mount FUSE filesystems"
    install
    start_glusterd
    ensure_volume
    mount_client a "$MOUNT_A"
    mount_client b "$MOUNT_B"
    crosscheck
    say "up in $((SECONDS - start))s: $MOUNT_A and $MOUNT_B are two clients of one volume"
}

unmount() {
    local dir=$1
    if grep -qs " $dir fuse" /proc/mounts; then
        timeout "$TIMEOUT" umount "$dir" 2>/dev/null || umount -l "$dir" ||
            die "cannot unmount $dir"
        say "unmounted $dir"
    fi
}

down() {
    need_root down
    unmount "$MOUNT_A"
    unmount "$MOUNT_B"
    # Clients exit by themselves once unmounted, but not at once. The brick
    # is stopped by PID, not with "volume stop", so the volume stays marked
    # started and glusterd brings the brick back on the next "up".
    local pid running=()
    if pid=$(pid_of "$STATE/client-a.pid" glusterfs); then running+=("$pid:glusterfs client a"); fi
    if pid=$(pid_of "$STATE/client-b.pid" glusterfs); then running+=("$pid:glusterfs client b"); fi
    if pid=$(pid_of "$(brick_pidfile)" glusterfsd); then running+=("$pid:brick"); fi
    if pid=$(pid_of "$GLUSTERD_PID" glusterd); then running+=("$pid:glusterd"); fi
    ((${#running[@]} == 0)) || stop "${running[@]}"
    rm -f "$STATE/client-a.pid" "$STATE/client-b.pid" "$GLUSTERD_PID"
}

status() {
    local ok=0 pid
    if pid=$(pid_of "$GLUSTERD_PID" glusterd); then
        echo "glusterd  running (pid $pid)"
    elif pid=$(pgrep -x glusterd | head -n1) && [ -n "$pid" ]; then
        echo "glusterd  running (pid $pid, not started by this script)"
    else
        echo "glusterd  stopped"
        ok=1
    fi
    if pid=$(pid_of "$(brick_pidfile)" glusterfsd); then
        echo "brick     running (pid $pid) $HOST:$BRICK"
    else
        echo "brick     stopped"
        ok=1
    fi
    for name in a b; do
        local dir=$MOUNT_A
        [ "$name" = a ] || dir=$MOUNT_B
        if mounted "$dir" && pid=$(pid_of "$STATE/client-$name.pid" glusterfs); then
            echo "mount $name   $dir (client pid $pid)"
        elif grep -qs " $dir fuse" /proc/mounts; then
            echo "mount $name   $dir is stale (its client is gone)"
            ok=1
        else
            echo "mount $name   $dir not mounted"
            ok=1
        fi
    done
    return $ok
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*)
    echo "usage: $0 up|down|status (see $0 --help)" >&2
    exit 2
    ;;
esac
