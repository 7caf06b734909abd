"""Argument schemas of the system actions — sysctls, firewall rules and services — shared by
every backend that implements them (procfs, iptables, systemd, service)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from runflow.core.actions import Args
from runflow.core.fields import Name
from runflow.core.hosts import NetnsHost


# -- sysctl -------------------------------------------------------------------------------------

# The sysctls under net. that the kernel keeps once for the whole machine: a network namespace
# does not have them (its /proc/sys/net lacks them), so a netns host cannot set them. Measured
# on kernel 6.18 by comparing /proc/sys/net outside and inside a new namespace, less the
# per-device conf/ and neigh/ entries; tests/integration/system/test_validation.py compares again.
MACHINE_NET_SYSCTLS = frozenset(f"net.{name}" for name in """
    core.bpf_jit_enable core.bpf_jit_harden core.bpf_jit_kallsyms core.bpf_jit_limit
    core.busy_poll core.busy_read core.default_qdisc core.dev_weight core.dev_weight_rx_bias
    core.dev_weight_tx_bias core.devconf_inherit_init_net core.fb_tunnels_only_for_init_net
    core.gro_normal_batch core.high_order_alloc_disable core.max_skb_frags core.mem_pcpu_rsv
    core.message_burst core.message_cost core.netdev_budget core.netdev_budget_usecs
    core.netdev_max_backlog core.netdev_rss_key core.netdev_tstamp_prequeue
    core.netdev_unregister_timeout_secs core.rps_sock_flow_entries core.skb_defer_max
    core.warnings ipv4.cipso_cache_bucket_size ipv4.cipso_cache_enable ipv4.cipso_rbm_optfmt
    ipv4.cipso_rbm_strictvalid ipv4.fib_sync_mem ipv4.inet_peer_maxttl ipv4.inet_peer_minttl
    ipv4.inet_peer_threshold ipv4.ipfrag_secret_interval ipv4.route.error_burst
    ipv4.route.error_cost ipv4.route.gc_elasticity ipv4.route.gc_interval
    ipv4.route.gc_min_interval ipv4.route.gc_min_interval_ms ipv4.route.gc_thresh
    ipv4.route.gc_timeout ipv4.route.max_size ipv4.route.redirect_load
    ipv4.route.redirect_number ipv4.route.redirect_silence ipv4.tcp_available_ulp
    ipv4.tcp_low_latency ipv4.tcp_max_orphans ipv4.tcp_mem ipv4.udp_mem
    ipv6.calipso_cache_bucket_size ipv6.calipso_cache_enable ipv6.ip6frag_secret_interval
    ipv6.mld_max_msf ipv6.mld_qrv netfilter.nf_log_all_netns nf_conntrack_max
    """.split())


def sysctl_parts(name: str) -> list[str]:
    """"net.ipv4.ip_forward", or with '/' separators when a component holds a dot
    ("net/ipv4/conf/eth0.1/forwarding"), as sysctl(8) accepts."""
    return name.split("/") if "/" in name else name.split(".")


def outside_netns(name: str) -> str | None:
    """Why a network namespace host cannot set this sysctl, or None when it can."""
    parts = sysctl_parts(name)
    if parts[0] != "net":
        return (f"{name} is the whole machine's setting, not a network namespace's: from a "
                "namespace it would change every host on this machine")
    if ".".join(parts) in MACHINE_NET_SYSCTLS:
        return (f"{name} is not per network namespace: the kernel keeps one for the whole "
                "machine, which a namespace cannot see or set")
    return None


def _sysctl_name(value: str) -> str:
    parts = sysctl_parts(value)
    if len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*", p)
                                 for p in parts):
        raise ValueError(f"{value!r} is not a sysctl name (e.g. net.ipv4.ip_forward)")
    return value


def _sysctl_value(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a string or a number, e.g. \"1\"")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and ("\n" in value.strip() or "\x00" in value):
        raise ValueError("must be a single line")
    return value


SYSCTL_D = "/etc/sysctl.d"


def _persist(value: str) -> str:
    directory, _, file = value.rpartition("/")
    if directory != SYSCTL_D or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,250}\.conf", file):
        raise ValueError(f"{value!r} is not a file of {SYSCTL_D}: give "
                         f"\"{SYSCTL_D}/NAME.conf\" (NAME of letters, digits, '_', '.', '@', '-')")
    return value


class SysctlArgs(Args):
    name: Annotated[str, AfterValidator(_sysctl_name)] = Field(
        description='the kernel parameter, e.g. "net.ipv4.ip_forward"')
    value: Annotated[str, BeforeValidator(_sysctl_value), Field(min_length=1, max_length=4096)] \
        = Field(description='its value as text, e.g. "1" (a number is taken as text)')
    persist: Annotated[str, AfterValidator(_persist)] | None = Field(default=None, description=(
        f'also write "NAME = VALUE" into this file, "{SYSCTL_D}/NAME.conf", so that the value '
        "holds after a reboot (its line for NAME is replaced, other lines kept; undo puts the "
        "file back as it was, or removes it). On a host that is a network namespace the "
        "namespace's own file: /etc/netns/NAMESPACE/sysctl.d/NAME.conf, which `ip netns exec` "
        "shows as /etc/sysctl.d"))

    @field_validator("name")
    @classmethod
    def _within_reach(cls, value: str, info: ValidationInfo) -> str:
        """Refused before anything runs on a host that is a network namespace."""
        host = (info.context or {}).get("host")
        why = outside_netns(value) if isinstance(host, NetnsHost) else None
        if why:
            raise ValueError(f"{why}. Host {host.name} is {host.where()}: set it on a host "
                             "that is the machine itself, or leave it out")
        return value

    @property
    def path_parts(self) -> list[str]:
        return sysctl_parts(self.name)


# -- firewall (iptables) ------------------------------------------------------------------------

Table = Literal["filter", "nat", "mangle", "raw", "security"]

# Options that would start another command or pick another table or chain: those come from
# the table, chain and position arguments, never from the rule. --modprobe names a program
# iptables would run.
_COMMAND_LONG = ("--append", "--insert", "--delete", "--replace", "--table", "--policy",
                 "--new-chain", "--delete-chain", "--flush", "--zero", "--list", "--list-rules",
                 "--rename-chain", "--check", "--modprobe")
_COMMAND_SHORT = set("AIDRPNXFZLSECt")


_CHAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,27}")  # also a target's name (-j)


def _chain(value: str) -> str:
    if not _CHAIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a chain name (at most 28 letters, digits, '_', '.', "
                         "'+', '-'; not starting with '-')")
    return value


def _ipv4(value: str) -> bool:
    """An address, or a network with a prefix length or a dotted mask (0/0: anywhere)."""
    try:
        ipaddress.IPv4Network("0.0.0.0/0" if value == "0/0" else value, strict=False)
        return True
    except ValueError:
        return False


def _address(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
        return True
    except ValueError:
        return False


def _port(value: str) -> bool:
    """A port number or a service name (/etc/services)."""
    return (value.isdigit() and int(value) <= 65535) or bool(
        re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", value))


def _port_range(value: str) -> bool:  # 80, http, 1024:2048, 1024:, :1023
    low, colon, high = value.partition(":")
    if not colon:
        return _port(value)
    return bool(low or high) and all(_port(p) for p in (low, high) if p)


def _ports(value: str) -> bool:  # 8080 or 8000-8080
    return all(p.isdigit() and int(p) <= 65535 for p in value.split("-", 1))


def _nat_to(value: str) -> bool:  # [ADDR[-ADDR]][:PORT[-PORT]]
    addresses, colon, ports = value.partition(":")
    if addresses and not all(_address(a) for a in addresses.split("-", 1)):
        return False
    return (bool(addresses) and not colon) or (bool(colon) and _ports(ports))


_STATES = {"NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED", "SNAT", "DNAT"}

# What the values of the options that name addresses, interfaces, protocols, ports, targets and
# states must look like: iptables would refuse a bad one (192.0.2.999, a var holding a shell
# command) only when the step runs, half-way through a run. (check, what it must be)
_VALUES: dict[str, tuple[Callable[[str], bool], str]] = {
    **dict.fromkeys(("-s", "--source", "--src", "-d", "--destination", "--dst"), (
        lambda v: all(_ipv4(a) for a in v.split(",")),
        "an IPv4 address or network, or a comma-separated list of them (e.g. 172.16.42.0/24)")),
    **dict.fromkeys(("-i", "--in-interface", "-o", "--out-interface"), (
        lambda v: bool(re.fullmatch(r"[^\s/'\"+]+\+?", v)) and len(v.encode()) <= 15,
        "an interface name (at most 15 bytes; a '+' at the end matches every name it starts)")),
    **dict.fromkeys(("-p", "--protocol"), (
        lambda v: (v.isdigit() and int(v) <= 255) or bool(re.fullmatch(r"[A-Za-z][\w-]*", v)),
        "a protocol name or number (tcp, udp, icmp, 47, all)")),
    **dict.fromkeys(("--dport", "--sport", "--destination-port", "--source-port"), (
        _port_range, "a port, a service name or a range (80, http, 1024:65535)")),
    **dict.fromkeys(("--dports", "--sports", "--ports"), (
        lambda v: all(_port_range(p) for p in v.split(",")),
        "a comma-separated list of ports or ranges (80,443,8000:8080)")),
    **dict.fromkeys(("-j", "--jump", "-g", "--goto"), (
        lambda v: bool(_CHAIN.fullmatch(v)),
        "a target or chain name (ACCEPT, DROP, MASQUERADE, a chain of yours)")),
    **dict.fromkeys(("--to-source", "--to-destination", "--to"), (
        _nat_to, "ADDRESS[-ADDRESS][:PORT[-PORT]] (IPv4)")),
    "--to-ports": (_ports, "a port or a range (8080 or 8000-8080)"),
    **dict.fromkeys(("--state", "--ctstate"), (
        lambda v: set(v.split(",")) <= _STATES,
        f"a comma-separated list of {', '.join(sorted(_STATES))}")),
}


def _rule(value: list[str]) -> list[str]:
    takes: str | None = None  # the option whose value comes next
    for i, arg in enumerate(value):
        where = f"rule[{i}] {arg!r}"
        if "\x00" in arg or "\n" in arg:
            raise ValueError(f"{where} contains a control character")
        if takes is not None:
            _check_value(i, takes, arg)
            takes = None
        elif arg.startswith("--"):
            option, eq, attached = arg.partition("=")
            # getopt accepts any unambiguous prefix of a long option (--app = --append)
            if len(option) > 2 and any(c.startswith(option) for c in _COMMAND_LONG):
                raise ValueError(f"{where}: the table, chain and position come from their own "
                                 "arguments, not from the rule")
            if option in _VALUES and eq:
                _check_value(i, option, attached)
            elif option in _VALUES:
                takes = option
        elif re.fullmatch(r"-[A-Za-z]+", arg) and _COMMAND_SHORT & set(arg[1:]):
            raise ValueError(f"{where}: the table, chain and position come from their own "
                             "arguments, not from the rule (it must not hold -A, -I, -D, -t, "
                             "-P, ...)")
        elif arg in _VALUES:
            takes = arg
    if takes is not None:
        raise ValueError(f"{takes} at the end of the rule has no value")
    return value


def _check_value(i: int, option: str, value: str) -> None:
    check, what = _VALUES[option]
    if not check(value):
        raise ValueError(f"rule[{i}] {value!r} (the value of {option}) is not {what}")


def _argv_list(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments, e.g. [\"-o\", \"docker0\", \"-j\", "
                         "\"ACCEPT\"], not a string: no shell is used")
    return value


Rule = Annotated[list[str], BeforeValidator(_argv_list), Field(min_length=1),
                 AfterValidator(_rule)]
ChainName = Annotated[str, AfterValidator(_chain)]


class FirewallRuleArgs(Args):
    """A rule in a chain. A missing rule is appended, or inserted at `position` (1 = first);
    a rule already in the chain is left where it is (never added twice)."""

    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="the chain, e.g. FORWARD or POSTROUTING")
    rule: Rule = Field(description='the rule\'s matches and target as a list, e.g. ["-o", '
                                   '"docker0", "-j", "ACCEPT"]')
    position: int | None = Field(default=None, ge=1, description=(
        "insert a missing rule at this position, 1 the first (default: append)"))


class FirewallRuleAbsentArgs(Args):
    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="the chain")
    rule: Rule = Field(description="the rule's matches and target as a list")


class FirewallPolicyArgs(Args):
    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="a built-in chain, e.g. FORWARD")
    policy: Literal["ACCEPT", "DROP"] = Field(description="its policy")


# -- services -----------------------------------------------------------------------------------


class ServiceRestartArgs(Args):
    name: Name = Field(description="the service, e.g. docker")


class ServicePresentArgs(Args):
    name: Name = Field(description="the service, e.g. docker")
    state: Literal["running", "stopped"] = Field(default="running",
                                                 description="running or stopped")
