"""The inventory: the hosts a workflow runs on, how to reach them, and their vars.

    [hosts.h1]
    netns = "rf-h1"                          # absent: the local host
    vars = { remote_ip = "10.99.0.2" }

    [hosts.h2]
    ssh = "root@192.0.2.10"                  # or an alias of ~/.ssh/config
    ssh_port = 2222                          # optional, as are the two below
    ssh_identity = "~/.ssh/id_ed25519"
    ssh_options = ["-o", "ProxyJump=bastion"]  # more words of ssh's command line
    ovsdb = "unix:/tmp/rf-lab/h1/db.sock"     # endpoints of the host's services
    docker = "unix:///tmp/rf-lab/h1/docker.sock"

Other keys of a host table are kept as settings for plugins (e.g. `services`, see README).

Endpoints are checked for their form here, before anything runs: an address the client
libraries would take apart only when a step first connects (a docker endpoint "garbage", a
relative socket path, a port 99999) is an input error naming the host and key. Whether the
socket is there and is a socket is the backends' probe (see backends/docker/client.py).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .errors import InputError
from .hosts import Host, NetnsHost, SshHost

ENDPOINT_KEYS = ("ovsdb", "docker")
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NETNS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
SSH_KEYS = ("ssh", "ssh_port", "ssh_identity", "ssh_options")
# [user@]host or an alias: never an option (a leading '-'), never blanks or shell syntax
_SSH_DESTINATION = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?"
                              r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\])")

ENDPOINT_FORMS = {
    "docker": "unix:///PATH/docker.sock, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]",
    "ovsdb": "unix:/PATH/db.sock, tcp:IP:PORT or ssl:IP:PORT",
}


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
            value = table[key]
            problem = (endpoint_problem(key, value) if isinstance(value, str)
                       else "is not a string")
            if problem:
                raise fail(f"{value!r} {problem}: give {ENDPOINT_FORMS[key]}", key)
            endpoints[key] = value
    settings = {k: v for k, v in table.items()
                if k not in ("netns", "vars", *ENDPOINT_KEYS, *SSH_KEYS)}
    netns = table.get("netns")
    if any(key in table for key in SSH_KEYS):
        if netns is not None:
            raise fail("a host is reached either over SSH or as a network namespace here: "
                       "give ssh or netns, not both", "ssh")
        return SshHost(name, dict(host_vars), endpoints, settings, **_ssh(table, fail))
    if netns is None:
        return Host(name, dict(host_vars), endpoints, settings)
    if not isinstance(netns, str) or not _NETNS_NAME.fullmatch(netns):
        raise fail(f"netns {netns!r} is not a valid namespace name", "netns")
    return NetnsHost(name, dict(host_vars), endpoints, settings, netns=netns)


def _ssh(table: dict[str, Any], fail: Any) -> dict[str, Any]:
    """The SSH keys of a host table, checked: they become words of ssh's command line."""
    destination = table.get("ssh")
    if not isinstance(destination, str) or not _SSH_DESTINATION.fullmatch(destination):
        raise fail(f"ssh {destination!r} is not a destination: give [USER@]HOST or an alias "
                   "of ~/.ssh/config (letters, digits, '_', '.', '-')", "ssh")
    port = table.get("ssh_port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise fail(f"ssh_port {port!r} is not a port (a number, 1 to 65535)", "ssh_port")
    identity = table.get("ssh_identity")
    if identity is not None and (not isinstance(identity, str) or not identity
                                 or _control_character(identity)):
        raise fail("ssh_identity must be a file path without control characters",
                   "ssh_identity")
    options = table.get("ssh_options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise fail('ssh_options must be a list of strings (words of ssh\'s command line, '
                   'e.g. ["-o", "ProxyJump=bastion"])', "ssh_options")
    for word in options:
        if _control_character(word):
            raise fail(f"ssh_options word {word!r} holds a control character (a newline, a "
                       "NUL...)", "ssh_options")
    return {"ssh": destination, "ssh_port": port, "ssh_identity": identity,
            "ssh_options": list(options)}


def _control_character(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


# -- endpoints ----------------------------------------------------------------------------------


def endpoint_problem(key: str, value: str) -> str | None:
    """What is wrong with the form of a docker or ovsdb endpoint, or None."""
    if key == "ovsdb":  # OVS's own syntax: unix:PATH, tcp:IP[:PORT], ssl:IP[:PORT]
        scheme, _, rest = value.partition(":")
        if scheme == "unix":
            return _socket_path_problem(rest)
        if scheme in ("tcp", "ssl"):
            host, port = rest, ""
            if rest.startswith("["):  # [IPv6]:PORT
                host, _, port = rest[1:].partition("]")
                port = port.removeprefix(":")
            elif rest.count(":") == 1:
                host, _, port = rest.partition(":")
            return _host_problem(host) or _port_problem(port)
        return "is not an OVSDB endpoint"
    if value.startswith("unix:") and not value.startswith("unix://"):
        return _socket_path_problem(value.removeprefix("unix:"))
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        return f"is not a docker endpoint ({exc})"
    if url.scheme == "unix":
        return _socket_path_problem(url.netloc + url.path) if not url.query else \
            "is not a docker endpoint (a unix socket path has no query)"
    if url.scheme not in ("tcp", "http", "https", "ssh") or url.path not in ("", "/") \
            or url.query or url.fragment:
        return "is not a docker endpoint"
    if url.username is not None and url.scheme != "ssh":
        return "is not a docker endpoint (only ssh:// takes a user)"
    return _host_problem(url.hostname or "") or _port_problem(str(port or ""))


def _socket_path_problem(path: str) -> str | None:
    if not path.startswith("/") or "\x00" in path:
        return "does not name an absolute socket path"
    if len(path.encode()) > _SOCKET_PATH_MAX:
        return f"names a socket path over {_SOCKET_PATH_MAX} bytes (the kernel's limit)"
    return None


def _host_problem(host: str) -> str | None:
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    # digits and dots only is a bad address (192.0.2.999), not a name
    if _DNS_NAME.fullmatch(host) and not re.fullmatch(r"[\d.]+", host):
        return None
    return "has no valid host name or address"


def _port_problem(port: str) -> str | None:
    """A port, if one is given (the clients have defaults)."""
    if not port:
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"has no valid port ({port!r}: 1 to 65535)"
    return None
