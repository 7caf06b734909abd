"""Journals runflow may not write, and hosts two journals share: a message and an exit code,
never a traceback; the host lock holds whatever journal each run writes."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from runflow.core.lab.namespaces import Namespace, unique_name
from tests.conftest import missing_prerequisite, need_tools, runflow_argv
from tests.unit.conftest import start, wait_for

pytestmark = pytest.mark.root
NOBODY = 65534


def test_an_immutable_journal_is_read_but_never_written(rf, fw, runflow_home):
    need_tools("chattr")
    assert rf("run", fw.write([fw.step("a")], name="a.toml")).returncode == 0
    journal = runflow_home / "journal.sqlite"
    subprocess.run(["chattr", "+i", str(journal)], check=True)
    try:
        refused = rf("run", fw.write([fw.step("b")], name="b.toml"))
        listed = rf("runs", "--json")
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)
    assert refused.returncode == 2, refused.stderr
    assert str(journal) in refused.stderr and "Traceback" not in refused.stderr
    assert fw.files() == {"a": "a content"}
    assert listed.returncode == 0, listed.stderr
    assert [r["state"] for r in json.loads(listed.stdout)] == ["succeeded"]


def _setpriv() -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _nobodys_runflow() -> list[str]:
    """A runflow command that user nobody can start: the tests' own Python may live where only
    root may read (a checkout or an interpreter under /root), and then runflow as installed for
    every user (/opt/runflow, tests/install-deps.sh) stands in for it."""
    for argv in (runflow_argv(), ["/opt/runflow/bin/python", "-m", "runflow.core.cli"]):
        probe = subprocess.run([*_setpriv(), *argv, "--version"], capture_output=True,
                               cwd="/", env={"PATH": os.environ["PATH"]})
        if probe.returncode == 0:
            return argv
    missing_prerequisite("no runflow that user nobody can start (run tests/install-deps.sh)")
    raise AssertionError("unreachable")


def as_nobody(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    need_tools("setpriv")
    return subprocess.run([*_setpriv(), *_nobodys_runflow(), *args], capture_output=True,
                          text=True, timeout=60, cwd="/",
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **env})


def test_another_user_gets_messages_not_tracebacks(rf, fw, runflow_home, tmp_path):
    assert rf("run", fw.write([fw.step("a")])).returncode == 0  # root's journal, 0700
    foreign = as_nobody("runs", env={"RUNFLOW_HOME": str(runflow_home)})
    assert foreign.returncode == 2, foreign.stderr
    assert "Permission denied" in foreign.stderr and "Traceback" not in foreign.stderr
    # a home of its own that does not exist yet: no runs, and nothing created by listing them
    home = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chown(home, NOBODY, NOBODY)
        own = as_nobody("runs", env={"RUNFLOW_HOME": str(home / "rf")})
        assert own.returncode == 0 and "no runs" in own.stderr, own.stderr
        assert not (home / "rf").exists()
        nowhere = as_nobody("runs", env={})  # ~/.local/state/runflow under /nonexistent
        assert nowhere.returncode == 0 and "no runs" in nowhere.stderr, nowhere.stderr
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=True)


def test_two_journals_take_turns_on_a_namespace_host(fw, rf, tmp_path, monkeypatch):
    monkeypatch.delenv("RUNFLOW_LOCK_DIR")  # the machine's own place for locks, /run/runflow
    ns = Namespace(unique_name("rflk"))
    try:
        ns.create()
        inventory = tmp_path / "inventory.toml"
        inventory.write_text(f'[hosts.h1]\nnetns = "{ns.name}"\n')
        lock = Path("/run/runflow") / f"netns-{ns.name}.lock"
        fw.fault("hold")
        slow = fw.write([fw.step("a", hold_marker="hold")], name="slow.toml")
        proc = start(tmp_path / "home1", "run", slow, "--inventory", inventory)
        try:
            wait_for(lambda: "apply a" in fw.log(), proc)
            assert f"(pid {proc.pid})" in lock.read_text()
            other = rf("run", fw.write([fw.step("b")], name="quick.toml"), "--inventory",
                       inventory, env={"RUNFLOW_HOME": str(tmp_path / "home2")})
            assert other.returncode == 4, other.stderr
            assert "host h1 is locked by run" in other.stderr
        finally:
            (fw.dir / "hold").unlink()
            assert proc.wait(timeout=30) == 0
        assert not lock.exists()
    finally:
        ns.delete()
