"""The settings of Linux bridges and of their ports that runflow reads, keeps and puts back:
their names under /sys/class/net/NAME/bridge/ and .../brport/ (how records name them, on both
targets), and how each is set: brctl 1.2 where it has a command, a write of that /sys file
where it has none (target centos6), `ip link set ... type bridge|bridge_slave` and its
netlink attribute (target modern). Nothing here does I/O.

Values are kept as /sys prints them: numbers in decimal ("1500"; times in hundredths of a
second, as netlink and `ip -d link` give them too), masks and protocols in hex ("0x0",
"0x8100"), the group address as a MAC. Left out: what the kernel reports but no one sets
(ids, timers, root port and cost, topology change, a port's state and number), what no longer
has an effect (hash_elasticity, ignored since Linux 5.0) and what pyroute2 cannot encode
(no_linklocal_learn, vlan_stats_per_port, a port's backup_port).
"""

from __future__ import annotations

from typing import NamedTuple


class Option(NamedTuple):
    ip: str  # its keyword after `ip link set NAME type bridge|bridge_slave`
    netlink: str  # its IFLA_BR_* / IFLA_BRPORT_* attribute
    brctl: str | None = None  # the brctl 1.2 command that sets it (None: a /sys write)
    boolean: bool = False  # ip says on/off (bridge_slave flags)


BRIDGE_OPTIONS: dict[str, Option] = {
    "forward_delay": Option("forward_delay", "IFLA_BR_FORWARD_DELAY", "setfd"),
    "hello_time": Option("hello_time", "IFLA_BR_HELLO_TIME", "sethello"),
    "max_age": Option("max_age", "IFLA_BR_MAX_AGE", "setmaxage"),
    "ageing_time": Option("ageing_time", "IFLA_BR_AGEING_TIME", "setageing"),
    "stp_state": Option("stp_state", "IFLA_BR_STP_STATE", "stp"),
    "priority": Option("priority", "IFLA_BR_PRIORITY", "setbridgeprio"),
    "vlan_filtering": Option("vlan_filtering", "IFLA_BR_VLAN_FILTERING"),
    "vlan_protocol": Option("vlan_protocol", "IFLA_BR_VLAN_PROTOCOL"),
    "default_pvid": Option("vlan_default_pvid", "IFLA_BR_VLAN_DEFAULT_PVID"),
    "vlan_stats_enabled": Option("vlan_stats_enabled", "IFLA_BR_VLAN_STATS_ENABLED"),
    "group_fwd_mask": Option("group_fwd_mask", "IFLA_BR_GROUP_FWD_MASK"),
    "group_addr": Option("group_address", "IFLA_BR_GROUP_ADDR"),
    "multicast_snooping": Option("mcast_snooping", "IFLA_BR_MCAST_SNOOPING"),
    "multicast_router": Option("mcast_router", "IFLA_BR_MCAST_ROUTER"),
    "multicast_query_use_ifaddr": Option("mcast_query_use_ifaddr",
                                         "IFLA_BR_MCAST_QUERY_USE_IFADDR"),
    "multicast_querier": Option("mcast_querier", "IFLA_BR_MCAST_QUERIER"),
    "hash_max": Option("mcast_hash_max", "IFLA_BR_MCAST_HASH_MAX"),
    "multicast_last_member_count": Option("mcast_last_member_count",
                                          "IFLA_BR_MCAST_LAST_MEMBER_CNT"),
    "multicast_startup_query_count": Option("mcast_startup_query_count",
                                            "IFLA_BR_MCAST_STARTUP_QUERY_CNT"),
    "multicast_last_member_interval": Option("mcast_last_member_interval",
                                             "IFLA_BR_MCAST_LAST_MEMBER_INTVL"),
    "multicast_membership_interval": Option("mcast_membership_interval",
                                            "IFLA_BR_MCAST_MEMBERSHIP_INTVL"),
    "multicast_querier_interval": Option("mcast_querier_interval",
                                         "IFLA_BR_MCAST_QUERIER_INTVL"),
    "multicast_query_interval": Option("mcast_query_interval", "IFLA_BR_MCAST_QUERY_INTVL"),
    "multicast_query_response_interval": Option("mcast_query_response_interval",
                                                "IFLA_BR_MCAST_QUERY_RESPONSE_INTVL"),
    "multicast_startup_query_interval": Option("mcast_startup_query_interval",
                                               "IFLA_BR_MCAST_STARTUP_QUERY_INTVL"),
    "multicast_stats_enabled": Option("mcast_stats_enabled", "IFLA_BR_MCAST_STATS_ENABLED"),
    "multicast_igmp_version": Option("mcast_igmp_version", "IFLA_BR_MCAST_IGMP_VERSION"),
    "multicast_mld_version": Option("mcast_mld_version", "IFLA_BR_MCAST_MLD_VERSION"),
    "nf_call_iptables": Option("nf_call_iptables", "IFLA_BR_NF_CALL_IPTABLES"),
    "nf_call_ip6tables": Option("nf_call_ip6tables", "IFLA_BR_NF_CALL_IP6TABLES"),
    "nf_call_arptables": Option("nf_call_arptables", "IFLA_BR_NF_CALL_ARPTABLES"),
}

