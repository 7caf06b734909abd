"""Every ovs.* action, on both targets, from a host set up *outside* runflow with plain
ovs-vsctl and ip — settings runflow's arguments do not name (spanning tree, other_config keys,
protocols, flood VLANs, a mirror, NetFlow, sFlow, IPFIX, a controller, a QoS with a queue, a
fake bridge, a bond with LACP, mtu_request, ofport_request), and internal ports that carry
addresses and routes: applied, applied again (nothing to do), rolled back — and the database
(every table, every column but what ovs-vswitchd writes) and the namespace's links,
addresses and routes are as they were.

The host is built once per target and shared: each round trip leaves it as it found it, and
checks that it did."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.snapshot import differences, snapshot as netns_snapshot, without_macs

from tests.conftest import need_tools

from .conftest import TARGETS, Lab, OvsHost, assert_same, lab_host, step_states

pytestmark = pytest.mark.root

VETHS = (("ve0", "ve1"), ("vb0", "vb1"), ("vb2", "vb3"), ("vc0", "vc1"), ("vc2", "vc3"))


def set_up_outside_runflow(h: OvsHost) -> None:
    for a, b in VETHS:
        h.ns.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
    h.vsctl(
        "add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
        "stp_enable=true", "mcast_snooping_enable=true", "fail_mode=secure",
        "other_config:mac-aging-time=30", "external_ids:owner=ops",
        "protocols=OpenFlow10,OpenFlow13", "flood_vlans=7",
        "--", "set", "Interface", "br0", "mtu_request=1450",
        "--", "add-port", "br0", "vi0", "tag=10", "other_config:priority-tags=true",
        "external_ids:role=mgmt",
        "--", "set", "Interface", "vi0", "type=internal", "external_ids:iface-id=x1",
        "ofport_request=7",
        "--", "add-port", "br0", "ve0", "vlan_mode=trunk", "trunks=20,30",
        "--", "add-bond", "br0", "bd0", "vb0", "vb2", "lacp=active", "bond_mode=balance-tcp",
        "other_config:lacp-time=fast",
        "--", "add-br", "fb5", "br0", "5",
        "--", "add-port", "fb5", "fp0", "--", "set", "Interface", "fp0", "type=internal",
        "--", "set", "Open_vSwitch", ".", "external_ids:system-id=host-x")
    h.vsctl(
        "--", "--id=@vi", "get", "Port", "vi0", "--", "--id=@ve", "get", "Port", "ve0",
        "--", "--id=@m", "create", "Mirror", "name=m0", "select_src_port=@vi", "output_port=@ve",
        "--", "add", "Bridge", "br0", "mirrors", "@m",
        "--", "--id=@nf", "create", "NetFlow", 'targets="10.61.0.9:2055"', "active_timeout=30",
        "--", "--id=@sf", "create", "sFlow", 'targets="10.61.0.9:6343"', "sampling=64",
        "--", "--id=@ix", "create", "IPFIX", 'targets="10.61.0.9:4739"',
        "--", "set", "Bridge", "br0", "netflow=@nf", "sflow=@sf", "ipfix=@ix",
        "--", "--id=@q", "create", "Queue", "other_config:max-rate=1000000",
        "--", "--id=@qos", "create", "QoS", "type=linux-htb", "queues:0=@q",
        "--", "set", "Port", "ve0", "qos=@qos",
        "--", "set-controller", "br0", "tcp:127.0.0.1:6653",
        "--", "set", "Controller", "br0", "max_backoff=2000")
    for argv in (["link", "set", "br0", "up"], ["addr", "add", "10.61.0.1/24", "dev", "br0"],
                 ["addr", "add", "fd61::1/64", "dev", "br0", "nodad"],
                 ["link", "set", "vi0", "up"], ["addr", "add", "10.63.0.1/24", "dev", "vi0"],
                 ["route", "add", "10.62.0.0/16", "via", "10.61.0.254"],
                 ["-6", "route", "add", "fd62::/64", "via", "fd61::ff", "dev", "br0"],
                 ["route", "add", "10.64.0.0/16", "dev", "vi0", "table", "100"]):
        h.ns.run(["ip", *argv])


def linux(h: OvsHost) -> dict[str, Any]:
    """The namespace's links (up, MTU: recreated internal ports get new MACs), addresses
    and routes."""
    snap = without_macs(netns_snapshot(h.ns.name))
    links = {name: {"up": "UP" in link["flags"], "mtu": link["mtu"]}
             for name, link in snap["links"].items()}
    return {"links": links, "addresses": snap["addresses"], "routes": snap["routes"]}


class Host:
    """The shared host of one target, and how it looked when set up."""

    def __init__(self, host: OvsHost, backend: str) -> None:
        self.host = host
        self.backend = backend
        set_up_outside_runflow(host)
        self.ovsdb = host.snapshot()
        self.linux = linux(host)

    def assert_as_set_up(self) -> None:
        assert_same(self.ovsdb, self.host.snapshot())
        now = linux(self.host)
        assert now == self.linux, "\n".join(differences(self.linux, now))


@pytest.fixture(scope="module", params=list(TARGETS))
def shared(request: pytest.FixtureRequest) -> Iterator[Host]:
    with lab_host() as host:
        yield Host(host, request.param)


@pytest.fixture
def lab(shared: Host, tmp_path: Path, runflow: Any) -> Lab:
    return Lab([shared.host], shared.backend, tmp_path, runflow)


def round_trip(lab: Lab, shared: Host, steps: str) -> tuple[str, dict[str, Any]]:
    """Run (something changes), run again (nothing does), roll back (all is as set up);
    the run's id and the database after the first run."""
    workflow = lab.workflow(steps)
    run_id, events, _ = lab.run(workflow)
    states = step_states(events)
    assert "h1:" + next(iter(states)).split(":")[1] and "applied" in states.values(), states
    after = lab.host.snapshot()
    _, events, _ = lab.run(workflow)
    again = step_states(events)
    assert set(again.values()) == {"skipped"}, f"not idempotent: {again}"
    lab.rollback(run_id)
    shared.assert_as_set_up()
    return run_id, after


