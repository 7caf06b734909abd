"""The main job end to end on two lab hosts: the layered docker0 + OVS + GRE recipe, containers
on both hosts pinging each other, idempotent re-runs, rollback to the exact state before,
failure at every step, and a kill followed by resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.lab.conftest import WORKFLOWS, LabUnderTest, events, run_id
from tests.support.snapshot import differences

pytestmark = pytest.mark.root

GRE = WORKFLOWS / "multihost-gre.toml"
PING = WORKFLOWS / "cross-host-ping.toml"


def assert_same(before, after):
    assert after == before, "\n".join(differences(before, after))


@pytest.mark.parametrize("target", ["modern", "centos6"])
def test_containers_ping_across_gre_and_rollback_restores_both_hosts(lab, tmp_path, target):
    before = lab.snapshot()
    configured = lab.runflow(GRE, "--lab", "--target", target)
    assert configured.returncode == 0, configured.stderr
    pinged = lab.runflow(PING, "--lab", "--target", target)
    assert pinged.returncode == 0, pinged.stderr

    log = tmp_path / "again.jsonl"
    again = lab.runflow(GRE, "--lab", "--target", target, "--events", log)
    assert again.returncode == 0, again.stderr
    changed = [e["step"] for e in events(log) if e["dest"] in ("applying", "applied")]
    assert changed == [], f"a second run changed {changed}"

    for done in (pinged, configured, again):
        rolled = lab.runflow("rollback", run_id(done))
        assert rolled.returncode == 0, rolled.stderr
    assert_same(before, lab.snapshot())


def workflow_failing_at(k: int, path: Path) -> Path:
    """multihost-gre with a step inserted before its k-th step that fails on h2 only."""
    text = GRE.read_text()
    headers = [m.start() for m in re.finditer(r"^\[\[steps\]\]", text, re.MULTILINE)]
    fault = ('[[steps]]\nid = "fault"\naction = "verify.command"\non = ["h2"]\n'
             'cmd = ["false"]\n\n')
    at = headers[k] if k < len(headers) else len(text)
    path.write_text(text[:at] + fault + text[at:])
    return path


@pytest.mark.parametrize("k", range(13))
def test_a_failure_at_step_k_on_one_host_rolls_back_both(lab, tmp_path, k):
    before = lab.snapshot()
    failing = workflow_failing_at(k, tmp_path / "failing.toml")
    done = lab.runflow(failing, "--lab", "--target", "modern")
    assert done.returncode == 1, done.stderr
    assert "step fault on h2" in done.stderr
    assert_same(before, lab.snapshot())


def test_killed_run_resumes_and_the_containers_ping(lab, tmp_path):
    before = lab.snapshot()
    log = tmp_path / "events.jsonl"
    proc = lab.start(GRE, "--lab", "--target", "modern", "--events", log)
    deadline = time.monotonic() + 60
    while not (log.exists() and any(e["step"] == "docker-on-docker0" and e["dest"] == "applying"
                                    for e in events(log))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = lab.runflow("resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    pinged = lab.runflow(PING, "--lab")
    assert pinged.returncode == 0, pinged.stderr

    killed_run = events(log)[0]["run_id"]
    for run in (run_id(pinged), killed_run):
        rolled = lab.runflow("rollback", run)
        assert rolled.returncode == 0, rolled.stderr
    assert_same(before, lab.snapshot())


def test_lab_down_leaves_nothing_behind(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rfd", dir="/tmp"))  # short: unix socket paths
    lab = LabUnderTest(root / "lab", tmp_path / "home", f"rd{os.getpid() % 10000}")
    assert lab.runflow("lab", "up", "--prefix", lab.prefix).returncode == 0
    state = lab.state()
    status = lab.runflow("lab", "status", "--json")
    assert '"dockerd_answers": true' in status.stdout
    assert lab.runflow("lab", "down").returncode == 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.prefix not in namespaces
    assert str(lab.dir) not in open("/proc/mounts").read()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(lab.dir) not in processes
    assert not lab.dir.exists()
    assert all(not os.path.exists(h["dir"]) for h in state["hosts"])
    root.rmdir()


def test_a_lab_directory_too_long_for_sockets_is_refused(tmp_path):
    lab = LabUnderTest(tmp_path / ("x" * 60), tmp_path / "home", "rdlong")
    done = lab.runflow("lab", "up", "--prefix", lab.prefix)
    assert done.returncode == 2
    assert "too long" in done.stderr
    assert not lab.dir.exists()
