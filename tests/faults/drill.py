"""The fault drill's harness, on the two-host lab (tests/integration/lab/conftest.py):

- runflow started in a process group of its own and stopped at a chosen event by the
  pause_point plugin, so that the test strikes at that exact point from outside, as an
  operator's `kill -9 -PGID` or a dying daemon would;
- the lab's daemons killed by the pids the lab tracks, and started again as the lab does;
- what the hosts must look like afterwards: the before state (the lab as it came up) or the
  end state of an undisturbed run of the same target; and what the journal must say.

Each case starts from the lab as it came up. One that leaves it otherwise (a broken promise)
marks it dirty, and the next case rebuilds the lab first, so one failure does not cascade.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runflow.core.lab.dockerd import load as load_dockerd
from runflow.core.lab.lab import Lab
from runflow.core.lab.processes import alive, read_pid, stop_pid
from tests.conftest import runflow_argv
from tests.integration.lab.conftest import WORKFLOWS, LabUnderTest
from tests.support.snapshot import differences, without_macs

GRE = WORKFLOWS / "multihost-gre.toml"
TARGETS = ("centos6", "modern")
PAUSE_PLUGIN = Path(__file__).with_name("pause_point.py")
# Every step of multihost-gre, in order; the verify.* ones never apply (a passing check is
# "skipped: verified"), so they have no applying or undoing event to stop at.
_STEP_TABLES = tomllib.loads(GRE.read_text())["steps"]
STEPS = [s["id"] for s in _STEP_TABLES]
CHANGING = [s["id"] for s in _STEP_TABLES if not s["action"].startswith("verify.")]
IN_DOUBT = ("applying", "undoing")
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b")
# The README's exit codes.
OK, ROLLED_BACK, INVALID, NEEDS_ATTENTION, LOCKED = 0, 1, 2, 3, 4


@dataclass
class Done:
    """A finished runflow command."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"runflow {' '.join(self.argv)} exited {self.code}\n--- stderr:\n"
                f"{self.stderr.strip()}")


def expect(done: Done, *codes: int) -> Done:
    """done, if it exited with one of codes and without a traceback of runflow's own (one
    starts a line; a failed command's, quoted in a step's error, does not)."""
    crashed = re.search(r"^Traceback", done.stderr, re.MULTILINE)
    if done.code not in codes or crashed:
        raise AssertionError(f"expected exit {' or '.join(map(str, codes))}"
                             f"{' without a traceback' if crashed else ''}: {done}")
    return done


class Paused:
    """A runflow command stopped by pause_point at its event (the marker says which)."""

    def __init__(self, proc: subprocess.Popen, argv: list[str], marker: dict[str, Any],
                 out: Path, err: Path) -> None:
        self.proc = proc
        self.argv = argv
        self.run_id: str = marker["run_id"]
        self.host: str = marker["host"]
        self.out, self.err = out, err

    def kill_group(self) -> None:
        """SIGKILL to runflow and every process of its group (its commands in flight)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def go_on(self) -> None:
        """Let it go on from where it stopped."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def wait(self, timeout: float = 120) -> Done:
        return _finish(self.proc, self.argv, self.out, self.err, timeout)


def _finish(proc: subprocess.Popen, argv: list[str], out: Path, err: Path,
            timeout: float) -> Done:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"runflow {' '.join(argv)} still ran after {timeout:g} s "
                             f"(killed):\n{err.read_text()}") from None
    return Done(argv, proc.returncode, out.read_text(), err.read_text())


