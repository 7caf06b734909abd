"""Open vSwitch for lab hosts: one ovsdb-server and one ovs-vswitchd per host, and the
underlay bridge that lets the userspace datapath carry tunnels.

This machine kind has no openvswitch kernel module, so every bridge uses the userspace datapath
(`datapath_type=netdev`). The daemons run as children of this process, not `--detach`ed: a
detached daemon outlives its parent as a zombie that still answers `kill -0`, while a child can
be stopped by pid and waited for. Everything a host's daemons keep (database, sockets, pid and
log files) lives in its own state directory; keep that directory short (mkdtemp(dir="/tmp")),
because a unix socket path may not exceed 108 bytes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .namespaces import Namespace
from .processes import read_pid, runs_with, stop_pid

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class OvsDaemons:
    """The OVS daemons of one lab host: its database server and its switch, both running in
    the host's network namespace, with all their files in `state_dir`."""

    def __init__(self, namespace: Namespace, state_dir: str | Path, *, timeout: float = 10) -> None:
        self.namespace = namespace
        self.state_dir = Path(state_dir)
        self.timeout = timeout
        self._detached = False
        self._server: subprocess.Popen | None = None
        self._switch: subprocess.Popen | None = None
        if len(str(self.db_socket)) > _SOCKET_PATH_MAX:
            raise ValueError(f"state directory {str(self.state_dir)!r} is too long for a unix "
                             f"socket path (max {_SOCKET_PATH_MAX} bytes): use a shorter one")

    # -- where things are --------------------------------------------------------------------

    @property
    def db_socket(self) -> Path:
        return self.state_dir / "db.sock"

    @property
    def endpoint(self) -> str:
        """The OVSDB address for an inventory's `ovsdb` entry and ovs-vsctl's --db."""
        return f"unix:{self.db_socket}"

    @property
    def switch_control(self) -> Path:
        return self.state_dir / "ovs-vswitchd.ctl"

    @property
    def env(self) -> dict[str, str]:
        """Environment for OVS programs, so that nothing they write lands in /var/run or
        /var/log of the machine."""
        d = str(self.state_dir)
        return {**os.environ, "OVS_RUNDIR": d, "OVS_DBDIR": d, "OVS_LOGDIR": d,
                "OVS_SYSCONFDIR": d}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, detached: bool = False) -> OvsDaemons:
        """Create the database, start ovsdb-server and ovs-vswitchd, and return when the switch
        has applied the database once. Stops what it started if any part fails.

        detached: the daemons outlive this process (in a session of their own, away from the
        terminal's signals), for `runflow lab up`; `stop_detached` ends them by their pids."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._detached = detached
        try:
            self._run(["ovsdb-tool", "create", str(self.state_dir / "conf.db"), str(SCHEMA)])
            self._server = self._spawn([
                "ovsdb-server", str(self.state_dir / "conf.db"),
                f"--remote=punix:{self.db_socket}",
                f"--unixctl={self.state_dir / 'ovsdb-server.ctl'}",
                f"--pidfile={self.state_dir / 'ovsdb-server.pid'}",
                f"--log-file={self.state_dir / 'ovsdb-server.log'}",
            ])
            self._wait_for(self.db_socket.exists, self._server, "ovsdb-server")
            self.vsctl("--no-wait", "init")
            self._switch = self._spawn([
                "ovs-vswitchd", self.endpoint,
                f"--unixctl={self.switch_control}",
                f"--pidfile={self.state_dir / 'ovs-vswitchd.pid'}",
                f"--log-file={self.state_dir / 'ovs-vswitchd.log'}",
            ])
            # Without --no-wait, init returns once ovs-vswitchd has caught up with the database.
            self.vsctl("init")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the switch (removing the tap devices it made), then the database server.
        Safe to call twice, or after a failed start."""
        if self._switch is not None:
            _stop(self._switch, self._ask_switch_to_exit, self.timeout)
            self._switch = None
        if self._server is not None:
            _stop(self._server, self._server.terminate, self.timeout)
            self._server = None

    def stop_detached(self) -> None:
        """Stop daemons started (detached) by an earlier process, by the pids they wrote."""
        switch = self._pid("ovs-vswitchd")
        if switch:
            subprocess.run(["ovs-appctl", "-t", str(self.switch_control), "exit", "--cleanup"],
                           capture_output=True, env=self.env, timeout=self.timeout)
            stop_pid(switch, self.timeout)
        server = self._pid("ovsdb-server")
        if server:
            stop_pid(server, self.timeout)

    def running(self) -> bool:
        """Both daemons are alive (by their pid files)."""
        return all(self._pid(daemon) for daemon in ("ovsdb-server", "ovs-vswitchd"))

    def _pid(self, daemon: str) -> int | None:
        """The pid daemon's pid file names, while that process is this host's daemon (a pid
        file outlives a killed daemon, and its pid may be reused)."""
        pidfile = self.state_dir / f"{daemon}.pid"
        pid = read_pid(pidfile)
        return pid if pid is not None and runs_with(pid, f"--pidfile={pidfile}") else None

    def _ask_switch_to_exit(self) -> None:
        # --cleanup deletes the datapath and its tap devices as the switch exits.
        done = subprocess.run(["ovs-appctl", "-t", str(self.switch_control), "exit", "--cleanup"],
                              capture_output=True, env=self.env, timeout=self.timeout)
        if done.returncode != 0 and self._switch is not None:
            self._switch.terminate()

    def __enter__(self) -> OvsDaemons:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------------------

    def vsctl(self, *args: str) -> str:
        """Run ovs-vsctl against this host's database; returns its stdout."""
        return self._run(["ovs-vsctl", f"--db={self.endpoint}", f"--timeout={self.timeout:g}",
                          *args]).stdout

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess:
        done = subprocess.run(self.namespace.popen_argv(argv), capture_output=True, text=True,
                              env=self.env, timeout=self.timeout + 5)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in {self.namespace.name} "
                               f"(exit {done.returncode}): {done.stderr.strip()}")
        return done

    def _spawn(self, argv: Sequence[str]) -> subprocess.Popen:
        # `ip netns exec` execs the program, so the child's pid is the daemon's pid. The log
        # goes to the log file; the console only gets what fails before the log is open.
        console = self.state_dir / f"{Path(argv[0]).name}.console"
        with console.open("w") as out:
            return subprocess.Popen(self.namespace.popen_argv([*argv, "-vconsole:off"]),
                                    env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out, start_new_session=self._detached)

    def _wait_for(self, ready: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            if proc.poll() is not None:
                console = (self.state_dir / f"{what}.console").read_text().strip()
                raise RuntimeError(f"{what} exited {proc.returncode} in {self.namespace.name}: "
                                   f"{console}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not become ready in {self.timeout:g} s")
            time.sleep(0.01)


def _stop(proc: subprocess.Popen, ask_to_exit: Callable[[], None], timeout: float) -> None:
    """Ask a child to exit and wait for it; kill it if it does not exit in time."""
    if proc.poll() is None:
        ask_to_exit()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def build_underlay(ovs: OvsDaemons, uplink: str, address: str, *, bridge: str = "br-phy",
                   mtu: int = 1600) -> None:
    """Give a lab host the underlay that userspace tunnels need: a netdev bridge holding the
    host's underlay address, with the uplink (e.g. a veth to the other host) as its port.

    The userspace datapath routes tunnel packets only out of an address on one of its own
    bridges; with the address on the plain veth they are dropped ("native tunnel routing
    failed"). The MTU leaves room for the tunnel headers of full-size inner packets.
    """
    ovs.vsctl("--may-exist", "add-br", bridge, "--", "set", "Bridge", bridge,
              "datapath_type=netdev", "--", "set", "Interface", bridge, f"mtu_request={mtu}",
              "--", "--may-exist", "add-port", bridge, uplink)
    ns = ovs.namespace
    ns.run(["ip", "link", "set", uplink, "mtu", str(mtu), "up"])
    ns.run(["ip", "addr", "add", address, "dev", bridge])
    ns.run(["ip", "link", "set", bridge, "up"])
