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

import pytest

from tests.faults.drill import CHANGING, STEPS, TARGETS, Drill
from tests.faults.scenarios import kill_rollback, kill_run

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


@pytest.mark.parametrize(("target", "point", "recovery"), _run_cases())
def test_run_killed_with_its_group(clean_lab: Drill, tmp_path, target, point, recovery):
    kill_run(clean_lab, target, point, recovery, tmp_path / "resume.jsonl")


@pytest.mark.parametrize(("target", "step"), _rollback_cases())
def test_rollback_killed_with_its_group(clean_lab: Drill, target, step):
    kill_rollback(clean_lab, target, f"{step}:undoing")
