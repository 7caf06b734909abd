"""The journal: resume after a failure or a kill, rollback later, drift, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import runflow_argv
from tests.unit.conftest import FILES_PLUGIN, read_events

SIX = ["a", "b", "c", "d", "e", "f"]


def six_steps(fw, **per_step):
    """Six file steps; c already exists with other content, so undo must put that back."""
    (fw.dir / "c").write_text("old c")
    return [fw.step(k, **per_step.get(k, {})) for k in SIX]


def final_state(fw):
    return {k: f"{k} content" for k in SIX}


def initial_state():
    return {"c": "old c"}


def start(runflow_home, *args):
    return subprocess.Popen([*runflow_argv(), *map(str, args), "--plugin", str(FILES_PLUGIN)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUNFLOW_HOME": str(runflow_home)})


def wait_for(predicate, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def last_run(runflow):
    return json.loads(runflow("runs", "--json").stdout)[0]


@pytest.mark.parametrize("k", range(6))
def test_fail_at_step_k_fix_and_resume(rf, runflow, fw, k):
    marker = fw.fault("broken")
    wf = fw.write(six_steps(fw, **{SIX[k]: {"fail_marker": "broken"}}))
    failed = rf("run", wf, "--no-rollback")
    assert failed.returncode == 3
    marker.unlink()  # fix the cause
    resumed = rf("resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert fw.files() == final_state(fw)
    # every step was applied exactly once: nothing before k was re-applied
    assert sorted(fw.log()) == sorted(f"apply {s}" for s in SIX)
    run = last_run(runflow)
    assert run["state"] == "succeeded" and run["attempts"] == 2


def kill_during_step(runflow_home, fw, k):
    """Run the six steps and SIGKILL runflow while step k is applying."""
    hold = fw.fault("hold")
    wf = fw.write(six_steps(fw, **{SIX[k]: {"hold_marker": "hold"}}))
    proc = start(runflow_home, "run", wf)
    wait_for(lambda: f"apply {SIX[k]}" in fw.log(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hold.unlink()


@pytest.mark.parametrize("k", range(6))
def test_kill_during_step_k_then_resume(runflow_home, rf, fw, k):
    kill_during_step(runflow_home, fw, k)
    resumed = rf("resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert "in doubt" in resumed.stderr
    assert fw.files() == final_state(fw)


@pytest.mark.parametrize("k", [0, 3, 5])
def test_kill_during_step_k_then_rollback(runflow_home, rf, fw, k):
    kill_during_step(runflow_home, fw, k)
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == initial_state()


def test_an_interrupted_rollback_can_be_run_again(runflow_home, rf, runflow, fw):
    wf = fw.write(six_steps(fw, c={"undo_hold_marker": "hold"}))
    assert rf("run", wf).returncode == 0
    hold = fw.fault("hold")
    proc = start(runflow_home, "rollback", "last")
    wait_for(lambda: "undo c" in fw.log(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last_run(runflow)["state"] == "rolling_back"
    hold.unlink()
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == initial_state()
    assert last_run(runflow)["state"] == "rolled_back"


def test_resume_reports_and_repairs_drift(rf, fw, tmp_path):
    marker = fw.fault("broken")
    wf = fw.write(six_steps(fw, e={"fail_marker": "broken"}))
    assert rf("run", wf, "--no-rollback").returncode == 3
    (fw.dir / "b").write_text("changed by hand")
    marker.unlink()
    events = tmp_path / "events.jsonl"
    resumed = rf("resume", "last", "--events", events)
    assert resumed.returncode == 0
    assert "drift" in resumed.stderr
    drift = [e for e in read_events(events) if "drift" in e["message"]]
    assert [e["step"] for e in drift] == ["b"]
    assert fw.files() == final_state(fw)


def test_resume_of_a_succeeded_run_does_nothing(rf, fw):
    wf = fw.write([fw.step("a")])
    assert rf("run", wf).returncode == 0
    again = rf("resume", "last")
    assert again.returncode == 0
    assert "nothing to resume" in again.stderr
    assert fw.log() == ["apply a"]


def test_resume_refuses_a_changed_workflow_unless_told(rf, fw):
    marker = fw.fault("broken")
    wf = fw.write([fw.step("a"), fw.step("b", fail_marker="broken")])
    assert rf("run", wf, "--no-rollback").returncode == 3
    marker.unlink()
    wf.write_text(wf.read_text().replace('"b content"', '"new b"'))
    refused = rf("resume", "last")
    assert refused.returncode == 2
    assert "changed" in refused.stderr and "--use-current-file" in refused.stderr
    assert rf("resume", "last", "--use-current-file").returncode == 0
    assert fw.files() == {"a": "a content", "b": "new b"}


def test_rollback_later_restores_the_before_states(rf, fw):
    wf = fw.write(six_steps(fw))
    assert rf("run", wf).returncode == 0
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == initial_state()
    again = rf("rollback", "last")
    assert again.returncode == 0 and "already rolled back" in again.stderr


def test_a_second_run_on_a_locked_host_exits_4(runflow_home, rf, fw, tmp_path):
    fw.fault("hold")
    slow = fw.write([fw.step("a", hold_marker="hold")], name="slow.toml")
    proc = start(runflow_home, "run", slow)
    try:
        wait_for(lambda: "apply a" in fw.log(), proc)
        other = tmp_path / "other"
        other.mkdir()
        quick = fw.write([{**fw.step("b"), "dir": str(other)}], name="quick.toml")
        second = rf("run", quick)
        assert second.returncode == 4
        assert "locked by run" in second.stderr
        waited = rf("run", quick, "--lock-timeout", "0.3")
        assert waited.returncode == 4 and "after waiting 0.3 s" in waited.stderr
    finally:
        proc.kill()
        proc.wait()


def test_runs_and_show(rf, runflow, fw):
    wf = fw.write([fw.step("a"), fw.step("b")])
    assert rf("run", wf).returncode == 0
    runs = json.loads(runflow("runs", "--json").stdout)
    assert runs[0]["state"] == "succeeded" and runs[0]["hosts"] == ["local"]
    prefix = runs[0]["id"][:17]
    shown = json.loads(runflow("show", prefix, "--json").stdout)
    assert [s["key"] for s in shown["steps"]] == ["a", "b"]
    assert shown["steps"][0]["before"] == {"exists": False, "content": None}
    assert shown["events"][0]["dest"] == "pending"
    text = runflow("show", "last").stdout
    assert "applied" in text and "file.present" in text
    assert runflow("show", "nosuchrun").returncode == 2


def test_journal_files_are_private(rf, fw, runflow_home):
    assert rf("run", fw.write([fw.step("a")])).returncode == 0
    assert runflow_home.stat().st_mode & 0o777 == 0o700
    assert (runflow_home / "journal.sqlite").stat().st_mode & 0o777 == 0o600


def test_a_corrupt_journal_is_reported_with_its_path(runflow, runflow_home):
    runflow_home.mkdir(parents=True)
    (runflow_home / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    result = runflow("runs")
    assert result.returncode == 2
    assert str(runflow_home / "journal.sqlite") in result.stderr
    assert (runflow_home / "journal.sqlite").read_bytes().startswith(b"this is not")


@pytest.mark.root
def test_runs_on_two_different_hosts_both_go_ahead(runflow_home, rf, fw, tmp_path):
    from runflow.core.lab.namespaces import Namespace, unique_name

    spaces = [Namespace(unique_name("lock")), Namespace(unique_name("lock"))]
    try:
        for ns in spaces:
            ns.create()
        inventory = tmp_path / "inventory.toml"
        inventory.write_text("".join(f'[hosts.h{i}]\nnetns = "{ns.name}"\n'
                                     for i, ns in enumerate(spaces)))
        fw.fault("hold")
        slow = fw.write([fw.step("a", hold_marker="hold")], name="slow.toml")
        proc = start(runflow_home, "run", slow, "--inventory", inventory, "--host", "h0")
        wait_for(lambda: "apply a" in fw.log(), proc)
        quick = fw.write([fw.step("b")], name="quick.toml")
        other = rf("run", quick, "--inventory", inventory, "--host", "h1")
        assert other.returncode == 0, other.stderr
        same = rf("run", quick, "--inventory", inventory, "--host", "h0")
        assert same.returncode == 4
        (fw.dir / "hold").unlink()
        assert proc.wait(timeout=30) == 0
    finally:
        for ns in spaces:
            ns.delete()
