"""Fixtures for the Linux backend tests: network namespaces made for one test and deleted
after it (even when it fails), one of them named as inventory host h1, and runs against it
with target centos6 or modern — through the real `runflow` command line, or through the
session API the command line uses (the same plan, engine and journal, without starting a
Python process per run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runflow.core.hookspecs import hookimpl
from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.processes import run_tool
from runflow.core.plugins import Plugins
from runflow.core.session import Options, Session, plan_workflow
from tests.conftest import need_tools
from tests.support.snapshot import differences, settled

TARGETS = ("centos6", "modern")
NETNS_ETC = "/etc/netns"
TOOLS = ("ip", "bridge", "brctl", "iptables", "iptables-save", "sysctl")


@pytest.fixture
def namespaces() -> Iterator[Callable[[], Namespace]]:
    """make() → a new namespace (loopback up); all of them are deleted at the end, with their
    configuration files (/etc/netns/NAME)."""
    made: list[Namespace] = []
    had_netns_etc = os.path.isdir(NETNS_ETC)

    def make() -> Namespace:
        ns = Namespace(unique_name("rfl"))
        made.append(ns)
        ns.create()
        # No IPv6 duplicate address detection: addresses are usable (and snapshots stable)
        # at once rather than a second later.
        for scope in ("all", "default"):
            ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.accept_dad=0"])
        return ns

    try:
        yield make
    finally:
        for ns in made:
            ns.delete()
            shutil.rmtree(f"{NETNS_ETC}/{ns.name}", ignore_errors=True)
        if not had_netns_etc:
            try:
                os.rmdir(NETNS_ETC)
            except OSError:  # gone, or another namespace's files are there
                pass


@dataclass
class Lab:
    """Host h1 (a namespace) and the command line that runs workflows on it."""

    ns: Namespace
    tmp: Path
    runflow: Callable[..., subprocess.CompletedProcess]

    @property
    def inventory(self) -> Path:
        path = self.tmp / "inventory.toml"
        if not path.exists():
            path.write_text(f'[hosts.h1]\nnetns = "{self.ns.name}"\n')
        return path

    def workflow(self, steps: str, name: str = "linux-test") -> Path:
        path = self.tmp / f"{name}.toml"
        path.write_text(f'[workflow]\nname = "{name}"\n\n{steps}')
        return path

    def ns_file(self, path: str, text: str) -> None:
        """A configuration file of the namespace's own: /etc/netns/NAME/PATH."""
        full = Path(NETNS_ETC, self.ns.name, path)
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text)

    def sh(self, *commands: list[str]) -> None:
        """Set the namespace up with plain commands (not runflow): consecutive `ip` commands
        through one `ip -batch` (a process per command was a fifth of a case's time)."""
        batch: list[list[str]] = []
        for argv in [*commands, []]:
            if argv[:1] == ["ip"] and not argv[1].startswith("-"):
                batch.append(argv[1:])
                continue
            if batch:
                run_tool(self.ns.popen_argv(["ip", "-batch", "-"]), input="".join(
                    " ".join(words) + "\n" for words in batch))
                batch = []
            if argv:
                self.ns.run(argv)

    def call(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
        done = self.runflow(*args)
        if expect is not None:
            assert done.returncode == expect, \
                f"runflow {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}"
        return done

    def run(self, workflow: Path, target: str, *extra: str,
            expect: int | None = 0) -> tuple[str, list[dict[str, Any]]]:
        """`runflow run`; returns the run id and its events."""
        events = self.tmp / "events.jsonl"
        events.unlink(missing_ok=True)
        self.call("run", "-q", "-i", str(self.inventory), "-t", target, "--events",
                  str(events), *extra, str(workflow), expect=expect)
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        return lines[0]["run_id"], lines

    def session(self) -> tuple[Session, Recorder]:
        plugins = Plugins()
        recorder = Recorder()
        plugins.add_subscriber(recorder, name="tests.recorder")
        return Session(plugins, self.tmp / "home"), recorder

    def run_in_process(self, workflow: Path, target: str) -> tuple[str, list[dict[str, Any]]]:
        """What `runflow run` does, in this process; returns the run id and its events."""
        session, recorder = self.session()
        options = Options(inventory=str(self.inventory), target=target)
        try:
            run_id, code = session.run(plan_workflow(str(workflow), options, session.plugins),
                                       options)
            assert code == 0, "\n".join(e["message"] for e in recorder.events if e["message"])
        finally:
            session.close()
        return run_id, recorder.events

    def rollback_in_process(self, run_id: str) -> None:
        session, recorder = self.session()
        try:
            code = session.rollback(session.load(run_id), Options())
            assert code == 0, "\n".join(e["message"] for e in recorder.events if e["message"])
        finally:
            session.close()

    def snapshot(self) -> dict[str, Any]:
        return settled(self.ns.name)


class Recorder:
    """Keeps the events of a run (as `--events` writes them)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    @hookimpl
    def runflow_event(self, event: Any) -> None:
        self.events.append(event.to_json())


def step_states(events: list[dict[str, Any]]) -> dict[str, str]:
    """The last state of every step of a run."""
    return {e["step"]: e["dest"] for e in events if e["kind"] == "step"}


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before == after, "\n".join(differences(before, after))


@pytest.fixture
def lab(namespaces: Callable[[], Namespace], tmp_path: Path, runflow: Any) -> Lab:
    need_tools(*TOOLS)
    return Lab(namespaces(), tmp_path, runflow)
