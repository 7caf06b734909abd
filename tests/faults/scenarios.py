"""The faults of the drill as stories, each ending with what must then be true (an
AssertionError says which promise broke). tests/faults/test_*.py run chosen points of each;
bench/fault_drill.py runs random ones.

A point is "STEP:EVENT" or "STEP:EVENT@HOST" (tests/faults/pause_point.py): the run or the
rollback stops there, with its journal written, and the fault strikes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path

from tests.faults.drill import (OK, ROLLED_BACK_STEPS, SUCCEEDED_STEPS, Drill,
                                assert_journal_settled, assert_outcome_agrees, expect, run_of)

# How long a killed daemon stays dead while runflow goes on: runflow's OVS commands wait for
# ovs-vswitchd (30 s at most), so it must come back well before that.
DEAD_FOR = 1.0
DAEMONS = ("ovs-vswitchd", "dockerd")


def rolled_back(drill: Drill, run_id: str, after: str) -> None:
    """`runflow rollback RUN` exits 0 and leaves the hosts and the journal as before."""
    expect(drill.runflow("rollback", run_id), OK)
    drill.assert_before(after)
    assert_journal_settled(drill.show(run_id), "rolled_back", ROLLED_BACK_STEPS)


def resumed(drill: Drill, run_id: str, target: str, after: str, log: Path,
            lost: Collection[tuple[str, str]] = ()) -> None:
    """`runflow resume RUN` exits 0, leaves the end state of an undisturbed run, the journal
    agrees, and of the steps the journal had as applied it applied again exactly those whose
    change the fault undid (lost: (host, step) pairs the test saw gone from the live host),
    each reported as drift."""
    applied = {(s["host"], s["key"]) for s in drill.show(run_id)["steps"]
               if s["state"] == "applied"}
    expect(drill.runflow("resume", run_id, "--events", log), OK)
    drill.assert_end(target, after)
    assert_journal_settled(drill.show(run_id), "succeeded", SUCCEEDED_STEPS)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    again = {(e["host"], e["step"]): e["message"] for e in events
             if e["kind"] == "step" and e["dest"] == "applying"
             and (e["host"], e["step"]) in applied}
    held = sorted(f"{host}:{step}" for host, step in again.keys() - set(lost))
    assert not held, (f"after {after}, resume applied again what the journal had applied "
                      f"and the hosts still held: {held}")
    missed = sorted(f"{host}:{step}" for host, step in applied.intersection(lost)
                    if not again.get((host, step), "").startswith("drift:"))
    assert not missed, (f"after {after}, resume did not report as drift and apply again "
                        f"what the fault undid: {missed}")


def succeeded_run(drill: Drill, target: str) -> str:
    return run_of(expect(drill.run_gre(target), OK))


def kill_run(drill: Drill, target: str, point: str, recovery: str, log: Path) -> None:
    """runflow's process group killed at point during a run; then `recovery` ("resume", then
    rollback; or "rollback")."""
    drill.end_state(target)
    paused = drill.start_gre(target, point)
    paused.kill_group()
    what = f"a kill at {point}"
    if recovery == "resume":
        resumed(drill, paused.run_id, target, f"{what} and resume", log)
        what += ", resume"
    rolled_back(drill, paused.run_id, f"{what} and rollback")


def kill_rollback(drill: Drill, target: str, point: str) -> None:
    """runflow's process group killed at point during the rollback of a run that succeeded;
    then the rollback again."""
    run = succeeded_run(drill, target)
    paused = drill.start("rollback", run, pause=point)
    paused.kill_group()
    rolled_back(drill, run, f"a rollback killed at {point} and a second rollback")


def kill_daemon(drill: Drill, daemon: str, host: str) -> None:
    (drill.kill_switch if daemon == "ovs-vswitchd" else drill.kill_dockerd)(host)


def start_daemon(drill: Drill, daemon: str, host: str) -> None:
    (drill.start_switch if daemon == "ovs-vswitchd" else drill.start_dockerd)(host)


def daemon_dies(drill: Drill, target: str, command: str, point: str, daemon: str, host: str,
                back_after: float | None, must_exit: int | None = None) -> None:
    """A daemon killed while the run (command "run") or the rollback of a run that succeeded
    (command "rollback") is stopped at point; runflow goes on, the daemon is started again
    as a supervisor would (if none answers), back_after seconds later or (None) once runflow
    is done. runflow exits must_exit (if given), what it said must then be true, and a
    rollback brings both hosts back to before."""
    if command == "run":
        drill.end_state(target)
        paused = drill.start_gre(target, point)
    else:
        paused = drill.start("rollback", succeeded_run(drill, target), pause=point)
    kill_daemon(drill, daemon, host)
    paused.go_on()
    if back_after is not None:
        time.sleep(back_after)
        start_daemon(drill, daemon, host)
    done = paused.wait()
    if back_after is None:
        start_daemon(drill, daemon, host)
    what = f"{daemon} on {host} killed at {point} of the {command}"
    if must_exit is not None:
        expect(done, must_exit)
    assert_outcome_agrees(drill, done, paused.run_id, target, what)
    restart_daemons_and_roll_back(drill, paused.run_id, what)


def restart_daemons_and_roll_back(drill: Drill, run_id: str, what: str) -> None:
    for host in ("h1", "h2"):
        for daemon in DAEMONS:
            start_daemon(drill, daemon, host)
    rolled_back(drill, run_id, f"{what}, the daemons back and a rollback")
