#!/bin/sh
# The shell way bench/watch.py compares `runflow watch` with: a loop on `docker events` that
# plugs each labelled container that starts into the OVS bridge its label runflow.net names,
# with the address of its label runflow.ip, by the pipework sequence — one event after another,
# no rollback, no record. Each attachment done is appended to LOG as "ID EVENT_NANOSECONDS
# DONE_SECONDS". Usage (inside the host's network namespace):
#   watch-loop.sh DOCKER_HOST OVSDB LOG
docker_host=$1 ovsdb=$2 log=$3
docker -H "$docker_host" events --filter type=container --filter event=start \
    --filter label=runflow.net --format '{{.ID}} {{.TimeNano}}' |
while read -r id nanos; do
    set -- $(docker -H "$docker_host" inspect --format \
        '{{.State.Pid}} {{index .Config.Labels "runflow.net"}} {{index .Config.Labels "runflow.ip"}}' "$id")
    pid=$1 bridge=$2 address=$3
    ip link add "pl$pid" type veth peer name "pc$pid"
    ovs-vsctl --db="$ovsdb" add-port "$bridge" "pl$pid"
    ip link set "pl$pid" up
    ip link set "pc$pid" netns "$pid"
    nsenter -t "$pid" -n ip link set "pc$pid" name eth1
    nsenter -t "$pid" -n ip addr add "$address" dev eth1
    nsenter -t "$pid" -n ip link set eth1 up
    echo "$id $nanos $(date +%s.%N)" >> "$log"
done
