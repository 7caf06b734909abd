"""docker.daemon + service.restart: dockerd is pointed at a bridge of our own, restarted through
the inventory's service command, and a container started afterwards gets its address from
that bridge; rollback puts the configuration back byte for byte and restarts the daemon again.
modern writes daemon.json, centos6 the other_args line of a sysconfig file."""

from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import Path

import pytest

from .conftest import DockerHost

pytestmark = pytest.mark.root

WORKFLOW = """
[workflow]
name = "docker-bridge"

[vars]
bridge = "br-docker"

[[steps]]
id = "daemon"
action = "docker.daemon"
bridge = "{{ bridge }}"
fixed_cidr = "10.70.0.128/25"
mtu = 1450
restart = "docker"

[[steps]]
id = "web"
action = "container.run"
name = "web"
image = "runflow/busybox:lab"
command = ["sleep", "3600"]
init = true
"""

RESTART_ONLY = """
[workflow]
name = "restart-docker"

[[steps]]
id = "restart"
action = "service.restart"
name = "docker"
"""


# The docker service's restart command, killing the runflow that runs it (its parent) the
# first time after a flag file appeared: a run or rollback killed after the file was written
# and before the daemon restarted.
KILL_ONCE = 'if rm "$0" 2>/dev/null; then kill -9 "$PPID"; exit 1; fi; exec "$@"'


def inventory(host: DockerHost, path: Path, config: Path, *,
              kill_flag: Path | None = None) -> Path:
    restart = host.dockerd.restart_command()
    if kill_flag is not None:
        restart = ["sh", "-c", KILL_ONCE, str(kill_flag), *restart]
    command = json.dumps(restart)
    key = "docker_sysconfig" if host.dockerd.sysconfig else "docker_config"
    return host.inventory(path, extra=f'{key} = "{config}"\n\n'
                                      f'[hosts.h1.services.docker]\nrestart = {command}\n')


def run_id(done) -> str:
    """The run id from the first line of `runflow run`'s progress ("run ID: ...")."""
    return (done.stderr or done.stdout).split()[1].rstrip(":")


def bridge_for_docker(host: DockerHost, target: str) -> Path:
    """Make br-docker (10.70.0.1/24) on the host; returns the file docker.daemon edits."""
    host.ns.run(["ip", "link", "add", "br-docker", "type", "bridge"])
    host.ns.run(["ip", "addr", "add", "10.70.0.1/24", "dev", "br-docker"])
    host.ns.run(["ip", "link", "set", "br-docker", "up"])
    return host.dockerd.sysconfig_path if target == "centos6" else host.dockerd.config_path


