#!/bin/sh
# The baseline of bench/linux_veth.py: what a hand-written recipe does, one ip or brctl process
# per command, one phase per call so that phases can be timed like runflow's steps.
# Usage: linux_veth.sh PHASE N   (inside the bench namespace)
# PHASE: bridge | veths | ports | ports-up | addresses | peers-up, or teardown (what a hand-written
# rollback does: each pair deleted, then the bridge)
set -eu
phase=$1
n=$2
if [ "$phase" = bridge ]; then
    brctl addbr br0
    ip link set br0 up
    exit 0
fi
i=0
while [ "$i" -lt "$n" ]; do
    case $phase in
        veths) ip link add "va$i" type veth peer name "vb$i" ;;
        ports) brctl addif br0 "va$i" ;;
        ports-up) ip link set "va$i" up ;;
        addresses) ip addr add "10.77.$((i / 250)).$((i % 250 + 1))/32" dev "vb$i" ;;
        peers-up) ip link set "vb$i" up ;;
        teardown) ip link del "va$i" ;;
        *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
    i=$((i + 1))
done
if [ "$phase" = teardown ]; then
    ip link set br0 down
    brctl delbr br0
fi