PORT_OPTIONS: dict[str, Option] = {
    "path_cost": Option("cost", "IFLA_BRPORT_COST", "setpathcost"),
    "priority": Option("priority", "IFLA_BRPORT_PRIORITY", "setportprio"),
    "hairpin_mode": Option("hairpin", "IFLA_BRPORT_MODE", boolean=True),
    "bpdu_guard": Option("guard", "IFLA_BRPORT_GUARD", boolean=True),
    "root_block": Option("root_block", "IFLA_BRPORT_PROTECT", boolean=True),
    "multicast_fast_leave": Option("fastleave", "IFLA_BRPORT_FAST_LEAVE", boolean=True),
    "learning": Option("learning", "IFLA_BRPORT_LEARNING", boolean=True),
    "unicast_flood": Option("flood", "IFLA_BRPORT_UNICAST_FLOOD", boolean=True),
    "proxyarp": Option("proxy_arp", "IFLA_BRPORT_PROXYARP", boolean=True),
    "proxyarp_wifi": Option("proxy_arp_wifi", "IFLA_BRPORT_PROXYARP_WIFI", boolean=True),
    "multicast_router": Option("mcast_router", "IFLA_BRPORT_MULTICAST_ROUTER"),
    "multicast_flood": Option("mcast_flood", "IFLA_BRPORT_MCAST_FLOOD", boolean=True),
    "multicast_to_unicast": Option("mcast_to_unicast", "IFLA_BRPORT_MCAST_TO_UCAST",
                                   boolean=True),
    "broadcast_flood": Option("bcast_flood", "IFLA_BRPORT_BCAST_FLOOD", boolean=True),
    "neigh_suppress": Option("neigh_suppress", "IFLA_BRPORT_NEIGH_SUPPRESS", boolean=True),
    "isolated": Option("isolated", "IFLA_BRPORT_ISOLATED", boolean=True),
    "group_fwd_mask": Option("group_fwd_mask", "IFLA_BRPORT_GROUP_FWD_MASK"),
}

# /sys prints these in hex; group_addr is a MAC. Every other value is a decimal number.
_HEX = {"group_fwd_mask", "vlan_protocol"}
VLAN_PROTOCOLS = {0x8100: "802.1Q", 0x88A8: "802.1ad"}

# Times: /sys and netlink in hundredths of a second, brctl in seconds.
_TIMES = {"forward_delay", "hello_time", "max_age", "ageing_time"}


def number(name: str, value: str) -> int:
    """A numeric option's value as /sys prints it ("0x8100", "1500"), as a number."""
    return int(value, 16 if name in _HEX else 10)


def netlink_value(name: str, value: str) -> int | str:
    """The value as its netlink attribute takes it: a number, or the group address."""
    return value if name == "group_addr" else number(name, value)


def ip_value(name: str, option: Option, value: str) -> str:
    """The value as `ip link set ... type bridge|bridge_slave` takes it."""
    if option.boolean:
        return "on" if value != "0" else "off"
    if name == "vlan_protocol":
        code = number(name, value)
        return VLAN_PROTOCOLS.get(code, hex(code))
    return value


def brctl_value(name: str, value: str) -> str:
    """The value as brctl takes it: seconds for times, on/off for STP."""
    if name == "stp_state":
        return "on" if value != "0" else "off"
    if name in _TIMES:
        seconds = int(value) / 100
        return str(int(seconds)) if seconds.is_integer() else str(seconds)
    return value


def ordered(options: dict[str, str]) -> list[dict[str, str]]:
    """The bridge options in the batches that set them: STP is turned off before and on after
    the others, since with STP on the kernel refuses a forward delay under 2 s (and netlink
    sets the forward delay before the STP state whatever the order asked)."""
    stp = options.get("stp_state")
    rest = {k: v for k, v in options.items() if k != "stp_state"}
    if stp is None:
        return [rest] if rest else []
    first, last = ({"stp_state": stp}, rest) if stp == "0" else (rest, {"stp_state": stp})
    return [batch for batch in (first, last) if batch]
