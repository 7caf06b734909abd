"""Containers with no network, attached by runflow to a Linux bridge or an Open vSwitch bridge,
ping each other; a second run changes nothing; a restarted container is attached again;
detach and rollback leave no veth, port or address behind. Both targets: modern (Docker API +
netlink + OVSDB) and centos6 (ip, ip netns exec, brctl, ovs-vsctl)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runflow.core.lab.namespaces import unique_name

from .conftest import TARGETS, DockerHost

pytestmark = pytest.mark.root

WORKFLOW = """
[workflow]
name = "attach-containers"

[vars]
bridge = "br0"
prefix = "c"
image = "runflow/busybox:lab"

[[steps]]
id = "containers"
action = "container.run"
for_each = ["a", "b"]
name = "{{ prefix }}-{{ item }}"
image = "{{ image }}"
command = ["sleep", "3600"]
network = "none"
init = true

[[steps]]
id = "attach"
action = "container.attach"
for_each = [["a", "10.60.0.2/24", "02:00:0a:3c:00:02"], ["b", "10.60.0.3/24", "02:00:0a:3c:00:03"]]
container = "{{ prefix }}-{{ item[0] }}"
bridge = "{{ bridge }}"
address = "{{ item[1] }}"
mac = "{{ item[2] }}"
gateway = "10.60.0.1"
mtu = 1400

[[steps]]
id = "ping"
action = "verify.ping"
container = "{{ prefix }}-a"
to = "10.60.0.3"
timeout = 5
"""

DETACH = """
[workflow]
name = "detach-containers"

[vars]
prefix = "c"

