"""The round trip every action implementation must survive, run against a real host.

Each stage runs as the engine would run it: in a thread that entered the host (a network
namespace host's thread lives in its namespace), with a fresh Context and shared connections
(`ctx.resources`) per command — apply in one, the second run in another, the rollback in a
third — and with the observed "before" state passed through JSON, as the journal keeps it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runflow.core.actions import Action, Args, Context, Resources, State
from runflow.core.events import Event
from runflow.core.hosts import Completed, Host

T = TypeVar("T")


class RoundtripFailure(AssertionError):
    """An action implementation broke the contract; the message says at which stage."""


@dataclass
class Roundtrip:
    """What a round trip saw, for further checks of a test's own."""

    before: State  # observed before apply (after its trip through JSON)
    after: State  # observed after apply
    restored: State  # observed after undo
    applied: list[str] = field(default_factory=list)  # the commands apply ran (or recorded)
    undone: list[str] = field(default_factory=list)  # the commands undo ran (with its reads)
    logs: list[str] = field(default_factory=list)  # what the action said with ctx.log()


def run_on(host: Host, argv: Sequence[str], *, check: bool = True) -> Completed:
    """Run a command on host from the test itself (to set a host up, or look at it): inside a
    network namespace host through `ip netns exec`, as `runflow plan` shows its commands."""
    return Host.run(host, [*host.shell_prefix(), *argv], check=check)


def on_host(host: Host, work: Callable[[], T]) -> T:
    """Call work() in a thread that entered host, as the engine's worker threads do."""
    with ThreadPoolExecutor(1, thread_name_prefix="roundtrip", initializer=host.enter) as pool:
        return pool.submit(work).result()


def roundtrip(action: type[Action] | str, args: Mapping[str, Any] | Args, host: Host, *,
              backend: str | None = None, plugins: Any = None,
              ignore: Sequence[str] = ()) -> Roundtrip:
    """Check one action implementation on host, from a state where its desired state does not
    hold yet:

    1. observe: JSON-serialisable, and the same when observed again (observe only reads);
    2. the desired state does not hold yet (else the trip would prove nothing);
    3. apply; the desired state holds (check on a fresh observation);
    4. a second run (a new command) would skip the step;
    5. undo (a new command, as `runflow rollback`): observe equals what it was before;
    6. undo again: harmless (undo also runs for steps whose apply never happened), and the
       host is still as before.

    action: an Action subclass, or an action's name (then `backend` picks one of its
    implementations, from `plugins` — a runflow.core.plugins.Plugins — or from the built-ins
    and installed plugins). args: the step's arguments, validated by the action's schema.
    ignore: parts of the observed state that cannot come back as they were and do not
    matter, as dotted paths with `*` for any key — e.g. "links.*.ifindex" for a link that
    undo recreates (the kernel numbers it anew).
    Raises RoundtripFailure naming the stage that broke; returns what it saw.
    """
    impl_class = _implementation(action, backend, plugins)
    parsed = args if isinstance(args, Args) else impl_class.Args.model_validate(dict(args))
    return on_host(host, lambda: _trip(impl_class, parsed, host, ignore))


def apply(action: type[Action] | str, args: Mapping[str, Any] | Args, host: Host, *,
          backend: str | None = None, plugins: Any = None) -> State:
    """Make an action's desired state hold on host (observe, apply unless it holds), to set a
    host up with runflow's own actions; returns what was observed before."""
    impl_class = _implementation(action, backend, plugins)
    parsed = args if isinstance(args, Args) else impl_class.Args.model_validate(dict(args))

    def work() -> State:
        commands = _Commands(host)
        try:
            impl, ctx = impl_class(), commands.context()
            before = impl.observe(ctx, parsed)
            if not impl.check(parsed, before):
                impl.apply(ctx, parsed, before)
            return before
        finally:
            commands.close()

    return on_host(host, work)


def _implementation(action: type[Action] | str, backend: str | None,
                    plugins: Any) -> type[Action]:
    if isinstance(action, type) and issubclass(action, Action):
        return action
    if plugins is None:
        from runflow.core.plugins import Plugins

        plugins = Plugins()
    impls = plugins.registry.implementations(action)
    if not impls:
        raise ValueError(f"no implementation of action {action!r} is registered")
    if backend is None:
        if len(impls) > 1:
            raise ValueError(f"{action} has several backends ({', '.join(impls)}): say which "
                             "with backend=")
        backend = next(iter(impls))
    if backend not in impls:
        raise ValueError(f"backend {backend!r} does not implement {action} "
                         f"(implemented by: {', '.join(impls)})")
    return impls[backend].impl


