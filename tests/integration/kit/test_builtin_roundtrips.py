"""Every built-in action implementation keeps the contract plugin authors are held to: the
test kit's round trip (runflow.testing.roundtrip) on a throw-away host, for each backend.

Not round-tripped, by design: verify.command and verify.ping change nothing (observe, check
and a failing apply are their whole behaviour: tests/integration/*/ run them), and
service.restart always applies (nothing says a restart is "already done")."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from runflow.core.hosts import NetnsHost
from runflow.core.plugins import Plugins
from runflow.testing import apply, roundtrip, run_on
from tests.conftest import need_tools

pytestmark = pytest.mark.root

VETH = [["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"]]
BRIDGE = [["ip", "link", "add", "br0", "type", "bridge"]]
ADDRESSED = VETH + [["ip", "addr", "add", "10.9.0.1/24", "dev", "v0"],
                    ["ip", "link", "set", "v0", "up"]]
OVS_BRIDGE = [["ovs-vsctl", "add-br", "obr0", "--", "set", "bridge", "obr0",
               "datapath_type=netdev"]]
VETHS = VETH + [["ip", "link", "add", "v2", "type", "veth", "peer", "name", "v3"]]


class Case(NamedTuple):
    args: Callable[[Path], dict[str, Any]]  # from a directory of the test's own
    setup: list[list[str]] = []
    ignore: tuple[str, ...] = ()  # what cannot come back as it was (see roundtrip)


# A link that undo recreates gets new numbers from the kernel; a recreated bridge without
# ports has no use for its old MAC (it takes its first port's), and a recreated veth's MAC
# is put back by hand.
RENUMBERED = ("links.*.ifindex", "links.*.iflink")


def fixed(args: dict[str, Any]) -> Callable[[Path], dict[str, Any]]:
    return lambda tmp: args


LINUX = {
    "bridge.present": Case(fixed({"name": "br0"})),
    "bridge.absent": Case(fixed({"name": "br0"}), BRIDGE, (*RENUMBERED, "links.*.mac")),
    "bridge.port": Case(fixed({"bridge": "br0", "name": "v0"}), BRIDGE + VETH),
    "link.set": Case(fixed({"name": "v0", "mtu": 1400, "state": "up"}), VETH),
    "addr.present": Case(fixed({"dev": "v0", "address": "10.9.0.1/24"}), VETH),
    "addr.absent": Case(fixed({"dev": "v0", "address": "10.9.0.1/24"}), ADDRESSED),
    "veth.present": Case(fixed({"name": "v0", "peer": "v1"})),
    "veth.absent": Case(fixed({"name": "v0"}), VETH, (*RENUMBERED, "links.*.mac_set")),
    "route.present": Case(fixed({"to": "10.8.0.0/24", "via": "10.9.0.254"}), ADDRESSED),
    "route.absent": Case(fixed({"to": "10.8.0.0/24"}),
                         ADDRESSED + [["ip", "route", "add", "10.8.0.0/24", "via", "10.9.0.254"]]),
    "rule.present": Case(fixed({"from": "10.9.0.0/24", "table": 100, "priority": 1000})),
    "rule.absent": Case(fixed({"from": "10.9.0.0/24", "table": 100}),
                        [["ip", "rule", "add", "from", "10.9.0.0/24", "table", "100", "priority",
                          "1000"]]),
}
SYSTEM = {
    "sysctl.set": Case(fixed({"name": "net.ipv4.ip_forward", "value": "1"})),
    "firewall.rule.present": Case(fixed({"chain": "FORWARD", "rule": ["-i", "v0", "-j",
                                                                      "ACCEPT"]})),
    "firewall.rule.absent": Case(fixed({"chain": "FORWARD", "rule": ["-i", "v0", "-j", "ACCEPT"]}),
                                 [["iptables", "-A", "FORWARD", "-i", "v0", "-j", "ACCEPT"]]),
    "firewall.policy": Case(fixed({"chain": "FORWARD", "policy": "DROP"})),
    "shell.run": Case(lambda tmp: {"cmd": ["touch", str(tmp / "done")],
                                   "undo": ["rm", "-f", str(tmp / "done")],
                                   "check": ["test", "-e", str(tmp / "done")]}),
    "docker.daemon": Case(lambda tmp: {"config": str(tmp / "docker-config"),
                                       "fixed_cidr": "172.30.0.0/24", "mtu": 1400}),
}
OVS = {
    "ovs.bridge.present": Case(fixed({"name": "obr0", "datapath_type": "netdev"})),
    "ovs.bridge.absent": Case(fixed({"name": "obr0"}), OVS_BRIDGE),
    "ovs.port.present": Case(fixed({"bridge": "obr0", "name": "op0", "type": "internal"}),
                             OVS_BRIDGE),
    "ovs.port.absent": Case(fixed({"name": "op0"}), OVS_BRIDGE + [
        ["ovs-vsctl", "add-port", "obr0", "op0", "--", "set", "interface", "op0",
         "type=internal"]]),
    "ovs.set": Case(fixed({"table": "Bridge", "record": "obr0", "column": "external_ids:owner",
                           "value": "kit"}), OVS_BRIDGE),
    "ovs.unset": Case(fixed({"table": "Bridge", "record": "obr0", "column": "external_ids:owner"}),
                      [[*OVS_BRIDGE[0], "external_ids:owner=kit"]]),
    "ovs.bond.present": Case(fixed({"bridge": "obr0", "name": "obond", "interfaces": ["v0", "v2"],
                                    "lacp": "active"}), OVS_BRIDGE + VETHS),
    "ovs.bond.absent": Case(fixed({"name": "obond"}), OVS_BRIDGE + VETHS + [
        ["ovs-vsctl", "add-bond", "obr0", "obond", "v0", "v2", "bond_mode=balance-slb"]]),
}
# ovs.get reads: its state always holds (a value is there to read, or the step fails).
NOT_ROUND_TRIPPED = {"verify.command", "verify.ping", "service.restart", "ovs.get"}

REGISTRY = Plugins(entry_points=False).registry


def implementations(actions: dict[str, Case]) -> list[Any]:
    return [pytest.param(action, backend, id=f"{action}-{backend}")
            for action in actions for backend in REGISTRY.implementations(action)]


def test_every_builtin_action_is_covered():
    covered = {*LINUX, *SYSTEM, *OVS, *CONTAINER_ACTIONS, "netns.move", "service.present",
               *NOT_ROUND_TRIPPED}
    assert covered == set(REGISTRY.names())


def trip(action: str, backend: str, case: Case, host: NetnsHost, tmp: Path) -> None:
    for argv in case.setup:
        run_on(host, argv)
    roundtrip(action, case.args(tmp), host, backend=backend, plugins=Plugins(entry_points=False),
              ignore=case.ignore)


@pytest.mark.parametrize("action, backend", implementations(LINUX))
def test_linux(netns_host, tmp_path, action, backend):
    need_tools("ip", "bridge")
    trip(action, backend, LINUX[action], netns_host, tmp_path)


@pytest.mark.parametrize("action, backend", implementations(SYSTEM))
def test_system(netns_host, tmp_path, action, backend):
    need_tools("iptables", "iptables-save")
    trip(action, backend, SYSTEM[action], netns_host, tmp_path)


@pytest.mark.parametrize("backend", REGISTRY.implementations("netns.move"))
def test_netns_move(make_netns_host, tmp_path, backend):
    host, there = make_netns_host("h1"), make_netns_host("h2")
    trip("netns.move", backend, Case(fixed({"name": "v0", "netns": there.netns}), VETH), host,
         tmp_path)


def test_service_present_with_the_inventorys_commands(netns_host, tmp_path):
    marker = str(tmp_path / "running")
    netns_host.settings["services"] = {"kit": {
        "start": ["touch", marker], "stop": ["rm", "-f", marker], "status": ["test", "-e", marker]}}
    roundtrip("service.present", {"name": "kit"}, netns_host, backend="command",
              plugins=Plugins(entry_points=False))


@pytest.fixture
def ovs_host(netns_host) -> Iterator[NetnsHost]:
    from runflow.core.lab.namespaces import Namespace
    from runflow.core.lab.ovs import OvsDaemons

    need_tools("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
    state = tempfile.mkdtemp(prefix="rfk-", dir="/tmp")  # short: a socket path lives there
    daemons = OvsDaemons(Namespace(netns_host.netns), state).start()
    netns_host.endpoints["ovsdb"] = daemons.endpoint
    try:
        yield netns_host
    finally:
        daemons.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("action, backend", implementations(OVS))
def test_ovs(ovs_host, tmp_path, action, backend):
    case = OVS[action]
    db = f"--db={ovs_host.endpoints['ovsdb']}"
    trip(action, backend, case._replace(setup=[[a[0], db, *a[1:]] if a[0] == "ovs-vsctl" else a
                                               for a in case.setup]),
         ovs_host, tmp_path)


# -- containers: one host with dockerd (and OVS) for the module ------------------------------

CONTAINER_ACTIONS = ("container.run", "container.absent", "container.attach",
                     "container.detach")


@pytest.fixture(scope="module")
def docker_host() -> Iterator[Any]:
    from tests.integration.docker.conftest import need_docker, start_host

    need_docker()
    yield from start_host()


@pytest.fixture
def container_host(docker_host, request) -> Iterator[tuple[NetnsHost, str]]:
    """The docker host as a runflow host, and a sleeping container of this test's own."""
    name = f"kit{abs(hash(request.node.name)) % 10**8}"
    host = NetnsHost("h1", endpoints={"docker": docker_host.dockerd.url},
                     netns=docker_host.ns.name)
    try:
        yield host, name
    finally:
        for container in docker_host.client.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)
        run_on(host, ["ip", "link", "del", "kbr0"], check=False)


