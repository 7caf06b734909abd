"""The `docker` event source of `runflow watch`: the containers of a host's dockerd, through the
Docker SDK's event stream (`docker events`) and container listing. An SSH host's dockerd is
reached through its socket, forwarded over the master connection the watch keeps for the host.

A container is active while it runs. Its incarnation is its start time (State.StartedAt), which
every start changes: a run made before a restart is stale. A run sees the container as its
`event` var: `id`, `name`, `labels`, `pid` (of its main process: the way into its network
namespace), `image` and `started`.

`match` selects containers by label, as `docker ps --filter label=...` does: `label = "KEY"`
(the container has the label) or `"KEY=VALUE"`, or a list of them (all must hold); and by name,
`name = "GLOB"` (shell-style, e.g. "web-*"). Labels are filtered by dockerd, names here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from runflow.core.actions import Args
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host
from runflow.core.watch.sources import Source, SourceEvent, SourceUnavailable, WatchedObject

from .client import docker_endpoint, missing_modules

# Container events (docker events --filter type=container); "health_status: healthy" and the
# like are sent as their first word.
CONTAINER_EVENTS = ("attach", "commit", "copy", "create", "destroy", "detach", "die",
                    "exec_create", "exec_detach", "exec_die", "exec_start", "export",
                    "health_status", "kill", "oom", "pause", "rename", "resize", "restart",
                    "start", "stop", "top", "unpause", "update")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")


def _label_filter(value: str) -> str:
    key, _, wanted = value.partition("=")
    if not _LABEL_KEY.fullmatch(key) or any(c in wanted for c in "\n\r\x00"):
        raise ValueError(f"{value!r} is not KEY or KEY=VALUE (a label key is letters, digits, "
                         "'.', '_', '/' and '-')")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


LabelFilter = Annotated[str, AfterValidator(_label_filter)]


class DockerMatch(Args):
    """Which containers a docker watch considers."""

    label: Annotated[list[LabelFilter], BeforeValidator(_as_list)] = Field(
        default_factory=list, description='"KEY" or "KEY=VALUE", or a list of them: all hold')
    name: str | None = Field(default=None, min_length=1, max_length=128,
                             description='a shell-style pattern of container names, e.g. "web-*"')


def _epoch(text: str) -> tuple[int, str] | None:
    """dockerd's RFC 3339 times ("2024-05-01T10:00:00.123456789Z") as whole seconds since the
    epoch and the digits of the fraction."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)",
                         text)
    if match is None:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    return int(datetime.fromisoformat(match[1] + zone).timestamp()), match[2] or "0"


def _timestamp(text: str) -> float | None:
    epoch = _epoch(text)
    return None if epoch is None else epoch[0] + float(f"0.{epoch[1]}")


def _since(text: str) -> str | None:
    """A time as the events API's `since` takes it: "SECONDS.NANOSECONDS", to the nanosecond."""
    epoch = _epoch(text)
    return None if epoch is None else f"{epoch[0]}.{epoch[1][:9].ljust(9, '0')}"


class DockerSource(Source):
    name = "docker"
    event_names = CONTAINER_EVENTS
    Match = DockerMatch
    summary = "containers of the host's dockerd, active while they run"

    def __init__(self, host: Host, match: DockerMatch) -> None:
        super().__init__(host, match)
        self.match: DockerMatch = match
        self._api: Any = None
        self._events: Any = None

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return missing_modules("docker")

    # -- the connection ---------------------------------------------------------------------

    def connect(self) -> None:
        import docker

        endpoint = docker_endpoint(self.host)
        try:
            # An SSH host's socket is forwarded over the master connection the watch keeps for
            # the host (core/watch/leases.py): the stream ends when that connection is lost.
            self._api = docker.APIClient(base_url=self.host.service_address(endpoint),
                                         timeout=60)
            # The daemon's own clock: events from this moment on are replayed, so that none is
            # lost between here and the stream's start, whatever the two clocks say.
            now = _since(self._api.info()["SystemTime"])
            filters: dict[str, Any] = {"type": "container"}
            if self.match.label:
                filters["label"] = self.match.label
            self._events = self._api.events(since=now, filters=filters, decode=True)
        except Exception as exc:  # docker's, requests' and the socket's own errors
            self.close()
            raise SourceUnavailable(f"cannot reach dockerd at {endpoint}: {_reason(exc)}") \
                from None

    def close(self) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except Exception:  # closing is best effort: the stream may be gone already
                pass
        if self._api is not None:
            self._api.close()

    # -- what exists ------------------------------------------------------------------------

    def active(self) -> list[WatchedObject]:
        filters: dict[str, Any] = {"status": "running"}
        if self.match.label:
            filters["label"] = self.match.label
        found = []
        for summary in self._call(self._api.containers, filters=filters):
            container = self.lookup(summary["Id"])
            if container is not None:
                found.append(container)
        return found

    def lookup(self, object_id: str) -> WatchedObject | None:
        import docker

        try:
            info = self._call(self._api.inspect_container, object_id)
        except docker.errors.NotFound:
            return None
        state, config = info["State"], info["Config"]
        name = info["Name"].lstrip("/")
        labels = config.get("Labels") or {}
        if not (state["Running"] and state["Pid"] and self._matches(name, labels)):
            return None
        return WatchedObject(
            id=info["Id"], incarnation=state["StartedAt"], since=_timestamp(state["StartedAt"]),
            vars={"id": info["Id"], "name": name, "labels": labels, "pid": int(state["Pid"]),
                  "image": config.get("Image", ""), "started": state["StartedAt"]})

    def _matches(self, name: str, labels: dict[str, str]) -> bool:
        for wanted in self.match.label:
            key, has_value, value = wanted.partition("=")
            if key not in labels or (has_value and labels[key] != value):
                return False
        return self.match.name is None or fnmatch.fnmatchcase(name, self.match.name)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """An API call; a daemon that cannot be reached is SourceUnavailable."""
        import docker

        try:
            return method(*args, **kwargs)
        except docker.errors.NotFound:
            raise
        except Exception as exc:
            raise SourceUnavailable(f"dockerd at {docker_endpoint(self.host)}: "
                                    f"{_reason(exc)}") from None

    # -- what happens -----------------------------------------------------------------------

    def stream(self) -> Iterator[SourceEvent]:
        # The SDK's stream ends (StopIteration) when the connection drops or is closed.
        for raw in self._events:
            if raw.get("Type", "container") != "container":
                continue
            actor = raw.get("Actor") or {}
            action = str(raw.get("Action") or raw.get("status") or "").split(":")[0]
            name = (actor.get("Attributes") or {}).get("name", "")
            if self.match.name is not None and not fnmatch.fnmatchcase(name, self.match.name):
                continue
            when = raw.get("timeNano")
            yield SourceEvent(action, actor.get("ID") or raw.get("id", ""),
                              when / 1e9 if when else float(raw.get("time", 0)), name)


def _reason(exc: Exception) -> str:
    """The gist of a connection failure (requests nests the socket's error several deep)."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


@hookimpl
def runflow_register_sources(register: Any) -> None:
    register(DockerSource)
