"""Fixtures for the `runflow watch` tests: one lab host (a network namespace with its own dockerd,
ovsdb-server and ovs-vswitchd, and an OVS bridge) shared by the module, a running watcher (the
real command line, in a process of its own), and readings of what the host holds: the OVS
ports tagged for containers, the veths, a container's address, the journal's runs in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runflow.core.journal import Journal
from tests.conftest import REPO, need_tools, runflow_argv
from tests.integration.docker.conftest import DockerHost, need_docker, start_host

WORKFLOW = REPO / "workflows" / "container-ovs-watch.toml"
WATCH = "container-ovs-watch"
BRIDGE = "br-w"


class WatchHost(DockerHost):
    """The lab host, and what the tests read of it."""

    def vsctl(self, *args: str) -> str:
        assert self.ovs is not None
        return subprocess.run(["ovs-vsctl", f"--db={self.ovs.endpoint}", *args], check=True,
                              capture_output=True, text=True).stdout

    def ports(self) -> dict[str, list[dict[str, Any]]]:
        """The OVS interfaces tagged for containers, by container id."""
        table = json.loads(self.vsctl("--format=json", "--columns=name,external_ids,ofport",
                                      "list", "Interface"))
        found: dict[str, list[dict[str, Any]]] = {}
        for name, external_ids, ofport in table["data"]:
            tags = dict(external_ids[1])
            if "container_id" in tags:
                found.setdefault(tags["container_id"], []).append(
                    {"name": name, "ofport": ofport if isinstance(ofport, int) else -1})
        return found

    def veths(self) -> set[str]:
        """The host ends runflow made (named rf + a digest)."""
        return {name for name in self.links() if name.startswith("rf")}

    def address(self, container: Any) -> str | None:
        """The IPv4 address (with prefix) of eth1 inside a running container."""
        container.reload()
        if container.status != "running":
            return None
        code, out = container.exec_run(["ip", "-o", "-4", "addr", "show", "dev", "eth1"])
        fields = out.decode().split()
        return fields[fields.index("inet") + 1] if code == 0 and "inet" in fields else None

    def labelled(self, name: str, address: str, **kwargs: Any) -> Any:
        """A container the watch attaches: labelled with the bridge and its address."""
        return self.sleeper(name, labels={"runflow.net": BRIDGE, "runflow.ip": address},
                            **kwargs)


@pytest.fixture(scope="module")
def watch_host() -> Iterator[WatchHost]:
    need_docker()
    need_tools("ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
    for started in start_host(ovs=True):
        host = WatchHost(started.ns, started.dockerd, started.client, started.ovs)
        host.vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")
        yield host


class Watcher:
    """`runflow watch` running in a process of its own; its log lines are collected."""

    def __init__(self, home: Path, inventory: Path, target: str) -> None:
        self.argv = [*runflow_argv(), "watch", str(WORKFLOW), "--inventory", str(inventory),
                     "--target", target]
        self.env = {**os.environ, "RUNFLOW_HOME": str(home)}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30) -> Watcher:
        self.lines = []
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, text=True, env=self.env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_for(lambda: any("connected" in line for line in self.lines), timeout,
                 lambda: f"the watch did not connect: {self.log()}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the watcher (by its pid) and wait for it; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def log(self) -> str:
        return "\n".join(self.lines)

    def once(self) -> subprocess.CompletedProcess[str]:
        """`runflow watch --once` with the same arguments."""
        return subprocess.run([*self.argv, "--once"], capture_output=True, text=True,
                              env=self.env, timeout=120)


@pytest.fixture(params=["modern", "centos6"])
def watcher(request: pytest.FixtureRequest, watch_host: WatchHost, tmp_path: Path
            ) -> Iterator[Watcher]:
    """A watcher of the module's host with a journal of its own, for each target; killed
    (by pid) if a test leaves it running, and the containers the test made are removed."""
    inventory = watch_host.inventory(tmp_path / "hosts.toml")
    before = {c.id for c in watch_host.client.containers.list(all=True)}
    w = Watcher(tmp_path / "home", inventory, request.param)
    try:
        yield w
    finally:
        if w.proc is not None:
            w.proc.kill()
            w.proc.wait()
        for container in watch_host.client.containers.list(all=True):
            if container.id not in before:
                container.remove(force=True)
        w.once()  # rolls back what the test's containers still had


def wait_for(condition: Callable[[], Any], timeout: float = 20,
             why: Callable[[], str] = lambda: "") -> Any:
    """Poll until condition() is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s {why()}", pytrace=False)
        time.sleep(0.1)


def runs_in_place(home: Path) -> dict[str, list[str]]:
    """The journal's runs of the watch that are not rolled back: states by container id."""
    journal = Journal(home)
    try:
        found: dict[str, list[str]] = {}
        for run in journal.caused_runs(WATCH, ["h1"]):
            found.setdefault(run.record["cause"]["id"], []).append(run.state)
        return found
    finally:
        journal.close()
