"""A journal whose disk fills up in the middle of a run: the run stops, what it changed is
undone from the engine's memory, and the command says what the journal could not record
(exit 3); while the disk is full, nothing else starts (exit 2); once there is room again, the
journal is whole and the run can be closed with `runflow rollback`."""

from __future__ import annotations

import json

import pytest

from tests.integration.engine.conftest import fill
from tests.unit.conftest import start, wait_for

pytestmark = pytest.mark.root


def test_a_disk_that_fills_mid_run(small_disk, fw, rf, monkeypatch):
    home = small_disk / "home"
    # The host lock on the same full disk: taking it must not fail for want of room.
    monkeypatch.setenv("RUNFLOW_LOCK_DIR", str(small_disk / "locks"))
    env = {"RUNFLOW_HOME": str(home)}
    (fw.dir / "b").write_text("old b")
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), fw.step("b", hold_marker="hold"), fw.step("c")])
    proc = start(home, "run", wf)
    wait_for(lambda: "apply b" in fw.log(), proc)
    filler = fill(small_disk)
    hold.unlink()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "database or disk is full" in stderr and "rolled back" in stderr
    assert "could not be written" in stderr and "Traceback" not in stderr
    assert fw.files() == {"b": "old b"}
    assert fw.log() == ["apply a", "apply b", "undo b", "undo a"]

    # Still full: nothing starts, nothing is touched.
    for command in (("run", wf), ("rollback", "last")):
        refused = rf(*command, env=env)
        assert refused.returncode == 2, (command, refused.stderr)
        assert "nothing was changed" in refused.stderr and "Traceback" not in refused.stderr
    assert fw.log() == ["apply a", "apply b", "undo b", "undo a"]

    # Room again: the journal knows the run up to where it could write; it is closed by
    # rolling it back (its undos find nothing left to restore).
    filler.unlink()
    (run,) = json.loads(rf("runs", "--json", env=env).stdout)
    assert (run["state"], run["interrupted"]) == ("running", True)
    rolled = rf("rollback", "last", env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert fw.files() == {"b": "old b"}
    (run,) = json.loads(rf("runs", "--json", env=env).stdout)
    assert run["state"] == "rolled_back"
