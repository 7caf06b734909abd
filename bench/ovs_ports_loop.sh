#!/bin/sh
# The baseline of bench/ovs_ports.py: what a hand-written recipe does, one ovs-vsctl per port.
# Usage: ovs_ports_loop.sh DB N [add|del]   (DB as for --db, e.g. unix:/tmp/x/db.sock; bridge br0
# exists; del removes the ports add made)
set -eu
db=$1
n=$2
command=${3:-add}
i=0
while [ "$i" -lt "$n" ]; do
    case $command in
        add) ovs-vsctl --db="$db" add-port br0 "p$i" -- set Interface "p$i" type=internal ;;
        del) ovs-vsctl --db="$db" del-port br0 "p$i" ;;
        *) echo "unknown command $command" >&2; exit 2 ;;
    esac
    i=$((i + 1))
done
