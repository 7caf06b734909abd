"""`runflow watch`: one process that keeps every active object of its watches with one succeeded
run of the watch's workflow, and rolls back the runs of objects that are gone.

Threads: one listener per watch and host (connects its source, lists what is active, then
follows the event stream; reconnects with a growing delay when it drops, and lists again),
`jobs` workers that settle objects (core/watch/queue.py), and the main thread, which waits for
a signal. The journal is the watcher's memory: on start it finds the runs of its watches that
are in place by their cause, so a watcher that was down catches up without duplicates.

SIGTERM or SIGINT: no new work is started, the runs in flight finish (or fail and roll back,
as any run), the attachments made stay; a second signal leaves at once, and the next start
settles what was in flight.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import (EXIT_INVALID, EXIT_LOCKED, EXIT_NEEDS_ATTENTION, EXIT_OK,
                      EXIT_ROLLED_BACK, failure_line)
from ..hosts import Host
from ..journal import RunRecord
from ..plugins import Plugins
from ..session import Options, Session
from ..ssh import ConnectionLost
from .leases import HostLeases, WatchClaim, claim_watches
from .queue import Key, RunRef, Tracked, WorkQueue, same
from .runner import Lane, Outcome, Runner, lost_connection
from .sources import Source, SourceEvent, SourceUnavailable, WatchedObject
from .watches import Watch

FIRST_RECONNECT = 0.5  # seconds; doubled after each failure
LAST_RECONNECT = 30.0


class Log:
    """One line per event and per run, on standard error, whole lines from any thread."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()

    def __call__(self, text: str, *, problem: bool = False) -> None:
        if self.quiet and not problem:
            return
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        with self._lock:
            try:
                print(f"{stamp} {text}", file=sys.stderr, flush=True)
            except (OSError, ValueError):  # nobody reads standard error any more
                pass


