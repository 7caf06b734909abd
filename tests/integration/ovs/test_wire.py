"""Reading OVSDB in-process (backends/ovs/wire.py), against a real ovsdb-server: the rows
and columns asked for come back in normal form, and each way a read can fail says what went
wrong and where."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runflow.backends.ovs.wire import OvsdbWire, where_named
from runflow.core.errors import ActionError
from runflow.core.hosts import NetnsHost

from .conftest import OvsHost

TCP = "tcp:127.0.0.1:6640"  # as clients name it; the server listens on ptcp:PORT:ADDRESS


def without_uuid(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: v for c, v in row.items() if c != "_uuid"} for row in rows]


def listen_on_tcp(host: OvsHost) -> None:
    """Have the host's ovsdb-server also listen on TCP, inside the host's namespace."""
    subprocess.run(["ovs-appctl", "-t", str(host.ovs.state_dir / "ovsdb-server.ctl"),
                    "ovsdb-server/add-remote", "ptcp:6640:127.0.0.1"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not host.ns.run(["ss", "-Hltn", "sport = :6640"]).stdout:
        assert time.monotonic() < deadline, "ovsdb-server does not listen on TCP"
        time.sleep(0.01)  # the server opens the new remote in its next main-loop pass


def in_namespace(host: OvsHost, read: Callable[[], Any]) -> Any:
    """read() in a thread that entered the host's namespace, as the engine's worker does."""
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            NetnsHost(name=host.name, netns=host.ns.name).enter()
            result["value"] = read()
        except BaseException as exc:  # handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.root
def test_a_select_reads_the_rows_asked_for_in_normal_form(ovs_hosts: Callable[..., OvsHost]
                                                          ) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev",
               "--", "add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal",
               "external_ids:container_id=c1", "external_ids:container_iface=eth0",
               "--", "add-port", "br0", "p2", "--", "set", "Interface", "p2", "type=internal")
    wire = OvsdbWire(host.ovs.endpoint)
    try:
        bridge, tagged, nothing = wire.select([
            ("Bridge", where_named("br0"), ["name", "datapath_type", "fail_mode"]),
            ("Interface", [["external_ids", "includes",
                            ["map", [["container_id", "c1"], ["container_iface", "eth0"]]]]],
             ["name", "ofport", "external_ids"]),
            ("Port", where_named("p3"), ["name"]),
        ])
    finally:
        wire.close()
    assert without_uuid(bridge) == [{"name": "br0", "datapath_type": "netdev", "fail_mode": []}]
    assert [(r["name"], r["external_ids"]) for r in tagged] == [
        ("p1", {"container_id": "c1", "container_iface": "eth0"})]
    assert isinstance(tagged[0]["ofport"], int) and tagged[0]["ofport"] > 0
    assert nothing == []


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    endpoint = f"unix:{tmp_path}/db.sock"
    with pytest.raises(ActionError, match=f"cannot reach OVSDB at {endpoint}: No such file"):
        OvsdbWire(endpoint)


def test_an_endpoint_it_cannot_read_is_named() -> None:
    with pytest.raises(ActionError, match="ssl:10.0.0.1:6640: runflow reads through unix:PATH"):
        OvsdbWire("ssl:10.0.0.1:6640")


@pytest.mark.root
def test_a_bad_select_fails_with_the_servers_message(ovs_hosts: Callable[..., OvsHost]
                                                     ) -> None:
    host = ovs_hosts()
    wire = OvsdbWire(host.ovs.endpoint)
    try:
        with pytest.raises(ActionError, match=f"OVSDB at {host.ovs.endpoint} refused a read: "
                                              "syntax error .*No table named Bridges"):
            wire.select([("Bridges", [], ["name"])])
        with pytest.raises(ActionError, match="refused a read: .*colour"):
            wire.select([("Bridge", [], ["colour"])])
        # The answer was read whole: the connection goes on serving.
        assert wire.select([("Bridge", [], ["name"])]) == [[]]
    finally:
        wire.close()


@pytest.mark.root
def test_a_stopped_server_is_a_clear_error(ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    wire = OvsdbWire(host.ovs.endpoint)
    host.ovs.stop()
    with pytest.raises(ActionError, match=f"OVSDB at {host.ovs.endpoint} closed the connection"
                                          "|lost the connection"):
        wire.select([("Bridge", [], ["name"])])
    with pytest.raises(ActionError, match="is closed"):
        wire.select([("Bridge", [], ["name"])])


@pytest.mark.root
def test_a_tcp_endpoint_is_reached_from_the_hosts_namespace_and_kept_alive(
        ovs_hosts: Callable[..., OvsHost]) -> None:
    host = ovs_hosts()
    host.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
    listen_on_tcp(host)

    def idle_then_read() -> list[list[dict[str, Any]]]:
        wire = OvsdbWire(TCP)
        try:
            # ovsdb-server sends an echo request after 5 s of silence on TCP; the next read
            # answers it and still gets its own response.
            time.sleep(5.5)
            return wire.select([("Bridge", [], ["name"])])
        finally:
            wire.close()

    assert without_uuid(in_namespace(host, idle_then_read)[0]) == [{"name": "br0"}]


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
    for outcome in ("applied", "skipped"):  # the second run finds the port, read over TCP
        done = runflow("run", "-q", "-i", inventory, "-t", "centos6", "--events", events,
                       workflow)
        assert done.returncode == 0, done.stderr
        steps = [json.loads(line) for line in events.read_text().splitlines()]
        assert [e["dest"] for e in steps if e["kind"] == "step"][-1] == outcome
    assert host.vsctl("list-ports", "br0").split() == ["p1"]