def test_bridge_absent_comes_back_whole(lab: Lab, shared: Host) -> None:
    """The bridge with its ports, bond, fake bridge, mirror, NetFlow, sFlow, IPFIX and
    controller, the QoS its port used, and its internal ports' addresses and routes."""
    _, after = round_trip(lab, shared, '''
[[steps]]
id = "gone"
action = "ovs.bridge.absent"
name = "br0"
''')
    assert "br0" not in after["Bridge"] and not after["Mirror"] and not after["NetFlow"]
    assert after["QoS"], "the QoS row is not the bridge's: it stays"


def test_fake_bridge_absent_comes_back_as_a_fake_bridge(lab: Lab, shared: Host) -> None:
    _, after = round_trip(lab, shared, '''
[[steps]]
id = "gone"
action = "ovs.bridge.absent"
name = "fb5"
''')
    assert "fb5" not in after["Port"] and "fp0" not in after["Port"]


@pytest.mark.parametrize("port", ["vi0", "ve0"])
def test_port_absent_comes_back_with_its_mirror_and_qos(lab: Lab, shared: Host,
                                                        port: str) -> None:
    _, after = round_trip(lab, shared, f'''
[[steps]]
id = "gone"
action = "ovs.port.absent"
name = "{port}"
''')
    assert port not in after["Port"]


def test_bond_absent_and_present(lab: Lab, shared: Host) -> None:
    _, after = round_trip(lab, shared, '''
[[steps]]
id = "no-bond"
action = "ovs.bond.absent"
bridge = "br0"
name = "bd0"

[[steps]]
id = "bond"
action = "ovs.bond.present"
bridge = "br0"
name = "bd1"
interfaces = ["vc0", "vc2"]
bond_mode = "balance-slb"
lacp = "passive"
other_config = { bond-detect-mode = "miimon" }
external_ids = { role = "uplink" }
''')
    assert "bd0" not in after["Port"]
    bond = after["Port"]["bd1"]
    assert sorted(bond["interfaces"]) == ["vc0", "vc2"] and bond["lacp"] == "passive"
    assert bond["bond_mode"] == "balance-slb" and bond["external_ids"]["role"] == "uplink"


def test_bond_present_changes_an_existing_bond(lab: Lab, shared: Host) -> None:
    _, after = round_trip(lab, shared, '''
[[steps]]
id = "bond"
action = "ovs.bond.present"
bridge = "br0"
name = "bd0"
interfaces = ["vb2", "vb0"]
lacp = "off"
bond_mode = "active-backup"
other_config = { lacp-time = "slow" }
''')
    assert after["Port"]["bd0"]["lacp"] == "off"


