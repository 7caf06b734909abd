"""Which object needs what, and who works on it: the watcher's work queue.

Each object a watch follows (one container of one host) has a Tracked entry: what it should
have (`desired`: the object as last seen active, or None) and the runs made for it that are in
place (journaled, not rolled back). Events and listings only change `desired` and queue the
object; a worker then settles it (core/watch/watcher.py): rolls back the runs that no longer
stand for it and starts one if it has none. One worker at a time settles an object, so its runs
are serialised, while up to `jobs` workers settle different objects in parallel. An object
that changes while it is being settled is settled again afterwards, from its newest state: a
burst of events loses nothing, it only skips states that are already past. A settlement that
failed is tried again after a delay that doubles each time (1 s, 2 s, ... at most 5 min).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .sources import WatchedObject

FIRST_RETRY = 1.0  # seconds
LAST_RETRY = 300.0


class Key(NamedTuple):
    """An object of a watch on a host."""

    watch: str  # the watch's name (its workflow's)
    host: str
    id: str  # the object's id in its source


@dataclass
class RunRef:
    """A run made for an object, in place (not rolled back)."""

    run_id: str
    incarnation: str  # of the object it was made for
    state: str  # as the journal has it: succeeded, or something to roll back
    name: str = ""  # the object's, for log lines


@dataclass
class Tracked:
    key: Key
    desired: WatchedObject | None = None  # what should have a run
    action: str = "reconcile"  # the event that made it so ("reconcile": a listing)
    runs: list[RunRef] = field(default_factory=list)
    refused: str | None = None  # an incarnation whose run was invalid input: not tried again
    failures: int = 0  # settlements that failed in a row
    due: float | None = None  # when it is queued for
    busy: bool = False  # a worker is settling it
    dirty: bool = False  # it changed while a worker settled it

    @property
    def label(self) -> str:
        """How log lines name the object."""
        if self.desired is not None:
            return self.desired.label
        return next((r.name for r in self.runs if r.name), self.key.id[:12])


def same(a: WatchedObject | None, b: WatchedObject | None) -> bool:
    """The same object in the same incarnation (or both absent)."""
    if a is None or b is None:
        return a is b
    return (a.id, a.incarnation) == (b.id, b.incarnation)


Settle = Callable[[Tracked, WatchedObject | None, str, Any], bool]
"""settle(tracked, desired, action, lane) → settled? Called by a worker, outside the lock."""


class WorkQueue:
    """Tracked objects, and the workers that settle them."""

    def __init__(self, settle: Settle, *, retry: bool = True) -> None:
        self._settle = settle
        self._retry = retry
        self._cond = threading.Condition()
        self._tracked: dict[Key, Tracked] = {}
        self._ready: list[tuple[float, int, Key]] = []  # a heap by due time
        self._order = itertools.count()
        self._busy = 0
        self._stopping = False
        self._workers: list[threading.Thread] = []

    # -- what sources and listings say ------------------------------------------------------

    def adopt(self, key: Key, runs: list[RunRef]) -> None:
        """Runs the journal holds in place for an object (before the workers start)."""
        with self._cond:
            self._entry(key).runs.extend(runs)

    def want(self, key: Key, desired: WatchedObject | None, action: str) -> None:
        """The object should now have a run (desired) or none (None)."""
        with self._cond:
            t = self._tracked.get(key)
            if t is None and desired is None:  # nothing made for it, nothing to make
                return
            t = self._entry(key)
            changed = not same(t.desired, desired)
            t.desired, t.action = desired, action
            if changed:
                t.failures = 0
            if t.busy:
                t.dirty = t.dirty or changed
            elif changed or (t.due is None and self._unsettled(t)):
                self._queue(t, time.monotonic())

    def keys(self, watch: str, host: str) -> list[Key]:
        with self._cond:
            return [k for k in self._tracked if k.watch == watch and k.host == host]

    def _entry(self, key: Key) -> Tracked:
        if key not in self._tracked:
            self._tracked[key] = Tracked(key)
        return self._tracked[key]

    @staticmethod
    def _unsettled(t: Tracked) -> bool:
        """Does the object have work left: a run to roll back, or none for what it wants?"""
        d = t.desired
        keep = [r for r in t.runs if d is not None and r.incarnation == d.incarnation
                and r.state == "succeeded"]
        return len(keep) != len(t.runs) or (d is not None and not keep
                                            and t.refused != d.incarnation)

    def _queue(self, t: Tracked, due: float) -> None:
        if t.due is not None and t.due <= due:
            return
        t.due = due
        heapq.heappush(self._ready, (due, next(self._order), t.key))
        self._cond.notify()

    # -- the workers --------------------------------------------------------------------------

    def start(self, jobs: int, lane: Callable[[], Any], close_lane: Callable[[Any], None]
              ) -> None:
        """Start `jobs` workers; each has a lane of its own (lane() makes it, close_lane
        closes it when the worker ends)."""
        for number in range(jobs):
            worker = threading.Thread(target=self._work, args=(lane, close_lane),
                                      name=f"watch-worker-{number + 1}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        """Let the workers finish what they are settling, then end them."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()

    def wait_idle(self, stop: threading.Event) -> None:
        """Wait until nothing is due and no worker is busy (retries later do not count)."""
        with self._cond:
            while not stop.is_set() and (self._busy or (
                    self._ready and self._ready[0][0] <= time.monotonic())):
                self._cond.wait(0.1)

    def _work(self, make_lane: Callable[[], Any], close_lane: Callable[[Any], None]) -> None:
        lane = make_lane()
        try:
            while True:
                t = self._next()
                if t is None:
                    return
                desired, action = t.desired, t.action
                settled = False
                try:
                    settled = self._settle(t, desired, action, lane)
                finally:
                    self._done(t, settled)
        finally:
            close_lane(lane)

    def _next(self) -> Tracked | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                while self._ready:
                    due, _, key = self._ready[0]
                    t = self._tracked.get(key)
                    if t is None or t.due != due:  # settled or re-queued since: a stale entry
                        heapq.heappop(self._ready)
                        continue
                    if due > now:
                        break
                    heapq.heappop(self._ready)
                    t.due, t.busy, t.dirty = None, True, False
                    self._busy += 1
                    return t
                self._cond.wait(self._ready[0][0] - now if self._ready else None)

    def _done(self, t: Tracked, settled: bool) -> None:
        with self._cond:
            t.busy = False
            self._busy -= 1
            if t.dirty:
                self._queue(t, time.monotonic())
            elif not settled:
                t.failures += 1
                if self._retry:
                    delay = min(FIRST_RETRY * 2 ** (t.failures - 1), LAST_RETRY)
                    self._queue(t, time.monotonic() + delay)
            else:
                t.failures = 0
                if t.desired is None and not t.runs:  # nothing left to remember
                    del self._tracked[t.key]
            self._cond.notify_all()

    def retry_delay(self, t: Tracked) -> float | None:
        """When a failed object will be tried again (None: it will not)."""
        if not self._retry:
            return None
        return min(FIRST_RETRY * 2 ** t.failures, LAST_RETRY)
