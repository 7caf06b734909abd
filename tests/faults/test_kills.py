"""runflow killed with its whole process group (SIGKILL, as `kill -9 -PGID` would) at chosen
points of multihost-gre on the two-host lab, then resumed or rolled back: both hosts must end
as an undisturbed run leaves them (resume) or as they were before (rollback), the journal must
agree with them, and every command must exit as the README's table says.

The points: every step that changes something is killed at its "applying" event and at its
"undoing" event (a rollback killed, then run again), the two on different targets, so that
each step meets both; after a kill while applying, half the steps are resumed and half rolled
back. The verify step, which never applies, is killed while it checks, then resumed. Runflow
stops at the event with its journal written (tests/faults/pause_point.py); the other host's
worker is wherever it was, possibly in the middle of a command of its own, which the kill of
the group takes down with it (so a case's outcome can depend on that timing).
"""

from __future__ import annotations

import json

import pytest

from tests.faults.drill import (CHANGING, OK, ROLLED_BACK_STEPS, STEPS, SUCCEEDED_STEPS,
                                TARGETS, Drill, assert_journal_settled, run_of)

pytestmark = pytest.mark.root


def _run_cases() -> list:
    cases = []
    for i, step in enumerate(STEPS):
        target = TARGETS[i % 2]
        if step in CHANGING:
            # in pairs of neighbouring steps (one per target): rollback, resume, rollback, ...
            # so that docker-on-docker0, the step that restarts a daemon, is resumed
            recovery = ("resume", "rollback")[(i // 2 + 1) % 2]
            point = f"{step}:applying"
        else:
            recovery, point = "resume", f"{step}:checking"
        cases.append(pytest.param(target, point, recovery,
                                  id=f"{target}-{point.replace(':', '-')}-{recovery}"))
    return cases


def _rollback_cases() -> list:
    return [pytest.param(TARGETS[(i + 1) % 2], step, id=f"{TARGETS[(i + 1) % 2]}-{step}-undoing")
            for i, step in enumerate(CHANGING)]


def _rolled_back(drill: Drill, run_id: str, after: str) -> None:
    """`runflow rollback RUN` exits 0 and leaves the hosts and the journal as before."""
    rolled = drill.runflow("rollback", run_id)
    assert rolled.code == OK, rolled
    drill.assert_before(after)
    assert_journal_settled(drill.show(run_id), "rolled_back", ROLLED_BACK_STEPS)


@pytest.mark.parametrize(("target", "point", "recovery"), _run_cases())
def test_run_killed_with_its_group(clean_lab: Drill, tmp_path, target, point, recovery):
    drill = clean_lab
    drill.end_state(target)
    paused = drill.start_gre(target, point)
    paused.kill_group()
    run = paused.run_id
    if recovery == "rollback":
        _rolled_back(drill, run, f"a kill at {point} and rollback")
        return

    applied = {(s["host"], s["key"]) for s in drill.show(run)["steps"] if s["state"] == "applied"}
    log = tmp_path / "resume.jsonl"
    resumed = drill.runflow("resume", run, "--events", log)
    assert resumed.code == OK, resumed
    drill.assert_end(target, f"a kill at {point} and resume")
    assert_journal_settled(drill.show(run), "succeeded", SUCCEEDED_STEPS)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    again = sorted({e["step"] for e in events if e["kind"] == "step" and e["dest"] == "applying"
                    and (e["host"], e["step"]) in applied})
    assert not again, f"resume applied again steps the journal had as applied: {again}"
    _rolled_back(drill, run, f"a kill at {point}, resume and rollback")


@pytest.mark.parametrize(("target", "step"), _rollback_cases())
def test_rollback_killed_with_its_group(clean_lab: Drill, target, step):
    drill = clean_lab
    done = drill.run_gre(target)
    assert done.code == OK, done
    run = run_of(done)
    paused = drill.start("rollback", run, pause=f"{step}:undoing")
    paused.kill_group()
    _rolled_back(drill, run, f"a rollback killed at {step} undoing and a second rollback")
