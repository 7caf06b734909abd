#!/bin/sh
# Install everything runflow's tests need on a Debian/Ubuntu machine, as root.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    iproute2 bridge-utils iptables nftables iputils-ping procps kmod \
    openvswitch-switch docker.io busybox-static shellcheck dash tcpdump
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
