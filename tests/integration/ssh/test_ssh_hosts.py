"""Two lab hosts reached only over SSH (real sshd, real OpenSSH client): the main job end to
end with the centos6 tools and with the modern APIs, a failure at every step, a connection
lost mid-run and resumed, an unreachable host, hostile values, a changed host key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runflow.core.lab.dockerd import BUSYBOX_IMAGE
from tests.integration.lab.conftest import WORKFLOWS, events, run_id
from tests.integration.export.conftest import comparable
from tests.integration.lab.test_multihost import workflow_failing_at
from tests.support.snapshot import differences

pytestmark = pytest.mark.root

GRE = WORKFLOWS / "multihost-gre.toml"
STEPS = GRE.read_text().count("[[steps]]")


def assert_same(before, after):
    assert after == before, "\n".join(differences(before, after))


def network(snapshot):
    """What both targets must make alike: links, addresses, routes, bridge ports, iptables,
    sysctls, OVSDB (MACs, runflow's tags and docker's files aside: each target writes its own
    docker file, daemon.json or sysconfig)."""
    return {host: {k: v for k, v in parts.items() if k in ("netns", "ovsdb")}
            for host, parts in comparable(snapshot).items()}


def test_multihost_gre_centos6_over_ssh_pings_is_idempotent_and_rolls_back(ssh_lab, tmp_path):
    before = ssh_lab.snapshot()
    done = ssh_lab.runflow(GRE, "--lab", "--target", "centos6")
    assert done.returncode == 0, done.stderr  # its last step pings across the tunnel
    log = tmp_path / "again.jsonl"
    again = ssh_lab.runflow(GRE, "--lab", "--target", "centos6", "--events", log)
    assert again.returncode == 0, again.stderr
    changed = [e["step"] for e in events(log) if e["dest"] in ("applying", "applied")]
    assert changed == [], f"a second run changed {changed}"
    for run in (again, done):
        rolled = ssh_lab.runflow("rollback", run_id(run))
        assert rolled.returncode == 0, rolled.stderr
    assert_same(before, ssh_lab.snapshot())


def test_modern_over_ssh_reaches_the_same_end_state_as_centos6(ssh_lab, tmp_path):
    before = ssh_lab.snapshot()
    centos6 = ssh_lab.runflow(GRE, "--lab", "--target", "centos6")
    assert centos6.returncode == 0, centos6.stderr
    end_state = ssh_lab.snapshot()
    assert ssh_lab.runflow("rollback", run_id(centos6)).returncode == 0

    plan = ssh_lab.runflow("plan", GRE, "--lab", "--target", "modern")
    assert plan.returncode == 0, plan.stderr
    assert "is served by iproute2: target modern on an SSH host" in plan.stderr
    modern = ssh_lab.runflow(GRE, "--lab", "--target", "modern")
    assert modern.returncode == 0, modern.stderr
    assert_same(network(end_state), network(ssh_lab.snapshot()))

    # the Docker SDK reaches h1's dockerd through its socket forwarded over the master
    container = tmp_path / "container.toml"
    container.write_text(CONTAINER)
    ran = ssh_lab.runflow(container, "--lab", "--target", "modern", "--host", "h1")
    assert ran.returncode == 0, ran.stderr
    assert ssh_lab.snapshot()["h1"]["containers"] == ["rf-ssh-c1"]
    for run in (ran, modern):
        assert ssh_lab.runflow("rollback", run_id(run)).returncode == 0
    assert_same(before, ssh_lab.snapshot())


CONTAINER = f"""\
[workflow]
name = "one-container"

