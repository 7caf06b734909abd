"""A whole workflow through the real command line: a bridge with addresses, veth pairs into a
guest namespace, firewall rules, IP forwarding and routes (bridge-guests.toml). Both targets
build the same namespaces; `plan` shows CentOS 6's commands; a failing command's stderr is the
step's error and the run is rolled back; a for_each batch that fails part-way leaves nothing
behind, and a large one goes through."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runflow.core.lab.namespaces import Namespace
from tests.support.snapshot import settled, without_macs

from .conftest import TARGETS, Lab, assert_same, step_states

pytestmark = pytest.mark.root

WORKFLOW = Path(__file__).with_name("bridge-guests.toml")


def inventory(path: Path, host: Namespace, guest: Namespace) -> Path:
    path.write_text(
        f'[hosts.host]\nnetns = "{host.name}"\nvars = {{ guest_netns = "{guest.name}" }}\n\n'
        f'[hosts.guest]\nnetns = "{guest.name}"\nvars = {{ guest_netns = "{guest.name}" }}\n')
    return path


def test_both_targets_build_the_same_namespaces_and_roll_back_to_empty(
        namespaces: Callable[[], Namespace], tmp_path: Path, runflow: Any, lab: Lab) -> None:
    built = {}
    for target in TARGETS:
        host, guest = namespaces(), namespaces()
        inv = inventory(tmp_path / f"{target}.toml", host, guest)
        before = [settled(ns.name) for ns in (host, guest)]
        events = tmp_path / f"{target}.jsonl"

        done = runflow("run", "-q", "-i", inv, "-t", target, "--events", events, WORKFLOW)
        assert done.returncode == 0, done.stderr
        run_id = events.read_text().split('"run_id": "')[1].split('"')[0]
        built[target] = [without_macs(settled(ns.name)) for ns in (host, guest)]

        again = runflow("plan", "-i", inv, "-t", target, WORKFLOW)
        assert "would change" not in again.stdout, again.stdout

        done = runflow("rollback", "-q", run_id)
        assert done.returncode == 0, runflow("show", run_id).stdout
        for was, ns in zip(before, (host, guest)):
            assert_same(was, settled(ns.name))

    for centos6, modern in zip(built["centos6"], built["modern"]):
        assert_same(centos6, modern)


def test_plan_shows_the_commands_of_each_target(namespaces: Callable[[], Namespace],
                                                 tmp_path: Path, runflow: Any, lab: Lab) -> None:
    host, guest = namespaces(), namespaces()
    inv = inventory(tmp_path / "inventory.toml", host, guest)
    in_host = f"ip netns exec {host.name} "
    centos6 = runflow("plan", "-i", inv, "-t", "centos6", WORKFLOW)
    assert centos6.returncode == 0, centos6.stderr
    for command in ("brctl addbr br0", "ip addr add 172.16.42.1/24 dev br0",
                    "ip link add vh0 type veth peer name vg0",
                    f"ip link set vg0 netns {guest.name}", "brctl addif br0 vh0",
                    "ip link set vh0 mtu 1400 up", "sysctl -w net.ipv4.ip_forward=1",
                    "iptables -t nat -A POSTROUTING -s 172.16.42.0/24 '!' -d 172.16.42.0/24 "
                    "-j MASQUERADE", "iptables -t filter -I FORWARD 1 -i br0 '!' -o br0 -j ACCEPT",
                    "iptables -t filter -P FORWARD DROP",
                    "ip route replace 10.99.0.0/16 via 172.16.42.254"):
        assert f"$ {in_host}{command}\n" in centos6.stdout, command
    assert f"$ ip netns exec {guest.name} ip route replace default via 172.16.42.1" \
        in centos6.stdout

    modern = runflow("plan", "-i", inv, "-t", "modern", WORKFLOW)
    assert f"$ {in_host}ip link add br0 type bridge\n" in modern.stdout
    assert f"$ {in_host}ip link set vh0 master br0\n" in modern.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_a_failing_command_is_the_step_error_and_the_run_is_rolled_back(lab: Lab,
                                                                         target: str) -> None:
    workflow = lab.workflow("""
[[steps]]
id = "bridge"
action = "bridge.present"
name = "br9"

