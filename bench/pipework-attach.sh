#!/bin/sh
# The pipework-style shell sequence that bench/attach_containers.py compares runflow with:
# attach each container (network none) to a Linux bridge with a veth, by hand.
# Usage (inside the host's network namespace):
#   pipework-attach.sh DOCKER_HOST BRIDGE PREFIX CONTAINER... ; addresses are PREFIX.(2+i)/16
set -eu
docker_host=$1 bridge=$2 prefix=$3
shift 3
i=2
for container in "$@"; do
    pid=$(docker -H "$docker_host" inspect --format '{{.State.Pid}}' "$container")
    host_if="pw$pid"
    peer_if="pwc$pid"
    ip link add "$host_if" type veth peer name "$peer_if"
    brctl addif "$bridge" "$host_if"
    ip link set "$host_if" up
    ip link set "$peer_if" netns "$pid"
    nsenter -t "$pid" -n ip link set "$peer_if" name eth0
    nsenter -t "$pid" -n ip addr add "$prefix.$((i / 256)).$((i % 256))/16" dev eth0
    nsenter -t "$pid" -n ip link set eth0 up
    i=$((i + 1))
done
