"""Runs as the command line starts them: build or rebuild the plan, take the host locks, wire
the journal and the event subscribers, drive the engine, turn signals into a clean stop.

Signals while a command that changes hosts is alive (from opening its journal to closing it):
SIGINT or SIGTERM before the engine starts ends the command with nothing changed (exit 130 or
143); while it runs forward, the run stops after the step in progress and rolls back; while it
rolls back, the rollback goes on (a second signal stops it after the undo in progress: exit 3,
`runflow rollback` finishes it); once the engine is done, they change nothing. SIGHUP (the
terminal went away) changes nothing at all: a run's output may be lost, never its work."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import inventory as inventory_mod
from . import workflow as workflow_mod
from .engine import DEFAULT_FORKS, Engine, HostRuntime
from .errors import (EXIT_OK, EXIT_ROLLED_BACK, InputError, Interrupted, JournalError,
                     RunflowError, RunNotJournaled)
from .hosts import Host
from .journal import Journal, RunRecord, StepRecord
from .lifecycle import STEP_CHANGED
from .locks import HostLocks, RunActivity
from .plan import Plan, build
from .plugins import Plugins


@dataclass
class Options:
    """What the command line says about a run."""

    inventory: str | None = None
    hosts: list[str] = field(default_factory=list)
    target: str = "auto"
    cli_vars: dict[str, str] = field(default_factory=dict)
    plugin_files: list[str] = field(default_factory=list)
    load_plugins: bool = True  # may the workflow's own plugin files be loaded
    plugins_outside: bool = False  # may they lie outside the workflow's directory
    rollback: bool = True
    lock_timeout: float = 0.0
    forks: int = DEFAULT_FORKS  # how many hosts work at once
    home: Path | None = None


def new_run_id() -> str:
    # os.urandom is what secrets.token_hex reads; importing secrets (hmac, hashlib, random)
    # cost 4 ms of start-up.
    return time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()


def plan_workflow(path: str, options: Options, plugins: Plugins, *, probe: bool = True) -> Plan:
    wf = workflow_mod.load(path)
    inv = inventory_mod.load(options.inventory) if options.inventory else inventory_mod.LOCAL
    hosts = inv.select(options.hosts)
    return build(wf, plugins, inv, hosts, target=options.target, cli_vars=options.cli_vars,
                 probe=probe)


def rebuild_plan(run: RunRecord, steps: list[StepRecord], plugins: Plugins, *,
                 file_changed: str, hosts: Mapping[str, Host] | None = None) -> Plan:
    """The plan of a journaled run, from the journaled workflow text and vars; `steps` are the
    run's journaled steps, which the rebuilt plan must expand to again.

    file_changed says what to do when the workflow file on disk differs from the journaled
    text: "refuse", "use-current" (resume --use-current-file) or "use-journaled" (rollback).
    hosts: the caller's own objects for some of the run's hosts, by name, used instead of new
    ones (`runflow watch` lends its hosts with their runtimes: an SSH host's connection is the
    watch's, and a new object would log in again just to be probed).
    """
    record = run.record
    wf_info = record["workflow"]
    text = wf_info["text"]
    try:
        current = Path(wf_info["path"]).read_text()
    except OSError:
        current = None
    if current is not None and current != text and file_changed != "use-journaled":
        if file_changed == "refuse":
            raise InputError(
                f"the workflow file changed since run {run.id} started; resume with "
                "--use-current-file to run the file as it is now, or restore it",
                file=wf_info["path"])
        text = current
    wf = workflow_mod.parse(text, wf_info["path"])
    inv_info = record["inventory"]
    inv = (inventory_mod.parse(inv_info["text"], inv_info["path"]) if inv_info["path"]
           else inventory_mod.LOCAL)
    plugins.load_journaled(record["plugins"], run.id)
    selected = [(hosts or {}).get(h.name, h) for h in inv.select(record["hosts"])]
    plan = build(wf, plugins, inv, selected, target=record["target"],
                 cli_vars=record["cli_vars"])
    journaled: dict[str, list[str]] = {h.name: [] for h in plan.hosts}
    for step in steps:  # in (host, seq) order
        journaled.setdefault(step.host, []).append(step.key)
    rebuilt = {h: [i.key for i in insts] for h, insts in plan.instances.items()}
    if journaled != rebuilt:
        raise InputError(f"the workflow no longer expands to the steps run {run.id} recorded "
                         "(vars, for_each or when changed); roll the run back instead",
                         file=wf_info["path"])
    return plan


def add_views(plugins: Plugins, *, quiet: bool = False, events_file: TextIO | None = None,
              multi_host: bool = False) -> None:
    """Subscribe the progress view (unless quiet) and the --events sink (if given)."""
    from .eventlog import EventLog
    from .progress import Progress

    if not quiet:
        plugins.add_subscriber(Progress(multi_host=multi_host), name="runflow.progress")
    if events_file is not None:
        plugins.add_subscriber(EventLog(events_file), name="runflow.events")


class Session:
    """One command that changes hosts (run, resume or rollback)."""

    def __init__(self, plugins: Plugins, home: Path, *, locks_held: bool = False) -> None:
        self.plugins = plugins
        self.home = home
        self.journal = Journal(home)
        plugins.add_subscriber(self.journal, name="runflow.journal")
        # The caller holds the host locks of every run it starts here (`runflow watch` holds a
        # host's lock while any of its runs is in flight there, and runs several at once), and
        # handles signals itself.
        self.locks_held = locks_held
        self._engine: Engine | None = None
        self._reported = False  # an error has said the journal failed: close need not say it
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread() and not locks_held:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            return
        engine = self._engine
        if engine is None or engine.phase is None:
            raise Interrupted(signum)
        note = engine.request_stop(signal.Signals(signum).name)
        if note:
            say(f"runflow: {note}")

    def close(self, *, process_exits: bool = False) -> None:
        """Write what the journal holds, fold its write-ahead log into the database (2-20 ms
        here), and put the signal handlers back. When the process ends next (the command
        line), the connection is left for the exit to drop, and the handlers stay: a signal
        between here and the exit must not be taken for one before anything was changed."""
        try:
            unwritten = self.journal.finish()
            if not process_exits:
                self.journal.close()
        finally:
            if not process_exits:
                for signum, handler in self._previous_handlers.items():
                    signal.signal(signum, handler)
                self._previous_handlers.clear()
        if unwritten and not self._reported:
            raise RunNotJournaled(unwritten)

    def _drive(self, plan: Plan, engine: Engine, timeout: float,
               body: Callable[[], int]) -> int:
        """Lock the plan's hosts (unless the caller holds them), mark the run as driven by this
        process, and run body."""
        with HostLocks([] if self.locks_held else plan.hosts) as locks, \
                RunActivity(self.home, engine.run.id):
            locks.acquire(engine.run.id, timeout)
            self._engine = engine
            try:
                return body()
            except JournalError:
                self._reported = True
                raise
            except RunNotJournaled as exc:
                self._reported = True
                unwritten = self.journal.finish()
                raise RunNotJournaled(f"{exc}; {unwritten}" if unwritten else str(exc)) from None

    def run(self, plan: Plan, options: Options, *, cause: dict[str, Any] | None = None,
            runtimes: Mapping[str, HostRuntime] | None = None) -> tuple[str, int]:
        """Run a plan. cause: what started the run (`runflow watch`'s event), kept in its
        record; runtimes: the caller's host threads and connections (see Engine)."""
        engine = Engine(self.plugins, new_run_id(), plan.per_host(), rollback=options.rollback,
                        forks=options.forks, runtimes=runtimes)

        def body() -> int:
            engine.announce({**plan.record(), "cause": cause} if cause else plan.record())
            return engine.execute()

        return engine.run.id, self._drive(plan, engine, options.lock_timeout, body)

    def load(self, ref: str) -> RunRecord:
        return self.journal.find(ref)

    def _restored(self, run: RunRecord, rollback: bool, file_changed: str,
                  forks: int = DEFAULT_FORKS,
                  runtimes: Mapping[str, HostRuntime] | None = None) -> tuple[Plan, Engine]:
        """The run's plan rebuilt, and an engine with its steps in their journaled states."""
        steps = self.journal.steps(run.id)
        plan = rebuild_plan(run, steps, self.plugins, file_changed=file_changed,
                            hosts={name: rt.host for name, rt in (runtimes or {}).items()})
        engine = Engine(self.plugins, run.id, plan.per_host(), rollback=rollback, forks=forks,
                        runtimes=runtimes)
        published: dict[str, dict[str, Any]] = {}  # what `register` steps published, by host
        for s in steps:
            published.setdefault(s.host, {}).update(s.published or {})
        engine.restore(run.state, {(s.host, s.key): (s.state, s.before) for s in steps},
                       published)
        return plan, engine

    def resume(self, run: RunRecord, options: Options, *, use_current_file: bool) -> int:
        if run.state == "succeeded":
            raise AlreadyDone(f"run {run.id} succeeded: nothing to resume")
        if run.state in ("rolled_back", "rolling_back", "rollback_failed"):
            raise InputError(f"run {run.id} is {run.state.replace('_', ' ')}: it cannot be "
                             "resumed; start a new run (or `runflow rollback` it to finish)")
        plan, engine = self._restored(run, options.rollback,
                                      "use-current" if use_current_file else "refuse",
                                      options.forks)
        return self._drive(plan, engine, options.lock_timeout, engine.execute)

    def rollback(self, run: RunRecord, options: Options, *,
                 runtimes: Mapping[str, HostRuntime] | None = None) -> int:
        if run.state == "rolled_back":
            raise AlreadyDone(f"run {run.id} is already rolled back{self._older_changes(run)}")
        # `rollback last` right after a run that found everything in place would undo nothing:
        # say so, and which run's changes are still in place.
        nothing = not self._changed_something(run.id)
        plan, engine = self._restored(run, True, "use-journaled", options.forks, runtimes)
        code = self._drive(plan, engine, options.lock_timeout, engine.roll_back)
        if nothing and not self.locks_held:
            say(f"runflow: run {run.id} changed nothing{self._older_changes(run)}")
        # Asked for, a complete rollback is a success; exit 1 means "failed, rolled back".
        return EXIT_OK if code == EXIT_ROLLED_BACK else code

    def _changed_something(self, run_id: str) -> bool:
        return any(s.state in STEP_CHANGED for s in self.journal.steps(run_id))

    def _older_changes(self, run: RunRecord) -> str:
        """Which older run (of the last 50) has changes in place, said as the end of a line."""
        for other in self.journal.runs(limit=50):
            if other.created <= run.created and other.id != run.id and \
                    other.state != "rolled_back" and self._changed_something(other.id):
                return (f"; the newest run whose changes are still in place is {other.id} "
                        f"({other.workflow}, {other.state.replace('_', ' ')}): "
                        f"`runflow rollback {other.id}` undoes them")
        return "; no older run has changes in place"


def say(text: str) -> None:
    """A line on stderr, if anyone is reading it."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class AlreadyDone(RunflowError):
    """Nothing to do: not an error (exit 0)."""

    exit_code = 0