[[steps]]
id = "container"
action = "container.run"
name = "rf-ssh-c1"
image = "{BUSYBOX_IMAGE}"
command = ["sleep", "600"]
network = "none"
init = true
"""


@pytest.mark.parametrize("k", range(STEPS))
def test_a_failure_at_step_k_on_one_host_restores_both(ssh_lab, tmp_path, k):
    before = ssh_lab.snapshot()
    done = ssh_lab.runflow(workflow_failing_at(k, tmp_path / "failing.toml"), "--lab",
                           "--target", "centos6")
    assert done.returncode == 1, done.stderr
    assert "step fault on h2" in done.stderr
    assert_same(before, ssh_lab.snapshot())


def test_a_lost_master_connection_leaves_the_step_in_doubt_and_resume_settles_it(
        ssh_lab, tmp_path):
    before = ssh_lab.snapshot()
    slow = tmp_path / "slow.toml"
    text = GRE.read_text()
    at = text.index('[[steps]]\nid = "docker0"\n')
    slow.write_text(text[:at] + '[[steps]]\nid = "slow"\naction = "shell.run"\non = ["h1"]\n'
                    'cmd = ["sleep", "4"]\nundo = []\n\n' + text[at:])
    log = tmp_path / "events.jsonl"
    proc = ssh_lab.start(slow, "--lab", "--target", "centos6", "--events", log)
    deadline = time.monotonic() + 90
    while not (log.exists() and any(e["step"] == "slow" and e["dest"] == "applying"
                                    for e in events(log))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(ssh_lab.ssh_processes(proc.pid)["root@10.99.0.1"], signal.SIGKILL)  # h1's master
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "lost the SSH connection to host h1" in stderr
    shown = json.loads(ssh_lab.runflow("show", "last", "--json").stdout)
    slow_step = next(s for s in shown["steps"] if s["key"] == "slow" and s["host"] == "h1")
    assert slow_step["state"] == "applying"  # intent journaled, no outcome: in doubt

    resumed = ssh_lab.runflow("resume", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert "in doubt" in resumed.stderr
    rolled = ssh_lab.runflow("rollback", "last")
    assert rolled.returncode == 0, rolled.stderr
    assert_same(before, ssh_lab.snapshot())


def test_an_unreachable_host_stops_the_run_before_any_change(ssh_lab, tmp_path):
    before = ssh_lab.snapshot()
    runs = ssh_lab.runflow("runs", "--json").stdout
    # h2's sshd listens on 22 only: the relay finds nothing on 2222
    inventory = ssh_lab.inventory_with(tmp_path / "inv.toml", "h2", ssh_port=2222)
    done = ssh_lab.runflow(GRE, "-i", inventory, "--target", "centos6")
    assert done.returncode == 5, done.stderr
    assert "cannot reach host h2" in done.stderr and "port 2222" in done.stderr
    assert "h1" not in done.stderr.split("cannot reach host h2")[0]
    assert_same(before, ssh_lab.snapshot())
    assert ssh_lab.runflow("runs", "--json").stdout == runs  # not even a run was recorded


HOSTILE = ["it's", '"double"', "$(touch /tmp/{m}-dollar)", "`touch /tmp/{m}-tick`",
           "a; touch /tmp/{m}-semi", "new\nline", "  spaces  ", "*", "\\", "", "$HOME",
           "--", "-n"]


def test_hostile_values_arrive_verbatim_as_one_argument_each(ssh_lab, tmp_path):
    mark = f"rfhostile{time.monotonic_ns()}"
    values = [v.format(m=mark) for v in HOSTILE]
    out = tmp_path / "argv"
    workflow = tmp_path / "hostile.toml"
    workflow.write_text(
        '[workflow]\nname = "hostile"\n\n[vars]\nout = ""\nfrom_var = ""\n\n'
        '[[steps]]\nid = "argv"\naction = "shell.run"\non = ["h1"]\n'
        'cmd = ["sh", "-c", \'printf "%s\\\\0" "$@" > "$0"\', "{{ out }}", '
        + ", ".join(json.dumps(v) for v in values) + ', "{{ from_var }}"]\nundo = []\n')
    done = ssh_lab.runflow(workflow, "--lab", "--var", f"out={out}",
                           "--var", f"from_var={values[2]}")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().decode().split("\0")[:-1] == [*values, values[2]]
    assert not list(Path("/tmp").glob(f"{mark}*")), "a hostile value ran as shell"
    assert ssh_lab.runflow("rollback", run_id(done)).returncode == 0


def test_a_changed_host_key_is_refused_and_nothing_changes(ssh_lab, tmp_path):
    before = ssh_lab.snapshot()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other = (tmp_path / "k.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"10.99.0.1 {' '.join(other)}\n"
                     + (ssh_lab.dir / "ssh" / "known_hosts").read_text().split("\n", 1)[1])
    options = [f"UserKnownHostsFile={known}" if o.startswith("UserKnownHostsFile=") else o
               for o in ssh_lab.host_table("h1")["ssh_options"]]
    inventory = ssh_lab.inventory_with(tmp_path / "inv.toml", "h1", ssh_options=options)
    done = ssh_lab.runflow(GRE, "-i", inventory, "--target", "centos6")
    assert done.returncode == 5, done.stderr
    assert "cannot reach host h1" in done.stderr
    assert "Host key verification failed" in done.stderr
    assert_same(before, ssh_lab.snapshot())
