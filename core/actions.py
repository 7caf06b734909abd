"""The action contract: what a backend implements for each action, and the registry of them.

An action is a named desired state (`bridge.present`), not a command. A backend implements it
with a subclass of `Action`:

    observe  read the live state the step is about (JSON-serialisable; journaled as "before")
    check    does the desired state already hold in what observe saw? → the step is skipped
             (a step whose state cannot be observed says so with `observable`)
    apply    make it hold
    undo     restore what observe saw before apply (not just "delete what I made"). Undo
             also runs for a step whose apply failed half-way and for a step left in doubt
             by a killed run, whose apply may never have happened: it must change only what
             a fresh look shows is still changed, and running it twice must be harmless
    describe the commands apply would run (the exact argv for shell backends, an equivalent
             command line for API backends), for `plan` and `export`

Backends may also override `observe_many` / `apply_many` to serve the instances of a
`for_each` step in one go (one dump, one `ip -batch`, one OVSDB transaction); the journal and
undo stay per instance.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

from .events import Event
from .hosts import Completed, Host

State = dict[str, Any]
"""What `observe` returns: JSON-serialisable, stored in the journal as the step's "before"."""


class Args(BaseModel):
    """Base of every action's argument schema. Unknown arguments are refused."""

    # Numbers are accepted where text is expected: `value = 1` and `{{ n * 10 }}` are fine.
    # A schema's validator is built when it first validates: a run uses a few of the
    # actions, and building all of them at import took 40 ms of every start-up.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True,
                              defer_build=True)


