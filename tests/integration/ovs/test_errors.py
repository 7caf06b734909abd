"""Failures: ovs-vsctl exits 0 when ovs-vswitchd refuses a bridge or a port, so each backend
reads the result back, fails the step with the daemon's message, and leaves nothing behind;
bad arguments are refused before anything is touched."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runflow.backends.ovs import ovsdb
from runflow.backends.ovs.args import DelBridge
from runflow.core.actions import Context, Resources
from runflow.core.errors import ActionError
from runflow.core.hosts import Host
from tests.conftest import runflow_argv
from tests.integration.lab.conftest import WORKFLOWS

from .conftest import Lab, OvsHost, assert_same, step_states

BRIDGE = '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "{{ datapath }}"
'''


INTERNAL_PORT = '''
[[steps]]
id = "vi0"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
type = "internal"
'''


def failure(events: list[dict[str, Any]]) -> str:
    return next(e["message"] for e in events if e["dest"] == "failed")


@pytest.mark.root
def test_a_system_datapath_bridge_fails_with_the_daemons_error(lab: Lab) -> None:
    before = lab.host.snapshot()
    workflow = lab.workflow(BRIDGE + INTERNAL_PORT)
    _, events, _ = lab.run(workflow, "--var", "datapath=system", expect=1)
    message = failure(events)
    assert "could not set up br0" in message and "datapath" in message, message
    assert step_states(events) == {"h1:br0": "failed"}
    assert_same(before, lab.host.snapshot())
    # The same workflow with the userspace datapath works on this machine.
    lab.run(workflow, "--var", "datapath=netdev")


@pytest.mark.root
def test_a_conflicting_tunnel_fails_with_the_interface_error(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "add-port", "br0", "gre0", "--", "set", "Interface", "gre0",
                   "type=gre", "options:remote_ip=10.99.0.2", "options:key=5")
    before = lab.host.snapshot()
    _, events, _ = lab.run(lab.workflow(BRIDGE + '''
[[steps]]
id = "gre1"
action = "ovs.port.present"
bridge = "br0"
name = "gre1"
type = "gre"
options = { remote_ip = "10.99.0.2", key = "5" }
'''), "--var", "datapath=netdev", expect=1)
    assert "could not set up gre1: could not add network device gre1" in failure(events)
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_a_change_that_breaks_an_interface_fails_and_is_put_back(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "--", "add-port", "br0", "vi0", "--", "set", "Interface", "vi0",
                   "type=internal")
    before = lab.host.snapshot()
    # There is no network device vi0 for a system port to open.
    _, events, _ = lab.run(lab.workflow('''
[[steps]]
id = "retype"
action = "ovs.set"
table = "Interface"
record = "vi0"
column = "type"
value = "system"
'''), expect=1)
    assert "could not set up vi0: could not open network device vi0" in failure(events)
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_a_batch_keeps_what_worked_until_rollback_and_removes_what_failed(lab: Lab) -> None:
    before = lab.host.snapshot()
    workflow = lab.workflow(BRIDGE + '''
[[steps]]
id = "tunnels"
action = "ovs.port.present"
bridge = "br0"
name = "{{ item }}"
type = "gre"
options = { remote_ip = "10.99.0.2" }
for_each = ["gre1", "gre2"]
''')
    _, events, _ = lab.run(workflow, "--var", "datapath=netdev", expect=1)
    assert "(File exists)" in failure(events)
    # One of the two tunnels could be set up: it was applied, then rolled back with the rest.
    states = step_states(events)
    assert states["h1:br0"] == "undone"
    assert sorted([states["h1:tunnels[0]"], states["h1:tunnels[1]"]]) == ["failed", "undone"]
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_a_port_on_another_bridge_is_not_moved(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br1", "--", "set", "Bridge", "br1", "datapath_type=netdev",
                   "--", "add-port", "br1", "vi0", "--", "set", "Interface", "vi0",
                   "type=internal")
    before = lab.host.snapshot()
    _, events, _ = lab.run(lab.workflow(BRIDGE + INTERNAL_PORT), "--var", "datapath=netdev",
                           expect=1)
    assert "port vi0 is on bridge br1, not br0" in failure(events)
    assert_same(before, lab.host.snapshot())


@pytest.mark.parametrize("step, field, says", [
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "gre0"\ntype = "gre"',
     "options", "needs options.remote_ip"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "p0"\ntype = "patch"',
     "options", "needs options.peer"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "p0"\ntag = 5000',
     "tag", "less than or equal to 4095"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "a-very-long-port-name"',
     "name", "must be 1 to 15 bytes"),
    ('action = "ovs.bridge.present"\nname = "br0"\nfail_mode = "open"',
     "fail_mode", "'standalone', 'secure' or ''"),
    ('action = "ovs.set"\ntable = "Bridges"\nrecord = "br0"\ncolumn = "stp_enable"\n'
     'value = true', "table", "unknown table 'Bridges'"),
    ('action = "ovs.set"\ntable = "Bridge"\nrecord = "br0; reboot"\ncolumn = "stp_enable"\n'
     'value = true', "record", "is not a record name"),
    ('action = "ovs.bridge.present"\nname = "br0"\nexternal_ids = { "a b" = "c" }',
     "external_ids", "key 'a b' must be"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "gre0"\ntype = "gre"\n'
     'options = { remote_ip = "192.0.2.999" }', "options.remote_ip", "is not an IP address"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "gre0"\ntype = "gre"\n'
     'options = { remote_ip = "flow", local_ip = "x;y" }', "options.local_ip",
     "is not an IP address"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "vx0"\ntype = "vxlan"\n'
     'options = { remote_ip = "192.0.2.1", key = 16777216 }', "options.key",
     "not a vxlan key: a number below 2^24"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "gre0"\ntype = "gre"\n'
     'options = { remote_ip = "192.0.2.1", in_key = "0x100000000" }', "options.in_key",
     "not a gre key: a number below 2^32"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "vx0"\ntype = "vxlan"\n'
     'options = { remote_ip = "192.0.2.1", dst_port = 70000 }', "options.dst_port",
     "is not a port number"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "gre0"\ntype = "gre"\n'
     'options = { remote_ip = "192.0.2.1", ttl = "`reboot`" }', "options.ttl",
     "is not an option value"),
    ('action = "ovs.set"\ntable = "Interface"\nrecord = "gre0"\ncolumn = "options:remote_ip"\n'
     'value = "$(reboot)"', "options.remote_ip", "is not an IP address"),
    ('action = "ovs.set"\ntable = "Bridge"\nrecord = "br0"\ncolumn = "external_ids"\n'
     'value = true', "value", "external_ids is a map column"),
    ('action = "ovs.set"\ntable = "Port"\nrecord = "p0"\ncolumn = "tag"\nvalue = 5000',
     "value", "5000 is not in the valid range 0 to 4095"),
    ('action = "ovs.set"\ntable = "Bridge"\nrecord = "br0"\ncolumn = "stp_enable"\n'
     'value = "yes"', "value", "stp_enable: 'yes' is not true or false"),
    ('action = "ovs.set"\ntable = "Port"\nrecord = "p0"\ncolumn = "tag:x"\nvalue = 1',
     "value", "tag is not a map column"),
    ('action = "ovs.bridge.present"\nname = "fb5"\nparent = "br0"',
     "parent and vlan", "a fake bridge needs both"),
    ('action = "ovs.bridge.present"\nname = "fb5"\nparent = "br0"\nvlan = 5\nstp = true',
     "stp", "a fake bridge has no settings of its own"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "p0"\ntrunks = [10, 5000]',
     "trunks.1", "less than or equal to 4095"),
    ('action = "ovs.bond.present"\nbridge = "br0"\nname = "bd0"\ninterfaces = ["eth0"]',
     "interfaces", "at least 2 items"),
    ('action = "ovs.bond.present"\nbridge = "br0"\nname = "bd0"\ninterfaces = ["a", "a"]',
     "interfaces", "each interface once"),
    ('action = "ovs.unset"\ntable = "Port"\nrecord = "p0"\ncolumn = "trunks"\nkeys = ["a"]',
     "keys", "trunks is not a map column"),
    ('action = "ovs.unset"\ntable = "Bridge"\nrecord = "br0"\ncolumn = "external_ids"\n'
     'values = ["a"]', "values", "external_ids is not a set column: remove its keys"),
    ('action = "ovs.unset"\ntable = "Interface"\nrecord = "p0"\ncolumn = "type"',
     "column", "type always holds a value"),
    ('action = "ovs.unset"\ntable = "Port"\nrecord = "p0"\ncolumn = "trunks"\n'
     'values = ["x"]', "trunks", "'x' is not an integer"),
    ('action = "ovs.get"\ntable = "Port"\nrecord = "p0"\ncolumn = "tag:x"',
     "column", "tag is not a map column"),
    ('action = "ovs.set"\ntable = "Port"\nrecord = "p0"\ncolumn = "tag"\nvalue = 1\n'
     'register = "t"', "register", "ovs.set publishes no value"),
    ('action = "ovs.get"\ntable = "Port"\nrecord = "p0"\ncolumn = "tag"\n'
     'register = "item"', "register", "that name is for_each's own"),
], ids=["gre-without-remote", "patch-without-peer", "tag", "name", "fail-mode", "table",
        "record", "map-key", "remote-ip", "local-ip", "vxlan-key", "gre-in-key", "dst-port",
        "option-word", "set-option", "set-map-without-key", "set-range", "set-boolean",
        "set-key-of-scalar", "fake-bridge-vlan", "fake-bridge-settings", "trunks",
        "bond-one-interface", "bond-twice", "unset-keys-of-a-set", "unset-values-of-a-map",
        "unset-a-required-column", "unset-value-type", "get-key-of-scalar",
        "register-without-result", "register-item"])
def test_bad_arguments_are_refused_before_anything_runs(runflow: Any, tmp_path: Path,
                                                        step: str, field: str,
                                                        says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[workflow]\nname = "bad"\n\n[[steps]]\nid = "s"\n{step}\n')
    done = runflow("validate", str(path))
    assert done.returncode == 2, done.stderr
    assert f"{field}:" in done.stderr and says in done.stderr, done.stderr


@pytest.mark.root
def test_a_hostile_tunnel_endpoint_from_a_var_is_refused_before_anything_runs(
        lab: Lab, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    before = lab.host.snapshot()
    done = lab.call("run", "-q", "-i", str(lab.inventory), "-t", lab.target, "--var",
                    f"remote_ip=$(touch {marker})", str(WORKFLOWS / "multihost-gre.toml"),
                    expect=2)
    assert "step 'gre-port': options.remote_ip: " in done.stderr, done.stderr
    assert not marker.exists()
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_a_map_column_without_a_key_is_the_same_error_on_both_targets(lab: Lab) -> None:
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    before = lab.host.snapshot()
    done = lab.call("run", "-q", "-i", str(lab.inventory), "-t", lab.target, str(lab.workflow(
        '[[steps]]\nid = "ids"\naction = "ovs.set"\ntable = "Bridge"\nrecord = "br0"\n'
        'column = "external_ids"\nvalue = true\n')), expect=2)
    assert done.stderr.strip().endswith(
        "step 'ids': value: external_ids is a map column: give a table (value = { key = "
        "\"...\" }) or set one key (column = \"external_ids:KEY\")"), done.stderr
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_undo_removes_the_taps_ovs_vswitchd_left_when_it_was_down(lab: Lab) -> None:
    """ovs-vswitchd stopped mid-run: a rollback's del-br commits, then times out waiting for
    it (exit 3); once it is back, a second rollback finds the bridge gone from the database,
    but the userspace datapath's taps (br0, its internal port, the datapath's ovs-netdev)
    are still in the kernel, as the restarted ovs-vswitchd never knew the bridge."""
    links_before = lab.host.links()
    before = lab.host.snapshot()
    run_id, _, _ = lab.run(lab.workflow(BRIDGE + INTERNAL_PORT), "--var", "datapath=netdev")
    assert {"br0", "vi0", "ovs-netdev"} <= set(lab.host.links())
    lab.host.kill_switch()
    # What the first rollback did before its ovs-vsctl timed out (30 s: too long for a test).
    lab.host.vsctl("--no-wait", "del-br", "br0")
    lab.host.restart_switch()
    assert {"br0", "vi0", "ovs-netdev"} <= set(lab.host.links())
    lab.rollback(run_id)
    assert lab.host.links() == links_before
    assert_same(before, lab.host.snapshot())
    commands = [c for step in lab.journal(run_id)["steps"] for c in step.get("commands", [])]
    assert any("ip link del br0" in c for c in commands), commands



GET_TAG = '''
[[steps]]
id = "read"
action = "ovs.get"
table = "Port"
record = "p0"
column = "tag"
register = "vlan"
'''


@pytest.mark.parametrize("steps, field, says", [
    (GET_TAG.replace('"read"', '"read"\nfor_each = [1]'), "register",
     "a step with for_each cannot register a var"),
    (GET_TAG + GET_TAG.replace('"read"', '"again"'), "register",
     "step 'read' publishes it already"),
    (GET_TAG.replace('register = "vlan"', 'register = "bridge"'), "register",
     "a var of that name exists already"),
    ('[[steps]]\nid = "early"\naction = "ovs.port.present"\nbridge = "br0"\nname = "p1"\n'
     'tag = "{{ vlan }}"\n' + GET_TAG, "tag",
     "vlan is published by step 'read', which does not run before this one"),
    (GET_TAG + '[[steps]]\nid = "late"\naction = "ovs.port.present"\nbridge = "br0"\n'
     'name = "p1"\nwhen = "vlan == 10"\n', "when",
     "vlan is published by step 'read' when the run gets there, so only the step's arguments"),
    (GET_TAG + '[[steps]]\nid = "late"\naction = "ovs.port.present"\nbridge = "br0"\n'
     'name = "p1"\ntag = "{{ vlan + }}"\n', "tag", "TemplateSyntaxError"),
], ids=["with-for-each", "twice", "a-var", "before-it-is-published", "in-when", "syntax"])
def test_published_vars_are_checked_before_anything_runs(runflow: Any, tmp_path: Path,
                                                         steps: str, field: str,
                                                         says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[workflow]\nname = "bad"\n\n[vars]\nbridge = "br0"\n\n{steps}')
    done = runflow("validate", str(path))
    assert done.returncode == 2, done.stderr
    assert f"{field}:" in done.stderr and says in done.stderr, done.stderr


def test_several_problems_of_a_step_name_each_field_once(runflow: Any, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[workflow]\nname = "bad"\n\n[[steps]]\nid = "s"\n'
                    'action = "ovs.port.present"\nbridge = "br 0"\nname = "p;0"\n')
    done = runflow("validate", str(path))
    assert done.returncode == 2, done.stderr
    assert "step 's': bridge: interface name 'br 0' contains the forbidden character ' '; " \
           "name: interface name 'p;0'" in done.stderr, done.stderr


@pytest.mark.parametrize("step, since", [
    ('action = "ovs.bridge.present"\nname = "br0"\nrstp = true', "2.4"),
    ('action = "ovs.bridge.present"\nname = "br0"\nmcast_snooping = true', "2.4"),
    ('action = "ovs.port.present"\nbridge = "br0"\nname = "p0"\nvlan_mode = "dot1q-tunnel"',
     "2.8"),
])
def test_centos6_refuses_what_open_vswitch_1_9_lacks(runflow: Any, tmp_path: Path,
                                                     step: str, since: str) -> None:
    path = tmp_path / "new.toml"
    path.write_text(f'[workflow]\nname = "new"\n\n[[steps]]\nid = "br0"\n{step}\n')
    done = runflow("validate", "--target", "centos6", str(path))
    assert done.returncode == 2, done.stderr
    assert f"needs Open vSwitch {since} or later: the ovs-vsctl backend (target centos6)" in \
        done.stderr, done.stderr
    assert runflow("validate", "--target", "modern", str(path)).returncode == 0


@pytest.mark.root
def test_a_published_value_a_later_step_refuses_fails_that_step(lab: Lab) -> None:
    """The later step's arguments are checked when the run gets to it: a value they do not
    take fails the step (and the run rolls back), naming the argument."""
    lab.host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
                   "external_ids:vlan=ten")
    before = lab.host.snapshot()
    _, events, _ = lab.run(lab.workflow(BRIDGE + '''
[[steps]]
id = "read"
action = "ovs.get"
table = "Bridge"
record = "br0"
column = "external_ids:vlan"
register = "vlan"

[[steps]]
id = "port"
action = "ovs.port.present"
bridge = "br0"
name = "p1"
type = "internal"
tag = "{{ vlan }}"
'''), "--var", "datapath=netdev", expect=1)
    assert step_states(events)["h1:port"] == "failed"
    assert "arguments: tag: Input should be a valid integer" in failure(events), failure(events)
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_undo_removes_the_tap_an_ovs_vswitchd_restarted_mid_undo_never_knew(lab: Lab) -> None:
    """ovs-vswitchd dies during a rollback and is back while the rollback waits for it: the
    port's removal, committed while it was down, is reported applied by the new ovs-vswitchd,
    which never knew the port and leaves its tap. "Rolled back" (exit 0) must still mean the
    host is as before."""
    links_before = lab.host.links()
    before = lab.host.snapshot()
    run_id, _, _ = lab.run(lab.workflow(BRIDGE + INTERNAL_PORT), "--var", "datapath=netdev")
    lab.host.kill_switch()
    rollback = subprocess.Popen([*runflow_argv(), "rollback", "-q", run_id], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while "vi0" in lab.host.vsctl("list-ports", "br0").split():  # not committed yet
            assert time.monotonic() < deadline, "the rollback did not remove vi0 in 30 s"
            time.sleep(0.02)
        lab.host.restart_switch()
        _, err = rollback.communicate(timeout=60)
    finally:
        if rollback.poll() is None:
            rollback.kill()
            rollback.wait()
    assert rollback.returncode == 0, err
    assert lab.host.links() == links_before
    assert_same(before, lab.host.snapshot())


@pytest.mark.root
def test_an_ovsdb_change_ovs_vswitchd_does_not_apply_in_time_fails_and_says_why(
        ovs_hosts: Callable[..., OvsHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ovsdb backend waits for ovs-vswitchd to apply what it commits, as ovs-vsctl does
    (30 s; here 1): when it does not, the step fails, and does not claim that nothing
    changed: the database holds the change."""
    lab_host = ovs_hosts("h1")
    lab_host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    monkeypatch.setattr(ovsdb, "TIMEOUT", 1)
    host = Host("h1", endpoints={"ovsdb": lab_host.ovs.endpoint})
    client = ovsdb.OvsdbClient(host)
    try:
        lab_host.kill_switch()
        with pytest.raises(ActionError) as failed:
            client.execute(Context(host, "test", "br0", Resources()), [DelBridge("br0")])
    finally:
        client.close()
    assert str(failed.value).endswith(
        "no outcome in 1 s: ovsdb-server did not answer, or the database took the change and "
        "ovs-vswitchd has not applied it (is it running?)"), failed.value
    assert lab_host.vsctl("list-br").split() == []
