#!/bin/sh
# The baseline of bench/ovs_ports.py: what a hand-written recipe does, one ovs-vsctl per port.
# Usage: ovs_ports_loop.sh DB N   (DB as for --db, e.g. unix:/tmp/x/db.sock; bridge br0 exists)
set -eu
db=$1
n=$2
i=0
while [ "$i" -lt "$n" ]; do
    ovs-vsctl --db="$db" add-port br0 "p$i" -- set Interface "p$i" type=internal
    i=$((i + 1))
done