def address_of(host: DockerHost, name: str) -> ipaddress.IPv4Address:
    info = host.client.api.inspect_container(name)
    # Per network: docker 29 (Ubuntu 24.04) no longer fills the top-level IPAddress.
    return ipaddress.ip_address(info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"])


@pytest.mark.parametrize(("fresh_docker_host", "target"),
                         [("daemon-json", "modern"), ("sysconfig", "centos6")],
                         indirect=["fresh_docker_host"])
def test_docker_uses_our_bridge_until_rollback(fresh_docker_host: DockerHost, target: str,
                                               runflow, tmp_path: Path) -> None:
    host = fresh_docker_host
    config = bridge_for_docker(host, target)
    original = config.read_bytes()
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    inv = inventory(host, tmp_path / "inventory.toml", config)

    done = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", target)
    assert done.returncode == 0, done.stdout + done.stderr
    assert address_of(host, "web") in ipaddress.ip_network("10.70.0.128/25")
    if target == "centos6":
        other_args = shlex.split(config.read_text().split("other_args=")[1])[0]
        assert other_args == "--bridge=br-docker --fixed-cidr=10.70.0.128/25 --mtu=1450"
    else:
        assert json.loads(config.read_text()) == {
            "bridge": "br-docker", "fixed-cidr": "10.70.0.128/25", "mtu": 1450}

    again = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", target)
    assert again.returncode == 0 and "skip   daemon" in again.stderr, again.stderr

    back = runflow("rollback", run_id(done))
    assert back.returncode == 0, back.stdout + back.stderr
    assert config.read_bytes() == original
    assert host.dockerd.answers()
    # The daemon runs with its own bridge again: a new container gets docker0's addresses.
    host.client.containers.run(host.image, ["sleep", "3600"], name="after", detach=True,
                               init=True)
    assert address_of(host, "after") in ipaddress.ip_network("172.17.0.0/16")


def dockerd_pid(host: DockerHost) -> str:
    return (host.dockerd.dir / "dockerd.started").read_text()


@pytest.mark.parametrize(("fresh_docker_host", "target"),
                         [("daemon-json", "modern"), ("sysconfig", "centos6")],
                         indirect=["fresh_docker_host"])
def test_a_restart_a_killed_command_never_did_is_done_by_the_next_one(
        fresh_docker_host: DockerHost, target: str, runflow, tmp_path: Path) -> None:
    """The file alone does not say what dockerd runs: killed between writing the file and
    restarting, a run leaves a file that holds and a daemon that does not, and a rollback a
    file that is back and a daemon that still runs the run's bridge. The next run and the next
    rollback see the daemon is older than its file and restart it."""
    host = fresh_docker_host
    config = bridge_for_docker(host, target)
    original = config.read_bytes()
    flag = tmp_path / "kill-at-restart"
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    inv = inventory(host, tmp_path / "inventory.toml", config, kill_flag=flag)
    started = dockerd_pid(host)

    flag.touch()
    killed = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", target)
    assert killed.returncode == -9, killed.stderr
    assert config.read_bytes() != original and dockerd_pid(host) == started

    again = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", target)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skip   daemon" not in again.stderr and dockerd_pid(host) != started
    assert address_of(host, "web") in ipaddress.ip_network("10.70.0.128/25")
    assert runflow("rollback", run_id(again)).returncode == 0  # the file stays: not its own
    started = dockerd_pid(host)

    flag.touch()
    rollback = runflow("rollback", run_id(killed))
    assert rollback.returncode == -9, rollback.stderr
    assert config.read_bytes() == original and dockerd_pid(host) == started

    back = runflow("rollback", run_id(killed))
    assert back.returncode == 0, back.stdout + back.stderr
    assert dockerd_pid(host) != started
    host.client.containers.run(host.image, ["sleep", "3600"], name="after", detach=True,
                               init=True)
    assert address_of(host, "after") in ipaddress.ip_network("172.17.0.0/16")


def test_a_config_file_that_did_not_exist_is_removed_on_rollback_with_its_directories(
        fresh_docker_host: DockerHost, runflow, tmp_path: Path) -> None:
    """Undo removes what apply made, and only that: the file and the directories made for
    it, but not a directory that holds something else by then."""
    host = fresh_docker_host
    (tmp_path / "wf.toml").write_text(WORKFLOW.split("[[steps]]\nid = \"web\"")[0]
                                      .replace('restart = "docker"\n', ""))
    for config, shared in ((tmp_path / "etc" / "docker" / "daemon.json", None),
                           (tmp_path / "etc2" / "docker" / "daemon.json", tmp_path / "etc2")):
        inv = inventory(host, tmp_path / "inventory.toml", config)
        done = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", "modern")
        assert done.returncode == 0, done.stdout + done.stderr
        assert config.exists()
        if shared:
            (shared / "other.conf").write_text("not runflow's\n")
        back = runflow("rollback", run_id(done))
        assert back.returncode == 0, back.stdout + back.stderr
        assert not config.parent.exists()
        assert (shared / "other.conf").exists() if shared else not (tmp_path / "etc").exists()


def test_an_ovs_bridge_for_docker_fails_before_anything_changes(
        docker_host: DockerHost, runflow, tmp_path: Path) -> None:
    docker_host.ovs.vsctl("--may-exist", "add-br", "ovsbr9", "--", "set", "Bridge", "ovsbr9",
                          "datapath_type=netdev")
    config = tmp_path / "daemon.json"
    config.write_text('{"debug": true}\n')
    (tmp_path / "wf.toml").write_text(WORKFLOW)
    inv = inventory(docker_host, tmp_path / "inventory.toml", config)
    try:
        done = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", "modern",
                       "--var", "bridge=ovsbr9")
    finally:
        docker_host.ovs.vsctl("--if-exists", "del-br", "ovsbr9")
    assert done.returncode == 1
    assert "Open vSwitch bridge" in done.stdout + done.stderr
    assert "brctl addif docker0 ovsbr9" in done.stdout + done.stderr
    assert config.read_text() == '{"debug": true}\n'


def test_bridge_and_bip_together_are_refused_before_anything_runs(runflow,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "wf.toml").write_text(
        '[workflow]\nname = "x"\n\n[[steps]]\nid = "daemon"\naction = "docker.daemon"\n'
        'bridge = "br0"\nbip = "10.0.0.1/24"\n')
    done = runflow("validate", tmp_path / "wf.toml")
    assert done.returncode == 2
    assert "cannot be used together" in done.stdout + done.stderr


def test_service_restart_runs_the_inventorys_command(fresh_docker_host: DockerHost, runflow,
                                                     tmp_path: Path) -> None:
    host = fresh_docker_host
    before = (host.dockerd.dir / "dockerd.started").read_text()
    (tmp_path / "wf.toml").write_text(RESTART_ONLY)
    inv = inventory(host, tmp_path / "inventory.toml", host.dockerd.config_path)
    for target in ("modern", "centos6"):
        done = runflow("run", tmp_path / "wf.toml", "--inventory", inv, "--target", target)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (host.dockerd.dir / "dockerd.started").read_text() != before
    assert host.dockerd.answers()
