"""Every Linux action, on both targets: a run applies it, a second run finds nothing to do
(check holds), and rolling the first run back leaves the namespaces exactly as they were —
including what the step removed: addresses an exclusive address replaced, a bridge with its
options, ports (with theirs), addresses and routes, a veth pair with its routes, routes a link
lost going down or with its address, a route, a rule, an iptables rule at its old position, a
sysctl's old value and file.

Every case starts from a namespace set up with plain commands beside what the step is about
(BACKGROUND: a bridge with STP and its own options, a port with its own, an alias and a
queue length, routes in another table and of other types, rules, a sysctl), which the run and
its rollback must leave alone. Runs go through the session API the command line uses
(test_workflow.py drives the command line itself)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.snapshot import settled, snapshot

from .conftest import TARGETS, Lab, assert_same, step_states

pytestmark = pytest.mark.root

VETH = ["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"]
BRIDGE = ["ip", "link", "add", "br0", "type", "bridge"]


def up(*names: str) -> list[list[str]]:
    return [["ip", "link", "set", n, "up"] for n in names]


def addr(dev: str, *addresses: str) -> list[list[str]]:
    return [["ip", "addr", "add", a, "dev", dev] for a in addresses]


def rule(*words: str) -> list[str]:
    return ["iptables", *words]


def port(name: str, *options: str) -> list[str]:
    return ["ip", "link", "set", name, "type", "bridge_slave", *options]


# Set up before every case with plain commands: what runflow does not manage, or manages in
# other steps, and must leave as it found it. (The bridge with STP stays down: its ports are
# then "disabled", not moving through STP's states while the case runs.)
BACKGROUND = [
    ["ip", "link", "add", "brx", "type", "bridge", "stp_state", "1", "forward_delay", "400",
     "mcast_snooping", "0", "priority", "100", "ageing_time", "6000"],
    ["ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vx1"],
    ["ip", "link", "set", "vx0", "master", "brx"],
    port("vx0", "cost", "33", "hairpin", "on", "learning", "off"),
    ["ip", "link", "set", "vx1", "txqueuelen", "500", "alias", "outside", "up"],
    ["ip", "addr", "add", "10.200.0.1/24", "dev", "vx1"],
    ["ip", "route", "add", "10.201.0.0/16", "via", "10.200.0.254", "table", "200", "metric", "3"],
    ["ip", "route", "add", "blackhole", "10.202.0.0/16"],
    ["ip", "route", "add", "unreachable", "fd00:202::/48", "table", "200"],
    ["ip", "rule", "add", "from", "10.200.0.0/24", "table", "200", "priority", "200"],
    ["ip", "rule", "add", "fwmark", "0x20/0xff", "table", "200", "priority", "201"],
    ["ip", "-6", "rule", "add", "to", "fd00:202::/48", "table", "200", "priority", "200"],
    ["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=2"],
]
# A bridge's own settings, set by hand (none that starts timers or changes by itself)
BRIDGE_OPTIONS = ["priority", "7", "mcast_snooping", "0", "ageing_time", "12000", "hello_time",
                  "300", "max_age", "1500", "group_fwd_mask", "0x8", "mcast_hash_max", "1024",
                  "nf_call_iptables", "1"]


def info(s: dict[str, Any], name: str) -> dict[str, Any]:
    return links(s)[name]["linkinfo"]["info_data"]


def routes_to(s: dict[str, Any], dst: str) -> list[dict[str, Any]]:
    return [r for r in s["routes"] if r["dst"] == dst]


def rules_from(s: dict[str, Any], src: str) -> list[dict[str, Any]]:
    return [r for r in s["rules"] if r.get("src") == src]


@dataclass
class Case:
    id: str
    step: str  # the step's action and arguments (TOML); {other} / {pid}: the second namespace
    setup: list[list[str]] = field(default_factory=list)  # commands in h1 beforehand
    expect: Callable[[dict[str, Any]], bool] | None = None  # holds on h1's snapshot after
    other: bool = False  # needs a second namespace
    sysctls: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)  # in /etc/netns/NAME beforehand


def links(s: dict[str, Any]) -> dict[str, Any]:
    return s["links"]


def addresses(s: dict[str, Any], dev: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in s["addresses"].get(dev, [])
            if a.get("scope") != "link"]


CASES = [
    # -- link.set --
    Case("link-up", 'action = "link.set"\nname = "va"\nstate = "up"', [VETH],
         lambda s: "UP" in links(s)["va"]["flags"]),
    Case("link-mtu-down", 'action = "link.set"\nname = "va"\nmtu = 1400\nstate = "down"',
         [VETH, *up("va")], lambda s: links(s)["va"]["mtu"] == 1400),
    Case("link-master", 'action = "link.set"\nname = "va"\nmaster = "br0"', [VETH, BRIDGE],
         lambda s: links(s)["va"]["master"] == "br0"),
    Case("link-nomaster", 'action = "link.set"\nname = "va"\nmaster = ""',
         [VETH, BRIDGE, ["ip", "link", "set", "va", "master", "br0"],
          port("va", "cost", "44", "priority", "40", "hairpin", "on", "flood", "off")],
         lambda s: "master" not in links(s)["va"]),
    # going down, a link loses its IPv4 routes (in every table): undo brings them back
    Case("link-down-routes", 'action = "link.set"\nname = "va"\nstate = "down"',
         [VETH, *up("va", "vb"), *addr("va", "10.3.0.1/24"),
          ["ip", "route", "add", "10.30.0.0/16", "via", "10.3.0.254", "metric", "9"],
          ["ip", "route", "add", "10.31.0.0/16", "dev", "va", "table", "100"],
          ["ip", "route", "add", "10.32.0.0/16", "via", "10.3.0.254", "src", "10.3.0.1"]],
         lambda s: "UP" not in links(s)["va"]["flags"] and not routes_to(s, "10.30.0.0/16")),
    # -- bridges --
    Case("bridge-present", 'action = "bridge.present"\nname = "br0"', [],
         lambda s: links(s)["br0"]["linkinfo"]["info_kind"] == "bridge"),
    Case("bridge-present-options",
         'action = "bridge.present"\nname = "br0"\nstp = true\nforward_delay = 4\n'
         'mcast_snooping = false\nvlan_filtering = false\nmtu = 1400',
         [[*BRIDGE, *BRIDGE_OPTIONS[:2]]],
         lambda s: (info(s, "br0")["stp_state"], info(s, "br0")["forward_delay"],
                    info(s, "br0")["mcast_snooping"], info(s, "br0")["priority"],
                    links(s)["br0"]["mtu"]) == (1, 400, 0, 7, 1400)),
    Case("bridge-present-new-with-options",
         'action = "bridge.present"\nname = "br0"\nforward_delay = 0.5\nmcast_snooping = false',
         [], lambda s: (info(s, "br0")["forward_delay"], info(s, "br0")["mcast_snooping"])
         == (50, 0)),
    Case("bridge-present-stp-off",
         'action = "bridge.present"\nname = "brx"\nstp = false\nforward_delay = 0', [],
         lambda s: (info(s, "brx")["stp_state"], info(s, "brx")["forward_delay"]) == (0, 0)),
    Case("bridge-absent", 'action = "bridge.absent"\nname = "br0"',
         [VETH, ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vd"],
          [*BRIDGE, *BRIDGE_OPTIONS],
          ["ip", "link", "set", "vc", "mtu", "1400"],
          ["ip", "link", "set", "va", "master", "br0"],
          ["ip", "link", "set", "vc", "master", "br0"],
          port("va", "cost", "55", "priority", "40", "hairpin", "on", "learning", "off",
               "mcast_router", "2", "bcast_flood", "off"),
          *up("va", "vb", "vc", "br0"),
          *addr("br0", "10.1.0.1/24", "10.1.0.2/24", "fd00:1::1/64"),
          ["ip", "addr", "add", "10.1.1.1/24", "brd", "10.1.1.255", "dev", "br0", "label",
           "br0:x"],
          ["ip", "route", "add", "10.10.0.0/16", "via", "10.1.0.254", "metric", "5"],
          ["ip", "route", "add", "10.11.0.0/16", "dev", "br0", "table", "100"],
          ["ip", "route", "add", "10.12.0.0/16", "via", "10.1.0.254", "src", "10.1.0.2",
           "table", "101"],
          ["ip", "route", "add", "fd00:10::/48", "via", "fd00:1::fe"],
          ["ip", "route", "add", "10.13.0.0/16", "via", "10.200.0.254"]],  # not br0's
         lambda s: "br0" not in links(s) and not routes_to(s, "10.10.0.0/16")),
    Case("bridge-absent-empty", 'action = "bridge.absent"\nname = "br0"',
         [BRIDGE, *up("br0"), *addr("br0", "10.1.0.1/24")],
         lambda s: "br0" not in links(s)),
    Case("bridge-port", 'action = "bridge.port"\nbridge = "br0"\nname = "va"',
         [VETH, BRIDGE, *up("va", "vb", "br0")], lambda s: links(s)["va"]["master"] == "br0"),
    Case("bridge-port-move", 'action = "bridge.port"\nbridge = "br0"\nname = "va"',
         [VETH, BRIDGE, ["ip", "link", "add", "br1", "type", "bridge"],
          ["ip", "link", "set", "va", "master", "br1"], port("va", "cost", "66", "guard", "on")],
         lambda s: links(s)["va"]["master"] == "br0"),
    Case("bridge-port-absent", 'action = "bridge.port"\nbridge = "br0"\nname = "va"\n'
         'present = false', [VETH, BRIDGE, ["ip", "link", "set", "va", "master", "br0"],
                             port("va", "priority", "50", "isolated", "on")],
         lambda s: "master" not in links(s)["va"]),
    # -- addresses --
    Case("addr-present", 'action = "addr.present"\ndev = "va"\naddress = "10.2.0.1/24"',
         [VETH, *addr("va", "10.3.0.1/24")],
         lambda s: addresses(s, "va") == ["10.3.0.1/24", "10.2.0.1/24"]),
    Case("addr-present-v6", 'action = "addr.present"\ndev = "va"\naddress = "fd00:2::1/64"',
         [VETH], lambda s: "fd00:2::1/64" in addresses(s, "va")),
    # as `ip addr add`: a loopback address gets host scope
    Case("addr-present-loopback", 'action = "addr.present"\ndev = "va"\naddress = "127.0.0.2/8"',
         [VETH], lambda s: [(a["local"], a["scope"]) for a in s["addresses"]["va"]
                            if a["family"] == "inet"] == [("127.0.0.2", "host")]),
    Case("addr-exclusive-secondary",
         'action = "addr.present"\ndev = "va"\naddress = "10.2.0.6/24"\nexclusive = true',
         [VETH, *up("va", "vb"), *addr("va", "10.2.0.5/24", "10.2.0.6/24", "10.3.0.1/16",
                                        "fd00:3::1/64")],
         lambda s: addresses(s, "va") == ["10.2.0.6/24", "fd00:3::1/64"]),
    Case("addr-exclusive-new",
         'action = "addr.present"\ndev = "va"\naddress = "10.9.0.1/24"\nexclusive = true',
         [VETH, ["ip", "addr", "add", "10.2.0.5/24", "brd", "+", "dev", "va"],
          ["ip", "addr", "add", "10.2.1.5/24", "dev", "va", "label", "va:1"]],
         lambda s: addresses(s, "va") == ["10.9.0.1/24"]),
    Case("addr-absent-primary", 'action = "addr.absent"\ndev = "va"\naddress = "10.2.0.5/24"',
         [VETH, *addr("va", "10.2.0.5/24", "10.2.0.6/24", "10.2.0.7/24")],
         lambda s: "10.2.0.5/24" not in addresses(s, "va")),
    # the kernel deletes the routes that needed the address: undo puts them back
    Case("addr-absent-routes", 'action = "addr.absent"\ndev = "va"\naddress = "10.2.0.5/24"',
         [VETH, *up("va", "vb"), *addr("va", "10.2.0.5/24"),
          ["ip", "route", "add", "10.20.0.0/16", "via", "10.2.0.254", "table", "100"],
          ["ip", "route", "add", "10.21.0.0/16", "dev", "va", "src", "10.2.0.5"]],
         lambda s: not routes_to(s, "10.21.0.0/16")),
    # -- veth pairs and namespaces --
    Case("veth-present", 'action = "veth.present"\nname = "va"\npeer = "vb"', [],
         lambda s: links(s)["va"]["link"] == "vb"),
    Case("veth-present-netns",
         'action = "veth.present"\nname = "va"\npeer = "vb"\npeer_netns = "{other}"', [],
         lambda s: "vb" not in links(s) and "va" in links(s), other=True),
    Case("veth-absent", 'action = "veth.absent"\nname = "va"',
         [VETH, BRIDGE, ["ip", "link", "set", "va", "master", "br0"],
          port("va", "cost", "77", "hairpin", "on"),
          ["ip", "link", "set", "va", "mtu", "1400"], *up("va", "vb", "br0"),
          *addr("vb", "10.4.0.1/24", "fd00:4::1/64"),
          ["ip", "route", "add", "10.40.0.0/16", "via", "10.4.0.254", "table", "100"],
          ["ip", "-6", "route", "add", "fd00:40::/48", "dev", "vb", "metric", "7"]],  # alone
         lambda s: "va" not in links(s) and "vb" not in links(s)),
    Case("veth-absent-netns",
         'action = "veth.absent"\nname = "va"\npeer = "vb"\npeer_netns = "{other}"',
         [VETH, ["ip", "link", "set", "vb", "netns", "{other}"], *addr("va", "10.4.0.1/24")],
         lambda s: "va" not in links(s), other=True),
    Case("netns-move",
         'action = "netns.move"\nname = "va"\nnetns = "{other}"\nrename = "eth0"',
         [VETH, BRIDGE, ["ip", "link", "set", "va", "master", "br0"],
          port("va", "cost", "88", "learning", "off"), *up("va", "vb"),
          *addr("va", "10.4.0.1/24"),
          ["ip", "route", "add", "10.41.0.0/16", "via", "10.4.0.254", "table", "100"]],
         lambda s: "va" not in links(s), other=True),
    Case("netns-move-pid", 'action = "netns.move"\nname = "va"\npid = {pid}',
         [VETH, *up("va")], lambda s: "va" not in links(s), other=True),
    # -- routes --
    Case("route-present",
         'action = "route.present"\nto = "10.50.0.0/16"\nvia = "10.5.0.254"',
         [VETH, *up("va", "vb"), *addr("va", "10.5.0.1/24")],
         lambda s: any(r["dst"] == "10.50.0.0/16" for r in s["routes"])),
    Case("route-replace",
         'action = "route.present"\nto = "10.50.0.0/16"\nvia = "10.5.0.254"',
         [VETH, *up("va", "vb"), *addr("va", "10.5.0.1/24"),
          ["ip", "route", "add", "10.50.0.0/16", "via", "10.5.0.253"]],
         lambda s: [r.get("gateway") for r in s["routes"] if r["dst"] == "10.50.0.0/16"]
         == ["10.5.0.254"]),
    Case("route-dev", 'action = "route.present"\nto = "10.60.0.0/24"\ndev = "va"\nmetric = 20',
         [VETH, *up("va", "vb")],
         lambda s: any(r["dst"] == "10.60.0.0/24" for r in s["routes"])),
    Case("route-default-v6", 'action = "route.present"\nto = "default"\nvia = "fd00:5::fe"',
         [VETH, *up("va", "vb"), ["ip", "addr", "add", "fd00:5::1/64", "dev", "va", "nodad"]],
         lambda s: any(r["dst"] == "default" for r in s["routes"])),
    Case("route-absent", 'action = "route.absent"\nto = "10.50.0.0/16"',
         [VETH, *up("va", "vb"), *addr("va", "10.5.0.1/24"),
          ["ip", "route", "add", "10.50.0.0/16", "via", "10.5.0.254", "metric", "7"],
          ["ip", "route", "add", "10.50.0.0/16", "via", "10.5.0.253", "metric", "9"]],
         lambda s: not any(r["dst"] == "10.50.0.0/16" for r in s["routes"])),
    Case("route-blackhole-table",
         'action = "route.present"\nto = "10.51.0.0/16"\ntype = "blackhole"\ntable = 100\n'
         'metric = 5',
         [["ip", "route", "add", "unreachable", "10.51.0.0/16", "table", "100", "metric", "6"],
          ["ip", "route", "add", "prohibit", "10.51.0.0/16"]],
         lambda s: sorted(r.get("type", "unicast") for r in routes_to(s, "10.51.0.0/16"))
         == ["blackhole", "prohibit", "unreachable"]),
    Case("route-src-table",
         'action = "route.present"\nto = "10.52.0.0/16"\nvia = "10.5.0.254"\n'
         'src = "10.5.0.1"\ntable = "default"',
         [VETH, *up("va", "vb"), *addr("va", "10.5.0.1/24")],
         lambda s: [(r["table"], r["prefsrc"]) for r in routes_to(s, "10.52.0.0/16")]
         == [("default", "10.5.0.1")]),
    Case("route-unicast-to-prohibit",
         'action = "route.present"\nto = "10.53.0.0/16"\ntype = "prohibit"',
         [VETH, *up("va", "vb"), *addr("va", "10.5.0.1/24"),
          ["ip", "route", "add", "10.53.0.0/16", "via", "10.5.0.254"]],
         lambda s: [r.get("type") for r in routes_to(s, "10.53.0.0/16")] == ["prohibit"]),
    Case("route-unreachable-v6", 'action = "route.present"\nto = "fd00:54::/48"\n'
         'type = "unreachable"\nmetric = 10', [],
         lambda s: [r.get("type") for r in routes_to(s, "fd00:54::/48")] == ["unreachable"]),
    Case("route-absent-table",
         'action = "route.absent"\nto = "10.55.0.0/16"\ntable = 100\ntype = "blackhole"',
         [["ip", "route", "add", "blackhole", "10.55.0.0/16", "table", "100", "metric", "3"],
          ["ip", "route", "add", "blackhole", "10.55.0.0/16", "table", "100", "metric", "4"],
          ["ip", "route", "add", "unreachable", "10.55.0.0/16", "table", "100"],
          ["ip", "route", "add", "blackhole", "10.55.0.0/16"]],
         lambda s: sorted(r.get("type", "unicast") for r in routes_to(s, "10.55.0.0/16"))
         == ["blackhole", "unreachable"]),
    # -- rules --
    Case("rule-present",
         'action = "rule.present"\nfrom = "10.7.0.0/16"\niif = "lo"\nfwmark = "0x10/0xff"\n'
         'table = 100\npriority = 50',
         [["ip", "rule", "add", "from", "10.7.0.0/16", "table", "101", "priority", "50"]],
         lambda s: [r["table"] for r in rules_from(s, "10.7.0.0")] == ["101", "100"]),
    Case("rule-present-v6", 'action = "rule.present"\nto = "fd00:7::/48"\ntable = "main"', [],
         lambda s: [r["table"] for r in s["rules"] if r.get("dst") == "fd00:7::"] == ["main"]),
    Case("rule-absent", 'action = "rule.absent"\nfrom = "10.8.0.0/16"',
         [["ip", "rule", "add", "from", "10.8.0.0/16", "table", "100", "priority", "60"],
          ["ip", "rule", "add", "from", "10.8.0.0/16", "fwmark", "1", "table", "100"],
          ["ip", "rule", "add", "from", "10.8.0.0/16", "table", "101"],
          ["ip", "rule", "add", "from", "10.9.0.0/16", "tos", "0x10", "table", "102"]],
         lambda s: rules_from(s, "10.8.0.0") == [] and len(rules_from(s, "10.9.0.0")) == 1),
    # -- sysctl --
    Case("sysctl", 'action = "sysctl.set"\nname = "net.ipv4.ip_forward"\nvalue = "1"', [],
         lambda s: s["sysctls"]["net.ipv4.ip_forward"] == "1"),
    Case("sysctl-persist",
         'action = "sysctl.set"\nname = "net.ipv4.ip_forward"\nvalue = "1"\n'
         'persist = "/etc/sysctl.d/90-runflow.conf"', [],
         lambda s: s["files"]["sysctl.d/90-runflow.conf"] == "net.ipv4.ip_forward = 1\n"),
    Case("sysctl-persist-edit",
         'action = "sysctl.set"\nname = "net.ipv4.ip_forward"\nvalue = "1"\n'
         'persist = "/etc/sysctl.d/90-runflow.conf"', [], files={
             "sysctl.d/90-runflow.conf": "# by hand\nnet/ipv4/ip_forward=0\nnet.ipv4.conf.all."
                                         "rp_filter = 2\n -net.ipv4.ip_forward = 0"},
         expect=lambda s: s["files"]["sysctl.d/90-runflow.conf"] ==
         "# by hand\nnet.ipv4.ip_forward = 1\nnet.ipv4.conf.all.rp_filter = 2\n"),
    Case("sysctl-multi-value",
         'action = "sysctl.set"\nname = "net.ipv4.ip_local_port_range"\nvalue = "20000 30000"',
         [], sysctls=("net.ipv4.ip_local_port_range",),
         expect=lambda s: s["sysctls"]["net.ipv4.ip_local_port_range"].split()
         == ["20000", "30000"]),
    # -- firewall --
    Case("fw-append", 'action = "firewall.rule.present"\nchain = "FORWARD"\n'
         'rule = ["-i", "br0", "-o", "br0", "-j", "ACCEPT"]',
         [rule("-A", "FORWARD", "-i", "eth0", "-j", "DROP")],
         lambda s: s["iptables"]["filter"]["rules"][-1] ==
         "-A FORWARD -i br0 -o br0 -j ACCEPT"),
    Case("fw-insert", 'action = "firewall.rule.present"\nchain = "FORWARD"\nposition = 2\n'
         'rule = ["-p", "tcp", "--dport", "80", "-s", "10.0.0.1", "-j", "ACCEPT"]',
         [rule("-A", "FORWARD", "-i", "eth0", "-j", "DROP"),
          rule("-A", "FORWARD", "-i", "eth1", "-j", "DROP")],
         lambda s: s["iptables"]["filter"]["rules"][1] ==
         "-A FORWARD -s 10.0.0.1/32 -p tcp -m tcp --dport 80 -j ACCEPT"),
    Case("fw-new-chain", 'action = "firewall.rule.present"\nchain = "RF-TEST"\n'
         'rule = ["-m", "state", "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT"]', [],
         lambda s: "RF-TEST" in s["iptables"]["filter"]["chains"]),
    Case("fw-nat", 'action = "firewall.rule.present"\ntable = "nat"\nchain = "POSTROUTING"\n'
         'rule = ["-s", "172.16.42.0/24", "!", "-d", "172.16.42.0/24", "-j", "MASQUERADE"]', [],
         lambda s: len(s["iptables"]["nat"]["rules"]) == 1),
    Case("fw-absent", 'action = "firewall.rule.absent"\nchain = "FORWARD"\n'
         'rule = ["-o", "br0", "-i", "br0", "-j", "ACCEPT"]',
         [rule("-A", "FORWARD", "-i", "eth0", "-j", "DROP"),
          rule("-A", "FORWARD", "-i", "br0", "-o", "br0", "-j", "ACCEPT"),
          rule("-A", "FORWARD", "-i", "eth1", "-j", "DROP"),
          rule("-A", "FORWARD", "-i", "br0", "-o", "br0", "-j", "ACCEPT")],
         lambda s: len(s["iptables"]["filter"]["rules"]) == 2),
    Case("fw-policy", 'action = "firewall.policy"\nchain = "FORWARD"\npolicy = "DROP"', [],
         lambda s: s["iptables"]["filter"]["chains"]["FORWARD"] == "DROP"),
]


def _fill(text: str, other: str, pid: int) -> str:
    return text.replace("{other}", other).replace("{pid}", str(pid))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_apply_check_undo(lab: Lab, namespaces: Any, target: str, case: Case) -> None:
    other = namespaces() if case.other else None
    sleeper = subprocess.Popen(other.popen_argv(["sleep", "60"])) if other else None
    try:
        fill = (lambda t: _fill(t, other.name, sleeper.pid)) if other else (lambda t: t)
        lab.sh(*BACKGROUND, *[[fill(a) for a in argv] for argv in case.setup])
        for path, text in case.files.items():
            lab.ns_file(path, text)

        def state() -> list[dict[str, Any]]:
            return [settled(ns, extra_sysctls=case.sysctls)
                    for ns in (lab.ns.name, *([other.name] if other else []))]

        before = state()
        workflow = lab.workflow(f'[[steps]]\nid = "s"\n{fill(case.step)}\n')
        run_id, events = lab.run_in_process(workflow, target)
        assert step_states(events) == {"s": "applied"}
        if case.expect:
            assert case.expect(snapshot(lab.ns.name, extra_sysctls=case.sysctls)), \
                "the step did not do what it should"

        _, again = lab.run_in_process(workflow, target)
        assert step_states(again) == {"s": "skipped"}, "a second run changed something"

        lab.rollback_in_process(run_id)
        for was, now in zip(before, state()):
            assert_same(was, now)
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()
