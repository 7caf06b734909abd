"""What needs no root: arguments refused before anything runs, reading `ip` and
`iptables-save` output, and the changes apply and undo would make, on both targets' commands."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runflow.backends.linux.commands import parse_addresses, parse_routes, parse_rules, render
from runflow.backends.system.args import FirewallRuleArgs, SysctlArgs
from runflow.backends.system.iptables import canonical, parse_save
from runflow.backends.linux.args import (AddAddr, AddBridge, AddrPresentArgs, AddVeth,
                                         BridgePortArgs, DelAddr, DelLink, Enslave, LinkSetArgs,
                                         NetnsMoveArgs,
                                         Release, RoutePresentArgs, SetLink, VethAbsentArgs,
                                         VethPresentArgs, fresh, restore_addresses,
                                         restore_link)
from runflow.backends.linux.netlink import Netlink
from runflow.core.plugins import Plugins


@pytest.mark.parametrize("schema, data, field", [
    (LinkSetArgs, {"name": "eth0"}, "state, mtu, master"),
    (LinkSetArgs, {"name": "a-name-longer-than-15", "state": "up"}, "1 to 15 bytes"),
    (LinkSetArgs, {"name": "br0", "master": "br0"}, "own master"),
    (LinkSetArgs, {"name": "eth0", "mtu": 20}, "mtu"),
    (BridgePortArgs, {"bridge": "br0", "name": "eth;rm"}, "forbidden character"),
    (LinkSetArgs, {"name": "eth\u202e0", "state": "up"}, "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    (BridgePortArgs, {"bridge": "br\u200d0", "name": "va"}, "format character U+200D"),
    (VethPresentArgs, {"name": "va", "peer": "vb\x07"}, "control or format character U+0007"),
    (AddrPresentArgs, {"dev": "br0", "address": "172.16.42.1"}, "prefix length"),
    (AddrPresentArgs, {"dev": "br0", "address": "172.16.42.300/24"}, "CIDR"),
    (VethAbsentArgs, {"name": "va", "peer_netns": "ns1"}, "peer_netns needs peer"),
    (NetnsMoveArgs, {"name": "va", "netns": "a", "pid": 7}, "exactly one"),
    (NetnsMoveArgs, {"name": "va", "netns": "../etc"}, "namespace name"),
    (RoutePresentArgs, {"to": "10.0.0.0/8"}, "via, dev"),
    (RoutePresentArgs, {"to": "10.0.0.1/8", "dev": "eth0"}, "host bits"),
    (RoutePresentArgs, {"to": "10.0.0.0/8", "via": "fd00::1"}, "families"),
    (SysctlArgs, {"name": "net.ipv4/../../../etc", "value": "1"}, "sysctl name"),
    (SysctlArgs, {"name": "net.ipv4.ip_forward", "value": "1\n2"}, "single line"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": "-j ACCEPT"}, "not a string"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": ["-j", "ACCEPT", "-t", "nat"]}, "'-t'"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": ["-A", "INPUT", "-j", "DROP"]}, "'-A'"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": ["--app=INPUT", "-j", "DROP"]}, "--app"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": ["-tnat", "-j", "DROP"]}, "-tnat"),
    (FirewallRuleArgs, {"chain": "FORWARD", "rule": ["--modprobe", "/tmp/x"]}, "--modprobe"),
    (FirewallRuleArgs, {"chain": "-X", "rule": ["-j", "DROP"]}, "chain name"),
])
def test_bad_arguments_are_refused_naming_the_problem(schema, data, field) -> None:
    with pytest.raises(ValidationError) as caught:
        schema.model_validate(data)
    assert field in str(caught.value)


def test_good_arguments_are_normalised() -> None:
    assert AddrPresentArgs(dev="br0", address="FD00::1/64").address == "fd00::1/64"
    assert SysctlArgs.model_validate({"name": "net.ipv4.ip_forward", "value": 1}).value == "1"
    assert SysctlArgs(name="net/ipv4/conf/eth0.1/forwarding", value="1").path_parts[3] == \
        "eth0.1"
    assert RoutePresentArgs.model_validate({"to": "0.0.0.0/0", "via": "10.0.0.1"}).to == "default"
    six = RoutePresentArgs.model_validate({"to": "::/0", "dev": "eth0"})
    assert (six.to, six.family) == ("default", 6)


def test_both_backends_share_one_schema_per_action() -> None:
    registry = Plugins(entry_points=False).registry
    for action in ("link.set", "bridge.port", "veth.present", "route.present"):
        assert set(registry.implementations(action)) >= {"netlink"}
        assert len({r.impl.Args for r in registry.implementations(action).values()}) == 1


def test_ip_addr_output_keeps_order_broadcast_scope_and_label() -> None:
    text = (
        "2: br0    inet 10.1.0.1/24 brd 10.1.0.255 scope global br0\\       valid_lft forever\n"
        "2: br0    inet 10.1.0.2/24 scope global secondary br0:1\\       valid_lft forever\n"
        "3: vb    inet6 fd00::1/64 scope global \\       valid_lft forever\n"
        "3: vb    inet6 fe80::1/64 scope link \\       valid_lft forever\n")
    got = parse_addresses(text)
    assert got["br0"] == [
        {"address": "10.1.0.1/24", "brd": "10.1.0.255", "scope": "global", "label": "br0"},
        {"address": "10.1.0.2/24", "brd": None, "scope": "global", "label": "br0:1"}]
    assert [a["address"] for a in got["vb"]] == ["fd00::1/64", "fe80::1/64"]
    assert got["vb"][1]["scope"] == "link"


def test_ip_route_output_of_old_and_new_iproute2() -> None:
    old = ("10.50.0.0/16 via 10.5.0.254 dev va  proto static  metric 7 \n"
           "10.5.0.0/24 dev va  proto kernel  scope link  src 10.5.0.1 \n"
           "unreachable 10.9.0.0/16  proto boot \n")
    assert parse_routes(old, 4) == [
        {"family": 4, "to": "10.50.0.0/16", "via": "10.5.0.254", "dev": "va", "metric": 7,
         "proto": "static", "scope": "global", "src": None, "table": 254, "type": "unicast"},
        {"family": 4, "to": "10.5.0.0/24", "via": None, "dev": "va", "metric": None,
         "proto": "kernel", "scope": "link", "src": "10.5.0.1", "table": 254, "type": "unicast"},
        {"family": 4, "to": "10.9.0.0/16", "via": None, "dev": None, "metric": None,
         "proto": "boot", "scope": "global", "src": None, "table": 254,
         "type": "unreachable"}]
    new = ("default via fd00:5::fe dev va metric 1024 linkdown pref medium\n"
           "blackhole fd00:6::/64 dev lo table 100 metric 1024 pref medium\n"
           "local fd00:5::1 dev va table local proto kernel metric 0 pref medium\n"
           "fd00:7::/64 proto static metric 1024 pref medium\n"
           "\tnexthop via fd00:5::fd dev va weight 1\n")
    six = parse_routes(new, 6, None)
    assert [(r["to"], r["type"], r["table"], r["via"]) for r in six] == [
        ("default", "unicast", 254, "fd00:5::fe"), ("fd00:6::/64", "blackhole", 100, None)]


def test_ip_rule_output_of_old_and_new_iproute2() -> None:
    text = ("0:\tfrom all lookup local \n"
            "100:\tfrom 10.0.0.0/8 to 10.1.0.0/16 fwmark 0x10/0xff iif lo lookup 100 \n"
            "101:\tfrom 192.0.2.1 iif va [detached] lookup main\n"
            "102:\tfrom all tos 0x10 lookup 7\n"
            "103:\tfrom 192.0.2.2 blackhole\n")
    rules = parse_rules(text, 4)
    assert rules[1] == {"family": 4, "priority": 100, "from": "10.0.0.0/8", "to": "10.1.0.0/16",
                        "iif": "lo", "oif": None, "fwmark": 16, "fwmask": 255, "table": 100,
                        "other": False}
    assert (rules[2]["from"], rules[2]["iif"], rules[2]["table"], rules[2]["other"]) == \
        ("192.0.2.1/32", "va", 254, False)
    assert rules[3]["other"] and rules[4]["other"]


def test_iptables_save_and_rules_written_differently_but_equal() -> None:
    saved = parse_save(
        "# Generated by iptables-save v1.4.7\n*filter\n:INPUT ACCEPT [0:0]\n"
        ":FORWARD DROP [3:180]\n:RF - [0:0]\n"
        "-A FORWARD -s 10.0.0.1/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        '-A FORWARD -m comment --comment "two words" -j DROP\nCOMMIT\n')
    assert saved["policies"] == {"INPUT": "ACCEPT", "FORWARD": "DROP", "RF": "-"}
    first, second = saved["rules"]["FORWARD"]
    assert canonical(first) == canonical(["-p", "tcp", "--dport", "80", "--source", "10.0.0.1",
                                          "--jump", "ACCEPT"])
    assert second == ["-m", "comment", "--comment", "two words", "-j", "DROP"]
    assert canonical(["-i", "br0", "-o", "br0"]) == canonical(["-o", "br0", "-i", "br0"])
    assert canonical(["!", "-d", "10.0.0.0/8"]) != canonical(["-d", "10.0.0.0/8"])
    assert canonical(["-m", "state", "--state", "ESTABLISHED,RELATED"]) == \
        canonical(["-m", "state", "--state", "RELATED,ESTABLISHED"])


def test_an_exclusive_address_that_is_a_secondary_goes_and_comes_back() -> None:
    from runflow.backends.linux.actions import AddrPresent

    before = {"links": {"va": {"exists": True, "addresses": [
        {"address": "10.2.0.5/24"}, {"address": "10.2.0.6/24"}, {"address": "10.3.0.1/16"},
        {"address": "fe80::1/64", "scope": "link"}]}}}
    args = AddrPresentArgs(dev="va", address="10.2.0.6/24", exclusive=True)
    assert AddrPresent().changes(args, before) == [
        DelAddr("va", "10.3.0.1/16"), DelAddr("va", "10.2.0.6/24"), DelAddr("va", "10.2.0.5/24"),
        AddAddr("va", "10.2.0.6/24")]


def test_restoring_addresses_keeps_their_order() -> None:
    was = [{"address": "10.2.0.5/24"}, {"address": "10.2.0.6/24", "label": "va:1"},
           {"address": "10.2.0.7/24"}]
    now = [{"address": "10.2.0.5/24"}, {"address": "10.2.0.7/24"}]
    assert restore_addresses("va", was, now) == [
        DelAddr("va", "10.2.0.7/24"), AddAddr("va", "10.2.0.6/24", label="va:1"),
        AddAddr("va", "10.2.0.7/24")]


def test_a_deleted_bridge_comes_back_with_ports_settings_and_addresses() -> None:
    was = {"exists": True, "kind": "bridge", "up": True, "mtu": 1400, "master": None,
           "mac": "02:00:00:00:00:01", "mac_set": False, "ports": ["va", "vc"],
           "addresses": [{"address": "10.1.0.1/24", "brd": "10.1.0.255"}]}
    changes = restore_link("br0", was, {"exists": False})
    assert changes == [AddBridge("br0"), Enslave("va", "br0"), Enslave("vc", "br0"),
                       SetLink("br0", mtu=1400), AddAddr("br0", "10.1.0.1/24", "10.1.0.255"),
                       SetLink("br0", up=True)]
    assert restore_link("br0", {"exists": False}, fresh("bridge")) == [DelLink("br0", "bridge")]


@pytest.mark.parametrize("step, what", [
    ('action = "bridge.present"\nname = "br0"\nvlan_filtering = true',
     ":8: step 's': vlan_filtering: vlan_filtering = true has no CentOS 6 form"),
    ('action = "rule.present"\noif = "eth0"\ntable = 100',
     ":7: step 's': oif: oif has no CentOS 6 form"),
])
def test_centos6_refuses_what_its_kernel_and_tools_lack(runflow, tmp_path, step: str,
                                                        what: str) -> None:
    path = tmp_path / "new.toml"
    path.write_text(f'[workflow]\nname = "new"\n\n[[steps]]\nid = "s"\n{step}\n')
    done = runflow("validate", "--target", "centos6", str(path))
    assert done.returncode == 2, done.stderr
    assert what in done.stderr, done.stderr
    assert "(target centos6) use only CentOS 6's kernel and tools" in done.stderr, done.stderr
    assert runflow("validate", "--target", "modern", str(path)).returncode == 0


def test_a_port_of_the_ovs_kernel_datapath_is_not_enslaved_again() -> None:
    """ovs-vswitchd takes a device back into its datapath itself: `master ovs-system` by hand
    would fail the undo."""
    was = {"exists": True, "kind": "veth", "up": True, "mtu": 1500, "master": "ovs-system",
           "mac": "02:00:00:00:00:02", "mac_set": False, "peer": {"name": "vb"}}
    assert restore_link("va", was, {"exists": False}) == [
        AddVeth("va", "vb"), SetLink("va", mac="02:00:00:00:00:02"), SetLink("va", up=True)]


@pytest.mark.parametrize("change, centos6, modern", [
    (AddBridge("br0"), [["brctl", "addbr", "br0"]], [["ip", "link", "add", "br0", "type",
                                                        "bridge"]]),
    (Enslave("va", "br0"), [["brctl", "addif", "br0", "va"]],
     [["ip", "link", "set", "va", "master", "br0"]]),
    (Release("va", "br0"), [["brctl", "delif", "br0", "va"]],
     [["ip", "link", "set", "va", "nomaster"]]),
    (DelLink("br0", "bridge"), [["ip", "link", "set", "br0", "down"], ["brctl", "delbr", "br0"]],
     [["ip", "link", "delete", "br0"]]),
])
def test_centos6_makes_bridges_with_brctl(change, centos6, modern) -> None:
    assert render(change, centos6=True) == centos6
    assert render(change, centos6=False) == modern
    assert Netlink.describe([change]) == modern
