"""Every ovs.* action, with each backend, through the real command line on a lab host: apply,
re-run (everything skipped), roll back (the database is as it was), and what runflow created
carries the run's id."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Lab, assert_same, step_states

pytestmark = pytest.mark.root

BRIDGE = '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "netdev"
'''


def round_trip(lab: Lab, steps: str) -> tuple[str, dict[str, Any]]:
    """Run, re-run, roll back; return the first run's id and the database after it."""
    run_id, after, _ = round_trip_events(lab, steps)
    return run_id, after


def round_trip_events(lab: Lab, steps: str
                      ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """round_trip, also returning the first run's events."""
    before = lab.host.snapshot()
    workflow = lab.workflow(steps)
    run_id, first, _ = lab.run(workflow)
    states = step_states(first)
    assert set(states.values()) <= {"applied", "skipped"}, states
    after = lab.host.snapshot()

    _, events, _ = lab.run(workflow)
    again = step_states(events)
    assert set(again.values()) == {"skipped"}, f"not idempotent: {again}"

    lab.rollback(run_id)
    assert_same(before, lab.host.snapshot())
    return run_id, after, first


def tagged(external_ids: dict[str, str], run_id: str, step: str) -> bool:
    return external_ids.get("runflow-run") == run_id and external_ids.get("runflow-step") == step


def test_bridge_present_creates_a_tagged_bridge(lab: Lab) -> None:
    run_id, after = round_trip(lab, '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "netdev"
fail_mode = "secure"
other_config = { mac-table-size = 2048 }
external_ids = { owner = "tests" }
''')
    bridge = after["Bridge"]["br0"]
    assert bridge["datapath_type"] == "netdev"
    assert bridge["fail_mode"] == "secure"
    assert bridge["other_config"] == {"mac-table-size": "2048"}
    assert bridge["external_ids"]["owner"] == "tests"
    assert tagged(bridge["external_ids"], run_id, "br0")


def test_bridge_present_changes_an_existing_bridge_and_undo_puts_it_back(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "fail_mode=standalone", "other_config:a=1", "external_ids:keep=me")
    _, after = round_trip(lab, '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "netdev"
fail_mode = "secure"
other_config = { a = "3", b = "2" }
''')
    bridge = after["Bridge"]["br0"]
    assert bridge["fail_mode"] == "secure"
    assert bridge["other_config"] == {"a": "3", "b": "2"}
    assert bridge["external_ids"] == {"keep": "me"}  # not created by runflow: not tagged


def test_bridge_absent_and_undo_recreates_it_with_its_ports(lab: Lab) -> None:
    h = lab.host
    h.ns.run(["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
    h.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
            "other_config:mac-table-size=4096", "external_ids:owner=ops",
            "--", "set", "Interface", "br0", "mtu_request=1400",
            "--", "add-br", "br1", "--", "set", "Bridge", "br1", "datapath_type=netdev",
            "--", "add-port", "br0", "vi0", "tag=5", "external_ids:role=mgmt",
            "--", "set", "Interface", "vi0", "type=internal", "external_ids:iface-id=x1",
            "--", "add-port", "br0", "gre0", "--", "set", "Interface", "gre0", "type=gre",
            "options:remote_ip=10.99.0.2", "options:key=7",
            "--", "add-port", "br0", "vx0", "--", "set", "Interface", "vx0", "type=vxlan",
            "options:remote_ip=10.99.0.3", "options:dst_port=4790",
            "--", "add-port", "br0", "pa", "--", "set", "Interface", "pa", "type=patch",
            "options:peer=pb",
            "--", "add-port", "br1", "pb", "--", "set", "Interface", "pb", "type=patch",
            "options:peer=pa",
            "--", "add-port", "br0", "veth0", "trunks=10,20")
    _, after = round_trip(lab, '''
[[steps]]
id = "gone"
action = "ovs.bridge.absent"
name = "br0"
''')
    assert "br0" not in after["Bridge"] and "br1" in after["Bridge"]
    assert set(after["Port"]) == {"br1", "pb"}


@pytest.mark.parametrize("port, check", [
    ('name = "vi0"\ntype = "internal"\ntag = 10\nexternal_ids = { iface-id = "vm1" }',
     lambda port, iface: port["tag"] == 10 and iface["type"] == "internal"
     and iface["external_ids"]["iface-id"] == "vm1"),
    ('name = "gre0"\ntype = "gre"\noptions = { remote_ip = "10.99.0.2", key = 5 }',
     lambda port, iface: iface["type"] == "gre"
     and iface["options"] == {"remote_ip": "10.99.0.2", "key": "5"}),
    ('name = "vx0"\ntype = "vxlan"\noptions = { remote_ip = "10.99.0.3", dst_port = 4790 }',
     lambda port, iface: iface["type"] == "vxlan" and iface["options"]["dst_port"] == "4790"),
    ('name = "pa"\ntype = "patch"\noptions = { peer = "pb" }',
     lambda port, iface: iface["type"] == "patch" and iface["options"] == {"peer": "pb"}),
    ('name = "veth0"\ntype = "system"',
     lambda port, iface: iface["type"] == ""),
], ids=["internal", "gre", "vxlan", "patch", "system"])
def test_port_present_of_each_type(lab: Lab, port: str, check: Any) -> None:
    h = lab.host
    h.ns.run(["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
    h.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
            "--", "add-br", "br1", "--", "set", "Bridge", "br1", "datapath_type=netdev",
            "--", "add-port", "br1", "pb", "--", "set", "Interface", "pb", "type=patch",
            "options:peer=pa")
    run_id, after = round_trip(lab, BRIDGE + f'''
[[steps]]
id = "port"
action = "ovs.port.present"
bridge = "br0"
{port}
''')
    name = port.split('"')[1]
    assert name in after["Bridge"]["br0"]["ports"]
    assert check(after["Port"][name], after["Interface"][name])
    assert tagged(after["Port"][name]["external_ids"], run_id, "port")


def test_port_present_changes_an_existing_port_and_undo_puts_it_back(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "add-port", "br0", "gre0", "tag=3",
                   "--", "set", "Interface", "gre0", "type=gre",
                   "options:remote_ip=10.99.0.2", "options:key=1", "external_ids:keep=me")
    _, after = round_trip(lab, BRIDGE + '''
[[steps]]
id = "gre0"
action = "ovs.port.present"
bridge = "br0"
name = "gre0"
type = "gre"
options = { remote_ip = "10.99.0.9", ttl = 32 }
tag = 4
external_ids = { owner = "runflow-test" }
''')
    iface = after["Interface"]["gre0"]
    assert iface["options"] == {"remote_ip": "10.99.0.9", "key": "1", "ttl": "32"}
    assert iface["external_ids"] == {"keep": "me", "owner": "runflow-test"}
    assert after["Port"]["gre0"]["tag"] == 4


def test_port_absent_and_undo_recreates_it(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "add-port", "br0", "gre0", "tag=3", "external_ids:a=b",
                   "--", "set", "Interface", "gre0", "type=gre",
                   "options:remote_ip=10.99.0.2", "options:key=1", "external_ids:c=d")
    _, after = round_trip(lab, '''
[[steps]]
id = "gone"
action = "ovs.port.absent"
bridge = "br0"
name = "gre0"
''')
    assert "gre0" not in after["Port"] and "gre0" not in after["Interface"]


def test_ovs_set_columns_and_keys_and_undo_puts_them_back(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "add-port", "br0", "gre0", "--", "set", "Interface", "gre0",
                   "type=gre", "options:remote_ip=10.99.0.2")
    _, after = round_trip(lab, '''
[[steps]]
id = "remote"
action = "ovs.set"
table = "interface"
record = "gre0"
column = "options:remote_ip"
value = "10.99.0.5"

[[steps]]
id = "key"
action = "ovs.set"
table = "Interface"
record = "gre0"
column = "options:key"
value = 42

[[steps]]
id = "tag"
action = "ovs.set"
table = "Port"
record = "gre0"
column = "tag"
value = "7"

[[steps]]
id = "protocols"
action = "ovs.set"
table = "Bridge"
record = "br0"
column = "protocols"
value = ["OpenFlow10", "OpenFlow13"]

[[steps]]
id = "stp"
action = "ovs.set"
table = "bridge"
record = "br0"
column = "stp_enable"
value = true

[[steps]]
id = "system-id"
action = "ovs.set"
table = "Open_vSwitch"
record = "."
column = "external_ids:system-id"
value = "host-1"

[[steps]]
id = "note"
action = "ovs.set"
table = "Port"
record = "gre0"
column = "external_ids:note"
value = 'a "quoted" note, with {braces}=signs'
''')
    assert after["Interface"]["gre0"]["options"] == {"remote_ip": "10.99.0.5", "key": "42"}
    assert after["Port"]["gre0"]["tag"] == 7
    assert after["Bridge"]["br0"]["protocols"] == ["OpenFlow10", "OpenFlow13"]
    assert after["Bridge"]["br0"]["stp_enable"] is True
    assert after["Open_vSwitch"]["external_ids"]["system-id"] == "host-1"
    assert after["Port"]["gre0"]["external_ids"]["note"] == 'a "quoted" note, with {braces}=signs'


def test_ovs_set_finds_records_as_ovs_vsctl_does(lab: Lab) -> None:
    """A record named by its UUID, and one named through the bridge that refers to it (a
    bridge's controller is found by the bridge's name)."""
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "set-controller", "br0", "tcp:127.0.0.1:6653")
    uuid = lab.host.vsctl("get", "Bridge", "br0", "_uuid").strip()
    workflow = lab.workflow(f'''
[[steps]]
id = "backoff"
action = "ovs.set"
table = "Controller"
record = "br0"
column = "max_backoff"
value = 2000

[[steps]]
id = "by-uuid"
action = "ovs.set"
table = "Bridge"
record = "{uuid}"
column = "external_ids:note"
value = "found by uuid"
''')
    settings = ("get", "Controller", "br0", "max_backoff", "--", "get", "Bridge", "br0",
                "external_ids")
    before = lab.host.vsctl(*settings)
    run_id, events, _ = lab.run(workflow)
    assert set(step_states(events).values()) == {"applied"}
    assert lab.host.vsctl(*settings).split("\n")[:2] == ["2000", '{note="found by uuid"}']
    _, events, _ = lab.run(workflow)
    assert set(step_states(events).values()) == {"skipped"}
    lab.rollback(run_id)
    assert lab.host.vsctl(*settings) == before


def test_for_each_ports_are_one_invocation_or_transaction(lab: Lab) -> None:
    run_id, after, events = round_trip_events(lab, BRIDGE + '''
[[steps]]
id = "ports"
action = "ovs.port.present"
bridge = "br0"
name = "p{{ item }}"
type = "internal"
for_each = "range(20)"
''')
    assert {f"p{i}" for i in range(20)} <= set(after["Bridge"]["br0"]["ports"])
    assert all(tagged(after["Port"][f"p{i}"]["external_ids"], run_id, "ports")
               for i in range(20))
    applied = [e for e in events if e["dest"] == "applied" and e["step"].startswith("ports[")]
    assert len(applied) == 20
    # Every instance reports the commands of the whole batch: one write for all 20 ports.
    commands = applied[0]["detail"]["commands"]
    if lab.backend == "ovs-vsctl":
        writes = [c for c in commands if "add-port" in c]
        assert len(writes) == 1 and writes[0].count("add-port") == 20, commands
    else:
        writes = [c for c in commands if c.startswith("ovsdb transaction")]
        assert len(writes) == 1 and "add-port br0 p0" in writes[0], commands


def test_rolling_back_ports_of_two_bridges_together(lab: Lab) -> None:
    # The ports' undo is one batch: the ovsdb backend takes them off each bridge in one go.
    # A port someone removed meanwhile is no error, as with `ovs-vsctl --if-exists del-port`.
    before = lab.host.snapshot()
    run_id, _, _ = lab.run(lab.workflow(BRIDGE + '''
[[steps]]
id = "br1"
action = "ovs.bridge.present"
name = "br1"
datapath_type = "netdev"

[[steps]]
id = "ports"
action = "ovs.port.present"
bridge = "{{ 'br0' if item % 2 else 'br1' }}"
name = "p{{ item }}"
type = "internal"
for_each = "range(6)"
'''))
    assert set(lab.host.vsctl("list-ports", "br0").split()) == {"p1", "p3", "p5"}
    lab.host.vsctl("del-port", "br0", "p3")
    lab.rollback(run_id)  # exit 0: every instance undone
    assert_same(before, lab.host.snapshot())
