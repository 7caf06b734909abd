"""`runflow lab connect HOST PORT`: the ProxyCommand of an SSH lab's inventory. It moves
itself into the lab's switch namespace and relays its standard input and output to the lab
host's HOST:PORT there, so that neither the root network namespace nor the host's is touched.

Standard library only, and no import of the runflow package: the lab's inventory runs this
file as a script with an isolated interpreter (`python3 -I -S relay.py LAB_DIR HOST PORT`),
since it starts for every SSH connection (32 hosts connect at once).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import sys

UNDERLAY = "10.99.0.{}"  # lab host N's underlay address
_CLONE_NEWNET = 0x40000000


class RelayError(Exception):
    """Why the relay cannot start (ssh shows it with its own error)."""


def enter_network_namespace(path: str) -> None:
    """Move this (single-threaded) process into a network namespace (Python 3.11 has no
    os.setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise RelayError(f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def connect_lab_host(lab_dir: str, host: str, port: int) -> None:
    """Relay to a lab host's port, knowing the lab by its lab.json."""
    try:
        with open(os.path.join(lab_dir, "lab.json")) as f:
            state = json.load(f)
    except OSError:
        raise RelayError(f"no lab in {lab_dir}") from None
    hosts = {h["name"]: h["index"] for h in state["hosts"]}
    if host not in hosts:
        raise RelayError(f"no lab host {host!r} (hosts: {', '.join(hosts)})")
    enter_network_namespace(f"/run/netns/{state['switch']}")
    relay(UNDERLAY.format(hosts[host]), port)


def relay(address: str, port: int) -> None:
    """Copy standard input to a connection to address:port and the connection to standard
    output, until either side is done."""
    try:
        conn = socket.create_connection((address, port), timeout=10)
    except OSError as exc:
        raise RelayError(f"cannot connect to {address} port {port}: "
                         f"{exc.strerror or exc}") from None
    conn.settimeout(None)
    while True:
        ready, _, _ = select.select([0, conn], [], [])
        if 0 in ready:
            data = os.read(0, 65536)
            if not data:  # ssh closes its end as it leaves: nobody reads what comes back
                break
            conn.sendall(data)
        if conn in ready:
            data = conn.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: relay.py LAB_DIR HOST PORT", file=sys.stderr)
        return 2
    try:
        connect_lab_host(argv[0], argv[1], int(argv[2]))
    except RelayError as exc:
        print(f"runflow lab connect: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
