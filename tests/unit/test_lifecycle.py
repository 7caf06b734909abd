"""The step lifecycle's transition table against its declaration in core/lifecycle.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transitions import MachineError

from runflow.core.lifecycle import STEP_STATES, STEP_TRANSITIONS, StepMachine


def allowed() -> dict[tuple[str, str], str]:
    moves = {}
    for t in STEP_TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        for source in sources:
            moves[t["trigger"], source] = t["dest"]
    return moves


def test_every_declared_transition_moves_the_step_and_tells_the_listener():
    heard = []
    machine = StepMachine(lambda model, source, dest, kwargs: heard.append(
        (source, dest, kwargs)))
    for (trigger, source), dest in allowed().items():
        step = SimpleNamespace(state=source)
        machine.fire(step, trigger, message="m")
        assert step.state == dest
        assert heard[-1] == (source, dest, {"message": "m"})


def test_a_trigger_not_allowed_from_a_state_raises_and_changes_nothing():
    machine = StepMachine(lambda *args: pytest.fail("no transition expected"))
    moves = allowed()
    triggers = {t["trigger"] for t in STEP_TRANSITIONS}
    refused = [(trigger, state) for trigger in triggers for state in STEP_STATES
               if (trigger, state) not in moves]
    assert ("undo", "pending") in refused and ("succeed", "checking") in refused
    for trigger, state in refused:
        step = SimpleNamespace(state=state)
        with pytest.raises(MachineError):
            machine.fire(step, trigger)
        assert step.state == state