def test_container_run(docker_host, container_host):
    from runflow.core.lab.dockerd import BUSYBOX_IMAGE

    host, name = container_host
    roundtrip("container.run", {"name": name, "image": BUSYBOX_IMAGE, "command": ["sleep", "60"],
                                "init": True, "network": "none"}, host)


def test_container_absent(docker_host, container_host):
    host, name = container_host
    docker_host.sleeper(name)
    roundtrip("container.absent", {"name": name, "timeout": 0}, host,
              ignore=("id",))  # a container made again is another container


@pytest.mark.parametrize("backend", ["docker", "pipework"])
@pytest.mark.parametrize("action", ["container.attach", "container.detach"])
def test_container_attach_and_detach(docker_host, container_host, action, backend):
    host, name = container_host
    docker_host.sleeper(name)
    run_on(host, ["ip", "link", "add", "kbr0", "type", "bridge"])
    attach = {"container": name, "bridge": "kbr0", "address": "10.7.0.2/24"}
    plugins = Plugins(entry_points=False)
    if action == "container.detach":
        apply("container.attach", attach, host, backend=backend, plugins=plugins)
        roundtrip(action, {"container": name}, host, backend=backend, plugins=plugins)
    else:
        roundtrip(action, attach, host, backend=backend, plugins=plugins)