class Drill:
    """The lab, its state as it came up, and runflow commands against it."""

    def __init__(self, lab: LabUnderTest, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self._count = 0
        self._ends: dict[str, dict[str, Any]] = {}
        self._started: list[subprocess.Popen] = []
        self.dirty = False
        self.pristine = self.snapshot()

    # -- commands ----------------------------------------------------------------------------

    def _files(self) -> tuple[Path, Path, Path]:
        self._count += 1
        base = self.workdir / f"cmd{self._count}"
        return base.with_suffix(".out"), base.with_suffix(".err"), base.with_suffix(".paused")

    def _env(self, home: Path | None, extra: dict[str, str]) -> dict[str, str]:
        env = {**self.lab.env, **extra}
        if home is not None:
            env["RUNFLOW_HOME"] = str(home)
        return env

    def _popen(self, argv: list[str], env: dict[str, str], out: Path,
               err: Path) -> subprocess.Popen:
        # Files, not pipes: a process stopped or killed mid-write cannot wedge a pipe.
        with open(out, "w") as o, open(err, "w") as e:
            return subprocess.Popen([*runflow_argv(), *argv], stdout=o, stderr=e,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def runflow(self, *args: Any, home: Path | None = None, timeout: float = 120,
                env: dict[str, str] | None = None) -> Done:
        """Run a command to its end, in a process group of its own."""
        argv = [str(a) for a in args]
        out, err, _ = self._files()
        proc = self._popen(argv, self._env(home, env or {}), out, err)
        return _finish(proc, argv, out, err, timeout)

    def start(self, *args: Any, pause: str, home: Path | None = None,
              timeout: float = 60) -> Paused:
        """Start a command with the pause_point plugin and return once it stopped at `pause`
        ("STEP:EVENT" or "STEP:EVENT@HOST")."""
        argv = [str(a) for a in args] + ["--plugin", str(PAUSE_PLUGIN)]
        out, err, marker = self._files()
        proc = self._popen(argv, self._env(home, {"RUNFLOW_DRILL_PAUSE": pause,
                                                  "RUNFLOW_DRILL_MARKER": str(marker)}),
                           out, err)
        self._started.append(proc)
        deadline = time.monotonic() + timeout
        # Stopped, not only there: a SIGCONT sent before the stop took effect would be lost,
        # and the stop then come after it, for good. The thread that sent the event (the
        # marker names it) is the one to wait for: another may be starting a command (vfork),
        # which holds it in an uninterruptible wait until the child, stopped too, execs.
        while not marker.exists() or not _stopped(proc.pid, json.loads(marker.read_text())):
            if proc.poll() is not None:
                raise AssertionError(f"runflow {' '.join(argv)} ended (exit {proc.returncode}) "
                                     f"before {pause}:\n{err.read_text()}")
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f"runflow {' '.join(argv)} did not reach {pause} in "
                                     f"{timeout:g} s:\n{err.read_text()}")
            time.sleep(0.01)
        return Paused(proc, argv, json.loads(marker.read_text()), out, err)

    def run_gre(self, target: str, *extra: Any, **kwargs: Any) -> Done:
        return self.runflow(GRE, "--lab", "--target", target, *extra, **kwargs)

    def start_gre(self, target: str, pause: str, **kwargs: Any) -> Paused:
        return self.start(GRE, "--lab", "--target", target, pause=pause, **kwargs)

    def show(self, run_id: str, home: Path | None = None) -> dict[str, Any]:
        return json.loads(expect(self.runflow("show", run_id, "--json", home=home), OK).stdout)

    # -- host state --------------------------------------------------------------------------

    def hosts(self) -> list[dict[str, Any]]:
        return self.lab.state()["hosts"]

    def snapshot(self) -> dict[str, Any]:
        """Both hosts (lab.snapshot()) and, per host, what its dockerd runs with."""
        snap = self.lab.snapshot()
        for host in self.hosts():
            snap[host["name"]]["dockerd"] = dockerd_state(Path(host["dir"]) / "docker")
        return snap

    def end_state(self, target: str) -> dict[str, Any]:
        """The hosts after an undisturbed run of the target (made once, then rolled back:
        ask for it while the hosts are as they came up)."""
        if target not in self._ends:
            done = expect(self.run_gre(target), OK)
            self._ends[target] = comparable(self.snapshot())
            expect(self.runflow("rollback", run_of(done)), OK)
            self._assert_pristine("an undisturbed run and its rollback")
        return self._ends[target]

    def assert_before(self, after: str) -> None:
        """Both hosts are as the lab came up; the lab is then clean for the next case."""
        self._assert_pristine(after)
        self.dirty = False

    def _assert_pristine(self, after: str) -> None:
        now = self.snapshot()
        assert now == self.pristine, (f"after {after}, the hosts differ from before:\n"
                                      + "\n".join(differences(self.pristine, now)))

    def assert_end(self, target: str, after: str) -> None:
        """Both hosts are as an undisturbed run of the target leaves them (end_state(target)
        must have been made before the case changed anything)."""
        want, now = self._ends[target], comparable(self.snapshot())
        assert now == want, (f"after {after}, the hosts differ from an undisturbed run's end:\n"
                             + "\n".join(differences(want, now)))

    def has_link(self, host: str, name: str) -> bool:
        """Whether the host has a link of that name (asked of `ip`, not of runflow)."""
        netns = next(h["netns"] for h in self.hosts() if h["name"] == host)
        return subprocess.run(["ip", "-n", netns, "link", "show", "dev", name],
                              capture_output=True).returncode == 0

    # -- the lab's daemons -------------------------------------------------------------------

    def host_dir(self, name: str) -> Path:
        return Path(next(h["dir"] for h in self.hosts() if h["name"] == name))

    def kill_dockerd(self, host: str, *, must_run: bool = True) -> None:
        """SIGKILL the dockerd the lab tracks on host (its containerd lives on)."""
        pid = read_pid(self.host_dir(host) / "docker" / "dockerd.started")
        if pid and alive(pid):
            _kill(pid)
        else:
            assert not must_run, f"the lab tracks no live dockerd on {host}"

    def start_dockerd(self, host: str) -> None:
        """Start the host's dockerd again as the lab does (`python3 -m
        runflow.core.lab.dockerd start DIR`), if none answers."""
        docker_dir = self.host_dir(host) / "docker"
        if load_dockerd(docker_dir).answers():
            return
        done = subprocess.run([sys.executable, "-m", "runflow.core.lab.dockerd", "start",
                               str(docker_dir)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"dockerd on {host} did not start: {done.stderr}"

    def kill_switch(self, host: str) -> None:
        """SIGKILL the host's ovs-vswitchd (by the pid file the lab reads)."""
        pid = read_pid(self.host_dir(host) / "ovs" / "ovs-vswitchd.pid")
        assert pid and alive(pid), f"no live ovs-vswitchd on {host}"
        _kill(pid)

    def start_switch(self, host: str) -> None:
        """Start the host's ovs-vswitchd again with the arguments `lab up` gave it. The lab
        has no command for this (core/lab/ovs.py starts the switch only together with a new
        database), so the drill does what OvsDaemons.start does for the switch alone."""
        ovs = next(h for h in Lab(self.lab.dir).hosts() if h.name == host).ovs()
        state = ovs.state_dir
        if (pid := read_pid(state / "ovs-vswitchd.pid")) and alive(pid):
            return
        argv = ["ovs-vswitchd", ovs.endpoint, f"--unixctl={ovs.switch_control}",
                f"--pidfile={state / 'ovs-vswitchd.pid'}",
                f"--log-file={state / 'ovs-vswitchd.log'}", "-vconsole:off"]
        with open(state / "ovs-vswitchd.console", "a") as console:
            subprocess.Popen(ovs.namespace.popen_argv(argv), env=ovs.env,
                             stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                             start_new_session=True)
        ovs.vsctl("init")  # returns once the switch has caught up with the database

    # -- a case that broke the lab -----------------------------------------------------------

    def stop_leftovers(self) -> None:
        """Kill the group of a command a failed case left stopped (it holds the host locks)."""
        for proc in self._started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._started.clear()

    def rebuild(self) -> None:
        """The lab down and up again (after a case left the hosts as they should not be)."""
        self.lab.runflow("lab", "down")
        kill_strays(self.lab.dir)
        up = self.lab.runflow("lab", "up", "--prefix", self.lab.prefix)
        assert up.returncode == 0, up.stderr
        self._ends.clear()
        self.pristine = self.snapshot()
        self.dirty = False


def _stopped(pid: int, marker: dict[str, Any]) -> bool:
    """Whether the thread of process pid that the marker names is stopped."""
    try:
        stat = Path(f"/proc/{pid}/task/{marker['tid']}/stat").read_text()
    except FileNotFoundError:  # the process has just ended
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _kill(pid: int) -> None:
    """SIGKILL a daemon and wait until it is gone, reaped: the lab's daemons are children of
    the machine's init, which here reaps about every 2 s, and until then the pid in the
    daemon's pid file still names a process (a supervisor reaps its own child at once)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)


def kill_strays(root: Path) -> list[str]:
    """Processes still running from under the lab's directory after `lab down` (a daemon the
    lab lost track of): stopped by their pids. Returns their command lines."""
    strays = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{root}/" in cmdline:
            strays.append(cmdline)
            stop_pid(int(entry.name), timeout=5)
    return strays


def dockerd_state(docker_dir: Path) -> dict[str, Any]:
    """Whether the host's dockerd answers, whether it is the one the lab tracks, and the
    bridge network it runs with (what `-b`/`--fixed-cidr` made of it): the file docker.daemon
    edits is in lab.snapshot(); this is what the running daemon took from it."""
    daemon = load_dockerd(docker_dir)
    if not daemon.answers():
        return {"answers": False}
    started = read_pid(docker_dir / "dockerd.started")
    done = subprocess.run(["docker", "-H", daemon.url, "network", "inspect", "bridge"],
                          capture_output=True, text=True)
    network = None
    if done.returncode == 0:
        found = json.loads(done.stdout)[0]
        network = {"ipam": found["IPAM"]["Config"], "options": found["Options"]}
    return {"answers": True, "tracked": bool(started and alive(started)),
            "bridge_network": network}


def comparable(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot that two runs building the same thing share: without MACs (new links get
    random ones) and with every run id as RUN (OVS rows carry the run that made them)."""
    snap = {host: {**state, "netns": without_macs(state["netns"])}
            for host, state in snap.items()}
    return json.loads(RUN_ID.sub("RUN", json.dumps(snap)))


def run_of(done: Done) -> str:
    """The run id from a run's first progress line ("run ID: ...")."""
    found = RUN_ID.search(done.stderr)
    assert found, f"no run id in the output of {done}"
    return found.group()


def assert_journal_settled(show: dict[str, Any], run_state: str, step_states: set[str]) -> None:
    """The journal agrees with hosts that were settled: the run in run_state, no step left in
    doubt (applying, undoing), every step in one of step_states."""
    steps = {f"{s['host']}:{s['key']}": s["state"] for s in show["steps"]}
    in_doubt = {k: v for k, v in steps.items() if v in IN_DOUBT}
    assert not in_doubt, f"steps left in doubt in the journal: {in_doubt}"
    assert show["run"]["state"] == run_state, (
        f"the journal says run {show['run']['id']} is {show['run']['state']}, not {run_state}")
    odd = {k: v for k, v in steps.items() if v not in step_states}
    assert not odd, f"with the run {run_state}, steps in other states than {step_states}: {odd}"


ROLLED_BACK_STEPS = {"pending", "skipped", "undone", "failed"}
SUCCEEDED_STEPS = {"applied", "skipped"}


def assert_outcome_agrees(drill: Drill, done: Done, run_id: str, target: str,
                          what: str) -> None:
    """A command that went through a fault ends with an exit code of the README's table and
    without a traceback, and the hosts and the journal say what the code says: 0 the end
    state (run, resume) or the before state (rollback); 1 the before state; 3 a run left for
    attention."""
    expect(done, OK, ROLLED_BACK, NEEDS_ATTENTION)
    rollback = done.argv[0] == "rollback"
    if done.code == OK and rollback or done.code == ROLLED_BACK and not rollback:
        drill.assert_before(f"{what} (exit {done.code})")
        assert_journal_settled(drill.show(run_id), "rolled_back", ROLLED_BACK_STEPS)
    elif done.code == OK:
        drill.assert_end(target, f"{what} (exit 0)")
        assert_journal_settled(drill.show(run_id), "succeeded", SUCCEEDED_STEPS)
    elif done.code == NEEDS_ATTENTION:
        state = drill.show(run_id)["run"]["state"]
        assert state in ("failed", "rollback_failed"), (
            f"{what} exited 3 (needs attention) while the journal says the run is {state}")
    else:
        raise AssertionError(f"{what}: exit {done.code} is not in the README's table for "
                             f"this command: {done}")
