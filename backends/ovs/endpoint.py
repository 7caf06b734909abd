"""A host's OVSDB endpoint: which one (the inventory's `ovsdb` entry or the default socket),
and whether it is one at all — checked when a backend is chosen for the host, so that a
garbage endpoint, or a unix: path that is a plain file, is refused before anything runs.
"""

from __future__ import annotations

import ipaddress
import os
import stat

from runflow.core.hosts import Host, NetnsHost

KINDS = "unix:PATH, tcp:IP:PORT or ssl:IP:PORT"


def default_endpoint() -> str:
    """The database ovs-vsctl uses when it is given none."""
    return f"unix:{os.environ.get('OVS_RUNDIR', '/var/run/openvswitch')}/db.sock"


def endpoint_of(host: Host) -> str:
    """The host's OVSDB: the inventory's `ovsdb` entry, or the default socket."""
    return host.endpoints.get("ovsdb") or default_endpoint()


def endpoint_problem(host: Host) -> str | None:
    """Why the host's OVSDB endpoint cannot be used (None: it may be)."""
    endpoint = host.endpoints.get("ovsdb")
    if endpoint is None:
        return None
    where = f"the inventory's ovsdb endpoint {endpoint!r} of host {host.name}"
    kind, _, address = endpoint.partition(":")
    if kind == "unix":
        if not address or not address.isprintable():
            return f"{where} names no socket path (expected {KINDS})"
        return _socket_problem(host, address, where)
    if kind in ("tcp", "ssl"):
        problem = _address_problem(address)
        if problem:
            return f"{where} is not {kind}:IP:PORT: {problem}"
        if kind == "ssl":
            return (f"{where}: ssl endpoints need a private key, a certificate and a CA "
                    "certificate, which runflow does not pass to Open vSwitch yet: use unix: or "
                    "tcp:")
        return None
    return f"{where} is not {KINDS}"


def _address_problem(address: str) -> str | None:
    """What is wrong with IP:PORT ([IP]:PORT for IPv6), or None."""
    ip, colon, port = address.rpartition(":")
    if not colon or address.endswith("]"):
        return "the port is missing"
    bracketed = ip.startswith("[") and ip.endswith("]")
    if bracketed:
        ip = ip[1:-1]
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return f"{ip!r} is not an IP address (Open vSwitch takes no host names here)"
    if ":" in ip and not bracketed:
        return f"the IPv6 address {ip!r} goes in brackets: [{ip}]:PORT"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"port {port!r} is not a number in 1-65535"
    return None


def _socket_problem(host: Host, path: str, where: str) -> str | None:
    """A path on this machine that exists and is not a socket cannot be the database. (A
    missing one may be made by an earlier step starting ovsdb-server; a host that is not on
    this machine is not looked at.)"""
    if type(host) not in (Host, NetnsHost):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    return f"{where} is not a socket ({path} is a {'directory' if stat.S_ISDIR(mode) else 'file'})"