class _Commands:
    """A fresh Context per command (run), each with its own connections, closed after it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.logs: list[str] = []
        self._open: list[Resources] = []

    def context(self) -> Context:
        resources = Resources()
        self._open.append(resources)
        return Context(self.host, "roundtrip", "roundtrip", resources, emit=self._log)

    def _log(self, event: Event) -> None:
        self.logs.append(event.message)

    def close(self) -> None:
        for resources in self._open:
            resources.close()


def _trip(impl_class: type[Action], args: Args, host: Host, ignore: Sequence[str]
          ) -> Roundtrip:
    impl = impl_class()
    what = f"{impl.name} (backend {impl.backend})"

    def same(a: State, b: State) -> bool:
        return _without(a, ignore) == _without(b, ignore)

    def fail(stage: str, problem: str) -> RoundtripFailure:
        return RoundtripFailure(f"{what}: {stage}: {problem}")

    commands = _Commands(host)
    try:
        ctx = commands.context()
        before = _through_json(impl.observe(ctx, args), fail)
        again = _through_json(impl.observe(ctx, args), fail)
        if again != before:
            raise fail("observe", "observing twice gave two states (observe must only read, "
                                  "and leave out what changes by itself):\n"
                       + _differences(before, again))
        if impl.check(args, before):
            raise fail("before apply", "the desired state holds already: choose arguments (or "
                                       "set the host up) so that apply has something to do")
        _describes(impl, args, before, fail)
        start = len(ctx.commands)
        impl.apply(ctx, args, before)
        applied = ctx.commands[start:]
        after = _through_json(impl.observe(ctx, args), fail)
        if not impl.check(args, after):
            raise fail("after apply", f"check does not hold on what observe sees now: {after}")

        second = commands.context()
        if not impl.check(args, _through_json(impl.observe(second, args), fail)):
            raise fail("second run", "a second run would apply the step again (check fails on "
                                     "a fresh observation)")

        rollback = commands.context()
        impl.undo(rollback, args, before)
        undone = list(rollback.commands)
        restored = _through_json(impl.observe(rollback, args), fail)
        if not same(restored, before):
            raise fail("undo", "the host is not as it was before apply:\n"
                       + _differences(_without(before, ignore), _without(restored, ignore)))

        again_ctx = commands.context()
        try:
            impl.undo(again_ctx, args, before)
        except Exception as exc:
            raise fail("undo again", f"raised {type(exc).__name__}: {exc} (undo must act "
                                     "only on what is still changed)") from exc
        final = _through_json(impl.observe(again_ctx, args), fail)
        if not same(final, before):
            raise fail("undo again", "changed the host:\n"
                       + _differences(_without(before, ignore), _without(final, ignore)))
        return Roundtrip(before, after, restored, applied, undone, commands.logs)
    finally:
        commands.close()


def _through_json(state: State, fail: Callable[[str, str], RoundtripFailure]) -> State:
    """The state as the journal gives it back to undo."""
    try:
        kept = json.loads(json.dumps(state))
    except (TypeError, ValueError) as exc:
        raise fail("observe", f"the state is not JSON-serialisable ({exc}): {state!r}") from None
    if kept != state:
        raise fail("observe", "the state changes on its way through JSON (tuples, sets or "
                              f"non-string keys?): {state!r} comes back as {kept!r}")
    return kept


def _without(state: Any, patterns: Sequence[str]) -> Any:
    """state without the parts the dotted patterns name ("links.*.ifindex")."""
    for pattern in patterns:
        state = _drop(state, pattern.split("."))
    return state


def _drop(value: Any, path: list[str]) -> Any:
    if not isinstance(value, dict) or not path:
        return value
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in value.items() if not (head == "*" or k == head)}
    return {k: _drop(v, rest) if head in ("*", k) else v for k, v in value.items()}


def _describes(impl: Action, args: Args, before: State,
               fail: Callable[[str, str], RoundtripFailure]) -> None:
    for name in ("describe", "describe_undo"):
        commands = getattr(impl, name)(args, before)
        if not (isinstance(commands, list) and all(
                isinstance(c, (list, tuple)) and all(isinstance(w, (str, int, float)) for w in c)
                for c in commands)):
            raise fail(name, f"must return a list of argv lists, not {commands!r}")


def _differences(a: Any, b: Any, path: str = "", limit: int = 20) -> str:
    lines: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if len(lines) >= limit or x == y:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y), key=str):
                walk(x.get(key, "<absent>"), y.get(key, "<absent>"), f"{where}.{key}")
            return
        lines.append(f"  {where or '.'}: {x!r} -> {y!r}")

    walk(a, b, path)
    return "\n".join(lines)
