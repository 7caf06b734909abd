"""The engine: runs a plan step by step on its hosts, rolls back on failure, resumes.

Lockstep across hosts: step i runs on every host (in parallel, one worker thread per host,
inside the host's namespace) before step i+1 starts anywhere, so a cross-host check at the end
sees every host configured, and a failure anywhere rolls back every host. At most `forks` hosts
work at once (--forks, as Ansible's): the others of a step wait for a turn.

Ordering that makes runs recoverable: the "applying" event, which carries the observed "before"
state, is sent (and journaled by the journal subscriber) *before* apply runs; the "applied"
event after. A step with the first and not the second is "in doubt" and settled on resume.

Events go to every `runflow_event` subscriber, one at a time, journal first. A subscriber
that raises fails the run: no step starts changing anything after it (its intent may be on
record nowhere), and what the run changed is rolled back from the engine's own memory. When the
journal is the one that failed, the command ends with exit 2 if it had changed nothing yet, and
with exit 3 (RunNotJournaled) once it had: the journal no longer tells what the hosts hold.
"""

from __future__ import annotations

import itertools
import os
import threading
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .actions import Action, Context, Resources, State
from .errors import (EXIT_NEEDS_ATTENTION, EXIT_OK, EXIT_ROLLED_BACK, ActionError,
                     JournalError, RunNotJournaled, debugging, failure_line)
from .events import Event
from .hosts import Host
from .lifecycle import STEP_CHANGED, Lifecycles, StepMachine
from .plugins import Plugins
from .workflow import Instance, resolve

DEFAULT_FORKS = 16