def test_port_present_vlans_and_port_external_ids(lab: Lab, shared: Host) -> None:
    run_id, after = round_trip(lab, shared, '''
[[steps]]
id = "trunk"
action = "ovs.port.present"
bridge = "br0"
name = "p9"
type = "internal"
vlan_mode = "trunk"
trunks = [40, 41]
port_external_ids = { role = "trunk" }
external_ids = { iface-id = "p9" }

[[steps]]
id = "access"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
tag = 11
vlan_mode = "native-untagged"
port_external_ids = { role = "mgmt2", zone = "a" }
''')
    p9 = after["Port"]["p9"]
    assert p9["vlan_mode"] == "trunk" and p9["trunks"] == [40, 41]
    assert p9["external_ids"]["role"] == "trunk" and p9["external_ids"]["runflow-run"] == run_id
    assert after["Interface"]["p9"]["external_ids"] == {"iface-id": "p9"}
    vi0 = after["Port"]["vi0"]
    assert vi0["tag"] == 11 and vi0["vlan_mode"] == "native-untagged"
    assert vi0["external_ids"] == {"role": "mgmt2", "zone": "a"}


def test_bridge_present_settings_and_fake_bridges(lab: Lab, shared: Host) -> None:
    modern = '\nrstp = true\nmcast_snooping = false' if lab.target == "modern" else ""
    _, after = round_trip(lab, shared, f'''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
stp = false
fail_mode = ""{modern}

[[steps]]
id = "br2"
action = "ovs.bridge.present"
name = "br2"
datapath_type = "netdev"
stp = true

[[steps]]
id = "fb7"
action = "ovs.bridge.present"
name = "fb7"
parent = "br0"
vlan = 7
external_ids = {{ purpose = "vlan7" }}
''')
    br0 = after["Bridge"]["br0"]
    assert br0["stp_enable"] is False and br0["fail_mode"] == []
    if modern:
        assert br0["rstp_enable"] is True and br0["mcast_snooping_enable"] is False
    assert after["Bridge"]["br2"]["stp_enable"] is True
    fb7 = after["Port"]["fb7"]
    assert fb7["fake_bridge"] is True and fb7["tag"] == 7 and "fb7" in br0["ports"]
    assert fb7["external_ids"]["purpose"] == "vlan7"


def test_set_and_unset(lab: Lab, shared: Host) -> None:
    """mtu_request on a veth: its MTU (and the bridge's) goes back to the old value on undo."""
    _, after = round_trip(lab, shared, '''
[[steps]]
id = "mtu"
action = "ovs.set"
table = "Interface"
record = "ve0"
column = "mtu_request"
value = 9000

[[steps]]
id = "owner"
action = "ovs.unset"
table = "Bridge"
record = "br0"
column = "external_ids:owner"

[[steps]]
id = "aging"
action = "ovs.unset"
table = "Bridge"
record = "br0"
column = "other_config"
keys = ["mac-aging-time", "absent-key"]

[[steps]]
id = "trunks"
action = "ovs.unset"
table = "Port"
record = "ve0"
column = "trunks"
values = [20]

[[steps]]
id = "fail-mode"
action = "ovs.unset"
table = "Bridge"
record = "br0"
column = "fail_mode"
''')
    assert after["Interface"]["ve0"]["mtu_request"] == 9000
    assert "owner" not in after["Bridge"]["br0"]["external_ids"]
    assert after["Bridge"]["br0"]["other_config"] == {}
    assert after["Port"]["ve0"]["trunks"] == 30 and after["Bridge"]["br0"]["fail_mode"] == []


def test_get_publishes_a_value_that_later_steps_use(lab: Lab, shared: Host) -> None:
    """ovs.get with register: the steps after it are rendered with the value when the run
    gets to them, and the journal keeps it, so that rollback undoes the same step."""
    run_id, after = round_trip(lab, shared, '''
[[steps]]
id = "read-tag"
action = "ovs.get"
table = "Port"
record = "vi0"
column = "tag"
register = "vlan"

[[steps]]
id = "read-aging"
action = "ovs.get"
table = "Bridge"
record = "br0"
column = "other_config:mac-aging-time"
register = "aging"

[[steps]]
id = "same-vlan"
action = "ovs.port.present"
bridge = "br0"
name = "p{{ vlan }}"
type = "internal"
tag = "{{ vlan }}"
port_external_ids = { aging = "{{ aging }}" }
''')
    assert after["Port"]["p10"]["tag"] == 10
    assert after["Port"]["p10"]["external_ids"]["aging"] == "30"
    steps = {s["key"]: s for s in lab.journal(run_id)["steps"]}
    assert steps["read-tag"]["published"] == {"vlan": 10}
    assert steps["same-vlan"]["state"] == "undone"


# -- the same with the exported script (target centos6; the script is the same for both) ---

