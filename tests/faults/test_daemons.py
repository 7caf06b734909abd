"""The lab's daemons die at chosen points of multihost-gre: ovs-vswitchd and dockerd are
killed (SIGKILL, by the pid the lab tracks) while runflow is stopped at an event, runflow goes
on, and the daemon is started again as a supervisor would: ovs-vswitchd a moment later
(runflow's OVS commands wait for it), dockerd once runflow is done if the docker-on-docker0
step, which restarts it, did not. At these points runflow can finish the job: it must exit 0,
leaving the end state (a run) or the before state (a rollback), with the journal agreeing;
and with the daemons back, `runflow rollback` must bring both hosts back to before.
"""

from __future__ import annotations

import pytest

from tests.faults.drill import OK, Drill
from tests.faults.scenarios import (DEAD_FOR, daemon_dies, resumed,
                                    restart_daemons_and_roll_back)

pytestmark = pytest.mark.root


@pytest.mark.parametrize(("target", "command", "point", "daemon", "host", "back_after"), [
    pytest.param("centos6", "run", "gre-port:applying@h1", "ovs-vswitchd", "h1", DEAD_FOR,
                 id="centos6-ovs-vswitchd-h1-gre-port-applying"),
    pytest.param("modern", "rollback", "ovs-bridge:undoing@h2", "ovs-vswitchd", "h2", DEAD_FOR,
                 id="modern-ovs-vswitchd-h2-ovs-bridge-undoing"),
    pytest.param("modern", "run", "docker-on-docker0:applying@h1", "dockerd", "h1", None,
                 id="modern-dockerd-h1-docker-on-docker0-applying"),
    pytest.param("centos6", "rollback", "docker-on-docker0:undoing@h2", "dockerd", "h2", None,
                 id="centos6-dockerd-h2-docker-on-docker0-undoing"),
])
def test_a_daemon_dies(clean_lab: Drill, target, command, point, daemon, host, back_after):
    daemon_dies(clean_lab, target, command, point, daemon, host, back_after, must_exit=OK)


# dockerd started with the lab's settings (`"bridge": "none"`, core/lab/lab.py) deletes any
# link named docker0, as every dockerd with --bridge=none does (moby's
# removeDefaultBridgeInterface): the workflow's bridge goes, and with it the address, the port
# and the state these steps gave it. Started with the run's settings (`-b docker0`, once
# docker-on-docker0 wrote them) it keeps docker0.
DOCKER0_STEPS = ("docker0", "docker0-address", "ovs-into-docker0", "docker0-up")


@pytest.mark.parametrize("point", [
    pytest.param("docker-on-docker0:applying@h2", id="h1-anywhere"),
    pytest.param("docker-on-docker0:applying@h1", id="h1-file-unwritten"),
])
def test_runflow_and_dockerd_die_together_then_resume(clean_lab: Drill, tmp_path, point):
    """runflow's group and h1's dockerd are killed together, h1 then anywhere around its
    docker-on-docker0 (at @h2: maybe in the middle of restarting its dockerd) or stopped
    before it wrote the run's settings (at @h1); the operator starts dockerd as the lab does
    and resumes. A dockerd that started with the lab's settings deleted docker0: resume must
    report the steps that made it as drift and apply them again, and only those."""
    drill, target = clean_lab, "centos6"
    drill.end_state(target)
    paused = drill.start_gre(target, point)
    paused.kill_group()
    drill.kill_dockerd("h1", must_run=False)
    drill.start_dockerd("h1")
    lost = [] if drill.has_link("h1", "docker0") else [("h1", s) for s in DOCKER0_STEPS]
    if point.endswith("@h1"):
        assert lost, "dockerd on h1, started with the lab's settings, left docker0"
    what = f"runflow's group and dockerd on h1 killed at {point}"
    resumed(drill, paused.run_id, target, f"{what}, dockerd started and resume",
            tmp_path / "resume.jsonl", lost)
    restart_daemons_and_roll_back(drill, paused.run_id, what)
