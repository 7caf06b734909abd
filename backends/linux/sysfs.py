"""Links as /sys/class/net shows them: what a link record is made of, read in-process or from
what `grep` printed of the same files.

Both kinds of Linux backend read links from the same entries, so that both targets journal
the same records: the netlink backend in-process (the engine runs a namespace host's steps in
a thread that entered the namespace, with a /sys of its own), the command backends (iproute2,
brctl) with one `grep` for all the links of a step (centos6.py), which works wherever a
command runs. Every entry used is in CentOS 6's 2.6.32 kernel but `master`, for which 2.6.32
has `brport/bridge`.

A link record: {"exists", "kind", "up", "mtu", "master", "ifindex", "iflink"}, and with
`full` what recreating the link needs: "mac", "mac_set", a bridge port's "port_options" and,
for a bridge, its "bridge_options", its "ports" and their "ports_options" (options.py names
them; an option the kernel does not have is left out).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from .args import ABSENT, Record
from .options import BRIDGE_OPTIONS, PORT_OPTIONS

SYS_NET = "/sys/class/net"


class Entries(Protocol):
    """The entries of one link's directory /sys/class/net/NAME."""

    def text(self, leaf: str) -> str | None:
        """A file's text, stripped; None if it is not there."""

    def names(self, leaf: str) -> str | None:
        """The link a symbolic link (`master`, `brport/bridge`) points to, or None."""

    def has(self, leaf: str) -> bool:
        """Whether a directory (`bridge`: a bridge; `brport`: a bridge's port; `device`: a
        physical device) is there."""


def link_record(entries: Entries, *, full: bool = False) -> Record:
    """The record of the link whose entries these are (without "ports"), or ABSENT."""
    # uevent says INTERFACE=, IFINDEX= and, for some kinds, DEVTYPE= (since 2.6.2x)
    device, iflink, flags, mtu = (entries.text(leaf)
                                  for leaf in ("uevent", "iflink", "flags", "mtu"))
    ifindex = uevent(device, "IFINDEX")
    if ifindex is None or iflink is None or flags is None or mtu is None:
        return dict(ABSENT)  # not there, or gone while reading
    rec: Record = {
        "exists": True,
        "kind": _kind(entries, device, int(ifindex), int(iflink)),
        "up": bool(int(flags, 16) & 1),
        "mtu": int(mtu),
        "master": entries.names("master") or entries.names("brport/bridge"),
        "ifindex": int(ifindex),
        "iflink": int(iflink),
    }
    if full:
        rec["mac"] = entries.text("address")
        # 3: set by hand (kept on recreation); 1: random, as a new veth's
        rec["mac_set"] = entries.text("addr_assign_type") == "3"
        if rec["kind"] == "bridge":
            rec["bridge_options"] = options_of(entries, "bridge", BRIDGE_OPTIONS)
        if entries.has("brport"):
            rec["port_options"] = options_of(entries, "brport", PORT_OPTIONS)
    return rec


def options_of(entries: Entries, directory: str, names: Iterable[str]) -> dict[str, str]:
    """The options of a bridge (directory "bridge") or a bridge port ("brport", or a bridge's
    "brif/PORT") that the kernel has."""
    found = {}
    for name in names:
        value = entries.text(f"{directory}/{name}")
        if value is not None:
            found[name] = value
    return found


def ports_options(bridge: Entries, ports: list[str]) -> dict[str, dict[str, str]]:
    """The options of each port of a bridge, read through its brif/ directory."""
    return {port: options_of(bridge, f"brif/{port}", PORT_OPTIONS) for port in ports}


def _kind(entries: Entries, device: str | None, ifindex: int, iflink: int) -> str:
    if entries.has("bridge"):
        return "bridge"
    if iflink == ifindex:
        return "physical" if entries.has("device") else "virtual"
    # A veth reports its peer's ifindex as iflink; so do vlans and macvlans, which say so.
    return uevent(device, "DEVTYPE") or "veth"


def uevent(text: str | None, key: str) -> str | None:
    """A value of a uevent file ("INTERFACE=br0", "DEVTYPE=vlan")."""
    for line in (text or "").splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1:]
    return None


