"""The multi-host recipe: two hosts joined by an underlay, each given an OVS bridge, a GRE port
to the other and an internal port with an address by one runflow run (both hosts in lockstep);
a ping crosses the tunnel, and a rollback returns both hosts to where they were."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runflow.core.lab.namespaces import wire
from runflow.core.lab.ovs import build_underlay
from tests.support.snapshot import differences, snapshot as netns_snapshot

from .conftest import Lab, OvsHost, assert_same, step_states

pytestmark = pytest.mark.root

WORKFLOW = '''
[vars]
ovs_datapath = "netdev"

[[steps]]
id = "br0"
action = "ovs.bridge.present"
name = "br0"
datapath_type = "{{ ovs_datapath }}"

[[steps]]
id = "gre0"
action = "ovs.port.present"
bridge = "br0"
name = "gre0"
type = "gre"
options = { remote_ip = "{{ remote_ip }}" }

[[steps]]
id = "vi0"
action = "ovs.port.present"
bridge = "br0"
name = "vi0"
type = "internal"

[[steps]]
id = "vi0-address"
action = "addr.present"
dev = "vi0"
address = "{{ inner_address }}"

[[steps]]
id = "vi0-up"
action = "link.set"
name = "vi0"
state = "up"

[[steps]]
id = "across"
action = "verify.ping"
to = "{{ peer_address }}"
count = 2
timeout = 15
'''


@pytest.fixture
def two_hosts(ovs_hosts: Callable[..., OvsHost]) -> list[OvsHost]:
    """h1 and h2, their underlay 10.99.0.1/24 – 10.99.0.2/24 on br-phy (MTU 1600)."""
    h1 = ovs_hosts("h1", remote_ip="10.99.0.2", inner_address="172.16.42.1/24",
                   peer_address="172.16.42.2")
    h2 = ovs_hosts("h2", remote_ip="10.99.0.1", inner_address="172.16.42.2/24",
                   peer_address="172.16.42.1")
    wire(h1.ns, h2.ns, "uplink1", "uplink2")
    build_underlay(h1.ovs, "uplink1", "10.99.0.1/24")
    build_underlay(h2.ovs, "uplink2", "10.99.0.2/24")
    for host in (h1, h2):
        settle(host)
    return [h1, h2]


def settle(host: OvsHost, timeout: float = 5.0) -> None:
    """Wait for the new links' IPv6 duplicate address detection to end: it adds routes by
    itself, which a snapshot taken earlier would not have."""
    deadline = time.monotonic() + timeout
    while host.ns.run(["ip", "-6", "addr", "show", "tentative"]).stdout.strip():
        assert time.monotonic() < deadline, "IPv6 addresses still tentative"
        time.sleep(0.1)


def test_ping_crosses_the_gre_tunnel_then_rollback_restores_both_hosts(
        two_hosts: list[OvsHost], backend: str, tmp_path: Path, runflow: Any) -> None:
    lab = Lab(two_hosts, backend, tmp_path, runflow)
    before = lab.snapshots()
    namespaces = {h.name: netns_snapshot(h.ns.name) for h in two_hosts}

    run_id, events, _ = lab.run(lab.workflow(WORKFLOW, "multihost-gre"))
    states = step_states(events)
    # A verification that passes at once is "skipped": the desired state already holds.
    assert {states.pop(f"{h}:across") for h in ("h1", "h2")} <= {"applied", "skipped"}
    assert states == {f"{h}:{s}": "applied" for h in ("h1", "h2")
                      for s in ("br0", "gre0", "vi0", "vi0-address", "vi0-up")}
    for host in two_hosts:
        assert host.ns.run(["ping", "-c", "1", "-W", "2", "-s", "1400",
                            host.vars["peer_address"]]).returncode == 0

    lab.rollback(run_id)
    assert_same(before, lab.snapshots())
    for h in two_hosts:
        now = netns_snapshot(h.ns.name)
        assert now == namespaces[h.name], "\n".join(differences(namespaces[h.name], now))
