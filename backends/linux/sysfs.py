"""Links as /sys/class/net shows them: which files say what, and the record they make.

Both kinds of Linux backend read links from the same files, so that both targets journal the
same records: the netlink backend reads them in-process (the engine runs a namespace host's
steps in a thread that entered the namespace, with a /sys of its own), the command backends
(iproute2, brctl) with one `grep` for all the links of a step (commands.py), which works
wherever a command runs. Every file here is in CentOS 6's 2.6.32 kernel but `master`, for
which 2.6.32 has `brport/bridge`.

A link record: {"exists", "kind", "up", "mtu", "master", "ifindex", "iflink"}, and with
`full` what recreating the link needs: "mac", "mac_set" and, for a bridge, its "ports".
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .args import ABSENT, Record

SYS_NET = "/sys/class/net"

# The files under /sys/class/net/NAME a record is made of. The uevent files name a device
# ("INTERFACE=br0") and its type ("DEVTYPE=vlan"); bridge/bridge_id and device/uevent exist
# only for a bridge and for a physical device; brport/port_no gives a bridge's port order.
FILES = ("ifindex", "iflink", "flags", "mtu", "uevent", "bridge/bridge_id", "device/uevent",
         "master/uevent", "brport/bridge/uevent", "brport/port_no", "address",
         "addr_assign_type")

Read = Callable[[str], str | None]  # a file's text (stripped), None if it is not there


def link_record(read: Read, *, full: bool = False) -> Record:
    """The record of the link whose files `read` reads (without "ports"), or ABSENT."""
    ifindex, iflink, flags, mtu = (read(leaf) for leaf in ("ifindex", "iflink", "flags", "mtu"))
    if ifindex is None or iflink is None or flags is None or mtu is None:
        return dict(ABSENT)  # not there, or gone while reading
    rec: Record = {
        "exists": True,
        "kind": _kind(read, int(ifindex), int(iflink)),
        "up": bool(int(flags, 16) & 1),
        "mtu": int(mtu),
        "master": _interface(read("master/uevent")) or _interface(read("brport/bridge/uevent")),
        "ifindex": int(ifindex),
        "iflink": int(iflink),
    }
    if full:
        rec["mac"] = read("address")
        # 3: set by hand (kept on recreation); 1: random, as a new veth's
        rec["mac_set"] = read("addr_assign_type") == "3"
    return rec


def _kind(read: Read, ifindex: int, iflink: int) -> str:
    if read("bridge/bridge_id") is not None:
        return "bridge"
    if iflink == ifindex:
        return "physical" if read("device/uevent") is not None else "virtual"
    # A veth reports its peer's ifindex as iflink; so do vlans and macvlans, which say so.
    return _uevent(read("uevent"), "DEVTYPE") or "veth"


def _uevent(text: str | None, key: str) -> str | None:
    for line in (text or "").splitlines():
        if line.startswith(key + "="):
            return line[len(key) + 1:]
    return None


def _interface(uevent: str | None) -> str | None:
    return _uevent(uevent, "INTERFACE")


def port_number(read: Read) -> int:
    """A bridge port's number (re-adding ports in their order gives the same numbers)."""
    return int(read("brport/port_no") or "0", 16)


# ---------------------------------------------------------------------------------------------
# In-process: the calling thread's namespace
# ---------------------------------------------------------------------------------------------


def _reader(name: str) -> Read:
    base = f"{SYS_NET}/{name}/"

    def read(leaf: str) -> str | None:
        # os.open/os.read: a third of the cost of open(); a step reads a few files per link
        try:
            fd = os.open(base + leaf, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 4096).decode().strip()
        except OSError:
            return None
        finally:
            os.close(fd)

    return read


def read_link(name: str, *, full: bool = False) -> Record:
    """A link of the calling thread's namespace, read from /sys, or ABSENT."""
    rec = link_record(_reader(name), full=full)
    if full and rec.get("kind") == "bridge":
        try:
            ports = os.listdir(f"{SYS_NET}/{name}/brif")
        except OSError:
            ports = []
        rec["ports"] = sorted(ports, key=lambda port: port_number(_reader(port)))
    return rec


def link_names() -> list[str]:
    return os.listdir(SYS_NET)
