"""The journal: resume after a failure or a kill, rollback later, drift, locks; the rows its
events leave, and the --events sink."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from runflow.core.eventlog import EventLog
from runflow.core.events import Event
from runflow.core.journal import Journal, StepRecord
from tests.unit.conftest import read_events, start, wait_for

SIX = ["a", "b", "c", "d", "e", "f"]


def six_steps(fw, **per_step):
    """Six file steps; c already exists with other content, so undo must put that back."""
    (fw.dir / "c").write_text("old c")
    return [fw.step(k, **per_step.get(k, {})) for k in SIX]


def final_state(fw):
    return {k: f"{k} content" for k in SIX}


def initial_state():
    return {"c": "old c"}


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


def test_runs_and_show(rf, runflow, fw, runflow_home):
    empty = runflow("runs")
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"no runs in the journal ({runflow_home / 'journal.sqlite'})" in empty.stderr
    wf = fw.write([fw.step("a"), fw.step("b")])
    assert rf("run", wf).returncode == 0
    header, row = runflow("runs").stdout.splitlines()
    assert header.split() == ["RUN", "STATE", "STARTED", "WORKFLOW", "HOSTS"]
    assert row.index("succeeded") == header.index("STATE")
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


# -- the journal and the --events sink as subscribers, in process --------------------------------

STEP_KEYS = ["a", "b", "c", "d", "e", "f"]
ABSENT = {"exists": False, "content": None}


def run_created(run_id="r1", host="h1"):
    steps = [{"key": k, "action": "file.present", "backend": "files", "args": {"name": k}}
             for k in STEP_KEYS]
    return Event("run", run_id, None, "pending", time=1.0, detail={
        "workflow": {"name": "wf", "path": "/wf.toml"}, "hosts": [host], "steps": {host: steps}})


def step_event(key, source, dest, t, message="", durable=False, **detail):
    return Event("step", "r1", source, dest, host="h1", step=key, message=message, detail=detail,
                 time=t, durable=durable)


def step_row(key, state, before=None, error=None, commands=(), started=None, finished=None):
    return StepRecord("h1", STEP_KEYS.index(key), key, "file.present", "files", {"name": key},
                      state, before, error, list(commands), started, finished)


def test_the_journal_records_follow_the_events(tmp_path):
    """A step's record is folded from its events; other readers see them at the journal's next
    commit (an intent, a run change, or a read)."""
    journal = Journal(tmp_path / "home")
    sent = []

    def send(*events):
        for e in events:
            journal.runflow_event(e)
            sent.append(e)

    def committed_row(key):  # what another process sees, without the journal committing first
        other = Journal(journal.home)
        try:
            step = next(s for s in other.steps("r1") if s.key == key)
        finally:
            other.close()
        return step.state, step.before, step.started, step.finished

    try:
        send(run_created(), Event("run", "r1", "pending", "running", time=2.0))
        # one step per commit, as the engine runs a step: the intent is committed before apply
        send(step_event("a", "pending", "checking", 10.0),
             step_event("a", "checking", "applying", 11.0, durable=True, before=ABSENT))
        assert committed_row("a") == ("applying", ABSENT, 10.0, None)
        send(step_event("a", "applying", "applied", 12.0, commands=["write a"]))
        assert committed_row("a") == ("applying", ABSENT, 10.0, None)
        # a failure: its error and commands
        send(step_event("b", "pending", "checking", 20.0),
             step_event("b", "checking", "applying", 21.0, durable=True,
                        before={"exists": True, "content": "old b"}),
             step_event("b", "applying", "failed", 22.0, message="b is in the way",
                        commands=["write b"]))
        # several events for a step in one transaction (a batch's intents, a resume's retry):
        # the later value of a column wins, the others stay
        send(step_event("f", "pending", "checking", 24.0),
             step_event("f", "checking", "applying", 25.0, before={"v": 1}),
             step_event("f", "applying", "failed", 26.0, message="first try", commands=["x1"]),
             step_event("f", "failed", "checking", 27.0),
             step_event("f", "checking", "applying", 28.0, before={"v": 2}),
             step_event("f", "applying", "applied", 29.0, commands=[]),
             step_event("c", "pending", "checking", 30.0),
             step_event("c", "checking", "applying", 31.0, before=ABSENT),
             step_event("c", "applying", "applied", 32.0, commands=["write c"]),
             step_event("e", "pending", "checking", 35.0),
             Event("run", "r1", "running", "failed", message="step b: b is in the way", time=36.0))
        assert committed_row("c") == ("applied", ABSENT, 30.0, 32.0)
        # "checking" is written with the step's next change, here after a commit
        assert committed_row("e") == ("pending", None, None, None)
        assert journal.steps("r1")[4] == step_row("e", "pending")
        send(step_event("e", "checking", "skipped", 37.0, message="holds"))
        # rollback: applied -> undoing -> undone, and an undo that fails
        send(Event("run", "r1", "failed", "rolling_back", time=40.0),
             step_event("f", "applied", "undoing", 41.0, durable=True),
             step_event("f", "undoing", "undone", 42.0, commands=["rm f"]),
             step_event("c", "applied", "undoing", 43.0, durable=True),
             step_event("c", "undoing", "undo_failed", 44.0, message="c cannot be removed",
                        commands=["rm c"]),
             step_event("a", "applied", "undoing", 45.0, durable=True),
             step_event("a", "undoing", "undone", 46.0, commands=[]))
        assert committed_row("a") == ("undoing", ABSENT, 10.0, 12.0)

        assert journal.steps("r1") == [
            step_row("a", "undone", ABSENT, None, ["write a"], 10.0, 46.0),
            step_row("b", "failed", {"exists": True, "content": "old b"}, "b is in the way",
                     ["write b"], 20.0, 22.0),
            step_row("c", "undo_failed", ABSENT, "c cannot be removed", ["rm c"], 30.0, 44.0),
            step_row("d", "pending"),
            step_row("e", "skipped", None, None, [], 35.0, 37.0),
            step_row("f", "undone", {"v": 2}, "first try", ["rm f"], 27.0, 42.0),
        ]
        # a read commits: the undo's outcome is there for everyone now
        assert committed_row("a") == ("undone", ABSENT, 10.0, 46.0)
        assert journal.events("r1") == [
            {"time": e.time, "kind": e.kind, "host": e.host, "step": e.step,
             "source": e.source, "dest": e.dest, "message": e.message} for e in sent]
        run = journal.find("r1")
        assert (run.state, run.attempts, run.message) == ("rolling_back", 1, "")
    finally:
        journal.close()


# The layout the first runflow wrote (a row per step, updated on every event).
VERSION_1 = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_path TEXT NOT NULL,
    record TEXT NOT NULL,          -- JSON: workflow text and hash, vars, target, inventory
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    hosts TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    backend TEXT,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    before TEXT,
    error TEXT,
    commands TEXT,
    started REAL,
    finished REAL,
    PRIMARY KEY (run_id, host, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,        -- in insertion order: events are never deleted
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    step TEXT,
    source TEXT,
    dest TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
"""