# The engine's own records are plain classes: a dataclass generates its methods with exec,
# about 1 ms of every command's start-up for these three.
class RunModel:
    """The run, as the run state machine sees it."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id
        self.state = "pending"


class StepRun:
    """One instance on one host, as the step state machine sees it."""

    def __init__(self, host: Host, instance: Instance, machine: StepMachine) -> None:
        self.host = host
        self.instance = instance
        self.machine = machine
        self.before: State | None = None  # observed before the first apply: what undo restores
        self.error: str | None = None
        self.state = "pending"

    @property
    def key(self) -> str:
        return self.instance.key

    def fire(self, trigger: str, **kwargs: Any) -> None:
        """Change state by a trigger of the step lifecycle (core/lifecycle.py)."""
        self.machine.fire(self, trigger, **kwargs)


class HostRuntime:
    """What the steps of one host share during a command: its worker thread (inside the host's
    namespace), its connections, and one object per action implementation."""

    def __init__(self, host: Host, pool: ThreadPoolExecutor) -> None:
        self.host = host
        self.pool = pool
        self.resources = Resources()
        self.impls: dict[tuple[str, str], Action] = {}

    @classmethod
    def start(cls, host: Host) -> HostRuntime:
        """A runtime whose worker thread enters the host (its namespace) first."""
        return cls(host, ThreadPoolExecutor(1, thread_name_prefix=f"host-{host.name}",
                                            initializer=host.enter))

    def close(self) -> None:
        """Close the connections, in the thread that opened them, and end the thread."""
        self.pool.submit(self.resources.close).result()
        self.pool.shutdown()


class Engine:
    """Executes one run. Build it with the plan of each host (see core/session.py)."""

    def __init__(self, plugins: Plugins, run_id: str,
                 plans: Sequence[tuple[Host, list[Instance]]], *, rollback: bool = True,
                 forks: int = DEFAULT_FORKS,
                 runtimes: Mapping[str, HostRuntime] | None = None) -> None:
        self.plugins = plugins
        self._forks = threading.BoundedSemaphore(max(1, forks))
        self.registry = plugins.registry
        self.rollback_on_failure = rollback
        self.lifecycles = Lifecycles(self._on_transition)
        self.run = RunModel(run_id)
        self._emit_lock = threading.Lock()
        self._hook = plugins.pm.hook.runflow_event
        self._trace = (plugins.pm.trace.root.get("hook") if os.environ.get("RUNFLOW_TRACE_HOOKS")
                       else None)
        # What a command is doing, for the signal handler (core/session.py): None before it
        # starts, then "forward", "rollback", "done".
        self.phase: str | None = None
        self._interrupted: str | None = None  # the signal that asked to stop (forward)
        self._rollback_interrupts: list[str] = []  # signals received while rolling back
        self._fault: str | None = None  # the first failure of an event subscriber
        self._journal_failure: str | None = None
        self._touched = False  # this command has begun changing a host
        self.hosts = [host for host, _ in plans]
        # Vars published by steps with `register`, per host: what deferred instances of later
        # steps are rendered with (core/workflow.py resolve). Journaled with each publishing
        # step, and put back by restore, so that resume and rollback render the same arguments.
        self.published: dict[str, dict[str, Any]] = {host.name: {} for host in self.hosts}
        self.steps: dict[str, list[StepRun]] = {
            host.name: [StepRun(host, inst, self.lifecycles.steps) for inst in plan]
            for host, plan in plans
        }
        # Runtimes lent by the caller, by host name: used, and left open for the caller's next
        # run (`runflow watch` keeps a host's thread and connections from one run to the next).
        self._lent = dict(runtimes or {})
        self._runtimes: dict[str, HostRuntime] = dict(self._lent)

    # -- public ------------------------------------------------------------------------------

    def announce(self, detail: dict[str, Any]) -> None:
        """Send the event that creates the run (the journal records the run from it)."""
        self._emit(Event("run", self.run.id, None, "pending", detail=detail))

    def restore(self, run_state: str, steps: dict[tuple[str, str], tuple[str, State | None]],
                published: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Put the run and its steps back in the states a journal recorded, and the vars its
        steps published (by host)."""
        self.run.state = run_state
        for runs in self.steps.values():
            for r in runs:
                r.state, r.before = steps.get((r.host.name, r.key), ("pending", None))
        for host_name, values in (published or {}).items():
            self.published.setdefault(host_name, {}).update(values)

    def request_stop(self, signal_name: str) -> str | None:
        """A signal (Ctrl-C, SIGTERM) asks to stop. Running forward: stop after the step in
        progress and roll back as for a failure. Rolling back: go on, since stopping half-way
        leaves hosts half-restored — unless asked twice, then stop after the undo in progress
        (exit 3). Returns a note for the person who sent it, if there is something to say."""
        if self.phase == "forward":
            self._interrupted = self._interrupted or signal_name
        elif self.phase == "rollback":
            self._rollback_interrupts.append(signal_name)
            if len(self._rollback_interrupts) == 1:
                return (f"{signal_name}: the rollback goes on (stopping half-way would leave "
                        f"hosts half-restored); {signal_name} again stops it after the undo in "
                        "progress")
            return f"{signal_name}: stopping the rollback after the undo in progress"
        return None

    def execute(self) -> int:
        """Run (or resume) forward; on failure roll back unless disabled. Returns the exit code."""
        self.lifecycles.track_run(self.run, self.run.state)
        self.phase = "forward"
        try:
            self._refuse_unrecorded()
            if self.run.state == "pending":
                self.run.start()
            else:
                self.run.resume(message="resumed")
            self._refuse_unrecorded()
            failure = self._forward()
            if failure is None:
                self.run.succeed()
                failure = self._fault  # a subscriber failed on the run's last event
                if failure is None:
                    return EXIT_OK
            else:
                self.run.fail(message=failure)
            self._refuse_unrecorded()
            if not self.rollback_on_failure:
                return self._outcome(EXIT_NEEDS_ATTENTION)
            return self._outcome(self._roll_back())
        finally:
            self.phase = "done"
            self._close()

    def roll_back(self) -> int:
        """Undo the applied steps of a finished, failed or interrupted run."""
        self.lifecycles.track_run(self.run, self.run.state)
        try:
            return self._outcome(self._roll_back())
        finally:
            self.phase = "done"
            self._close()

    @property
    def _stop_reason(self) -> str | None:
        """Why the run stops going forward, if it must: a failed subscriber, or a signal."""
        if self._fault:
            return self._fault
        return f"interrupted by {self._interrupted}" if self._interrupted else None

    def _refuse_unrecorded(self) -> None:
        """The journal failed before this command changed anything: change nothing (exit 2)."""
        if self._journal_failure and not self._touched:
            raise JournalError(f"{self._journal_failure}; nothing was changed")

    def _outcome(self, code: int) -> int:
        """The exit code, unless the journal failed while the hosts were being changed: then
        the hosts hold what the engine's memory says, and the journal does not know it."""
        if self._journal_failure is None:
            return code
        left = [f"{r.key} on {r.host.name}" for runs in self.steps.values() for r in runs
                if r.state in STEP_CHANGED]
        if code == EXIT_ROLLED_BACK:
            done = "runflow stopped and rolled back what the run had changed, from memory"
        else:
            done = "runflow stopped; " + ("still changed: " + ", ".join(left) if left else
                                          "nothing is left changed")
        raise RunNotJournaled(
            f"{self._journal_failure}. Run {self.run.id}: {done}; the journal does not show "
            f"it: check the hosts, and once the journal can be written, `runflow rollback "
            f"{self.run.id}` closes the run")

    def preview(self) -> list[dict[str, Any]]:
        """What a run would do now: observe and check every step, change nothing."""
        # A lent runtime's host is the lender's, connection included: `runflow watch` keeps an
        # SSH host's master (and the event stream forwarded over it) for as long as it runs,
        # and alone replaces it when it is lost. Such a host is not connected or closed here.
        own = [h for h in self.hosts if h.name not in self._lent]
        try:
            self._connect(own)
            futures = [self._runtime(h.name).pool.submit(
                self._bounded, self._preview_host, self._runtime(h.name), self.steps[h.name])
                for h in self.hosts]
            return [row for future in futures for row in future.result()]
        finally:
            self._close()
            for host in own:
                host.close()

    def _preview_host(self, rt: HostRuntime, runs: list[StepRun]) -> list[dict[str, Any]]:
        rows = []
        for _, same_step in itertools.groupby(runs, key=lambda r: r.instance.step_index):
            group = list(same_step)
            # a step's instances are observed together, as a run observes them
            todo = [r for r in group if not r.instance.skip_reason]
            observed: dict[str, State] = {}
            unknown: dict[str, str] = {}  # cannot be observed (daemon down...): said, not fatal
            try:
                for r in todo:
                    self._resolve(r)
            except ActionError as exc:
                unknown, todo = {"verdict": "unknown", "reason": f"arguments: {exc}"}, []
            if todo:
                method = "observe"
                try:
                    impl = self._impl(rt, todo[0].instance)
                    states = impl.observe_many(self._context(rt, todo[0]),
                                               [r.instance.args for r in todo])
                    observed = {r.key: before for r, before in zip(todo, states)}
                    method = "result"
                    for r in todo:  # what a run would publish: later steps' arguments use it
                        if r.instance.register and impl.check(r.instance.args, observed[r.key]):
                            self._publish(impl, r, observed[r.key])
                except Exception as exc:
                    unknown = self._plugin_failure(todo[0].instance, method, exc)
            for r in group:
                inst = r.instance
                row = {"host": rt.host.name, "step": inst.key, "action": inst.action,
                       "backend": inst.backend, "verdict": "skip", "reason": inst.skip_reason,
                       "commands": []}
                if unknown and not inst.skip_reason:
                    row.update(unknown)
                elif r.key in observed:
                    before = observed[r.key]
                    try:
                        method = "check"
                        holds = impl.check(inst.args, before)
                        method = "describe"
                        commands = [] if holds else impl.describe(inst.args, before)
                    except Exception as exc:
                        row.update(self._plugin_failure(inst, method, exc))
                    else:
                        if holds:
                            row["reason"] = impl.holds_message
                        else:
                            row["verdict"] = "change"
                            row["commands"] = [rt.host.describe(argv) for argv in commands]
                rows.append(row)
        return rows

    def _plugin_failure(self, inst: Instance, method: str, exc: Exception) -> dict[str, str]:
        """A preview row's verdict when plugin code raised: one line naming the plugin,
        backend and method and the exception (and its traceback under --debug)."""
        plugin = self.registry.owner(inst.action, inst.backend or "")
        row = {"verdict": "unknown", "reason": failure_line(
            exc, method=method, action=inst.action, backend=inst.backend, plugin=plugin)}
        if debugging():
            row["traceback"] = traceback.format_exc()
        return row

    # -- forward -----------------------------------------------------------------------------

    def _forward(self) -> str | None:
        """Run every step in lockstep; return None on success or what failed."""
        by_step: dict[int, dict[str, list[StepRun]]] = {}
        for host_name, runs in self.steps.items():
            for r in runs:
                by_step.setdefault(r.instance.step_index, {}).setdefault(host_name, []).append(r)
        groups = [by_step[index] for index in sorted(by_step)]
        if len(self.steps) == 1:  # no lockstep to keep: the host's thread runs them all
            (host_name,) = self.steps
            rt = self._runtime(host_name)
            return rt.pool.submit(self._forward_alone, rt, [g[host_name] for g in groups]
                                  ).result()
        for group in groups:
            if self._stop_reason:
                return self._stop_reason
            futures = [self._runtime(h).pool.submit(self._bounded, self._run_group,
                                                    self._runtime(h), runs)
                       for h, runs in group.items()]
            failed = [f for f in (future.result() for future in futures) if f]
            if failed:
                return "; ".join(failed)
        return self._stop_reason

    def _forward_alone(self, rt: HostRuntime, groups: list[list[StepRun]]) -> str | None:
        """Every step of a single-host run, in the host's worker thread."""
        for runs in groups:
            if self._stop_reason:
                return self._stop_reason
            failure = self._run_group(rt, runs)
            if failure:
                return failure
        return self._stop_reason

    def _run_group(self, rt: HostRuntime, runs: list[StepRun]) -> str | None:
        """Run the instances of one step on one host (in the host's worker thread)."""
        todo = []
        for r in runs:
            if r.instance.skip_reason and r.state != "skipped":
                r.fire("check")
                r.fire("skip", message=r.instance.skip_reason)
            elif not r.instance.skip_reason:
                todo.append(r)
        if not todo:
            return None
        for r in todo:
            try:
                self._resolve(r)
            except ActionError as exc:  # invalid with the published values: the step fails
                if r.state in ("pending", "skipped", "failed", "undone"):
                    r.fire("check")
                r.error = f"arguments: {exc}"
                r.fire("fail", message=r.error)
                return self._fail_message(r, r.error)
        impl = self._impl(rt, todo[0].instance)
        try:
            if impl.batches() and len(todo) > 1:
                return self._run_batch(rt, impl, todo)
            for r in todo:
                if self._stop_reason:
                    return self._stop_reason
                error = self._run_one(rt, impl, r)
                if error:
                    return error
            return None
        except Exception as exc:  # a bug in a backend must still fail the step, not the engine
            return self._fail_unexpected(todo, exc)

    def _run_one(self, rt: HostRuntime, impl: Action, r: StepRun) -> str | None:
        ctx = self._context(rt, r)
        method = "observe"  # which of the backend's methods raised, for the error
        try:
            if r.state in ("pending", "skipped", "failed", "undone"):
                r.fire("check")
            now = impl.observe(ctx, r.instance.args)
            method = "check"
            holds = impl.check(r.instance.args, now)
            method = "result"
            published = self._publish(impl, r, now) if holds else {}
            method = "engine"
            fired = self._needs_apply(impl, r, now, holds, detail=published)
            if not fired:
                return None
            if self._stop_reason:
                return self._not_applied(r, fired)
            self._touched = True
            method = "apply"
            impl.apply(ctx, r.instance.args, now)
            if r.instance.register:
                method = "observe"
                after = impl.observe(ctx, r.instance.args)
                method = "result"
                published = self._publish(impl, r, after)
        except Exception as exc:
            if r.state == "applying":
                return self._fail_applying(impl, ctx, r, exc, method)
            return self._fail(r, exc, ctx, method)
        r.fire("succeed", detail={"commands": ctx.commands, **published})
        return None

    def _resolve(self, r: StepRun) -> None:
        """Render a deferred instance's arguments with the vars published so far on its host
        (once: resolved arguments stay, as the journal's "before" goes with them)."""
        if r.instance.deferred is not None and r.instance.args is None:
            resolve(r.instance, self.registry, r.host, self.published[r.host.name])

    def _publish(self, impl: Action, r: StepRun, state: State) -> dict[str, Any]:
        """For a step with `register`: its action's result from state, published for the
        later steps of its host, as the detail its outcome is journaled with ({} for other
        steps). A value journaled by an earlier attempt stays (resume): the steps after it
        were rendered with it."""
        name = r.instance.register
        if name is None:
            return {}
        values = self.published[r.host.name]
        if name not in values:
            values[name] = impl.result(r.instance.args, state)
        return {"published": {name: values[name]}}

    def _fail_applying(self, impl: Action, ctx: Context, r: StepRun, exc: Exception,
                       method: str) -> str:
        """An apply that failed half-way (e.g. a veth made, its move failed) must not leave
        half-done state: if the step's state is not what the journal holds as its "before" —
        observed before its first apply, maybe by a run killed since — undo restores that.
        When that fails too, the step stays changed (undo_failed) for rollback to undo."""
        before = r.before
        if before is None:  # a journal of an older runflow may lack it: nothing to compare
            return self._fail(r, exc, ctx, method)
        error = self._failure_line(r, method, exc)
        cleanup_method = "observe"
        try:
            changed = impl.observe(ctx, r.instance.args) != before
            if changed:
                cleanup_method = "undo"
                impl.undo(ctx, r.instance.args, before)
        except Exception as cleanup:
            r.error = (f"{error}; its partial changes could not be undone: "
                       f"{self._failure_line(r, cleanup_method, cleanup)}")
            r.fire("fail_undo", message=r.error,
                   detail={"commands": ctx.commands, **_traceback_of(cleanup)})
            return self._fail_message(r, r.error)
        return self._fail(r, exc, ctx, method,
                          suffix=" (its partial changes were undone)" if changed else "")

    def _needs_apply(self, impl: Action, r: StepRun, now: State, holds: bool,
                     durable: bool = True, detail: dict[str, Any] | None = None) -> str | None:
        """Decide from a fresh observation, in which the desired state holds or not; sends the
        transition (and so the journal intent) and returns its trigger when the step must be
        applied. durable=False lets a batch's intents reach the disk together, with its last
        one. detail goes with a step that holds (what it published)."""
        if r.state == "checking":
            if holds:
                r.fire("skip", message=impl.holds_message, detail=detail or {})
                return None
            r.before = now
            r.fire("change", detail={"before": now}, durable=durable)
            return "change"
        if r.state == "applied":  # resume: an applied step must still hold
            if holds or not impl.observable(r.instance.args):
                return None  # only an observation may say it no longer holds
            r.fire("drift", message="drift: no longer in the desired state; applying again",
                   durable=durable)
            return "drift"
        # in doubt: "applying" with no outcome (the process died during apply), or an apply
        # that failed and whose clean-up failed too ("undo_failed")
        why = "in doubt" if r.state == "applying" else "its partial changes were left"
        if holds and not impl.reapply_in_doubt:
            r.fire("succeed", message=f"{why}; the desired state holds", detail=detail or {})
            return None
        r.fire("reapply", message=f"{why}; applying again", durable=durable)
        return "reapply"

    def _not_applied(self, r: StepRun, fired: str) -> str:
        """The run stops between a step's intent and its apply: a step met for the first time
        fails, unapplied; one this run applied earlier (drift, in doubt) stays changed, for
        rollback to undo."""
        reason = self._stop_reason or ""
        if fired == "change":
            r.fire("fail", message=f"not applied: {reason}")
        return reason

    def _run_batch(self, rt: HostRuntime, impl: Action, runs: list[StepRun]) -> str | None:
        ctx = self._context(rt, runs[0])
        for r in runs:
            if r.state in ("pending", "skipped", "failed", "undone"):
                r.fire("check")
        observed = impl.observe_many(ctx, [r.instance.args for r in runs])
        holds = [impl.check(r.instance.args, now) for r, now in zip(runs, observed)]
        last = max((i for i, h in enumerate(holds) if not h), default=-1)
        fired = [self._needs_apply(impl, r, now, holds[i], durable=i == last)
                 for i, (r, now) in enumerate(zip(runs, observed))]
        todo = [(r, now) for r, now, how in zip(runs, observed, fired) if how]
        if not todo:
            return None
        if self._stop_reason:
            for r, how in zip(runs, fired):
                if how:
                    self._not_applied(r, how)
            return self._stop_reason
        self._touched = True
        try:
            impl.apply_many(ctx, [(r.instance.args, now) for r, now in todo])
        except Exception as exc:
            return self._settle_batch(impl, ctx, [r for r, _ in todo], exc)
        for i, (r, _) in enumerate(todo):
            r.fire("succeed", detail=self._batch_commands(ctx, i))
        return None

    @staticmethod
    def _batch_commands(ctx: Context, index: int) -> dict[str, Any]:
        """A batch's commands are journaled once, with its first instance."""
        return {"commands": ctx.commands} if index == 0 else {}

    def _settle_batch(self, impl: Action, ctx: Context, runs: list[StepRun],
                      exc: Exception) -> str:
        """A batch failed part-way: find out which instances took effect."""
        after = impl.observe_many(ctx, [r.instance.args for r in runs])
        failure = None
        for i, (r, now) in enumerate(zip(runs, after)):
            if impl.check(r.instance.args, now):
                r.fire("succeed", detail=self._batch_commands(ctx, i))
            elif failure is None:
                failure = self._fail(r, exc, ctx, "apply")
            else:
                r.fire("fail", message=f"not applied: the batch stopped at {runs[0].key}")
        return failure or self._fail_message(runs[0], self._failure_line(runs[0], "apply", exc))

    def _failure_line(self, r: StepRun, method: str, exc: Exception) -> str:
        """One line naming what raised: the backend's method (or the engine's own code), the
        action, backend and plugin, the exception's type and message."""
        if method == "engine":
            return f"{type(exc).__name__}: {exc}"
        inst = r.instance
        return failure_line(exc, method=method, action=inst.action, backend=inst.backend,
                            plugin=self.registry.owner(inst.action, inst.backend or ""))

    def _fail(self, r: StepRun, exc: Exception, ctx: Context, method: str, *,
              suffix: str = "") -> str:
        r.error = self._failure_line(r, method, exc) + suffix
        if r.state in ("checking", "applying"):
            r.fire("fail", message=r.error, detail={"commands": ctx.commands,
                                                    **_traceback_of(exc)})
        return self._fail_message(r, r.error)

    def _fail_unexpected(self, runs: Sequence[StepRun], exc: Exception) -> str:
        detail = {"traceback": traceback.format_exc()}
        for r in runs:
            if r.state in ("checking", "applying"):
                r.error = f"{type(exc).__name__}: {exc}"
                r.fire("fail", message=r.error, detail=detail)
                return self._fail_message(r, exc)
        return f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _fail_message(r: StepRun, exc: Exception | str) -> str:
        where = f" on {r.host.name}" if r.host.name != "local" else ""
        return f"step {r.key}{where}: {exc}"

    # -- rollback ----------------------------------------------------------------------------

    def _roll_back(self) -> int:
        self.phase = "rollback"
        self.run.roll_back()
        self._refuse_unrecorded()
        futures = [self._runtime(h.name).pool.submit(self._bounded, self._undo_host,
                                                     self._runtime(h.name), self.steps[h.name])
                   for h in self.hosts]
        errors = [e for f in futures for e in f.result()]
        if errors:
            if self._rollback_interrupts:
                errors.append(f"run `runflow rollback {self.run.id}` to finish it")
            self.run.fail_rollback(message="; ".join(errors))
            return EXIT_NEEDS_ATTENTION
        self.run.finish_rollback()
        return EXIT_ROLLED_BACK

    def _undo_host(self, rt: HostRuntime, runs: list[StepRun]) -> list[str]:
        """Undo this host's changed steps in reverse, a for_each step's instances together
        where the backend can; an undo that fails does not stop the rest."""
        errors = []
        changed = []
        for r in reversed(runs):
            if r.state not in STEP_CHANGED:
                continue
            try:  # undo needs the arguments the step ran with
                self._resolve(r)
            except ActionError as exc:
                errors.append(self._fail_message(r, f"cannot undo: arguments: {exc}"))
                continue
            changed.append(r)
        for _, same_step in itertools.groupby(changed, key=lambda r: r.instance.step_index):
            group = list(same_step)
            if len(self._rollback_interrupts) > 1:
                left = [r.key for r in changed if r.state in STEP_CHANGED]
                where = f" on {rt.host.name}" if rt.host.name != "local" else ""
                errors.append(f"rollback stopped by {self._rollback_interrupts[-1]}{where}: "
                              f"not undone: {', '.join(left)}")
                break
            impl = self._impl(rt, group[0].instance)
            if len(group) > 1 and impl.batches_undo():
                errors += self._undo_batch(rt, impl, group)
            else:
                errors += [e for r in group
                           if (e := self._undo_one(impl, r, self._context(rt, r)))]
        return errors

    def _undo_batch(self, rt: HostRuntime, impl: Action, runs: list[StepRun]) -> list[str]:
        ctx = self._context(rt, runs[0])
        for i, r in enumerate(runs):  # the intents reach the disk together, with the last one
            r.fire("undo", durable=i == len(runs) - 1)
        self._touched = True
        try:
            impl.undo_many(ctx, [(r.instance.args, r.before or {}) for r in runs])
        except Exception:
            # Which instances the batch undid is not known: undo each one again on its own,
            # from a fresh observation (one restored already needs nothing), so that each
            # failure is its instance's. The first one journals the batch's commands.
            contexts = [ctx] + [self._context(rt, r) for r in runs[1:]]
            return [e for r, c in zip(runs, contexts) if (e := self._undo_one(impl, r, c))]
        for i, r in enumerate(runs):
            r.fire("finish_undo", detail=self._batch_commands(ctx, i))
        return []

    def _undo_one(self, impl: Action, r: StepRun, ctx: Context) -> str | None:
        r.fire("undo", durable=True)
        self._touched = True
        try:
            impl.undo(ctx, r.instance.args, r.before or {})
        except Exception as exc:
            r.error = self._failure_line(r, "undo", exc)
            r.fire("fail_undo", message=r.error,
                   detail={"commands": ctx.commands, **_traceback_of(exc)})
            return self._fail_message(r, r.error)
        r.fire("finish_undo", detail={"commands": ctx.commands})
        return None

    # -- plumbing ----------------------------------------------------------------------------

    def _bounded(self, work: Any, *args: Any) -> Any:
        """work(*args) in a host's thread, while fewer than `forks` hosts are at work."""
        with self._forks:
            return work(*args)

    def _connect(self, hosts: list[Host]) -> None:
        """Preflight: connect every host that needs a connection (SSH), all at once, before
        the first step; one that cannot be reached stops the command with nothing touched.
        A run has done it already, as it took the host locks."""
        if any(h.remote for h in hosts):
            from .ssh import connect_all

            connect_all(hosts)

    def _runtime(self, host_name: str) -> HostRuntime:
        if host_name not in self._runtimes:
            host = next(h for h in self.hosts if h.name == host_name)
            self._runtimes[host_name] = HostRuntime.start(host)
        return self._runtimes[host_name]

    def _impl(self, rt: HostRuntime, inst: Instance) -> Action:
        key = (inst.action, inst.backend or "")
        if key not in rt.impls:
            rt.impls[key] = self.registry.implementations(inst.action)[inst.backend].impl()
        return rt.impls[key]

    def _context(self, rt: HostRuntime, r: StepRun) -> Context:
        return Context(rt.host, self.run.id, r.key, rt.resources, emit=self._emit)

    def _close(self) -> None:
        for name, rt in self._runtimes.items():
            if name not in self._lent:
                rt.close()
        self._runtimes = dict(self._lent)

    def _on_transition(self, model: Any, source: str, dest: str, kwargs: dict[str, Any]) -> None:
        message = kwargs.get("message", "")
        detail = kwargs.get("detail", {})
        if isinstance(model, StepRun):
            event = Event("step", self.run.id, source, dest, host=model.host.name,
                          step=model.key, message=message, detail=detail,
                          durable=kwargs.get("durable", False))
        else:
            event = Event("run", self.run.id, source, dest, message=message, detail=detail)
        self._emit(event)

    def _emit(self, event: Event) -> None:
        # Each subscriber on its own: pluggy stops calling a hook's implementations at the
        # first that raises, and one failing subscriber must not keep events from the others
        # (the journal above all, which goes first: it is tryfirst).
        with self._emit_lock:
            for impl in reversed(self._hook.get_hookimpls()):
                if impl.hookwrapper or impl.wrapper:  # nothing to wrap: not called
                    continue
                if self._trace:
                    self._trace("runflow_event", impl.plugin_name, event)
                try:
                    impl.function(event) if impl.argnames else impl.function()
                except Exception as exc:
                    self._subscriber_failed(impl.plugin_name, exc)

    def _subscriber_failed(self, name: str, exc: Exception) -> None:
        if isinstance(exc, JournalError):
            self._journal_failure = self._journal_failure or str(exc)
            self._fault = self._fault or str(exc)
        else:
            self._fault = self._fault or (f"the event subscriber {name} failed: "
                                          f"{type(exc).__name__}: {exc}")


def _traceback_of(exc: BaseException) -> dict[str, str]:
    """A failure's traceback, for the journal (`runflow show --json`) and --debug."""
    return {"traceback": "".join(traceback.format_exception(exc))}
