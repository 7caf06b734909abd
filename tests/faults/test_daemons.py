"""The lab's daemons die at chosen points of multihost-gre: ovs-vswitchd and dockerd are
killed (SIGKILL, by the pid the lab tracks) while runflow is stopped at an event, runflow goes
on, and the daemon is started again as a supervisor would, a moment later or once runflow
is done. Whatever runflow then says must be true: exit 0 leaves the end state (a run) or the
before state (a rollback), exit 1 the before state, exit 3 a run the journal marks for
attention; and with the daemon back, `runflow rollback` must bring both hosts back to before.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.drill import (OK, ROLLED_BACK_STEPS, Drill, assert_journal_settled,
                                assert_outcome_agrees, run_of)

pytestmark = pytest.mark.root

# How long a daemon stays dead while runflow goes on: runflow's OVS commands wait for
# ovs-vswitchd (30 s at most), so it must come back well before that.
DEAD_FOR = 1.0


def _restart_and_roll_back(drill: Drill, run_id: str, what: str) -> None:
    for host in ("h1", "h2"):
        drill.start_switch(host)
        drill.start_dockerd(host)
    rolled = drill.runflow("rollback", run_id)
    assert rolled.code == OK, rolled
    drill.assert_before(f"{what}, the daemons back and a rollback")
    assert_journal_settled(drill.show(run_id), "rolled_back", ROLLED_BACK_STEPS)


def _succeeded_run(drill: Drill, target: str) -> str:
    done = drill.run_gre(target)
    assert done.code == OK, done
    return run_of(done)


@pytest.mark.parametrize("target", ["centos6"])
def test_ovs_vswitchd_dies_while_a_port_is_added(clean_lab: Drill, target):
    drill = clean_lab
    drill.end_state(target)
    paused = drill.start_gre(target, "gre-port:applying@h1")
    drill.kill_switch("h1")
    paused.go_on()
    time.sleep(DEAD_FOR)
    drill.start_switch("h1")
    done = paused.wait()
    what = "ovs-vswitchd killed at gre-port applying on h1 and started again"
    assert_outcome_agrees(drill, done, paused.run_id, target, what)
    _restart_and_roll_back(drill, paused.run_id, what)


@pytest.mark.parametrize("target", ["modern"])
def test_ovs_vswitchd_dies_while_its_bridge_is_removed(clean_lab: Drill, target):
    drill = clean_lab
    run = _succeeded_run(drill, target)
    paused = drill.start("rollback", run, pause="ovs-bridge:undoing@h2")
    drill.kill_switch("h2")
    paused.go_on()
    time.sleep(DEAD_FOR)
    drill.start_switch("h2")
    done = paused.wait()
    what = "ovs-vswitchd killed at ovs-bridge undoing on h2 and started again"
    assert_outcome_agrees(drill, done, run, target, what)
    _restart_and_roll_back(drill, run, what)


@pytest.mark.parametrize("target", ["modern"])
def test_dockerd_dies_before_its_step_restarts_it(clean_lab: Drill, target):
    drill = clean_lab
    drill.end_state(target)
    paused = drill.start_gre(target, "docker-on-docker0:applying@h1")
    drill.kill_dockerd("h1")
    paused.go_on()
    done = paused.wait()
    what = "dockerd killed at docker-on-docker0 applying on h1"
    assert_outcome_agrees(drill, done, paused.run_id, target, what)
    _restart_and_roll_back(drill, paused.run_id, what)


@pytest.mark.parametrize("target", ["centos6"])
def test_dockerd_dies_while_its_settings_are_undone(clean_lab: Drill, target):
    drill = clean_lab
    run = _succeeded_run(drill, target)
    paused = drill.start("rollback", run, pause="docker-on-docker0:undoing@h2")
    drill.kill_dockerd("h2")
    paused.go_on()
    done = paused.wait()
    what = "dockerd killed at docker-on-docker0 undoing on h2"
    assert_outcome_agrees(drill, done, run, target, what)
    _restart_and_roll_back(drill, run, what)


@pytest.mark.parametrize("target", ["centos6"])
def test_runflow_and_dockerd_die_together_then_resume(clean_lab: Drill, target):
    """The other host may be in the middle of restarting its dockerd when runflow's group
    and that dockerd are killed; the operator starts dockerd and resumes."""
    drill = clean_lab
    drill.end_state(target)
    paused = drill.start_gre(target, "docker-on-docker0:applying@h2")
    paused.kill_group()
    drill.kill_dockerd("h1", must_run=False)
    drill.start_dockerd("h1")
    resumed = drill.runflow("resume", paused.run_id)
    what = "runflow's group and dockerd on h1 killed at docker-on-docker0, dockerd started, resume"
    assert resumed.code == OK, resumed
    assert_outcome_agrees(drill, resumed, paused.run_id, target, what)
    _restart_and_roll_back(drill, paused.run_id, what)
