"""Event sources: what `runflow watch` listens to, and what a source plugin implements.

A source watches one kind of object on one host: the containers of the host's dockerd, the
links of its network namespace. It can say which matching objects are *active* now (a
running container, a link that is up), look one up, and stream the events that happen to
them. The watcher keeps one succeeded run per active object and rolls back the runs of
objects that are no longer active: listing makes it level-triggered (on start and after every
reconnect), the stream makes it quick.

A plugin contributes a source through the `runflow_register_sources` hook:

    from runflow.core.hookspecs import hookimpl
    from runflow.core.watch.sources import Source

    class Links(Source):
        name = "mylinks"
        event_names = ("up", "down")
        ...

    @hookimpl
    def runflow_register_sources(register):
        register(Links)

Everything a source does runs in the watcher's threads: `connect`, `active`, `lookup` and
`stream` in one thread per source and host, one after another; `close` from another thread,
to end a `stream` that waits for events.

On an SSH host, a source reaches a service's unix socket at `host.service_address(address)`:
forwarded over the master connection the watcher keeps for the host. When that connection is
lost the stream ends (or ConnectionLost is raised): the watcher logs in again and reconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

from ..actions import Args
from ..errors import RunflowError
from ..hosts import Host


class WatchedObject(NamedTuple):
    """One object a source watches, as it is now."""

    id: str
    """What identifies it for as long as it exists (a container's id, a link's name)."""
    incarnation: str
    """What changes when the object becomes active again after it stopped (a container's start
    time): a run made for an earlier incarnation is stale and is rolled back."""
    since: float | None
    """When this incarnation became active, by the clock of the source's events (None: not
    known), so that a stop event older than a newer start is not taken for the current one."""
    vars: dict[str, Any]
    """What the run sees as its `event` var: at least `name`; the watcher adds `source`,
    `host`, `action` (the event, or "reconcile") and `time`."""

    @property
    def label(self) -> str:
        """How log lines name it."""
        return str(self.vars.get("name") or self.id)


class SourceEvent(NamedTuple):
    """Something that happened to an object."""

    action: str  # one of the source's event_names
    id: str  # the object's id
    time: float  # seconds since the epoch, by the source's clock
    name: str = ""  # the object's name, for log lines


class SourceUnavailable(RunflowError):
    """The source cannot reach what it watches (a daemon down, a socket gone): the watcher
    tries again later, with a growing delay, and reconciles when it is back."""


class Source:
    """An event source on one host. Subclasses set the class attributes and implement the
    methods; `match` is the workflow's `[watch] match` table, validated with `Match`."""

    name: ClassVar[str]
    """What a workflow's `[watch] source` names."""
    event_names: ClassVar[tuple[str, ...]]
    """The events it sends (what `[watch] start` and `stop` may name)."""
    Match: ClassVar[type[Args]] = Args
    """The schema of the `[watch] match` table (default: no keys)."""
    summary: ClassVar[str] = ""

    def __init__(self, host: Host, match: Args) -> None:
        self.host = host
        self.match = match

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        """Why this source cannot watch that host (a module missing, a kind of host it cannot
        reach), or None."""
        return None

    def connect(self) -> None:
        """Start listening: the events from now on are kept for `stream`. Raise
        SourceUnavailable if the host's service cannot be reached."""
        raise NotImplementedError

    def active(self) -> list[WatchedObject]:
        """Every matching object that is active now."""
        raise NotImplementedError

    def lookup(self, object_id: str) -> WatchedObject | None:
        """The object, if it exists, matches and is active now."""
        raise NotImplementedError

    def stream(self) -> Iterator[SourceEvent]:
        """The matching objects' events since `connect`, as they come. Returns, or raises
        SourceUnavailable, when the connection is lost or `close` was called."""
        raise NotImplementedError

    def close(self) -> None:
        """End `stream` (called from another thread) and let go of the connection."""


RegisterSources = Callable[[type[Source]], None]
