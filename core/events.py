"""Events: one for every state change of a run or a step, sent to the `runflow_event` hook."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

_now = time.time  # inside Event.__init__, `time` is the field


@dataclass(frozen=True)
class Event:
    """A transition. `step` is None for run-level events.

    kind: "run" or "step". `source`/`dest` are lifecycle states (see core/lifecycle.py);
    `source` is None for the event that creates a run. `detail` carries what subscribers need
    at that moment: the run's workflow, vars and plan on creation, a step's observed "before"
    state on "applying", the commands run, the error on "failed". `durable` marks an intent
    (sent just before apply or undo changes anything) that must be journaled durably first.
    """

    kind: str
    run_id: str
    source: str | None
    dest: str
    host: str | None = None
    step: str | None = None
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    # An intent: it must be on disk before the engine goes on (the journal commits here).
    durable: bool = False

    # The fields' own __init__, written out: the one dataclass generates for a frozen class
    # sets each field through object.__setattr__, which made an event cost twice as much to
    # make (3,000 events in a run of 200 veth pairs, 2% of its instructions).
    def __init__(self, kind: str, run_id: str, source: str | None, dest: str,
                 host: str | None = None, step: str | None = None, message: str = "",
                 detail: dict[str, Any] | None = None, time: float | None = None,
                 durable: bool = False) -> None:
        vars(self).update(kind=kind, run_id=run_id, source=source, dest=dest, host=host,
                          step=step, message=message, detail={} if detail is None else detail,
                          time=_now() if time is None else time, durable=durable)

    def to_json(self) -> dict[str, Any]:
        # A shallow copy: dataclasses.asdict deep-copies `detail` (a step's whole observed
        # state), which made the --events sink cost more than the journal.
        return dict(vars(self))
