"""The journal and the host lock under faults: a lock that belongs to the host, a journal that
cannot be written, a journal whose files were lost or damaged, runs left behind by a kill."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from runflow.core.journal import Journal
from runflow.core.locks import MACHINE_LOCKS, lock_dir
from tests.unit.conftest import start, wait_for


def runs(runflow):
    listed = runflow("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


# -- 5. the host lock belongs to the host --------------------------------------------------------

def test_two_journals_still_take_turns_on_one_host(rf, fw, tmp_path, lock_dir):
    fw.fault("hold")
    proc = start(tmp_path / "home1", "run", fw.write([fw.step("a", hold_marker="hold")]))
    try:
        wait_for(lambda: "apply a" in fw.log(), proc)
        holder = (lock_dir / "local.lock").read_text()
        assert f"(pid {proc.pid})" in holder
        second = rf("run", fw.write([fw.step("b")], name="b.toml"),
                    env={"RUNFLOW_HOME": str(tmp_path / "home2")})
        assert second.returncode == 4, second.stderr
        assert f"locked by run {holder}" in second.stderr
    finally:
        (fw.dir / "hold").unlink()
        assert proc.wait(timeout=30) == 0
    assert not (lock_dir / "local.lock").exists()  # a released lock leaves nothing behind


def test_the_lock_lives_where_the_host_is(monkeypatch):
    monkeypatch.delenv("RUNFLOW_LOCK_DIR")
    if os.geteuid() == 0:
        assert lock_dir() == MACHINE_LOCKS == Path("/run/runflow")
    monkeypatch.setenv("RUNFLOW_LOCK_DIR", "/somewhere")
    assert str(lock_dir()) == "/somewhere"


# -- 6. a journal that cannot be written ------------------------------------------------------

def hold_journal_write_lock(home):
    """Another process holds the journal's SQLite write lock (as a long transaction would)."""
    Journal(home).close()
    db = sqlite3.connect(home / "journal.sqlite", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def test_a_journal_locked_before_the_run_refuses_to_start(rf, fw, runflow_home):
    db = hold_journal_write_lock(runflow_home)
    try:
        result = rf("run", fw.write([fw.step("a")]))
    finally:
        db.close()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "database is locked" in result.stderr and "nothing was changed" in result.stderr
    assert fw.files() == {} and fw.log() == []


def test_a_journal_locked_mid_run_rolls_back_from_memory_and_exits_3(runflow_home, fw):
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), fw.step("b", hold_marker="hold"), fw.step("c")])
    proc = start(runflow_home, "run", wf)
    wait_for(lambda: "apply b" in fw.log(), proc)
    db = sqlite3.connect(runflow_home / "journal.sqlite", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        hold.unlink()
        _, stderr = proc.communicate(timeout=60)
    finally:
        db.close()
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "database is locked" in stderr and "rolled back" in stderr
    assert fw.files() == {}
    assert fw.log() == ["apply a", "apply b", "undo b", "undo a"]


# -- 7. lost and damaged journals ---------------------------------------------------------------

def test_a_command_that_wrote_leaves_nothing_in_the_write_ahead_log(rf, runflow, fw,
                                                                     runflow_home):
    assert rf("run", fw.write([fw.step("a")])).returncode == 0
    wal = runflow_home / "journal.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    wal.unlink(missing_ok=True)
    (runflow_home / "journal.sqlite-shm").unlink(missing_ok=True)
    assert [r["state"] for r in runs(runflow)] == ["succeeded"]


def test_a_write_ahead_log_lost_after_a_kill_is_refused(runflow_home, rf, runflow, fw):
    assert rf("run", fw.write([fw.step("x")], name="x.toml")).returncode == 0
    fw.fault("hold")
    proc = start(runflow_home, "run", fw.write([fw.step("a", hold_marker="hold")]))
    wait_for(lambda: "apply a" in fw.log(), proc)
    proc.kill()
    proc.wait()
    (runflow_home / "journal.sqlite-wal").unlink()
    for command in (("runs",), ("rollback", "last")):
        refused = rf(*command)
        assert refused.returncode == 2, refused.stderr
        assert "lost" in refused.stderr and "journal.sqlite" in refused.stderr


@pytest.mark.parametrize("damage", ["emptied", "truncated", "deleted", "header"])
def test_a_damaged_journal_is_refused_and_left_as_it_is(rf, runflow, fw, runflow_home, damage):
    wf = fw.write([fw.step(k) for k in "abcdefgh"])
    assert rf("run", wf).returncode == 0
    assert rf("rollback", "last").returncode == 0
    db = runflow_home / "journal.sqlite"
    data = db.read_bytes()
    assert len(data) > 8192
    if damage == "emptied":
        db.write_bytes(b"")
    elif damage == "truncated":
        db.write_bytes(data[:4096])
    elif damage == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"\0" * 100 + data[100:])
    left = db.read_bytes() if db.exists() else None
    for command in (("runs",), ("rollback", "last"), ("run", wf)):
        refused = rf(*command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert str(db) in refused.stderr and "Traceback" not in refused.stderr
        assert (db.read_bytes() if db.exists() else None) == left
    assert fw.log() == [*(f"apply {k}" for k in "abcdefgh"), *(f"undo {k}" for k in "hgfedcba")]


# -- 11. runs left behind -----------------------------------------------------------------------

def test_a_killed_run_is_listed_as_interrupted(runflow_home, rf, runflow, fw):
    fw.fault("hold")
    proc = start(runflow_home, "run", fw.write([fw.step("a", hold_marker="hold")]))
    wait_for(lambda: "apply a" in fw.log(), proc)
    try:
        (live,) = runs(runflow)
        assert (live["state"], live["interrupted"]) == ("running", False)
    finally:
        proc.kill()
        proc.wait()
    (dead,) = runs(runflow)
    assert (dead["state"], dead["interrupted"]) == ("running", True)
    header, row = runflow("runs").stdout.splitlines()
    assert "interrupted" in row
    assert "interrupted" in runflow("show", "last").stdout


def test_rollback_last_says_when_the_newest_run_changed_nothing(rf, fw):
    assert rf("run", fw.write([fw.step("a")], name="a.toml")).returncode == 0
    changed = json.loads(rf("runs", "--json").stdout)[0]["id"]
    assert rf("run", fw.write([fw.step("a")], name="again.toml")).returncode == 0  # all skipped
    newest = json.loads(rf("runs", "--json").stdout)[0]["id"]
    result = rf("rollback", "last")
    assert result.returncode == 0, result.stderr
    assert f"run {newest} changed nothing" in result.stderr
    assert f"runflow rollback {changed}" in result.stderr
    assert fw.files() == {"a": "a content"}