[[steps]]
id = "route"
action = "route.present"
to = "10.98.0.0/16"
via = "192.0.2.1"
""")
    before = lab.snapshot()
    _, events = lab.run(workflow, target, expect=1)
    failed = [e for e in events if e["dest"] == "failed" and e["kind"] == "step"]
    assert failed and "Nexthop has invalid gateway" in failed[0]["message"]
    assert step_states(events) == {"bridge": "undone", "route": "failed"}
    assert_same(before, lab.snapshot())


@pytest.mark.parametrize("target", TARGETS)
def test_a_batch_that_fails_part_way_leaves_nothing_behind(lab: Lab, target: str) -> None:
    lab.sh(["ip", "link", "add", "vg2", "type", "bridge"])  # in the way of the third pair
    workflow = lab.workflow("""
[[steps]]
id = "veths"
action = "veth.present"
for_each = "range(4)"
name = "vh{{ item }}"
peer = "vg{{ item }}"
""")
    before = lab.snapshot()
    _, events = lab.run(workflow, target, expect=1)
    states = step_states(events)
    assert states["veths[2]"] == "failed"
    assert states["veths[0]"] == states["veths[1]"] == "undone"
    failed = next(e for e in events if e.get("step") == "veths[2]" and e["dest"] == "failed")
    assert "File exists" in failed["message"]
    assert_same(before, lab.snapshot())


@pytest.mark.parametrize("target", TARGETS)
def test_rolling_back_a_batch_that_fails_part_way_undoes_the_others(lab: Lab,
                                                                     target: str) -> None:
    """A step's instances are undone together; when that fails, each one is undone again on
    its own, so the others are still restored and the error is the failing instance's."""
    lab.sh(*[["ip", "link", "add", f"vh{i}", "type", "veth", "peer", "name", f"vg{i}"]
             for i in range(3)])
    before = lab.snapshot()
    workflow = lab.workflow("""
[[steps]]
id = "gone"
action = "veth.absent"
for_each = "range(3)"
name = "vh{{ item }}"
""")
    run_id, _ = lab.run(workflow, target)
    lab.sh(["ip", "link", "add", "vg1", "type", "bridge"])  # in the way of vh1's peer
    rolled = lab.call("rollback", "-q", run_id, expect=3)
    assert "gone[1]" in rolled.stderr and "File exists" in rolled.stderr
    shown = json.loads(lab.call("show", run_id, "--json").stdout)
    assert {s["key"]: s["state"] for s in shown["steps"]} == \
        {"gone[0]": "undone", "gone[1]": "undo_failed", "gone[2]": "undone"}
    lab.sh(["ip", "link", "del", "vg1"], ["ip", "link", "add", "vh1", "type", "veth", "peer",
                                           "name", "vg1"])  # by hand: new MACs
    assert_same(without_macs(before), without_macs(lab.snapshot()))


@pytest.mark.parametrize("target", TARGETS)
def test_a_large_batch_goes_through(lab: Lab, target: str) -> None:
    """More requests than one netlink send carries (the answers to as many refusals would
    overflow the socket's buffer), more lines than an `ip -batch` needs. (Rolling back is left
    to the smaller tests: centos6 deletes links one at a time, ~20 ms each in the kernel.)"""
    workflow = lab.workflow("""
[[steps]]
id = "veths"
action = "veth.present"
for_each = "range(400)"
name = "vh{{ item }}"
peer = "vg{{ item }}"
""")
    _, events = lab.run(workflow, target)
    assert list(step_states(events).values()).count("applied") == 400
    veths = lab.ns.run(["ip", "-o", "link", "show", "type", "veth"]).stdout.splitlines()
    assert len(veths) == 800


def test_bad_arguments_are_refused_before_anything_runs(lab: Lab) -> None:
    workflow = lab.workflow("""
[[steps]]
id = "nat"
action = "firewall.rule.present"
table = "nat"
chain = "POSTROUTING"
rule = ["-j", "MASQUERADE", "-t", "filter"]
""")
    done = lab.call("validate", str(workflow), expect=2)
    assert "rule" in done.stderr and "'-t'" in done.stderr
    lab.call("run", "-i", str(lab.inventory), str(workflow), expect=2)
    assert "-A " not in lab.ns.run(["iptables-save", "-t", "nat"]).stdout