[[steps]]
id = "detach"
action = "container.detach"
for_each = ["a", "b"]
container = "{{ prefix }}-{{ item }}"
"""


def applied(events: Path) -> list[str]:
    """The steps a run changed, from its --events file."""
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    return [e["step"] for e in rows if e["kind"] == "step" and e["dest"] == "applied"]


def run_id(events: Path) -> str:
    return json.loads(events.read_text().splitlines()[0])["run_id"]


class Lab:
    """One test's bridge, containers and runflow invocations on the shared docker host."""

    def __init__(self, host: DockerHost, kind: str, target: str, runflow, tmp_path: Path):
        self.host, self.kind, self.target, self.runflow = host, kind, target, runflow
        self.tmp = tmp_path
        self.bridge = unique_name("br")
        self.prefix = unique_name("c")
        self.inventory = host.inventory(tmp_path / "inventory.toml")
        (tmp_path / "attach.toml").write_text(WORKFLOW)
        (tmp_path / "detach.toml").write_text(DETACH)
        self.runs = 0
        if kind == "ovs":
            host.ovs.vsctl("add-br", self.bridge, "--", "set", "Bridge", self.bridge,
                           "datapath_type=netdev")
        else:
            host.ns.run(["ip", "link", "add", self.bridge, "type", "bridge"])
            # dockerd set FORWARD's policy to DROP, and bridged frames pass FORWARD: let this
            # bridge's own traffic through, as docker does for docker0.
            host.ns.run(["iptables", *self.forward_rule("-I")])
        host.ns.run(["ip", "link", "set", self.bridge, "up"])

    def forward_rule(self, op: str) -> list[str]:
        return [op, "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]

    def run(self, workflow: str, *args: str) -> tuple[str, list[str]]:
        """Run a workflow; returns its run id and the steps it changed."""
        self.runs += 1
        events = self.tmp / f"events-{self.runs}.jsonl"
        done = self.runflow("run", self.tmp / workflow, "--inventory", self.inventory,
                            "--target", self.target, "--events", events, "--var",
                            f"bridge={self.bridge}", "--var", f"prefix={self.prefix}", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return run_id(events), applied(events)

    def rollback(self, run: str) -> None:
        done = self.runflow("rollback", run)
        assert done.returncode == 0, done.stdout + done.stderr

    def ping(self, source: str, address: str) -> int:
        container = self.host.client.containers.get(f"{self.prefix}-{source}")
        return container.exec_run(["ping", "-c", "1", "-W", "2", address]).exit_code

    def host_ends(self) -> list[str]:
        """Host ends of veths runflow made (this module's tests run one at a time)."""
        return [name for name in self.host.links() if name.startswith("rf")]

    def tagged_ports(self) -> list[str]:
        if self.host.ovs is None:
            return []
        out = self.host.ovs.vsctl("--bare", "--columns=name", "find", "Interface",
                                  f"external_ids:container_id={self.prefix}-a")
        out += self.host.ovs.vsctl("--bare", "--columns=name", "find", "Interface",
                                   f"external_ids:container_id={self.prefix}-b")
        return out.split()

    def containers(self) -> list[str]:
        return [c.name for c in self.host.client.containers.list(all=True)
                if c.name.startswith(self.prefix)]

    def clean(self) -> None:
        for container in self.host.client.containers.list(all=True):
            if container.name.startswith(self.prefix):
                container.remove(force=True)
        if self.kind == "ovs":
            self.host.ovs.vsctl("--if-exists", "del-br", self.bridge)
        else:
            self.host.ns.run(["iptables", *self.forward_rule("-D")], check=False)
            self.host.ns.run(["ip", "link", "del", self.bridge], check=False)


@pytest.fixture(params=[(k, t) for k in ("linux", "ovs") for t in TARGETS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def lab(request, docker_host: DockerHost, runflow, tmp_path: Path):
    kind, target = request.param
    lab = Lab(docker_host, kind, target, runflow, tmp_path)
    try:
        yield lab
    finally:
        lab.clean()


def test_attached_containers_ping_and_a_second_run_changes_nothing(lab: Lab) -> None:
    first, changed = lab.run("attach.toml")
    # "ping" shows as applied too when its first try gets no answer within a second (a busy
    # machine): it then tries again until its timeout, and holds.
    assert [step for step in changed if step != "ping"] == \
        ["containers[0]", "containers[1]", "attach[0]", "attach[1]"]
    assert lab.ping("b", "10.60.0.2") == 0
    assert len(lab.host_ends()) == 2
    if lab.kind == "ovs":
        assert len(lab.tagged_ports()) == 2
    inside = lab.host.client.containers.get(f"{lab.prefix}-a")
    assert "02:00:0a:3c:00:02" in inside.exec_run(["ip", "link", "show", "eth0"]).output.decode()
    assert "default via 10.60.0.1" in inside.exec_run(["ip", "route"]).output.decode()

    _, changed = lab.run("attach.toml")
    assert changed == []

    lab.rollback(first)
    assert lab.host_ends() == [] and lab.tagged_ports() == [] and lab.containers() == []


def test_a_restarted_container_is_attached_again(lab: Lab) -> None:
    first, _ = lab.run("attach.toml")
    lab.host.client.containers.get(f"{lab.prefix}-a").restart(timeout=0)
    assert lab.ping("b", "10.60.0.2") != 0  # the new namespace has no eth0

    _, changed = lab.run("attach.toml")
    assert changed == ["attach[0]"]
    assert lab.ping("b", "10.60.0.2") == 0
    if lab.kind == "ovs":  # the port of the old namespace was replaced, not kept beside
        assert len(lab.tagged_ports()) == 2

    lab.rollback(first)
    assert lab.host_ends() == [] and lab.tagged_ports() == [] and lab.containers() == []


def test_detach_removes_exactly_the_attachment_and_its_rollback_restores_it(lab: Lab) -> None:
    first, _ = lab.run("attach.toml")
    detach, changed = lab.run("detach.toml")
    assert changed == ["detach[0]", "detach[1]"]
    assert lab.host_ends() == [] and lab.tagged_ports() == []
    container = lab.host.client.containers.get(f"{lab.prefix}-a")
    assert "eth0" not in container.exec_run(["ip", "link"]).output.decode()

    lab.rollback(detach)  # undo of detach: attached again, as it was
    assert lab.ping("b", "10.60.0.2") == 0
    assert len(lab.host_ends()) == 2

    lab.rollback(first)
    assert lab.host_ends() == [] and lab.tagged_ports() == [] and lab.containers() == []


@pytest.mark.parametrize("target", TARGETS)
def test_an_ovs_bridge_the_switch_cannot_use_fails_the_attach_with_its_message(
        docker_host: DockerHost, runflow, tmp_path: Path, target: str) -> None:
    lab = Lab(docker_host, "ovs", target, runflow, tmp_path)
    try:
        # The system datapath needs the openvswitch kernel module, which this kernel lacks:
        # ovs-vsctl exits 0, and only the read-back shows that the port got no OpenFlow port.
        docker_host.ovs.vsctl("set", "Bridge", lab.bridge, "datapath_type=system")
        started = time.monotonic()
        done = runflow("run", tmp_path / "attach.toml", "--inventory", lab.inventory,
                       "--target", target, "--var", f"bridge={lab.bridge}", "--var",
                       f"prefix={lab.prefix}")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "could not set up rf" in done.stderr, done.stderr
        assert f"(on bridge {lab.bridge})" in done.stderr, done.stderr
        assert time.monotonic() - started < 8  # told at once, not after a timeout
        assert lab.host_ends() == []
    finally:
        lab.clean()
