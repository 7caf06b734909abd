"""Run and step lifecycles, declared as data and driven by `transitions` state machines.

run:  pending → running → succeeded | failed → rolling_back → rolled_back | rollback_failed
step: pending → checking → skipped | applying → applied | failed;
      applied → undoing → undone | undo_failed

An invalid transition raises `transitions.MachineError`: the engine can never, say, undo a step
that was not applied. `transitions` does not undo anything when a callback raises; failure
handling is the engine's (core/engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import EventData, Machine

RUN_STATES = ["pending", "running", "succeeded", "failed", "rolling_back", "rolled_back",
              "rollback_failed"]
RUN_TRANSITIONS = [
    {"trigger": "start", "source": "pending", "dest": "running"},
    {"trigger": "succeed", "source": "running", "dest": "succeeded"},
    {"trigger": "fail", "source": "running", "dest": "failed"},
    # resume: a failed run, or one whose process died while running
    {"trigger": "resume", "source": ["failed", "running"], "dest": "running"},
    # rollback: at once after a failure, later on request, or again after an interruption
    {"trigger": "roll_back", "source": ["failed", "succeeded", "running", "rolling_back",
                                        "rollback_failed"], "dest": "rolling_back"},
    {"trigger": "finish_rollback", "source": "rolling_back", "dest": "rolled_back"},
    {"trigger": "fail_rollback", "source": "rolling_back", "dest": "rollback_failed"},
]
RUN_FINAL = {"succeeded", "failed", "rolled_back", "rollback_failed"}

STEP_STATES = ["pending", "checking", "skipped", "applying", "applied", "failed", "undoing",
               "undone", "undo_failed"]
STEP_TRANSITIONS = [
    # (re)consider a step: first time, or on resume after it was skipped, failed or undone
    {"trigger": "check", "source": ["pending", "skipped", "failed", "undone"], "dest": "checking"},
    {"trigger": "skip", "source": "checking", "dest": "skipped"},
    {"trigger": "change", "source": "checking", "dest": "applying"},
    {"trigger": "succeed", "source": "applying", "dest": "applied"},
    {"trigger": "fail", "source": ["checking", "applying"], "dest": "failed"},
    # resume found an applied step that no longer holds, and applies it again
    {"trigger": "drift", "source": "applied", "dest": "applying"},
    # in doubt (intent journaled, outcome not: the process died) — settled by re-applying
    {"trigger": "reapply", "source": "applying", "dest": "applying"},
    {"trigger": "undo", "source": ["applied", "applying", "undoing", "undo_failed"],
     "dest": "undoing"},
    {"trigger": "finish_undo", "source": "undoing", "dest": "undone"},
    {"trigger": "fail_undo", "source": "undoing", "dest": "undo_failed"},
]
STEP_CHANGED = {"applied", "applying", "undoing", "undo_failed"}  # what rollback must visit

Listener = Callable[[Any, str, str, dict[str, Any]], None]


class _LeanMachine(Machine):
    """A Machine that binds only the triggers to each model: runflow uses neither the
    `is_<state>()` nor the `may_<trigger>()` helpers, and a run of 1,000 steps adds 1,000
    models (binding them all costs a third of the time of adding one)."""

    def _add_model_to_state(self, state: Any, model: Any) -> None:
        pass

    def _add_may_transition_func_for_trigger(self, trigger: str, model: Any) -> None:
        pass


def _machine(states: list[str], transitions: list[dict[str, Any]], listener: Listener) -> Machine:
    def after(event: EventData) -> None:
        listener(event.model, event.transition.source, event.transition.dest, event.kwargs)

    return _LeanMachine(model=None, states=states, transitions=transitions, initial="pending",
                   auto_transitions=False, send_event=True, after_state_change=after)


class Lifecycles:
    """The two machines of one engine. `listener(model, source, dest, kwargs)` hears every
    transition; kwargs are what the trigger was called with (message=..., detail=...)."""

    def __init__(self, listener: Listener) -> None:
        self.runs = _machine(RUN_STATES, RUN_TRANSITIONS, listener)
        self.steps = _machine(STEP_STATES, STEP_TRANSITIONS, listener)

    def track_run(self, model: Any, state: str = "pending") -> None:
        self.runs.add_model(model, initial=state)

    def track_step(self, model: Any, state: str = "pending") -> None:
        self.steps.add_model(model, initial=state)
