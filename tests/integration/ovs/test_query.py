"""Reading OVSDB with commands (backends/ovs/query.py: `ovsdb-client transact` of selects, as
the ovs-vsctl and pipework backends read), against a real ovsdb-server: the rows and columns
asked for come back in normal form, from one command however many selects; each way a read can
fail says what went wrong and where; and the inventory's endpoint is checked before anything
runs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runflow.backends.ovs.query import OvsdbUnreachable, select, where_named
from runflow.core.actions import Context, Resources
from runflow.core.errors import ActionError
from runflow.core.hosts import Host, NetnsHost
from tests.conftest import need_tools

from .conftest import OvsHost, TARGETS

TCP = "tcp:127.0.0.1:6640"  # as clients name it; the server listens on ptcp:PORT:ADDRESS


def context(host: Host) -> Context:
    return Context(host=host, run_id="test", step="read", resources=Resources())


def on(endpoint: str) -> Context:
    """A context on the local host whose inventory names this OVSDB endpoint."""
    return context(Host("h1", endpoints={"ovsdb": endpoint}))


def without_uuid(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: v for c, v in row.items() if c != "_uuid"} for row in rows]


def listen_on_tcp(host: OvsHost) -> None:
    """Have the host's ovsdb-server also listen on TCP, inside the host's namespace."""
    subprocess.run(["ovs-appctl", "-t", str(host.ovs.state_dir / "ovsdb-server.ctl"),
                    "ovsdb-server/add-remote", "ptcp:6640:127.0.0.1"], check=True,
                   capture_output=True)
    deadline = time.monotonic() + 10
    while not host.ns.run(["ss", "-Hltn", "sport = :6640"]).stdout:
        assert time.monotonic() < deadline, "ovsdb-server does not listen on TCP"
        time.sleep(0.01)  # the server opens the new remote in its next main-loop pass


def in_namespace(host: OvsHost, read: Callable[[NetnsHost], Any]) -> Any:
    """read(host) in a thread that entered the host's namespace, as the engine's worker does."""
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            netns = NetnsHost(name=host.name, netns=host.ns.name, endpoints={"ovsdb": TCP})
            netns.enter()
            result["value"] = read(netns)
        except BaseException as exc:  # handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.root
def test_selects_read_the_rows_asked_for_in_normal_form_with_one_command(
        ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
               "--", "add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal",
               "external_ids:container_id=c1", "external_ids:container_iface=eth0",
               "--", "add-port", "br0", "p2", "--", "set", "Interface", "p2", "type=internal")
    ctx = on(host.ovs.endpoint)
    bridge, tagged, nothing = select(ctx, [
        ("Bridge", where_named("br0"), ["name", "datapath_type", "fail_mode"]),
        ("Interface", [["external_ids", "includes",
                        ["map", [["container_id", "c1"], ["container_iface", "eth0"]]]]],
         ["name", "ofport", "external_ids"]),
        ("Port", where_named("p3"), ["name"]),
    ])
    assert without_uuid(bridge) == [{"name": "br0", "datapath_type": "netdev", "fail_mode": []}]
    assert [(r["name"], r["external_ids"]) for r in tagged] == [
        ("p1", {"container_id": "c1", "container_iface": "eth0"})]
    assert isinstance(tagged[0]["ofport"], int) and tagged[0]["ofport"] > 0
    assert nothing == []
    assert [c.split()[:2] for c in ctx.commands] == [["ovsdb-client", "transact"]]


@pytest.mark.root
def test_a_read_too_large_for_one_argument_is_split(ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    ctx = on(host.ovs.endpoint)
    # 2,000 selects of some 90 bytes: more than Linux lets one argument hold (128 KiB).
    found = select(ctx, [("Bridge", where_named("br0" if i % 2 else f"nope{i}"), ["name"])
                         for i in range(2000)])
    assert [len(rows) for rows in found] == [i % 2 for i in range(2000)]
    assert len(ctx.commands) > 1
    assert all(len(c) < 128 * 1024 for c in ctx.commands)


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    need_tools("ovsdb-client")
    endpoint = f"unix:{tmp_path}/db.sock"
    with pytest.raises(OvsdbUnreachable, match=f"cannot read OVSDB at {endpoint}: .*"
                                               "No such file.*is ovsdb-server running"):
        select(on(endpoint), [("Bridge", [], ["name"])])


@pytest.mark.root
def test_a_bad_select_fails_with_the_servers_message(ovs_hosts: Callable[..., OvsHost]
                                                     ) -> None:
    host = ovs_hosts()
    ctx = on(host.ovs.endpoint)
    with pytest.raises(ActionError, match=f"OVSDB at {host.ovs.endpoint} refused a read: "
                                          "syntax error .*No table named Bridges"):
        select(ctx, [("Bridges", [], ["name"])])
    with pytest.raises(ActionError, match="refused a read: .*colour"):
        select(ctx, [("Bridge", [], ["colour"])])


@pytest.mark.root
def test_a_stopped_server_is_a_clear_error(ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    host.ovs.stop()
    with pytest.raises(OvsdbUnreachable, match=f"cannot read OVSDB at {host.ovs.endpoint}"):
        select(on(host.ovs.endpoint), [("Bridge", [], ["name"])])


@pytest.mark.root
def test_a_tcp_endpoint_is_read_from_inside_the_hosts_namespace(
        ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    listen_on_tcp(host)
    rows = in_namespace(host, lambda netns: select(context(netns), [("Bridge", [], ["name"])]))
    assert without_uuid(rows[0]) == [{"name": "br0"}]


@pytest.mark.root
def test_a_port_step_reads_and_writes_through_a_tcp_endpoint(
        ovs_hosts: Callable[..., OvsHost], runflow: Any, tmp_path: Path) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    listen_on_tcp(host)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[hosts.h1]\nnetns = "{host.ns.name}"\novsdb = "{TCP}"\n')
    workflow = tmp_path / "port.toml"
    workflow.write_text('[workflow]\nname = "tcp"\n\n[[steps]]\nid = "p1"\n'
                        'action = "ovs.port.present"\nbridge = "br0"\nname = "p1"\n'
                        'type = "internal"\n')
    events = tmp_path / "events.jsonl"
    for target in ("centos6", "modern"):
        for outcome in ("applied", "skipped"):  # the second run finds the port, read over TCP
            events.unlink(missing_ok=True)
            done = runflow("run", "-q", "-i", inventory, "-t", target, "--events", events,
                           workflow)
            assert done.returncode == 0, done.stderr
            steps = [json.loads(line) for line in events.read_text().splitlines()]
            assert [e["dest"] for e in steps if e["kind"] == "step"][-1] == outcome
            if outcome == "applied":
                run_id = steps[0]["run_id"]
        assert runflow("rollback", "-q", run_id).returncode == 0
    assert host.vsctl("list-ports", "br0").split() == []


@pytest.mark.parametrize("endpoint, says", [
    # the form, when the inventory is read
    ("garbage", "hosts.h1.ovsdb: 'garbage' is not an OVSDB endpoint"),
    ("tcp:192.0.2.999:6640", "hosts.h1.ovsdb: 'tcp:192.0.2.999:6640' has no valid host name"),
    # what only the host or runflow's support can tell, when a backend is chosen for the step
    ("unix:/etc/hostname", "the inventory's ovsdb endpoint 'unix:/etc/hostname' of host h1 is "
                           "not a socket (/etc/hostname is a file)"),
    ("ssl:192.0.2.1:6640", "the inventory's ovsdb endpoint 'ssl:192.0.2.1:6640' of host h1: "
                           "ssl endpoints need a private key"),
], ids=["garbage", "bad-ip", "regular-file", "ssl"])
@pytest.mark.parametrize("target", list(TARGETS.values()))
def test_an_endpoint_that_cannot_be_one_is_refused_before_anything_runs(
        runflow: Any, tmp_path: Path, endpoint: str, says: str, target: str) -> None:
    marker = tmp_path / "ran"
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(f'[hosts.h1]\novsdb = "{endpoint}"\n')
    workflow = tmp_path / "wf.toml"
    workflow.write_text('[workflow]\nname = "endpoint"\n\n'
                        f'[[steps]]\nid = "first"\naction = "shell.run"\ncmd = ["touch", "{marker}"]\n'
                        'undo = ["true"]\n\n'
                        '[[steps]]\nid = "br0"\naction = "ovs.bridge.present"\nname = "br0"\n')
    done = runflow("run", "-q", "-i", inventory, "-t", target, workflow)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr, done.stderr
    assert "hosts.h1.ovsdb" in done.stderr or "step 'br0'" in done.stderr, done.stderr
    assert not marker.exists()