REMOVALS = '''
[[steps]]
id = "no-vi0"
action = "ovs.port.absent"
name = "vi0"

[[steps]]
id = "no-ve0"
action = "ovs.port.absent"
bridge = "br0"
name = "ve0"

[[steps]]
id = "no-bd0"
action = "ovs.bond.absent"
name = "bd0"

[[steps]]
id = "no-fb5"
action = "ovs.bridge.absent"
name = "fb5"

[[steps]]
id = "no-br0"
action = "ovs.bridge.absent"
name = "br0"
'''

CHANGES = '''
[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
stp = false
fail_mode = ""
other_config = { mac-table-size = 4096 }

[[steps]]
id = "fb7"
action = "ovs.bridge.present"
name = "fb7"
parent = "br0"
vlan = 7
external_ids = { purpose = "vlan7" }

[[steps]]
id = "trunk"
action = "ovs.port.present"
bridge = "br0"
name = "p9"
type = "internal"
vlan_mode = "trunk"
trunks = [40, 41]
port_external_ids = { role = "trunk" }

[[steps]]
id = "access"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
tag = 11
port_external_ids = { zone = "a" }

[[steps]]
id = "bond"
action = "ovs.bond.present"
bridge = "br0"
name = "bd1"
interfaces = ["vc0", "vc2"]
lacp = "passive"
other_config = { bond-detect-mode = "miimon" }

[[steps]]
id = "mtu"
action = "ovs.set"
table = "Interface"
record = "ve0"
column = "mtu_request"
value = 9000

[[steps]]
id = "owner"
action = "ovs.unset"
table = "Bridge"
record = "br0"
column = "external_ids"
keys = ["owner"]

[[steps]]
id = "trunks"
action = "ovs.unset"
table = "Port"
record = "ve0"
column = "trunks"
values = [20]

[[steps]]
id = "protocols"
action = "ovs.unset"
table = "Bridge"
record = "br0"
column = "protocols"
'''


def test_removals_one_after_the_other(lab: Lab, shared: Host) -> None:
    """Ports, a bond and a fake bridge removed, then their bridge: rollback makes the bridge
    again first (its mirror by the same name), then the rest, each where it was."""
    round_trip(lab, shared, REMOVALS)


@pytest.mark.parametrize("shared", ["ovs-vsctl"], indirect=True)
@pytest.mark.parametrize("steps", [REMOVALS, CHANGES], ids=["removals", "changes"])
def test_exported_script_round_trip(lab: Lab, shared: Host, tmp_path: Path, steps: str) -> None:
    need_tools("shellcheck", "dash")
    script = tmp_path / "wf.sh"
    lab.call("export", "-i", str(lab.inventory), "--host", "h1", "-t", "centos6", "-o",
             str(script), str(lab.workflow(steps)))
    checked = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout

    def sh(*args: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", lab.host.ns.name, "dash", str(script),
                               *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RUNFLOW_JOURNAL": str(tmp_path / "journal")})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    first = sh()
    assert "already so" not in first, first
    changed = lab.host.snapshot()
    again = sh()
    assert again.count("already so") == again.count("== ") - 1, again
    assert lab.host.snapshot() == changed
    sh("--rollback")
    shared.assert_as_set_up()


def test_resume_and_rollback_keep_the_published_value(lab: Lab, shared: Host,
                                                      tmp_path: Path) -> None:
    """A run stopped after a step used a published value: resume and rollback render that
    step with the value the journal kept, not with what the record holds now."""
    ready = tmp_path / "ready"
    workflow = lab.workflow(f'''
[[steps]]
id = "read-tag"
action = "ovs.get"
table = "Port"
record = "vi0"
column = "tag"
register = "vlan"

[[steps]]
id = "same-vlan"
action = "ovs.port.present"
bridge = "br0"
name = "p{{{{ vlan }}}}"
type = "internal"
tag = "{{{{ vlan }}}}"

[[steps]]
id = "gate"
action = "verify.command"
cmd = ["test", "-e", "{ready}"]
''')
    run_id, _, _ = lab.run(workflow, "--no-rollback", expect=3)
    lab.host.vsctl("set", "Port", "vi0", "tag=12")
    ready.touch()
    lab.call("resume", "-q", run_id)
    ports = lab.host.vsctl("list-ports", "br0").split()
    assert "p10" in ports and "p12" not in ports, ports
    lab.rollback(run_id)
    lab.host.vsctl("set", "Port", "vi0", "tag=10")
    shared.assert_as_set_up()
