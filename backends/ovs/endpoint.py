"""A host's OVSDB endpoint: which one (the inventory's `ovsdb` entry or the default socket),
and whether it can be used — checked when a backend is chosen for the host, so that a unix:
path that is a plain file, or an ssl: endpoint, is refused before anything runs.
"""

from __future__ import annotations

import os
import stat

from runflow.core.hosts import Host, NetnsHost

def default_endpoint() -> str:
    """The database ovs-vsctl uses when it is given none."""
    return f"unix:{os.environ.get('OVS_RUNDIR', '/var/run/openvswitch')}/db.sock"


def endpoint_of(host: Host) -> str:
    """The host's OVSDB: the inventory's `ovsdb` entry, or the default socket."""
    return host.endpoints.get("ovsdb") or default_endpoint()


def endpoint_problem(host: Host) -> str | None:
    """Why the host's OVSDB endpoint cannot be used (None: it may be). Its form was checked
    when the inventory was read (core/inventory.py); what is left is what only the host or
    runflow's own support can tell."""
    endpoint = host.endpoints.get("ovsdb")
    if endpoint is None:
        return None
    where = f"the inventory's ovsdb endpoint {endpoint!r} of host {host.name}"
    kind, _, address = endpoint.partition(":")
    if kind == "unix":
        return _socket_problem(host, address, where)
    if kind == "ssl":
        return (f"{where}: ssl endpoints need a private key, a certificate and a CA "
                "certificate, which runflow does not pass to Open vSwitch yet: use unix: or tcp:")
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
