"""The plugin API of runflow: every hook a plugin can implement.

Built-in backends are plugins too and use exactly these hooks. A plugin is a module (or object)
with functions marked `@hookimpl`, found through the entry-point group "runflow", given with
`--plugin FILE`, or named by a workflow's `plugins = ["file.py"]`:

    from runflow.core.hookspecs import hookimpl

    @hookimpl
    def runflow_register_actions(register):
        register(MyBridgePresent)

An implementation whose name matches no spec below is refused when the plugin is loaded.
Set RUNFLOW_TRACE_HOOKS=1 to log every hook call. contrib/PLUGINS.md is the guide: the action
contract, the Context API, errors, targets, export, undo rules, events and the test kit
(`runflow.testing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .actions import RegisterActions
    from .events import Event
    from .watch.sources import RegisterSources

PROJECT = "runflow"

API_VERSION = (1, 2)
"""The plugin API's version (major, minor): these hooks, `runflow.core.actions` (Action, Args,
Context, ShellStep, sh), `runflow.core.errors` (ActionError, CommandError), the argument types
of `runflow.core.fields` and `runflow.testing`. A minor version adds to the API; a major one
changes something a plugin may rely on. A plugin may declare the version it was written for,
`RUNFLOW_API_VERSION = (1, 0)`: it is refused, with a message, by a runflow of another major
version or an older minor one. 1.1 added `Action.targets`, `Context.log` and `Context.record`;
1.2 added event sources (`runflow_register_sources`, `runflow.core.watch.sources`)."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------


@hookspec
def runflow_register_actions(register: RegisterActions) -> None:
    """Contribute action implementations.

    Call ``register(cls)`` once per implementation; ``cls`` is a subclass of
    :class:`runflow.core.actions.Action` naming its action, backend, family and ``Args`` schema,
    and the targets it serves (``targets = ("centos6",)``; none: every target).
    Two backends implementing the same action must use the same ``Args`` class.
    """


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@hookspec
def runflow_event(event: Event) -> None:
    """Observe a state change of a run or a step.

    Called synchronously, in order, for every transition (run created, step checking, applying
    with the observed "before" state, applied, failed, undone, ...). The journal, the progress
    view and the ``--events`` JSON-lines sink are implementations of this hook. The engine
    calls each implementation on its own (the journal first), so that one that raises cannot
    keep an event from the others; hook wrappers are not called. An exception raised here
    fails the run: no further step is applied and what the run changed is rolled back.
    Subscribers that must not interfere should catch their own.
    """


# ---------------------------------------------------------------------------------------------
# Event sources (runflow watch)
# ---------------------------------------------------------------------------------------------


@hookspec
def runflow_register_sources(register: RegisterSources) -> None:
    """Contribute event sources for `runflow watch`.

    Call ``register(cls)`` once per source; ``cls`` is a subclass of
    :class:`runflow.core.watch.sources.Source` naming the source (what a workflow's
    ``[watch] source = "..."`` says), the events it sends, the ``Match`` schema of the
    ``[watch] match`` table, and how it lists the objects that are active now, looks one up
    and streams its events from one host. Two sources may not share a name.
    """
