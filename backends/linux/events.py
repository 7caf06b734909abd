"""The `netlink` event source of `runflow watch`: the links of a host's network namespace, through
rtnetlink (pyroute2): a socket bound to the kernel's link notifications, and a second one to list
and look up links.

A link is active while it is up (administratively: `ip link set NAME up`). It is known by its
name; its incarnation is its index, which a link deleted and made again under the same name does
not keep. Events: `new` (a link appears), `up`, `down`, `del` (it is deleted). A run sees it as
its `event` var: `id` and `name` (the link's name), `index`, `kind` ("veth", "bridge", ...),
`mac`, `mtu` and `operstate`.

`match` selects links by name, `name = "GLOB"` (shell-style, e.g. "veth*"), and by kind,
`kind = "veth"`.

    [watch]
    source = "netlink"
    start = ["up"]
    stop = ["down", "del"]
    match = { name = "tap*" }
"""

from __future__ import annotations

import fnmatch
import importlib.util
import select
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from runflow.core.actions import Args
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, NetnsHost
from runflow.core.watch.sources import Source, SourceEvent, SourceUnavailable, WatchedObject

_IFF_UP = 0x1
_POLL = 0.5  # seconds between looks at whether the source was closed


class LinkMatch(Args):
    """Which links a netlink watch considers."""

    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description='a shell-style pattern of link names, e.g. "veth*"')
    kind: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$",
                             description='the kind of link, e.g. "veth", "bridge", "vxlan"')


def _link(message: Any) -> dict[str, Any]:
    """What a run sees of a link, from an RTM_NEWLINK message."""
    name = message.get("IFLA_IFNAME")
    return {"id": name, "name": name, "index": message["index"],
            "kind": message.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or "",
            "mac": message.get("IFLA_ADDRESS") or "", "mtu": message.get("IFLA_MTU"),
            "operstate": message.get("IFLA_OPERSTATE") or "",
            "up": bool(message["flags"] & _IFF_UP)}


class LinkSource(Source):
    name = "netlink"
    event_names = ("new", "up", "down", "del")
    Match = LinkMatch
    summary = "links of the host's network namespace, active while they are up"

    def __init__(self, host: Host, match: LinkMatch) -> None:
        super().__init__(host, match)
        self.match: LinkMatch = match
        self._events: Any = None  # bound to the link notifications
        self._query: Any = None  # for listing and looking up
        self._known: dict[int, dict[str, Any]] = {}  # by index: to tell up from down
        self._closed = False

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        if type(host) not in (Host, NetnsHost):
            return "it reads the links of this machine or of one of its network namespaces"
        if importlib.util.find_spec("pyroute2") is None:
            return "the Python module 'pyroute2' is not installed (pip install pyroute2)"
        return None

    def connect(self) -> None:
        from pyroute2 import IPRoute

        # flags=0: a namespace that does not exist is an error, not created
        where = {"netns": self.host.netns, "flags": 0} if isinstance(self.host, NetnsHost) \
            else {}
        try:
            self._events = IPRoute(**where)
            self._events.bind()
            self._query = IPRoute(**where)
        except OSError as exc:
            self.close()
            raise SourceUnavailable(f"cannot open rtnetlink in {self.host.where()}: "
                                    f"{exc.strerror or exc}") from None

    def close(self) -> None:
        self._closed = True
        for socket in (self._events, self._query):
            if socket is not None:
                socket.close()
        self._events = self._query = None

    def active(self) -> list[WatchedObject]:
        links = [_link(m) for m in self._query.get_links()]
        self._known = {link["index"]: link for link in links}
        return [self._object(link) for link in links if link["up"] and self._matches(link)]

    def lookup(self, object_id: str) -> WatchedObject | None:
        found = self._query.link_lookup(ifname=object_id)
        if not found:
            return None
        link = _link(self._query.get_links(found[0])[0])
        return self._object(link) if link["up"] and self._matches(link) else None

    def stream(self) -> Iterator[SourceEvent]:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._events.fileno()], [], [], _POLL)
                messages = self._events.get() if ready else []
            except (OSError, ValueError, AttributeError):  # closed meanwhile
                return
            for message in messages:
                yield from self._changes(message)

    def _changes(self, message: Any) -> Iterator[SourceEvent]:
        """The events in one notification: a link's appearance, state change or deletion."""
        if message["event"] not in ("RTM_NEWLINK", "RTM_DELLINK"):
            return
        link = _link(message)
        before = self._known.get(link["index"])
        if before is not None and not link["kind"]:  # a deletion does not say it
            link["kind"] = before["kind"]
        now = time.time()
        if message["event"] == "RTM_DELLINK":
            self._known.pop(link["index"], None)
            actions = ["del"]
        else:
            self._known[link["index"]] = link
            actions = ["new"] if before is None else []
            if link["up"] != (before is not None and before["up"]):
                actions.append("up" if link["up"] else "down")
        if link["name"] and self._matches(link):
            for action in actions:
                yield SourceEvent(action, link["name"], now, link["name"])

    def _matches(self, link: dict[str, Any]) -> bool:
        return ((self.match.name is None or fnmatch.fnmatchcase(link["name"] or "",
                                                                self.match.name))
                and (self.match.kind is None or link["kind"] == self.match.kind))

    @staticmethod
    def _object(link: dict[str, Any]) -> WatchedObject:
        return WatchedObject(id=link["name"], incarnation=str(link["index"]), since=None,
                             vars=link)


@hookimpl
def runflow_register_sources(register: Any) -> None:
    register(LinkSource)
