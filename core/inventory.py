"""The inventory: the hosts a workflow runs on, how to reach them, and their vars.

    [hosts.h1]
    netns = "rf-h1"                          # absent: the local host
    vars = { remote_ip = "10.99.0.2" }
    ovsdb = "unix:/tmp/rf-lab/h1/db.sock"     # endpoints of the host's services
    docker = "unix:///tmp/rf-lab/h1/docker.sock"

Other keys of a host table are kept as settings for plugins (e.g. `services`, see README).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InputError
from .hosts import Host, NetnsHost

ENDPOINT_KEYS = ("ovsdb", "docker")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NETNS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


# A NamedTuple, not a frozen dataclass: those generate their methods with exec, ~1 ms of
# every command's start-up each.
class Inventory(NamedTuple):
    path: str | None
    text: str
    hosts: tuple[Host, ...]

    def select(self, names: list[str] | None) -> list[Host]:
        if not names:
            return list(self.hosts)
        by_name = {h.name: h for h in self.hosts}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise InputError(f"no host named {', '.join(missing)} in the inventory (hosts: "
                             f"{', '.join(by_name) or 'none'})", file=self.path, field="--host")
        return [by_name[n] for n in names]


LOCAL = Inventory(None, "", (Host(),))


def load(path: str | Path) -> Inventory:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read inventory: {exc.strerror}", file=path) from None
    return parse(text, path)


def parse(text: str, path: str = "<inventory>") -> Inventory:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError.from_toml(exc, path) from None
    unknown = sorted(set(data) - {"hosts"})
    if unknown:
        raise InputError(f"unknown top-level key(s) {', '.join(unknown)} (expected: hosts)",
                         file=path, field=unknown[0])
    tables = data.get("hosts")
    if not isinstance(tables, dict) or not tables:
        raise InputError("an inventory needs at least one [hosts.NAME] table", file=path,
                         field="hosts")
    return Inventory(path, text, tuple(_host(path, n, t) for n, t in tables.items()))


def _host(path: str, name: str, table: Any) -> Host:
    def fail(message: str, key: str | None = None) -> InputError:
        return InputError(message, file=path, field=f"hosts.{name}" + (f".{key}" if key else ""))

    if not _HOST_NAME.fullmatch(name):
        raise fail(f"host name {name!r} must be letters, digits, '_', '.' or '-'")
    if not isinstance(table, dict):
        raise fail("must be a table")
    host_vars = table.get("vars", {})
    if not isinstance(host_vars, dict):
        raise fail("vars must be a table", "vars")
    endpoints = {}
    for key in ENDPOINT_KEYS:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise fail("must be a socket address such as unix:/path/to.sock", key)
            endpoints[key] = table[key]
    if "ssh" in table:
        raise fail("ssh hosts are not supported yet: use a local or netns host", "ssh")
    settings = {k: v for k, v in table.items() if k not in ("netns", "vars", *ENDPOINT_KEYS)}
    netns = table.get("netns")
    if netns is None:
        return Host(name, dict(host_vars), endpoints, settings)
    if not isinstance(netns, str) or not _NETNS_NAME.fullmatch(netns):
        raise fail(f"netns {netns!r} is not a valid namespace name", "netns")
    return NetnsHost(name, dict(host_vars), endpoints, settings, netns=netns)
