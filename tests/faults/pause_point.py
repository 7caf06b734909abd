"""A runflow plugin that stops runflow at one chosen event, so that a test can strike from
outside at that exact point (kill runflow's process group, kill a daemon, fill the disk).

    RUNFLOW_DRILL_PAUSE="gre-port:applying"         the first "applying" of step gre-port
    RUNFLOW_DRILL_PAUSE="gre-port:applying@h2"      ... on host h2
    RUNFLOW_DRILL_MARKER=/tmp/x/paused              written when it stops: the event as JSON

When the event comes, the plugin writes the marker and stops its whole process group with
SIGSTOP: every thread of runflow (the other host's worker freezes wherever it is) and every
command it has in flight, as they are at that instant. The test then does its harm and either
kills the group or sends it SIGCONT. Without the variables the plugin does nothing, so the
resume or rollback that loads it again from the journal's record of the run runs undisturbed.

It is called after every other subscriber (trylast): the journal has recorded the event — and
committed it, if it is an intent — before the process stops, as it would have before the
engine went on.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from runflow.core.events import Event
from runflow.core.hookspecs import hookimpl

_paused = False


def _matches(event: Event, point: str) -> bool:
    where, _, host = point.partition("@")
    step, _, dest = where.rpartition(":")
    return (event.kind == "step" and event.step == step and event.dest == dest
            and (not host or event.host == host))


@hookimpl(trylast=True)
def runflow_event(event: Event) -> None:
    global _paused
    point = os.environ.get("RUNFLOW_DRILL_PAUSE")
    if _paused or not point or not _matches(event, point):
        return
    _paused = True
    marker = os.environ["RUNFLOW_DRILL_MARKER"]
    with open(marker + ".tmp", "w") as f:
        json.dump({"run_id": event.run_id, "host": event.host, "step": event.step,
                   "dest": event.dest, "pid": os.getpid(), "tid": threading.get_native_id()},
                  f)
    os.rename(marker + ".tmp", marker)  # the test never reads half a marker
    os.killpg(0, signal.SIGSTOP)  # runflow is its group's leader (start_new_session)
    # The kernel hands the group's signal to one thread of this process (the main one, which
    # waits on the hosts' workers), and the process stops when that thread takes it; until
    # then this thread would run on into the step's apply. It waits here until the signal has
    # been taken: as the kernel takes it, it tells every thread to stop, this one included,
    # which stops here. (A SIGCONT that came first drops the signal: it goes on, as asked.)
    while _stop_pending():
        time.sleep(0.0005)


_SIGSTOP_BIT = 1 << (signal.SIGSTOP - 1)


def _stop_pending() -> bool:
    """Whether a SIGSTOP sent to this process waits to be taken (its ShdPnd mask)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("ShdPnd:"):
                return bool(int(line.split()[1], 16) & _SIGSTOP_BIT)
    return False
