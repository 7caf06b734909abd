#!/bin/sh
# The README's two commands on a fresh machine, as a new user runs them.
#
# Builds a fresh Debian 12 (or Ubuntu 24.04) root with debootstrap (minbase + python3), copies
# this checkout to /root/runflow in it and runs there, as root, exactly
#     sh tests/install-deps.sh && runflow lab demo
#     sh tests/install-deps.sh && python3 -m pytest -q tests
# and then `runflow` as an unprivileged user; it reports each one's result. The fresh machine
# gets a mount, PID and network namespace of its own, and its root is a mount point (as a
# container's is) but not the machine's: runflow runs in a chroot. Its network namespace has
# only loopback, where tests/support/registry_proxy.py (running outside, in the machine's
# namespace, which is never changed) forwards to the distribution's mirror and PyPI only, for
# apt-get and pip. Package installs start no services (policy-rc.d, as container images do);
# the machine's own certificate authorities (/usr/local/share/ca-certificates) are copied in.
#
#     sh tests/fresh-machine.sh [debian|ubuntu] [--keep]     # as root; --keep keeps the root
#
# Slow (about 20-30 minutes) and needs the mirror: not part of .ci/run.
set -eu

PATH_OF_ROOT=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PORT=3128

# -- inside: the fresh machine's namespaces (PID 1 of its PID namespace) ------------------------

run_step() {  # NAME USER COMMAND: run COMMAND in the fresh root, log it, say how it ended
    name=$1 user=$2 command=$3
    log="$logs/$name.log"
    started=$(date +%s)
    set +e
    timeout 5400 chroot --userspec="$user" "$root" /usr/bin/env -i PATH="$PATH_OF_ROOT" \
        HOME="$home" LANG=C.UTF-8 TERM=dumb http_proxy="$proxy" https_proxy="$proxy" \
        /bin/sh -c "cd $workdir && $command" >"$log" 2>&1
    rc=$?
    set -e
    last=$(grep -v '^\s*$' "$log" | grep -E "$summary" | tail -n 1 || true)
    printf 'fresh-machine: [%s] %s -> exit %s (%s s)%s\n' "$name" "$command" "$rc" \
        "$(($(date +%s) - started))" "${last:+: $last}"
    [ "$rc" = 0 ] || failed=1
}

inside() {  # ROOT LOGS PROXY_URL
    root=$1 logs=$2 proxy=$3
    mount --bind "$root" "$root"  # / of the fresh machine is a mount point
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    [ ! -d /sys/fs/cgroup ] || mount --rbind /sys/fs/cgroup "$root/sys/fs/cgroup"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    failed=0
    home=/root workdir=/root/runflow
    summary='demo: |passed|failed|error|Error|exited'
    run_step 1-demo 0:0 "sh tests/install-deps.sh && runflow lab demo"
    run_step 1-lab-down 0:0 "runflow lab down"
    run_step 2-tests 0:0 "sh tests/install-deps.sh && python3 -m pytest -q tests"
    home=/ workdir=/ summary='.'
    run_step 3-user nobody:nogroup "runflow --version && runflow validate \
/opt/runflow/lib/python3*/site-packages/runflow/workflows/docker-bridge.toml"
    return "$failed"
}

if [ "${1:-}" = --inside ]; then
    shift
    inside "$@"
    exit
fi

# -- outside: build the root, the namespace and the proxy; clean up after -----------------------

distro=debian keep=
for arg in "$@"; do
    case $arg in
        debian|ubuntu) distro=$arg ;;
        --keep) keep=1 ;;
        *) echo "usage: sh tests/fresh-machine.sh [debian|ubuntu] [--keep]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "fresh-machine: run as root" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null

work=$(mktemp -d /var/tmp/rf-fresh.XXXXXX)
root=$work/root logs=$work/logs
netns=rffresh-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
proxy_pid=
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true
    ip netns delete "$netns" 2>/dev/null || true
    if [ -z "$keep" ]; then
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$logs"

case $distro in
    debian)
        suite=bookworm mirror=http://deb.debian.org/debian
        bootstrap="debootstrap --variant=minbase --include=python3 $suite $root $mirror"
        sources="deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main"
        hosts="deb.debian.org" ;;
    ubuntu)
        # Debian 12's debootstrap predates noble (its Ubuntu script is gutsy's) and Debian has
        # no Ubuntu keyring: the bootstrap is not verified; apt inside verifies everything after.
        suite=noble mirror=http://archive.ubuntu.com/ubuntu
        bootstrap="debootstrap --variant=minbase --include=python3 --components=main,universe \
--no-check-gpg $suite $root $mirror /usr/share/debootstrap/scripts/gutsy"
        sources="deb $mirror noble main universe
deb $mirror noble-updates main universe
deb http://security.ubuntu.com/ubuntu noble-security main universe"
        hosts="archive.ubuntu.com security.ubuntu.com" ;;
esac

echo "fresh-machine: $distro $suite in $work"
started=$(date +%s)
# shellcheck disable=SC2086  # the words of the command
if ! $bootstrap >"$logs/debootstrap.log" 2>&1; then
    echo "fresh-machine: debootstrap failed: $(tail -n 3 "$logs/debootstrap.log")" >&2
    exit 1
fi
printf '%s\n' "$sources" >"$root/etc/apt/sources.list"
# The site's own certificate authorities, as this machine has them: where TLS to the registries
# is inspected, pip needs them (ca-certificates, installed by install-deps, picks them up).
mkdir -p "$root/usr/local/share/ca-certificates"
cp -p /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" \
    2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/root/runflow"
tar -c -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache . |
    tar -x -C "$root/root/runflow"
pip=$(chroot "$root" python3 -m pip -V 2>&1 | head -n 1)
echo "fresh-machine: root built in $(($(date +%s) - started)) s: $(chroot "$root" python3 -V);" \
     "python3 -m pip: $pip"

ip netns add "$netns"
ip -n "$netns" link set lo up
# shellcheck disable=SC2086  # one host a word
python3 "$repo/tests/support/registry_proxy.py" --netns "/run/netns/$netns" --port "$PORT" \
    --allow $hosts pypi.org files.pythonhosted.org 2>"$logs/proxy.log" &
proxy_pid=$!
sleep 1

set +e
nsenter --net="/run/netns/$netns" unshare --mount --pid --fork --propagation private \
    sh "$repo/tests/fresh-machine.sh" --inside "$root" "$logs" "http://127.0.0.1:$PORT"
rc=$?
set -e
echo "fresh-machine: $distro $suite: $([ "$rc" = 0 ] && echo PASSED || echo FAILED) in" \
     "$(($(date +%s) - started)) s; logs in $logs"
exit "$rc"
