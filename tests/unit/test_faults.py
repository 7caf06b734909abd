"""The engine's promises under faults: a step that cannot be observed is not re-applied,
output that cannot be written never stops a run, a subscriber that fails stops it and rolls it
back, partial changes are undone from the journaled "before", and signals end a command with a
message and a truthful exit code. Real runflow processes, real signals by pid."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time

from tests.conftest import REPO
from tests.unit.conftest import read_events, start, wait_for


def run_state(runflow):
    return json.loads(runflow("runs", "--json").stdout)[0]["state"]


# -- 1. resume and steps that cannot be observed --------------------------------------------------

def test_resume_does_not_reapply_a_step_it_cannot_observe(rf, fw, tmp_path):
    """A shell.run without `check` cannot be observed: applied, it stays applied on resume (a
    second mkdir would fail), and its undo runs once."""
    made = tmp_path / "made"
    marker = fw.fault("broken")
    wf = fw.write([{"id": "mkdir", "action": "shell.run", "cmd": ["mkdir", str(made)],
                    "undo": ["rmdir", str(made)]},
                   fw.step("b", fail_marker="broken")])
    assert rf("run", wf, "--no-rollback").returncode == 3
    marker.unlink()
    events = tmp_path / "events.jsonl"
    resumed = rf("resume", "last", "--events", events)
    assert resumed.returncode == 0, resumed.stderr
    assert "drift" not in resumed.stderr
    assert [e["dest"] for e in read_events(events) if e["step"] == "mkdir"] == []
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert not made.exists()


# -- 2. output and subscribers ------------------------------------------------------------------

def test_output_that_cannot_be_written_does_not_stop_the_run(runflow_home, runflow, fw):
    """`runflow run wf.toml 2>&1 | head -1`: the reader goes away after the first line."""
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), fw.step("b", hold_marker="hold"), fw.step("c")])
    proc = start(runflow_home, "run", wf, stderr=subprocess.STDOUT)
    assert proc.stdout.readline().startswith("run ")
    wait_for(lambda: "apply b" in fw.log(), proc)
    proc.stdout.close()
    hold.unlink()
    assert proc.wait(timeout=30) == 0
    assert fw.files() == {"a": "a content", "b": "b content", "c": "c content"}
    assert run_state(runflow) == "succeeded"


def test_a_hangup_does_not_stop_the_run(runflow_home, runflow, fw):
    """A closed terminal sends SIGHUP: the run goes on to its end."""
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), fw.step("b", hold_marker="hold"), fw.step("c")])
    proc = start(runflow_home, "run", wf)
    wait_for(lambda: "apply b" in fw.log(), proc)
    proc.send_signal(signal.SIGHUP)
    hold.unlink()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert fw.files() == {"a": "a content", "b": "b content", "c": "c content"}


FAILING_SUBSCRIBER = """
from runflow.core.hookspecs import hookimpl

broken = False

@hookimpl
def runflow_event(event):
    global broken
    broken = broken or (event.step == "b" and event.dest == "applied")
    if broken:  # from then on, every event
        raise RuntimeError("audit log unreachable")