class Watcher:
    def __init__(self, watches: list[Watch], options: Options, plugins: Plugins, home: Path,
                 *, jobs: int = 4, once: bool = False, lock_timeout: float | None = None,
                 log: Log | None = None) -> None:
        self.watches = {w.name: w for w in watches}
        self.options = options
        self.plugins = plugins
        self.home = home
        self.jobs = jobs
        self.once = once
        self.log = log or Log()
        self.stop = threading.Event()
        self.session = Session(plugins, home, locks_held=True)
        holder = f"runflow-watch:{','.join(self.watches)}"
        self.runner = Runner(self.session, options, HostLeases(holder, self._say),
                             self.stop, lock_timeout=lock_timeout)
        self.queue = WorkQueue(self._settle, retry=not once)
        self._sources: set[Source] = set()
        self._sources_lock = threading.Lock()
        self._worst = EXIT_OK  # for --once: how the worst settlement ended
        self._claim: WatchClaim | None = None

    # -- the main thread ----------------------------------------------------------------------

    def run(self) -> int:
        """Watch until a signal (or, with once, reconcile and return); the exit code."""
        try:
            self._claim = claim_watches(self.home, list(self.watches))
            self._adopt_runs_in_place()
            self.queue.start(self.jobs, self._lane, Lane.close)
            listeners = [threading.Thread(target=self._listen, args=(watch, host),
                                          name=f"watch-{watch.name}-{host.name}", daemon=True)
                         for watch in self.watches.values() for host in watch.hosts]
            with _signals(self._on_signal):
                for listener in listeners:
                    listener.start()
                if self.once:
                    for listener in listeners:
                        listener.join()
                    self.queue.wait_idle(self.stop)
                    self.stop.set()
                else:
                    self.stop.wait()
                self._say("stopping: the runs in flight finish, what was made stays")
                self._close_sources()
                for listener in listeners:
                    listener.join()
                self.queue.stop()
        finally:
            self.session.close()
            self._close_hosts()
            if self._claim is not None:
                self._claim.release()
        return self._worst if self.once else EXIT_OK

    def _lane(self) -> Lane:
        """A worker's lane, warmed up (in the worker's thread)."""
        lane = Lane()
        self.runner.warm_up(list(self.watches.values()), lane)
        return lane

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop.is_set():
            self._say(f"{signal.Signals(signum).name} again: leaving now; the runs in flight "
                      "are settled when the watch starts again", problem=True)
            os._exit(EXIT_NEEDS_ATTENTION)
        self.stop.set()

    def _adopt_runs_in_place(self) -> None:
        """The journal's runs of these watches that are not rolled back, by object."""
        for watch in self.watches.values():
            for run in self.session.journal.caused_runs(watch.name, [h.name for h in watch.hosts]):
                if run.state == "pending":  # journaled, never started: it changed nothing
                    continue
                cause = run.record["cause"]
                self.queue.adopt(Key(watch.name, cause["host"], cause["id"]),
                                 [_run_ref(run)])

    def _close_hosts(self) -> None:
        """Close the hosts' connections (an SSH host's master): the watcher owns them, its runs
        leave them open (core/watch/leases.py)."""
        hosts = {id(h): h for watch in self.watches.values() for h in watch.hosts}
        for host in hosts.values():
            host.close()

    def _close_sources(self) -> None:
        with self._sources_lock:
            for source in self._sources:
                source.close()

    # -- listeners: a source on a host --------------------------------------------------------

    def _listen(self, watch: Watch, host: Host) -> None:
        where = f"{watch.name} [{host.name}]"
        delay = FIRST_RECONNECT
        while not self.stop.is_set():
            source = watch.source(host, watch.match)
            with self._sources_lock:
                if self.stop.is_set():
                    return
                self._sources.add(source)
            try:
                self.runner.leases.reconnect(host)  # an SSH host's master lost since: anew
                source.connect()
                active = source.active()
                self._reconcile(watch, host, active)
                self._say(f"{where}: {watch.spec.source} connected, {len(active)} active")
                delay = FIRST_RECONNECT
                if self.once:
                    return
                for event in source.stream():
                    if self.stop.is_set():
                        return
                    self._on_event(watch, host, source, event)
                if not self.stop.is_set():
                    raise SourceUnavailable("its event stream ended")
            # A source's own failure, or its SSH host's master lost: never the watcher's end.
            except (Exception, ConnectionLost) as exc:
                if self.stop.is_set():
                    return
                why = _unavailable(exc, watch.spec.source)
                if self.once:
                    self._say(f"{where}: {why}", problem=True)
                    self._worsen(EXIT_ROLLED_BACK)
                    return
                self._say(f"{where}: {why}; connecting again in {delay:g} s", problem=True)
            finally:
                with self._sources_lock:
                    self._sources.discard(source)
                source.close()
            self.stop.wait(delay)
            delay = min(delay * 2, LAST_RECONNECT)

    def _reconcile(self, watch: Watch, host: Host, active: list[WatchedObject]) -> None:
        """What is active now has a run, what is not has none: level-triggered."""
        listed = {obj.id: obj for obj in active}
        for key in self.queue.keys(watch.name, host.name):
            if key.id not in listed:
                self.queue.want(key, None, "reconcile")
        for obj in active:
            self.queue.want(Key(watch.name, host.name, obj.id), obj, "reconcile")

    def _on_event(self, watch: Watch, host: Host, source: Source, event: SourceEvent) -> None:
        spec = watch.spec
        if event.action not in spec.start and event.action not in spec.stop:
            return
        self._say(f"{watch.name} [{host.name}]: {spec.source} {event.action} "
                  f"{event.name or event.id} ({event.id[:12]})")
        obj = source.lookup(event.id)
        if event.action in spec.stop and not (
                obj is not None and obj.since is not None and obj.since > event.time):
            obj = None  # (unless it started again since: the event is older than that start)
        self.queue.want(Key(watch.name, host.name, event.id), obj, event.action)

    # -- workers: settling an object ----------------------------------------------------------

    def _settle(self, t: Tracked, desired: WatchedObject | None, action: str, lane: Lane
                ) -> bool:
        """Roll back the object's runs that do not stand for it as it is now; start one if it
        is active and has none. True when it is settled, False to try again later."""
        try:
            return self._settle_object(t, desired, action, lane)
        except Exception as exc:  # a bug must cost one object a retry, not the worker
            self._say(f"{t.key.watch} [{t.key.host}] {t.label}: "
                      f"{failure_line(exc, method='settling')}", problem=True)
            self._worsen(EXIT_NEEDS_ATTENTION)
            return False

    def _settle_object(self, t: Tracked, desired: WatchedObject | None, action: str,
                       lane: Lane) -> bool:
        watch = self.watches[t.key.watch]
        host = watch.host(t.key.host)
        where = f"{watch.name} [{host.name}] {t.label}"
        for ref in list(t.runs):
            if desired is not None and ref.incarnation == desired.incarnation and \
                    ref.state == "succeeded":
                continue
            outcome = self.runner.roll_back(watch, host, ref, lane)
            why = (f"{action}: it is not active" if desired is None
                   else "it was made before a restart" if ref.incarnation != desired.incarnation
                   else f"it ended {ref.state.replace('_', ' ')}")
            if outcome.done:
                self._say(f"{where}: run {ref.run_id} rolled back ({why}) "
                          f"{_ms(outcome)}")
                t.runs.remove(ref)
                continue
            ref.state = outcome.state or ref.state
            self._failed(t, desired, where, f"rollback of run {ref.run_id} failed", outcome)
            return False
        if desired is None or t.refused == desired.incarnation or t.runs:
            return True
        if self.stop.is_set():  # no new run once the watch stops
            return False
        outcome = self.runner.start(watch, host, desired, action, lane)
        if outcome.done:
            self._say(f"{where}: run {outcome.run_id} succeeded ({action}) {_ms(outcome)}")
            t.runs.append(RunRef(outcome.run_id or "", desired.incarnation, "succeeded",
                                 desired.label))
            return True
        if outcome.code == EXIT_INVALID:
            t.refused = desired.incarnation
            self._say(f"{where}: not run: {outcome.message} (tried again when it restarts)",
                      problem=True)
            self._worsen(EXIT_ROLLED_BACK)
            return True
        if outcome.run_id is None:  # it may have been journaled all the same: ask the journal
            t.runs = self._runs_in_place(t.key)
        elif outcome.state != "rolled_back":
            t.runs.append(RunRef(outcome.run_id, desired.incarnation, outcome.state or "",
                                 desired.label))
        what = f"run {outcome.run_id} {_ended(outcome)}" if outcome.run_id else "the run failed"
        self._failed(t, desired, where, what, outcome)
        return False

    def _runs_in_place(self, key: Key) -> list[RunRef]:
        return [_run_ref(run) for run in self.session.journal.caused_runs(key.watch, [key.host])
                if run.record["cause"]["id"] == key.id and run.state != "pending"]

    def _failed(self, t: Tracked, desired: WatchedObject | None, where: str, what: str,
                outcome: Outcome) -> None:
        self._worsen({EXIT_LOCKED: EXIT_LOCKED, EXIT_ROLLED_BACK: EXIT_ROLLED_BACK}.get(
            outcome.code, EXIT_NEEDS_ATTENTION))
        delay = self.queue.retry_delay(t)
        if self.stop.is_set():
            again = ""
        elif not same(t.desired, desired):  # (read without the queue's lock: for the log)
            again = "; it changed meanwhile: settling it again"
        else:
            again = f"; trying again in {delay:g} s" if delay is not None else ""
        self._say(f"{where}: {what}: {outcome.message}{again}", problem=True)

    def _worsen(self, code: int) -> None:
        order = (EXIT_OK, EXIT_ROLLED_BACK, EXIT_NEEDS_ATTENTION, EXIT_LOCKED)
        if order.index(code) > order.index(self._worst):
            self._worst = code

    def _say(self, text: str, *, problem: bool = False) -> None:
        self.log(text, problem=problem)


def _unavailable(exc: BaseException, source: str) -> str:
    """Why a listener lost its source, for the log."""
    if isinstance(exc, SourceUnavailable):
        return str(exc)
    if isinstance(exc, ConnectionLost):
        return lost_connection(exc)
    return failure_line(exc, method="watching", plugin=f"source {source}")


def _run_ref(run: RunRecord) -> RunRef:
    cause = run.record["cause"]
    return RunRef(run.id, cause["incarnation"], run.state, cause.get("name", ""))


def _ms(outcome: Outcome) -> str:
    return f"in {outcome.seconds * 1000:.0f} ms"


def _ended(outcome: Outcome) -> str:
    return {"rolled_back": "failed and was rolled back",
            "rollback_failed": "failed and its rollback failed"}.get(
        outcome.state or "", "failed")


@contextmanager
def _signals(handler: Any) -> Iterator[None]:
    """SIGTERM and SIGINT go to handler while the block runs (in the main thread)."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
