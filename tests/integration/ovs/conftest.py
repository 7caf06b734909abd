"""Fixtures for the Open vSwitch backend tests: lab hosts (a network namespace with its own
ovsdb-server and ovs-vswitchd, started by core/lab/ovs.py as `runflow lab` does), removed after
each test even when it fails, and runs of the real `runflow` command line against them through
an inventory, once per backend (`--target centos6` → ovs-vsctl, `--target modern` → ovsdb)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.ovs import OvsDaemons
from tests.conftest import need_tools
from tests.support.ovsdb_snapshot import differences, ovsdb_snapshot

TARGETS = {"ovs-vsctl": "centos6", "ovsdb": "modern"}  # backend → the target that picks it
TOOLS = ("ip", "ping", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl")


@dataclass
class OvsHost:
    """A lab host: its inventory name, namespace, OVS daemons and inventory vars."""

    name: str
    ns: Namespace
    ovs: OvsDaemons
    vars: dict[str, Any] = field(default_factory=dict)

    def vsctl(self, *args: str) -> str:
        """Set the host up (or look at it) with plain ovs-vsctl, not runflow."""
        return self.ovs.vsctl(*args)

    def snapshot(self) -> dict[str, Any]:
        return ovsdb_snapshot(self.ovs.endpoint)

    def links(self) -> list[str]:
        """The names of the kernel links in the host's namespace."""
        out = self.ns.run(["ip", "-o", "link", "show"]).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def kill_switch(self) -> None:
        """SIGKILL ovs-vswitchd, as a crash would: it cleans nothing up (its taps stay)."""
        switch = self.ovs._switch  # the lab starts it as a child; it has no public handle
        assert switch is not None
        switch.kill()
        switch.wait()

    def restart_switch(self) -> None:
        """Start ovs-vswitchd again as the lab does (core/lab/ovs.py has no restart), and
        return once it has caught up with the database."""
        d = self.ovs.state_dir
        self.ovs._switch = self.ovs._spawn([
            "ovs-vswitchd", self.ovs.endpoint, f"--unixctl={self.ovs.switch_control}",
            f"--pidfile={d / 'ovs-vswitchd.pid'}", f"--log-file={d / 'ovs-vswitchd.log'}"])
        self.vsctl("init")  # without --no-wait: returns once ovs-vswitchd has reconfigured

    def inventory_table(self) -> str:
        lines = [f"[hosts.{self.name}]", f'netns = "{self.ns.name}"',
                 f'ovsdb = "{self.ovs.endpoint}"']
        if self.vars:
            lines.append("vars = { " + ", ".join(f"{k} = {json.dumps(v)}"
                                                  for k, v in self.vars.items()) + " }")
        return "\n".join(lines) + "\n"


@pytest.fixture
def ovs_hosts() -> Iterator[Callable[..., OvsHost]]:
    """make(name="h1", **vars) → a started lab host; every one is stopped and removed at the
    end (daemons by pid, namespace, state directory)."""
    made: list[OvsHost] = []

    def make(name: str = "h1", **host_vars: Any) -> OvsHost:
        need_tools(*TOOLS)
        ns = Namespace(unique_name("rfo"))
        # Short, as unix socket paths are limited to 108 bytes.
        host = OvsHost(name, ns, OvsDaemons(ns, tempfile.mkdtemp(prefix="rfo-", dir="/tmp")),
                       host_vars)
        made.append(host)
        ns.create()
        host.ovs.start()
        return host

    try:
        yield make
    finally:
        for host in reversed(made):
            try:
                host.ovs.stop()
            finally:
                host.ns.delete()
                shutil.rmtree(host.ovs.state_dir, ignore_errors=True)


@dataclass
class Lab:
    """Lab hosts, the backend under test, and the command line that runs workflows on them."""

    hosts: list[OvsHost]
    backend: str
    tmp: Path
    runflow: Callable[..., subprocess.CompletedProcess]

    @property
    def host(self) -> OvsHost:
        return self.hosts[0]

    @property
    def target(self) -> str:
        return TARGETS[self.backend]

    @property
    def inventory(self) -> Path:
        path = self.tmp / "inventory.toml"
        path.write_text("\n".join(h.inventory_table() for h in self.hosts))
        return path

    def workflow(self, steps: str, name: str = "ovs-test") -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(f'[workflow]\nname = "{name}"\n\n{steps}')
        return path

    def call(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
        done = self.runflow(*args)
        if expect is not None:
            assert done.returncode == expect, \
                f"runflow {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}"
        return done

    def run(self, workflow: Path, *extra: str, expect: int = 0
            ) -> tuple[str, list[dict[str, Any]], subprocess.CompletedProcess]:
        """`runflow run`; returns the run id, its events and the finished process."""
        events = self.tmp / "events.jsonl"
        events.unlink(missing_ok=True)
        done = self.call("run", "-q", "-i", str(self.inventory), "-t", self.target,
                         "--events", str(events), *extra, str(workflow), expect=None)
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        failures = [e["message"] for e in lines if e["dest"] in ("failed", "undo_failed")]
        assert done.returncode == expect, \
            f"runflow run exited {done.returncode}: {failures}\n{done.stderr}"
        return lines[0]["run_id"], lines, done

    def rollback(self, run_id: str) -> None:
        self.call("rollback", "-q", run_id)

    def journal(self, run_id: str) -> dict[str, Any]:
        return json.loads(self.call("show", "--json", run_id).stdout)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {h.name: h.snapshot() for h in self.hosts}


def step_states(events: list[dict[str, Any]]) -> dict[str, str]:
    """The last state of every step instance of a run, as "host:step"."""
    return {f"{e['host']}:{e['step']}": e["dest"] for e in events if e["kind"] == "step"}


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Snapshots of several hosts ({host: snapshot}) or of one."""
    if set(before) <= {"Open_vSwitch", "Bridge", "Port", "Interface"}:
        before, after = {"": before}, {"": after}
    problems = [f"{h}: {line}" for h in before for line in differences(before[h], after[h])]
    assert not problems, "\n".join(problems)


@pytest.fixture(params=list(TARGETS))
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def lab(ovs_hosts: Callable[..., OvsHost], backend: str, tmp_path: Path, runflow: Any) -> Lab:
    """One lab host, h1, and the backend under test."""
    return Lab([ovs_hosts("h1")], backend, tmp_path, runflow)