"""


def test_a_subscriber_that_fails_stops_the_run_and_rolls_it_back(rf, runflow, fw, tmp_path):
    plugin = tmp_path / "audit.py"
    plugin.write_text(FAILING_SUBSCRIBER)
    (fw.dir / "b").write_text("old b")
    wf = fw.write([fw.step("a"), fw.step("b"), fw.step("c")])
    result = rf("run", wf, "--plugin", plugin)
    assert result.returncode == 1, result.stderr
    assert "audit log unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert fw.files() == {"b": "old b"}
    assert fw.log() == ["apply a", "apply b", "undo b", "undo a"]
    assert run_state(runflow) == "rolled_back"


# -- 3. partial changes -------------------------------------------------------------------------

def test_partial_changes_that_cannot_be_undone_exit_3_and_rollback_finishes_them(rf, runflow, fw):
    (fw.dir / "b").write_text("old b")
    fw.fault("broken")
    stuck = fw.fault("stuck")
    wf = fw.write([fw.step("a"), fw.step("b", break_marker="broken", undo_fail_marker="stuck")])
    result = rf("run", wf)
    assert result.returncode == 3, result.stderr
    assert "could not be undone" in result.stderr
    assert fw.files() == {"b": "b content", "broken": "", "stuck": ""}
    assert run_state(runflow) == "rollback_failed"
    stuck.unlink()
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == {"b": "old b", "broken": ""}


def kill_after_writing(runflow_home, fw, step):
    """Run a, then `step`, and SIGKILL runflow after step wrote its file (in doubt)."""
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), {**step, "after_hold_marker": "hold"}])
    proc = start(runflow_home, "run", wf)
    path = fw.dir / step["name"]
    wait_for(lambda: path.exists() and path.read_text() == step["content"], proc)
    proc.kill()
    proc.wait()
    hold.unlink()


def test_a_step_killed_in_doubt_then_failing_is_undone_to_the_journaled_before(
        runflow_home, rf, runflow, fw):
    (fw.dir / "b").write_text("old b")
    step = {**fw.step("b", break_marker="broken"), "action": "file.restarted"}
    kill_after_writing(runflow_home, fw, step)
    fw.fault("broken")  # the step is applied again on resume, and fails after writing
    resumed = rf("resume", "last")
    assert resumed.returncode == 1, resumed.stderr
    assert "partial changes were undone" in resumed.stderr
    assert fw.files() == {"b": "old b", "broken": ""}
    assert run_state(runflow) == "rolled_back"


def test_a_step_in_doubt_whose_clean_up_fails_is_undone_by_rollback(runflow_home, rf, runflow,
                                                                      fw):
    (fw.dir / "b").write_text("old b")
    step = {**fw.step("b", break_marker="broken", undo_fail_marker="stuck"),
            "action": "file.restarted"}
    kill_after_writing(runflow_home, fw, step)
    fw.fault("broken")
    stuck = fw.fault("stuck")
    resumed = rf("resume", "last", "--no-rollback")
    assert resumed.returncode == 3, resumed.stderr
    stuck.unlink()
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == {"b": "old b", "broken": ""}
    assert run_state(runflow) == "rolled_back"


# -- 11. signals, runs left behind, exit codes ------------------------------------------------

def test_sigint_while_starting_up_ends_with_a_message(runflow_home, fw):
    """Ctrl-C at any moment of start-up (imports, plan, journal, lock): a message, no
    traceback; 130 when nothing was changed, 1 when the run had begun and was rolled back.
    (While runflow's first modules load, the signal ends the process as it does by default:
    -2 here, 130 in a shell.)"""
    wf = fw.write([fw.step("a")])
    for delay in (0.05, 0.1, 0.2, 0.3):
        proc = start(runflow_home, "run", wf)
        try:
            proc.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        if "Traceback" in stderr and str(REPO / "core" / "cli.py") not in stderr:
            continue  # Python's own start-up, before the command line's first line ran
        assert "Traceback" not in stderr and "Aborted" not in stderr, stderr
        assert proc.returncode in (0, 1, 130, -signal.SIGINT), (proc.returncode, stderr)
        if proc.returncode == 130:
            assert "interrupted by SIGINT" in stderr
            assert fw.files() == {}
        if proc.returncode in (1, -signal.SIGINT):
            assert fw.files() == {}
        for path in fw.dir.iterdir():
            if path.name != ".log":
                path.unlink()


def test_sigint_during_a_rollback_lets_it_finish(runflow_home, rf, runflow, fw):
    wf = fw.write([fw.step("a"), fw.step("b", undo_hold_marker="hold"), fw.step("c")])
    assert rf("run", wf).returncode == 0
    hold = fw.fault("hold")
    proc = start(runflow_home, "rollback", "last")
    wait_for(lambda: "undo b" in fw.log(), proc)
    proc.send_signal(signal.SIGINT)
    hold.unlink()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "rollback goes on" in stderr
    assert fw.files() == {}
    assert run_state(runflow) == "rolled_back"


def test_a_second_sigint_stops_a_rollback_with_exit_3(runflow_home, rf, runflow, fw):
    wf = fw.write([fw.step("a"), fw.step("b", undo_hold_marker="hold"), fw.step("c")])
    assert rf("run", wf).returncode == 0
    hold = fw.fault("hold")
    proc = start(runflow_home, "rollback", "last")
    wait_for(lambda: "undo b" in fw.log(), proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    hold.unlink()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr
    assert "runflow rollback" in stderr  # what to do next
    assert fw.files() == {"a": "a content"}  # b's undo finished; a's never began
    assert run_state(runflow) == "rollback_failed"
    assert rf("rollback", "last").returncode == 0
    assert fw.files() == {}


def test_a_run_left_pending_can_be_rolled_back(rf, runflow, fw, runflow_home):
    """Killed between recording the run and starting it: nothing to undo, and no error."""
    assert rf("run", fw.write([fw.step("a")])).returncode == 0
    (fw.dir / "a").unlink()
    with sqlite3.connect(runflow_home / "journal.sqlite") as db:
        db.execute("DELETE FROM events WHERE dest != 'pending'")
        db.execute("UPDATE runs SET state = 'pending'")
    (runflow_home / "journal.mark").unlink()  # it would rightly call those events lost
    rolled = rf("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert "Traceback" not in rolled.stderr
    assert run_state(runflow) == "rolled_back"


def test_events_files_are_private(rf, fw, tmp_path):
    events = tmp_path / "events.jsonl"
    assert rf("run", fw.write([fw.step("a")]), "--events", events).returncode == 0
    assert events.stat().st_mode & 0o777 == 0o600