class Resources:
    """Connections shared by the steps of one run on one host (opened once, closed at the end)."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        """Return the resource named key, creating it with factory() on first use."""
        if key not in self._items:
            self._items[key] = factory()
        return self._items[key]

    def close(self) -> None:
        for item in reversed(list(self._items.values())):
            close = getattr(item, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing is best effort: the run's outcome is already known
                    pass
        self._items.clear()


@dataclass
class Context:
    """What an action sees of the run: the host, who is asking, and shared connections."""

    host: Host
    run_id: str
    step: str  # the step instance's name, e.g. "ports[3]"
    resources: Resources
    commands: list[str] = field(default_factory=list)
    # Where `log` sends an event (the engine's subscribers: progress, journal, --events).
    emit: Callable[[Event], None] | None = None

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True,
            timeout: float | None = None) -> Completed:
        """Run argv on the host and remember it for the journal. With check=True (the
        default) a non-zero exit raises CommandError; with check=False the caller reads
        `returncode`. `input` is written to its standard input; after `timeout` seconds it
        is killed and CommandError raised (exit 124)."""
        self.commands.append(self.host.describe(argv))
        return self.host.run(argv, input=input, check=check, timeout=timeout)

    def record(self, argv: Sequence[str]) -> None:
        """Remember, for the journal, the command line equivalent of what an API call did
        (a backend that talks netlink or OVSDB runs no command `run` could record)."""
        self.commands.append(self.host.describe(argv))

    def log(self, message: str) -> None:
        """Say something about this step: a line in the progress output, an event of kind
        "log" in the journal and in --events."""
        if self.emit is not None:
            self.emit(Event("log", self.run_id, None, "log", host=self.host.name,
                            step=self.step, message=message))


class Action:
    """Base class of action implementations. Subclasses set the class attributes and override
    observe, check, apply, undo and describe."""

    name: ClassVar[str]  # e.g. "bridge.present"
    backend: ClassVar[str]  # e.g. "brctl"
    family: ClassVar[str]  # the actions whose backends go together, e.g. "bridge"
    Args: ClassVar[type[Args]]
    # The targets this implementation serves ("centos6", "modern"); () serves every target
    # (see core/targets.py for how a step's backend is chosen).
    targets: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""  # one line for `runflow actions` and `runflow backends`
    holds_message: ClassVar[str] = "already in the desired state"  # why a step was skipped
    # Why this implementation cannot serve a host reached only by commands (an SSH host), or
    # "" when it can: what it needs of the host in this process (its netlink socket, /proc).
    local_only: ClassVar[str] = ""
    # True when apply has an effect observe cannot see (e.g. restarting a daemon after writing
    # its config): a step left in doubt by a killed run is then applied again, not trusted.
    reapply_in_doubt: ClassVar[bool] = False

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        """Why this implementation cannot run on host (a missing tool, library...), or None."""
        return None

    def observe(self, ctx: Context, args: Any) -> State:
        raise NotImplementedError

    def observe_many(self, ctx: Context, args: Sequence[Any]) -> list[State]:
        return [self.observe(ctx, a) for a in args]

    def check(self, args: Any, before: State) -> bool:
        raise NotImplementedError

    def observable(self, args: Any) -> bool:
        """False when observe cannot see whether this step's desired state holds (e.g. a
        `shell.run` without `check`): check then always says "not yet", so the step is always
        applied when first met. On resume, an applied step that cannot be observed stays
        applied, as the journal says: only a real observation may report drift and apply it
        again. A step in doubt (killed during apply) is applied again, as check decides."""
        return True

    def apply(self, ctx: Context, args: Any, before: State) -> None:
        raise NotImplementedError

    def apply_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        """Apply several instances; on failure raise, and the engine re-checks each instance
        to find out which ones took effect."""
        for args, before in items:
            self.apply(ctx, args, before)

    def undo(self, ctx: Context, args: Any, before: State) -> None:
        raise NotImplementedError

    def undo_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        """Undo several instances of one step, in the order given (the reverse of the run's).
        On failure raise: the engine then undoes each instance on its own with `undo`, so an
        override needs an `undo` that restores only what a fresh observation shows changed."""
        for args, before in items:
            self.undo(ctx, args, before)

    def describe(self, args: Any, before: State | None = None) -> list[list[str]]:
        """The commands apply would run (given the observed state when known)."""
        return []

    def describe_undo(self, args: Any, before: State | None = None) -> list[list[str]]:
        """The commands undo would run."""
        return []

    def shell(self, host: Host, args: Any, var: Callable[[str], str]) -> ShellStep | None:
        """This step as POSIX shell for `runflow export` on host, or None when it has no
        shell form (export then refuses the workflow, naming the step). `var(name)` gives a
        shell variable name of this step's own, for what `save` captures and `undo` needs."""
        return None

    @classmethod
    def batches(cls) -> bool:
        """True when the backend serves for_each instances together (overrides apply_many)."""
        return cls.apply_many is not Action.apply_many

    @classmethod
    def batches_undo(cls) -> bool:
        """True when the backend undoes for_each instances together (overrides undo_many)."""
        return cls.undo_many is not Action.undo_many


# ShellStep and Registered are NamedTuples, not frozen dataclasses: those generate their
# methods with exec, ~1 ms of every command's start-up each.
class ShellStep(NamedTuple):
    """A step as shell text, for `runflow export`. Every value in it must go through
    `sh()` (shlex quoting), so that nothing from a workflow can become shell syntax.

    check  a condition that holds (exit 0) when the desired state already does; None: always
           apply. It only reads.
    save   lines that capture, into the variables named in `saved`, what undo will need
    apply  lines that make the desired state hold
    undo   lines that restore what `save` captured
    """

    check: str | None = None
    save: tuple[str, ...] = ()
    saved: tuple[str, ...] = ()
    apply: tuple[str, ...] = ()
    undo: tuple[str, ...] = ()


def sh(*argv: Any) -> str:
    """One shell command line from argv, every word quoted."""
    return shlex.join(str(a) for a in argv)


RegisterActions = Callable[[type[Action]], None]


class Registered(NamedTuple):
    impl: type[Action]
    plugin: str  # the plugin that registered it, for `runflow backends`


class Registry:
    """Every action implementation, by action name and backend.

    `load(action)` is called before an action's implementations are looked up (with None
    before all of them are listed), so that plugins can be imported on demand; `rank(plugin)`
    orders each action's implementations the same way whatever order plugins were loaded in.
    """

    def __init__(self, load: Callable[[str | None], None] = lambda action: None,
                 rank: Callable[[str], Any] = lambda plugin: 0) -> None:
        self._by_action: dict[str, dict[str, Registered]] = {}
        self._load = load
        self._rank = rank

    def register(self, impl: type[Action], plugin: str) -> None:
        if not (isinstance(impl, type) and issubclass(impl, Action)):
            raise TypeError(f"{getattr(impl, '__qualname__', repr(impl))} is not an Action "
                            "subclass (register the class that implements the action)")
        for attr in ("name", "backend", "family", "Args"):
            if not hasattr(impl, attr):
                raise TypeError(f"{impl.__qualname__} does not set {attr}")
        if not (isinstance(impl.Args, type) and issubclass(impl.Args, Args)):
            raise TypeError(f"{impl.__qualname__}.Args is not a subclass of "
                            "runflow.core.actions.Args")
        if isinstance(impl.targets, str):
            raise TypeError(f"{impl.__qualname__}.targets must be a tuple of target names, "
                            f"e.g. ({impl.targets!r},)")
        backends = self._by_action.setdefault(impl.name, {})
        if impl.backend in backends:
            other = backends[impl.backend]
            raise TypeError(
                f"action {impl.name} of backend {impl.backend} is registered twice: by "
                f"{other.plugin} and by {plugin}"
            )
        for other in backends.values():
            if other.impl.Args is not impl.Args:
                raise TypeError(
                    f"{impl.__qualname__} (plugin {plugin}) declares other arguments for "
                    f"{impl.name} than {other.impl.__qualname__}: implementations of one action "
                    "must share its Args class"
                )
        backends[impl.backend] = Registered(impl, plugin)
        self._by_action[impl.name] = dict(sorted(backends.items(),
                                                 key=lambda item: self._rank(item[1].plugin)))

    def owner(self, action: str, backend: str) -> str | None:
        """The plugin that registered this implementation (without loading anything)."""
        registered = self._by_action.get(action, {}).get(backend)
        return registered.plugin if registered else None

    def remove_plugin(self, plugin: str) -> None:
        """Forget every implementation a plugin registered (another one replaces it)."""
        for action, backends in list(self._by_action.items()):
            kept = {b: r for b, r in backends.items() if r.plugin != plugin}
            if kept:
                self._by_action[action] = kept
            else:
                del self._by_action[action]

    def names(self) -> list[str]:
        self._load(None)
        return sorted(self._by_action)

    def backends(self) -> list[str]:
        self._load(None)
        return sorted({b for impls in self._by_action.values() for b in impls})

    def implementations(self, action: str) -> dict[str, Registered]:
        self._load(action)
        return self._by_action.get(action, {})

    def args_schema(self, action: str) -> type[Args]:
        return next(iter(self.implementations(action).values())).impl.Args

    def close_names(self, action: str) -> list[str]:
        import difflib  # for a misspelt action only: it is 1-2 ms of every start-up

        return difflib.get_close_matches(action, self.names(), n=3, cutoff=0.6)