def ports_in_order(bridge: Entries, ports: list[str]) -> list[str]:
    """A bridge's ports in port-number order (re-adding them in it gives the same numbers)."""
    return sorted(ports, key=lambda port: int(bridge.text(f"brif/{port}/port_no") or "0", 16))


# ---------------------------------------------------------------------------------------------
# In-process: the calling thread's namespace
# ---------------------------------------------------------------------------------------------


class _Directory:
    """A link's directory, opened once: entries are looked up relative to it, not through
    /sys/class/net/NAME every time (a third of the cost)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def text(self, leaf: str) -> str | None:
        try:
            fd = os.open(leaf, os.O_RDONLY, dir_fd=self.fd)
        except OSError:
            return None
        try:
            return os.read(fd, 4096).decode().strip()
        except OSError:
            return None
        finally:
            os.close(fd)

    def names(self, leaf: str) -> str | None:
        try:
            return os.path.basename(os.readlink(leaf, dir_fd=self.fd))
        except OSError:
            return None

    def has(self, leaf: str) -> bool:
        try:
            os.stat(leaf, dir_fd=self.fd)
        except OSError:
            return False
        return True


def read_link(name: str, *, full: bool = False) -> Record:
    """A link of the calling thread's namespace, read from /sys, or ABSENT."""
    try:
        fd = os.open(f"{SYS_NET}/{name}", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return dict(ABSENT)
    try:
        rec = link_record(_Directory(fd), full=full)
        if full and rec.get("kind") == "bridge":
            rec["ports"] = _ports(fd)
            rec["ports_options"] = ports_options(_Directory(fd), rec["ports"])
    finally:
        os.close(fd)
    return rec


def _ports(bridge: int) -> list[str]:
    """A bridge's ports, in port-number order."""
    try:
        brif = os.open("brif", os.O_RDONLY | os.O_DIRECTORY, dir_fd=bridge)
    except OSError:
        return []
    try:
        ports = os.listdir(brif)
    finally:
        os.close(brif)
    return ports_in_order(_Directory(bridge), ports)


def link_names() -> list[str]:
    return os.listdir(SYS_NET)


# ---------------------------------------------------------------------------------------------
# What grep printed
# ---------------------------------------------------------------------------------------------

# The files under /sys/class/net/NAME that make the entries `link_record` asks for: a
# symbolic link's target is named by the INTERFACE= of the uevent file behind it, a directory
# is there if a file that every such directory has is. A bridge's ports are listed apart
# (brif/), with their numbers (brif/PORT/port_no).
GREP_FILES = ("uevent", "iflink", "flags", "mtu", "master/uevent", "brport/bridge/uevent",
              "bridge/bridge_id", "device/uevent")
GREP_FULL = (*GREP_FILES, "address", "addr_assign_type", "brport/port_no",
             *(f"bridge/{name}" for name in BRIDGE_OPTIONS),
             *(f"brport/{name}" for name in PORT_OPTIONS))
GREP_PORT = ("port_no", *PORT_OPTIONS)  # of each port of a bridge, under brif/PORT/
_MARKERS = {"bridge": "bridge/bridge_id", "device": "device/uevent", "brport": "brport/port_no"}


class Printed:
    """One link's entries from the lines `grep -H '' FILE...` printed of GREP_FILES."""

    def __init__(self, files: dict[str, list[str]]) -> None:
        self.files = files  # leaf -> its lines

    def text(self, leaf: str) -> str | None:
        lines = self.files.get(leaf)
        return None if lines is None else "\n".join(lines).strip()

    def names(self, leaf: str) -> str | None:
        return uevent(self.text(f"{leaf}/uevent"), "INTERFACE")

    def has(self, leaf: str) -> bool:
        return _MARKERS[leaf] in self.files


def printed_links(output: str) -> dict[str, Printed]:
    """The entries of each link in grep's output ("/sys/class/net/NAME/LEAF:TEXT" lines; a
    link name has no ':' and no '/', nor has a leaf a ':')."""
    files: dict[str, dict[str, list[str]]] = {}
    for line in output.splitlines():
        path, _, text = line.partition(":")
        name, _, leaf = path[len(SYS_NET) + 1:].partition("/")
        files.setdefault(name, {}).setdefault(leaf, []).append(text)
    return {name: Printed(found) for name, found in files.items()}
