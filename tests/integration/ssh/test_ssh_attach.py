"""container.attach over SSH: a container on an SSH lab host gets a veth from a Linux bridge
and one from an Open vSwitch bridge, made by the pipework commands on the host (`ip netns
exec` through a name in /var/run/netns, docker inspect on the host) with --target centos6, and
with --target modern too (netlink cannot cross SSH: pipework serves it, and `plan` says so).
A second run changes nothing; detach and its rollback put the attachment back; rollback leaves
the host as it was, and no namespace name behind."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from runflow.core.lab.dockerd import BUSYBOX_IMAGE
from tests.integration.lab.conftest import events, run_id
from tests.support.snapshot import differences

pytestmark = pytest.mark.root

CONTAINER = "rf-ssh-attach"
ATTACH = f"""\
[workflow]
name = "attach-over-ssh"

[[steps]]
id = "container"
action = "container.run"
name = "{CONTAINER}"
image = "{BUSYBOX_IMAGE}"
command = ["sleep", "600"]
network = "none"
init = true

[[steps]]
id = "ovs-bridge"
action = "ovs.bridge.present"
name = "rfa-ovs"
datapath_type = "netdev"

[[steps]]
id = "linux-bridge"
action = "bridge.present"
name = "rfa-br"

[[steps]]
id = "attach"
action = "container.attach"
for_each = [["rfa-br", "eth1", "10.61.0.2/24"], ["rfa-ovs", "eth2", "10.62.0.2/24"]]
container = "{CONTAINER}"
bridge = "{{{{ item[0] }}}}"
ifname = "{{{{ item[1] }}}}"
address = "{{{{ item[2] }}}}"
mtu = 1400
"""

DETACH = f"""\
[workflow]
name = "detach-over-ssh"

[[steps]]
id = "detach"
action = "container.detach"
for_each = ["eth1", "eth2"]
container = "{CONTAINER}"
ifname = "{{{{ item }}}}"
"""

WANTED = {"eth1": "10.61.0.2/24", "eth2": "10.62.0.2/24"}


def changed(log: Path) -> list[str]:
    return [e["step"] for e in events(log) if e["dest"] == "applied"]


def docker(lab, *argv: str) -> str:
    """The docker command line on h1's dockerd (its socket, from this machine)."""
    h1 = next(h for h in lab.state()["hosts"] if h["name"] == "h1")
    sock = Path(h1["dir"]) / "docker" / "docker.sock"
    return subprocess.run(["docker", "-H", f"unix://{sock}", *argv], capture_output=True,
                          text=True, check=True).stdout


def interfaces(lab) -> dict[str, str]:
    """The container's eth1 and eth2 as `ip -o -4 addr` shows them: {ifname: address}."""
    out = docker(lab, "exec", CONTAINER, "ip", "-o", "-4", "addr", "show")
    found = {}
    for line in out.splitlines():
        words = line.split()
        if words[1] in WANTED:
            found[words[1]] = words[3]
    return found


def netns_names(pid: str) -> list[Path]:
    return list(Path("/var/run/netns").glob(f"runflow-{pid}"))


@pytest.mark.parametrize("target", ["centos6", "modern"])
def test_attach_over_ssh_is_idempotent_detaches_and_rolls_back(ssh_lab, tmp_path, target):
    before = ssh_lab.snapshot()
    attach, detach = tmp_path / "attach.toml", tmp_path / "detach.toml"
    attach.write_text(ATTACH)
    detach.write_text(DETACH)
    on_h1 = ("--lab", "--host", "h1", "--target", target)
    if target == "modern":
        plan = ssh_lab.runflow("plan", attach, *on_h1)
        assert plan.returncode == 0, plan.stderr
        assert "container.attach is served by pipework: target modern on an SSH host" \
            in plan.stderr
        listed = ssh_lab.runflow("backends", "--json", *on_h1)
        assert listed.returncode == 0, listed.stderr
        chosen = {(r["action"], r["backend"]) for r in json.loads(listed.stdout) if r["chosen"]}
        assert {("container.attach", "pipework"), ("container.detach", "pipework")} <= chosen

    runs = []  # rolled back last first, whatever happens
    try:
        done = ssh_lab.runflow(attach, *on_h1)
        runs.append(done)
        assert done.returncode == 0, done.stderr
        pid = docker(ssh_lab, "inspect", "--format", "{{.State.Pid}}", CONTAINER).strip()
        assert interfaces(ssh_lab) == WANTED
        log = tmp_path / "again.jsonl"
        again = ssh_lab.runflow(attach, *on_h1, "--events", log)
        runs.append(again)
        assert again.returncode == 0, again.stderr
        assert changed(log) == [], f"a second run changed {changed(log)}"

        log = tmp_path / "detach.jsonl"
        detached = ssh_lab.runflow(detach, *on_h1, "--events", log)
        assert detached.returncode == 0, detached.stderr
        assert changed(log) == ["detach[0]", "detach[1]"]
        assert interfaces(ssh_lab) == {}
        assert ssh_lab.runflow("rollback", run_id(detached)).returncode == 0
        assert interfaces(ssh_lab) == WANTED  # detach's undo made them again
    finally:
        for run in reversed(runs):
            rolled = ssh_lab.runflow("rollback", run_id(run))
            assert rolled.returncode == 0, rolled.stderr
    after = ssh_lab.snapshot()
    assert after == before, "\n".join(differences(before, after))
    assert netns_names(pid) == [], "a name for the container's namespace was left"


def test_a_failing_attach_over_ssh_leaves_nothing_behind(ssh_lab, tmp_path):
    """The gateway is not on the interface's subnet: `ip route replace` fails inside the
    container, after the veths are made and the namespace is named."""
    before = ssh_lab.snapshot()
    failing = tmp_path / "failing.toml"
    failing.write_text(ATTACH.replace('mtu = 1400', 'mtu = 1400\ngateway = "10.63.0.1"'))
    done = ssh_lab.runflow(failing, "--lab", "--host", "h1", "--target", "centos6")
    assert done.returncode == 1, done.stderr
    named = re.search(r"ip netns exec runflow-(\d+) ip route replace default", done.stderr)
    assert named, done.stderr
    after = ssh_lab.snapshot()
    assert after == before, "\n".join(differences(before, after))
    assert netns_names(named.group(1)) == [], "a name for the container's namespace was left"
