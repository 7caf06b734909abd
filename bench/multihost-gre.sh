#!/bin/sh
# The 2014 recipe as a plain shell script, for one lab host: the commands of
# workflows/multihost-gre.toml, one process each, no checks, no journal, no rollback.
# Usage: multihost-gre.sh up|down NETNS OVSDB BRIDGE_ADDRESS REMOTE_IP FIXED_CIDR DAEMON_JSON RESTART...
set -eu
mode=$1 ns=$2 db=$3 address=$4 remote=$5 cidr=$6 config=$7
shift 7
in_ns() { ip netns exec "$ns" "$@"; }
if [ "$mode" = up ]; then
    in_ns ovs-vsctl --db="$db" add-br br0 -- set bridge br0 datapath_type=netdev
    in_ns ovs-vsctl --db="$db" add-port br0 gre0 -- set interface gre0 type=gre \
        options:remote_ip="$remote"
    in_ns brctl addbr docker0
    in_ns ip addr add "$address" dev docker0
    in_ns brctl addif docker0 br0
    in_ns ip link set br0 up
    in_ns ip link set docker0 up
    in_ns sysctl -qw net.ipv4.ip_forward=1
    in_ns iptables -t nat -A POSTROUTING -s 172.16.42.0/24 ! -d 172.16.42.0/24 -j MASQUERADE
    in_ns iptables -A FORWARD -i docker0 -o docker0 -j ACCEPT
    cp "$config" "$config.orig"
    printf '{"bridge": "docker0", "fixed-cidr": "%s", "iptables": false, "ip-forward": false}\n' \
        "$cidr" > "$config"
    "$@"
else
    mv "$config.orig" "$config"
    "$@"
    in_ns iptables -D FORWARD -i docker0 -o docker0 -j ACCEPT
    in_ns iptables -t nat -D POSTROUTING -s 172.16.42.0/24 ! -d 172.16.42.0/24 -j MASQUERADE
    in_ns sysctl -qw net.ipv4.ip_forward=0
    in_ns ip link set docker0 down 2>/dev/null || true  # dockerd may have removed it
    in_ns brctl delbr docker0 2>/dev/null || true
    in_ns ovs-vsctl --db="$db" del-br br0
fi
