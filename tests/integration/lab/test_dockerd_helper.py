"""The lab's dockerd helper under the faults an operator meets: a daemon killed and restarted
from a runflow step, runflow itself inside a chroot, a stale pid file, a restart killed half-way.
Whatever happens, the lab tracks the daemon that runs, says "up" only for that one, and stops
every daemon of its own — and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runflow.core.lab.dockerd import Dockerd
from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.processes import ToolError, alive, pids_running_with
from tests.conftest import need_tools

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    need_tools("ip", "nsenter", "dockerd", "containerd", "unshare", "mount")
    ns = Namespace(unique_name("rfdh")).create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def daemon(namespace: Namespace) -> Iterator[Dockerd]:
    """A dockerd of its own (not started), removed with everything it left after the test."""
    state = Path(tempfile.mkdtemp(prefix="rfdh", dir="/tmp"))  # short: unix socket paths
    daemon = Dockerd(namespace, state / "d")
    try:
        yield daemon
    finally:
        daemon.remove()
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)
        assert daemons_of(daemon) == [], "a dockerd of the test outlived remove()"


def daemons_of(daemon: Dockerd) -> list[int]:
    """Every process running a dockerd of this state directory."""
    return pids_running_with("-H", daemon.url)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.01)


def helper(daemon: Dockerd, action: str) -> list[str]:
    """The lab's helper command, started as a runflow step starts it: from a mount namespace
    of its own (a step's thread unshares one to see its network namespace's /sys)."""
    return ["unshare", "--mount", "--propagation", "slave",
            *daemon.restart_command()[:-2], action, str(daemon.dir)]


def test_a_killed_daemon_is_restarted_beside_its_containerd(daemon):
    daemon.start()
    kill(daemon.tracked_pid())
    assert not daemon.up()

    done = subprocess.run(helper(daemon, "restart"), capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert daemon.up()
    [containerd] = pids_running_with("--address", str(daemon.containerd_socket))
    new = daemon.tracked_pid()
    assert os.stat(f"/proc/{new}/ns/mnt").st_ino == os.stat(f"/proc/{containerd}/ns/mnt").st_ino
    assert daemons_of(daemon) == [new]


def test_a_restart_from_inside_a_chroot_keeps_the_daemon_in_the_chroot(daemon, tmp_path):
    """runflow in a chroot (here: the machine's tree bound under a directory, entered from a
    mount namespace of its own, with a file only that tree shows): a restarted daemon must run
    there too, not at the real root of the mount namespace it enters (where a fresh Debian
    root's files are not)."""
    root, mark = tmp_path / "root", tmp_path / "mark"
    root.mkdir()
    mark.mkdir()
    inside = textwrap.dedent(f"""
        import json, os, signal, subprocess, sys, time
        subprocess.run(["mount", "--rbind", "/", {str(root)!r}], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "mark", {str(root) + str(mark)!r}], check=True)
        os.chroot({str(root)!r})
        os.chdir("/")
        open({str(mark / "here")!r}, "w").close()
        from runflow.core.lab.dockerd import Dockerd
        from runflow.core.lab.namespaces import Namespace
        daemon = Dockerd(Namespace({daemon.namespace.name!r}), {str(daemon.dir)!r})
        daemon.start()
        first = daemon.tracked_pid()
        os.kill(first, signal.SIGKILL)
        while os.path.exists(f"/proc/{{first}}") and daemon.tracked_pid():
            time.sleep(0.01)
        done = subprocess.run({helper(daemon, "restart")!r}, capture_output=True, text=True)
        print(json.dumps({{"rc": done.returncode, "stderr": done.stderr,
                          "pid": daemon.tracked_pid(), "up": daemon.up()}}))
    """)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", inside], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 0 and result["up"], result["stderr"]

    assert os.path.exists(f"/proc/{result['pid']}/root{mark / 'here'}")


def test_a_stale_pid_file_does_not_stop_a_start(daemon):
    """A pid file a killed dockerd left names a process that is no dockerd of the lab's (here:
    this test): dockerd itself would refuse to start while that process exists."""
    daemon.dir.mkdir(parents=True)
    daemon.pidfile.write_text(f"{os.getpid()}\n")

    daemon.start()

    assert daemon.up()
    assert daemon.tracked_pid() != os.getpid()


def test_a_daemon_started_but_not_yet_recorded_is_found_and_stopped(daemon):
    """A restart killed right after spawning the daemon, before it recorded the pid: status
    must not say "up" for a daemon the lab does not track; start takes it over instead of
    starting a second one, and stop finds it even untracked."""
    daemon.start()
    running = daemon.tracked_pid()
    (daemon.dir / "dockerd.started").write_text("999999999\n")  # the pid it replaced

    assert daemon.answers() and not daemon.up()

    daemon.start()
    assert daemon.tracked_pid() == running and daemon.up()
    (daemon.dir / "dockerd.started").unlink()
    daemon.stop()
    assert daemons_of(daemon) == []


def test_a_restart_killed_half_way_leaves_no_daemon_behind(daemon):
    daemon.start()
    old = daemon.tracked_pid()
    helper_proc = subprocess.Popen(helper(daemon, "restart"), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not set(daemons_of(daemon)) - {old}:  # the new daemon is spawned
        assert time.monotonic() < deadline, "the restart never spawned a daemon"
        time.sleep(0.002)
    helper_proc.kill()
    helper_proc.wait()

    # Killed before or after it recorded the new daemon: "up" only for the one that runs,
    # and stop (as `lab down` does) leaves none, at once.
    assert not daemon.up() or daemon.tracked_pid() in daemons_of(daemon)
    daemon.stop()
    assert daemons_of(daemon) == []


def test_a_failing_tool_says_what_it_said(namespace):
    missing = Namespace(unique_name("rfno"))
    with pytest.raises(ToolError) as failed:
        missing.run(["true"])
    assert f'Cannot open network namespace "{missing.name}"' in str(failed.value)


def test_the_lab_refuses_a_chroot_whose_root_is_not_a_mount_point(tmp_path):
    """`ip netns exec` (and runflow's namespace hosts) remount /, which fails in a chroot of a
    plain directory: the lab says so and how to fix it, before it makes anything."""
    (tmp_path / "proc").mkdir()
    inside = textwrap.dedent(f"""
        import os, subprocess
        from runflow.core.errors import InputError
        from runflow.core.lab.lab import Lab
        from runflow.core.lab.namespaces import root_is_mount_point
        subprocess.run(["mount", "-t", "proc", "proc", {str(tmp_path / "proc")!r}], check=True)
        os.chroot({str(tmp_path)!r})
        print(root_is_mount_point())
        try:
            Lab("/lab").up()
        except InputError as exc:
            print(exc)
    """)
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", inside], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    is_mount_point, error = done.stdout.splitlines()
    assert is_mount_point == "False"
    assert "/ is not a mount point" in error and "mount --bind DIR DIR" in error
    assert not (tmp_path / "lab").exists()