def test_a_version_1_journal_is_upgraded_with_its_records(tmp_path):
    """Its step rows become the plan, and events that fold into what the rows held."""
    (tmp_path / "home").mkdir()
    with sqlite3.connect(tmp_path / "home" / "journal.sqlite") as db:
        db.executescript(VERSION_1)
        db.execute("INSERT INTO runs (id, workflow, workflow_path, record, state, hosts, "
                   "created, updated) VALUES ('r1', 'wf', '/wf.toml', '{}', 'failed', "
                   "'[\"h1\"]', 1.0, 9.0)")
        rows = [("a", "applied", json.dumps(ABSENT), None, '["write a"]', 10.0, 12.0),
                ("b", "failed", json.dumps(ABSENT), "b is in the way", "[]", 20.0, 22.0),
                ("c", "applying", json.dumps(ABSENT), None, None, 30.0, None),
                ("d", "pending", None, None, None, None, None),
                ("e", "skipped", None, None, None, 35.0, 37.0),
                ("f", "pending", None, None, None, None, None)]
        db.executemany("INSERT INTO steps (run_id, host, seq, key, action, backend, args, "
                       "state, before, error, commands, started, finished) VALUES "
                       "('r1', 'h1', ?, ?, 'file.present', 'files', ?, ?, ?, ?, ?, ?, ?)",
                       [(STEP_KEYS.index(k), k, json.dumps({"name": k}), *rest)
                        for k, *rest in rows])
        db.execute("INSERT INTO events (run_id, time, kind, host, step, source, dest, message) "
                   "VALUES ('r1', 1.0, 'run', NULL, NULL, NULL, 'pending', '')")
    journal = Journal(tmp_path / "home")
    try:
        assert journal.steps("r1") == [
            step_row("a", "applied", ABSENT, None, ["write a"], 10.0, 12.0),
            step_row("b", "failed", ABSENT, "b is in the way", [], 20.0, 22.0),
            step_row("c", "applying", ABSENT, None, [], 30.0, None),
            step_row("d", "pending"),
            step_row("e", "skipped", None, None, [], 35.0, 37.0),
            step_row("f", "pending"),
        ]
        assert journal.events("r1")[0]["dest"] == "pending"  # the run's own events come first
        assert journal.db.execute("PRAGMA user_version").fetchone() == (2,)
        journal.runflow_event(step_event("c", "applying", "applied", 40.0))
        assert journal.steps("r1")[2] == step_row("c", "applied", ABSENT, None, [], 30.0, 40.0)
    finally:
        journal.close()


def test_a_journal_of_a_newer_layout_is_refused(runflow, runflow_home):
    runflow_home.mkdir(parents=True)
    with sqlite3.connect(runflow_home / "journal.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    result = runflow("runs")
    assert result.returncode == 2
    assert "newer runflow" in result.stderr
    assert str(runflow_home / "journal.sqlite") in result.stderr


def test_close_writes_what_the_journal_holds(tmp_path):
    journal = Journal(tmp_path / "home")
    journal.runflow_event(run_created())
    journal.runflow_event(step_event("a", "pending", "checking", 10.0))
    journal.runflow_event(step_event("a", "checking", "applying", 11.0, before=ABSENT))
    journal.runflow_event(step_event("a", "applying", "applied", 12.0, commands=["write a"]))
    journal.close()
    again = Journal(tmp_path / "home")
    try:
        assert again.steps("r1")[0] == step_row("a", "applied", ABSENT, None, ["write a"],
                                                10.0, 12.0)
        assert [e["dest"] for e in again.events("r1")] == [
            "pending", "checking", "applying", "applied"]
    finally:
        again.close()


def test_the_events_sink_writes_one_flushed_json_line_per_event(tmp_path):
    path = tmp_path / "events.jsonl"
    events = [run_created(),
              step_event("a", "checking", "applying", 11.0, durable=True,
                         before={"path": tmp_path, "exists": False}),  # not JSON: str()
              step_event("a", "applying", "failed", 12.0, message="boom \u2014 \"quoted\"")]
    with path.open("w") as stream:
        log = EventLog(stream)
        for n, e in enumerate(events, 1):
            log.runflow_event(e)
            lines = path.read_text().splitlines()  # flushed: readable while it is open
            assert len(lines) == n
            assert lines[-1] == json.dumps(e.to_json(), default=str)
    assert json.loads(lines[1])["detail"]["before"]["path"] == str(tmp_path)
