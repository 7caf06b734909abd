"""Runs and rollbacks for the watcher: in this process, through the Session (journaled like any
run, with the event that caused it in the run's record), on a worker's lane.

A lane is one worker's threads and connections, one per host (core/engine.py's HostRuntime),
kept from one run to the next: the docker client, the OVSDB connection and the netlink socket
are opened once, not per run. A lane whose run failed is closed and opened afresh for the next
run, since its connections may be what failed (a restarted dockerd or ovsdb-server).
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, NamedTuple

from ..engine import Engine, HostRuntime
from ..errors import (EXIT_INVALID, EXIT_NEEDS_ATTENTION, EXIT_OK, EXIT_ROLLED_BACK,
                      InputError, RunflowError, debugging)
from ..hosts import Host
from ..limits import MAX_VALUE_SIZE, too_large
from ..plan import build
from ..session import AlreadyDone, Options, Session
from ..ssh import ConnectionLost
from .leases import HostLeases, Stopped
from .queue import RunRef
from .sources import WatchedObject
from .watches import EVENT_VAR, Watch


class Lane:
    """One worker's runtimes, by host name."""

    def __init__(self) -> None:
        self._runtimes: dict[str, HostRuntime] = {}

    def runtimes(self, host: Host) -> dict[str, HostRuntime]:
        rt = self._runtimes.get(host.name)
        if rt is not None and rt.host != host:  # the host as this run names it differs
            self.drop(host)
            rt = None
        if rt is None:
            rt = self._runtimes[host.name] = HostRuntime.start(host)
        return {host.name: rt}

    def drop(self, host: Host) -> None:
        rt = self._runtimes.pop(host.name, None)
        if rt is not None:
            try:
                rt.close()
            except Exception:  # closing is best effort: what failed is being replaced
                pass

    def close(self) -> None:
        for rt in list(self._runtimes.values()):
            self.drop(rt.host)


class Outcome(NamedTuple):
    """How a run or rollback ended, with the command line's exit code for it."""

    code: int  # 0 done · 1 failed, rolled back · 2 invalid input · 3 needs attention · 4 locked
    run_id: str | None
    state: str | None  # the run's state in the journal, if it has one
    message: str  # why it failed
    seconds: float

    @property
    def done(self) -> bool:
        return self.code == EXIT_OK


class Runner:
    """Starts and rolls back the runs of the watches, for the workers."""

    def __init__(self, session: Session, options: Options, leases: HostLeases,
                 stop: threading.Event, *, lock_timeout: float | None) -> None:
        self.session = session
        self.options = options
        self.leases = leases
        self.stop = stop
        self.lock_timeout = lock_timeout

    def warm_up(self, watches: list[Watch], lane: Lane) -> None:
        """Open a new lane's connections before its first run, as `runflow plan` would: observe
        (change nothing) the steps of each watch that gives an example `event` in [vars]. The
        first run of a cold lane otherwise pays for them, and for importing the backends'
        libraries: 0.3-2 s here, the longest waits of a burst."""
        for watch in watches:
            if EVENT_VAR not in watch.workflow.vars:
                continue
            for host in watch.hosts:
                try:
                    plan = build(watch.workflow, self.session.plugins, watch.inventory, [host],
                                 target=self.options.target, cli_vars=self.options.cli_vars)
                    Engine(self.session.plugins, "warm-up", plan.per_host(),
                           runtimes=lane.runtimes(host)).preview()
                except (Exception, ConnectionLost):
                    lane.drop(host)  # a warm-up is worth trying, not failing for: runs say why

    def start(self, watch: Watch, host: Host, obj: WatchedObject, action: str,
              lane: Lane) -> Outcome:
        """A run of the watch's workflow for the object, with the event as its `event` var."""
        started = time.monotonic()
        now = time.time()
        event = {**obj.vars, "source": watch.spec.source, "host": host.name, "action": action,
                 "time": now}
        cause = {"watch": watch.name, "source": watch.spec.source, "host": host.name,
                 "id": obj.id, "incarnation": obj.incarnation, "name": obj.label,
                 "action": action, "time": now}
        if too_large(event):
            return Outcome(EXIT_INVALID, None, None, f"what the source says of it holds more "
                           f"than {MAX_VALUE_SIZE:,} characters, the most a var may hold",
                           time.monotonic() - started)
        try:
            plan = build(watch.workflow, self.session.plugins, watch.inventory, [host],
                         target=self.options.target,
                         cli_vars={**self.options.cli_vars, "event": event})
        except InputError as exc:
            return Outcome(EXIT_INVALID, None, None, str(exc), time.monotonic() - started)

        def run() -> tuple[str | None, int]:
            return self.session.run(plan, self.options, cause=cause,
                                    runtimes=lane.runtimes(host))

        return self._drive(host, lane, run, started, done_state="succeeded")

    def roll_back(self, watch: Watch, host: Host, ref: RunRef, lane: Lane) -> Outcome:
        """Undo a run in place (its object is gone, or it was made for an earlier
        incarnation, or it did not end well)."""
        started = time.monotonic()

        def run() -> tuple[str | None, int]:
            record = self.session.load(ref.run_id)
            # The lane reaches the host as the watch's inventory says; a run made from
            # another inventory is rolled back with threads and connections of its own.
            same = record.record.get("inventory", {}).get("text") == watch.inventory.text
            try:
                return record.id, self.session.rollback(
                    record, self.options, runtimes=lane.runtimes(host) if same else None)
            except AlreadyDone:
                return record.id, EXIT_OK

        return self._drive(host, lane, run, started, done_state="rolled_back",
                           run_id=ref.run_id)

    def _drive(self, host: Host, lane: Lane, body: Any, started: float, *, done_state: str,
               run_id: str | None = None) -> Outcome:
        """Run body under the host's lock; turn what it returns or raises into an Outcome
        (with the run's state: done_state if it went well, else the journal's)."""
        code, message, state = EXIT_OK, "", None
        try:
            with self.leases.held(host, self.stop, self.lock_timeout):
                run_id, code = body()
        except Stopped:
            code, message = EXIT_ROLLED_BACK, "not started: the watcher stops"
        except RunflowError as exc:
            code, message = exc.exit_code, str(exc)
        except ConnectionLost as exc:  # the step in flight is in doubt: the watcher settles it
            code, message = exc.exit_code, lost_connection(exc)
        except Exception as exc:  # a bug: reported, and the object tried again later
            code, message = EXIT_NEEDS_ATTENTION, f"{type(exc).__name__}: {exc}"
            if debugging():
                message += "\n" + traceback.format_exc().rstrip()
        if code == EXIT_OK:
            state = done_state
        elif run_id is not None:
            try:
                state = self.session.journal.find(run_id).state
                message = message or self._why(run_id)
            except RunflowError:  # the run was never journaled
                run_id = None
        if code != EXIT_OK:
            lane.drop(host)
        return Outcome(code, run_id, state, message, time.monotonic() - started)

    def _why(self, run_id: str) -> str:
        """Why a run failed: the message of its failure (its latest state, rolled back, has
        none)."""
        for event in reversed(self.session.journal.events(run_id)):
            if event["kind"] == "run" and event["dest"] in ("failed", "rollback_failed") \
                    and event["message"]:
                return event["message"]
        return "see `runflow show " + run_id + "`"


def lost_connection(exc: ConnectionLost) -> str:
    """A lost SSH connection as the watcher says it (not ConnectionLost's advice to resume:
    the watcher settles the run itself once the host is back)."""
    return f"lost the SSH connection to host {exc.host} ({exc.detail})"
