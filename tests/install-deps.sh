#!/bin/sh
# Install runflow and everything its tests need on Debian 12 or Ubuntu 24.04, as root.
#
# Debian's and Ubuntu's python3 refuse pip installs into themselves (PEP 668), and their
# packages of runflow's libraries are too old for it (Debian 12: pydantic 1.10, pyroute2 0.7,
# pluggy 1.0, docker 5.0). So python3 stays as the distribution ships it, and:
#   /opt/runflow      a virtual environment holding runflow (a copy, not this checkout: it
#                     works for every user, wherever the checkout is) and its libraries;
#                     /usr/local/bin/runflow points at its `runflow`
#   ./.venv           this checkout installed editable, with pytest: the tests run here and
#                     see the checkout's code; `python3 -m pytest` hands them to it
#                     (tests/interpreter.py)
# Run it again after changing pyproject.toml or to refresh /opt/runflow from the checkout.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pip_install() {  # PYTHON ARGS...: pip install ARGS into PYTHON's environment
    python=$1; shift
    "$python" -m pip install -q --disable-pip-version-check "$@"
}

apt-get update -q
apt-get install -y -q --no-install-recommends \
    iproute2 bridge-utils iptables nftables iputils-ping procps kmod \
    openvswitch-switch docker.io busybox-static shellcheck dash tcpdump \
    openssh-server openssh-client ethtool util-linux \
    python3 python3-venv python3-pytest ca-certificates

for python in /usr/bin/python3 python3; do
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "install-deps: runflow needs Python 3.11 or newer; $python is" \
             "$("$python" -V 2>&1) (Debian 12 and Ubuntu 24.04 have one)" >&2
        exit 1
    fi
done

# runflow for everyone, on the distribution's python3 (security updates come with the system).
# Built from a clean copy: setuptools would also pack what a stale build/ still holds.
[ -x /opt/runflow/bin/python ] || /usr/bin/python3 -m venv /opt/runflow
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
tar -c --exclude=./.git --exclude=./.venv --exclude=./build . | tar -x -C "$copy"
pip_install /opt/runflow/bin/python --upgrade "$copy"
ln -sf /opt/runflow/bin/runflow /usr/local/bin/runflow

# The tests: this checkout, editable, on the python3 that `python3 -m pytest` starts.
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install .venv/bin/python -e '.[test]'
# setuptools leaves the project's metadata in the checkout (runflow.egg-info; .venv has its own
# copy). `python3 -m pytest` puts the checkout on sys.path, where a python3 without runflow would
# find the test kit's pytest11 entry point there and fail to import it before handing over.
rm -rf runflow.egg-info
# python3 only needs pytest itself, to hand over to .venv: Debian's python3-pytest, or pip
# for a python3 that is not the distribution's (pyenv, a python3 built from source).
python3 -c 'import pytest' 2>/dev/null || pip_install python3 pytest

found=$(command -v runflow || true)
if [ "$found" != /usr/local/bin/runflow ]; then
    echo "install-deps: note: \`runflow\` on your PATH is $found, not /usr/local/bin/runflow" >&2
fi
