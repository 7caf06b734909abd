"""Failures: ovs-vsctl exits 0 when ovs-vswitchd refuses a bridge or a port, so each backend
reads the result back, fails the step with the daemon's message, and leaves nothing behind;
bad arguments are refused before anything is touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import Lab, assert_same, step_states

BRIDGE = '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "{{ datapath }}"
'''


def failure(events: list[dict[str, Any]]) -> str:
    return next(e["message"] for e in events if e["dest"] == "failed")


@pytest.mark.root
def test_a_system_datapath_bridge_fails_with_the_daemons_error(lab: Lab) -> None:
    before = lab.host.snapshot()
    workflow = lab.workflow(BRIDGE + '''
[[steps]]
id = "vi0"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
type = "internal"
''')
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
    _, events, _ = lab.run(lab.workflow(BRIDGE + '''
[[steps]]
id = "vi0"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
type = "internal"
'''), "--var", "datapath=netdev", expect=1)
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
     "fail_mode", "'standalone' or 'secure'"),
    ('action = "ovs.set"\ntable = "Bridges"\nrecord = "br0"\ncolumn = "stp_enable"\n'
     'value = true', "table", "unknown table 'Bridges'"),
    ('action = "ovs.set"\ntable = "Bridge"\nrecord = "br0; reboot"\ncolumn = "stp_enable"\n'
     'value = true', "record", "is not a record name"),
    ('action = "ovs.bridge.present"\nname = "br0"\nexternal_ids = { "a b" = "c" }',
     "external_ids", "key 'a b' must be"),
], ids=["gre-without-remote", "patch-without-peer", "tag", "name", "fail-mode", "table",
        "record", "map-key"])
def test_bad_arguments_are_refused_before_anything_runs(runflow: Any, tmp_path: Path,
                                                        step: str, field: str,
                                                        says: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[workflow]\nname = "bad"\n\n[[steps]]\nid = "s"\n{step}\n')
    done = runflow("validate", str(path))
    assert done.returncode == 2, done.stderr
    assert f"{field}:" in done.stderr and says in done.stderr, done.stderr
