"""Run and step lifecycles, declared as data for `transitions` state machines.

run:  pending → running → succeeded | failed → rolling_back → rolled_back | rollback_failed
step: pending → checking → skipped | applying → applied | failed;
      applied → undoing → undone | undo_failed;
      applying → undo_failed when apply failed half-way and its clean-up failed too: the step
      changed the host, so rollback must undo it, and resume settles it as a step in doubt

An invalid transition raises `transitions.MachineError`: the engine can never, say, undo a step
that was not applied. `transitions` does not undo anything when a callback raises; failure
handling is the engine's (core/engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import EventData, Machine, MachineError

RUN_STATES = ["pending", "running", "succeeded", "failed", "rolling_back", "rolled_back",
              "rollback_failed"]
RUN_TRANSITIONS = [
    {"trigger": "start", "source": "pending", "dest": "running"},
    {"trigger": "succeed", "source": "running", "dest": "succeeded"},
    {"trigger": "fail", "source": "running", "dest": "failed"},
    # resume: a failed run, or one whose process died while running
    {"trigger": "resume", "source": ["failed", "running"], "dest": "running"},
    # rollback: at once after a failure, later on request, or again after an interruption;
    # "pending": the process died between recording the run and starting it
    {"trigger": "roll_back", "source": ["pending", "failed", "succeeded", "running",
                                        "rolling_back", "rollback_failed"],
     "dest": "rolling_back"},
    {"trigger": "finish_rollback", "source": "rolling_back", "dest": "rolled_back"},
    {"trigger": "fail_rollback", "source": "rolling_back", "dest": "rollback_failed"},
]

STEP_STATES = ["pending", "checking", "skipped", "applying", "applied", "failed", "undoing",
               "undone", "undo_failed"]
IN_DOUBT = ["applying", "undo_failed"]  # changed, maybe not all the way: resume settles them
STEP_TRANSITIONS = [
    # (re)consider a step: first time, or on resume after it was skipped, failed or undone
    {"trigger": "check", "source": ["pending", "skipped", "failed", "undone"], "dest": "checking"},
    {"trigger": "skip", "source": "checking", "dest": "skipped"},
    {"trigger": "change", "source": "checking", "dest": "applying"},
    # applied; or, on resume, a step in doubt found to hold
    {"trigger": "succeed", "source": IN_DOUBT, "dest": "applied"},
    {"trigger": "fail", "source": ["checking", "applying"], "dest": "failed"},
    # resume found an applied step that no longer holds, and applies it again
    {"trigger": "drift", "source": "applied", "dest": "applying"},
    # in doubt (intent journaled, outcome not: the process died; or an apply that failed left
    # changes its clean-up could not undo) — settled on resume by applying again
    {"trigger": "reapply", "source": IN_DOUBT, "dest": "applying"},
    {"trigger": "undo", "source": ["applied", "applying", "undoing", "undo_failed"],
     "dest": "undoing"},
    {"trigger": "finish_undo", "source": "undoing", "dest": "undone"},
    # an undo failed; or an apply failed and its clean-up (an undo) failed too
    {"trigger": "fail_undo", "source": ["undoing", "applying"], "dest": "undo_failed"},
]
STEP_CHANGED = {"applied", "applying", "undoing", "undo_failed"}  # what rollback must visit

Listener = Callable[[Any, str, str, dict[str, Any]], None]


class StepMachine:
    """The step lifecycle, compiled by `transitions` from STEP_TRANSITIONS into a table of
    (trigger, source) → dest through which every step instance changes state.

    Steps do not become `transitions` models: a for_each of 1,000 would bind ten triggers to
    each of 1,000 models and run transitions' callback dispatch three times per instance, which
    cost more than the steps' own work (0.35 ms of engine time per instance against 0.1–0.3 ms
    of netlink or `ip -batch`). The table keeps the machine's guarantee: a trigger that is not
    allowed from the current state raises MachineError."""

    def __init__(self, listener: Listener) -> None:
        machine = Machine(model=None, states=STEP_STATES, transitions=STEP_TRANSITIONS,
                          initial="pending", auto_transitions=False)
        self._dest = {(trigger, source): moves[0].dest
                      for trigger, event in machine.events.items()
                      for source, moves in event.transitions.items()}
        self._listener = listener

    def fire(self, model: Any, trigger: str, **kwargs: Any) -> None:
        """Move model (anything with a `state`) by trigger and tell the listener."""
        source = model.state
        try:
            dest = self._dest[trigger, source]
        except KeyError:
            raise MachineError(f"step {trigger!r} is not allowed from {source!r}") from None
        model.state = dest
        self._listener(model, source, dest, kwargs)


class Lifecycles:
    """The two machines of one engine. `listener(model, source, dest, kwargs)` hears every
    transition; kwargs are what the trigger was called with (message=..., detail=...)."""

    def __init__(self, listener: Listener) -> None:
        def after(event: EventData) -> None:
            listener(event.model, event.transition.source, event.transition.dest, event.kwargs)

        self.runs = Machine(model=None, states=RUN_STATES, transitions=RUN_TRANSITIONS,
                            initial="pending", auto_transitions=False, send_event=True,
                            after_state_change=after)
        self.steps = StepMachine(listener)

    def track_run(self, model: Any, state: str = "pending") -> None:
        self.runs.add_model(model, initial=state)
