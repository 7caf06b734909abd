"""container.attach / container.detach with netlink (pyroute2) and OVSDB (`docker` backend,
target modern): a veth pair is created with its peer directly inside the container's network
namespace, in one process, no command per change."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from runflow.core.actions import State
from runflow.core.errors import ActionError

from ..ovs.args import setup_problem
from .attachment import (Attachment, ContainerAttach, ContainerDetach, Plumbing, attach_commands,
                         detach_commands, global_addresses, vsctl_argv)

DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise ActionError(f"cannot enter the network namespace of {what}: {os.strerror(err)}")


@contextmanager
def container_netlink(pid: int) -> Iterator[Any]:
    """A netlink socket inside the network namespace of process pid.

    The calling thread enters the namespace only to open the socket and comes straight back: a
    socket stays bound to the namespace it was opened in. No process, no extra thread.
    """
    from pyroute2 import IPRoute

    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    except OSError as exc:
        raise ActionError(f"no network namespace for pid {pid}: {exc.strerror}") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(target, f"pid {pid}")
        try:
            ipr = IPRoute()
        finally:
            _setns(home, "this host")
    finally:
        os.close(target)
        os.close(home)
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink_error(exc: Exception, what: str) -> ActionError:
    """NetlinkError's args are (errno, message): say what failed and the message."""
    return ActionError(f"{what}: {exc.args[-1] if exc.args else exc}")


def _optional(value: Any, default: Any) -> Any:
    """An OVSDB optional column's value: ovsdbapp gives [] when unset, [x] or x when set."""
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


class Netlink(Plumbing):
    """Attach and detach with pyroute2 (host and container) and ovsdbapp (OVS ports)."""

    def host_ipr(self) -> Any:
        from pyroute2 import IPRoute

        return self.ctx.resources.get("container.netlink", IPRoute)

    # -- OVS ------------------------------------------------------------------------------

    def endpoint(self) -> str:
        return self.ctx.host.endpoints.get("ovsdb", DEFAULT_OVSDB)

    def ovs_reachable(self) -> bool:
        url = self.endpoint()
        return not url.startswith("unix:") or os.path.exists(url.removeprefix("unix:"))

    def ovs(self) -> Any:
        # The ovsdb backend's client: one connection per host (ovsdbapp keeps a connection
        # per class, so a plain OvsdbIdl would talk to the first host's database on all).
        from ..ovs.ovsdb import OvsdbClient

        return self.ctx.resources.get(f"container.ovsdb:{self.endpoint()}",
                                      lambda: OvsdbClient(self.ctx.host)).api

    def ovs_bridge(self, name: str) -> bool:
        return self.ovs_reachable() and self.ovs().br_exists(name).execute(check_error=True)

    def ovs_ports(self, container: str, ifname: str) -> list[dict[str, Any]]:
        api = self.ovs()
        rows = api.db_list("Interface", columns=["name", "external_ids", "ofport", "error"]
                           ).execute(check_error=True)
        tags = {"container_id": container, "container_iface": ifname}
        ports = []
        for row in rows:
            if all(row["external_ids"].get(k) == v for k, v in tags.items()):
                bridge = api.iface_to_br(row["name"]).execute(check_error=False)
                ports.append({"name": row["name"], "bridge": bridge or "",
                              "ofport": int(_optional(row["ofport"], -1)),
                              "error": _optional(row["error"], "")})
        return ports

    # -- the container --------------------------------------------------------------------

    def iface(self, pid: int, ifname: str, *, gateway: bool) -> dict[str, Any] | None:
        with container_netlink(pid) as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return None
            link = ipr.get_links(found[0])[0]
            addresses = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in ipr.get_addr(index=found[0])]
            seen = {"addresses": global_addresses(addresses), "mtu": link.get("IFLA_MTU"),
                    "mac": link.get("IFLA_ADDRESS"), "up": bool(link["flags"] & 1),
                    "gateway": None}
            if gateway:
                for family in (2, 10):
                    for route in ipr.get_routes(family=family, dst_len=0, table=254):
                        if route.get("RTA_OIF") == found[0] and route.get("RTA_GATEWAY"):
                            seen["gateway"] = route.get("RTA_GATEWAY")
            return seen

    # -- changes --------------------------------------------------------------------------

    def make(self, att: Attachment) -> None:
        self.make_many([att])

    def make_many(self, atts: Sequence[Attachment]) -> None:
        """Veths one container after another, then the OVS ports of all of them in one
        transaction: ovs-vswitchd reconfigures once (some 10 ms), not once per container."""
        with self.all_or_none() as made:
            for att in atts:
                self._make_veth(att)
                made.append(att)
            self._add_ports([att for att in made if att.kind == "ovs"])

    def _make_veth(self, att: Attachment) -> None:
        from pyroute2 import NetlinkError

        self.ctx.commands += [self.ctx.host.describe(argv)
                              for argv in attach_commands(att, vsctl_argv(self.ctx.host))]
        ipr = self.host_ipr()
        extra: dict[str, Any] = {"mtu": att.mtu} if att.mtu else {}
        if att.kind == "linux":
            found = ipr.link_lookup(ifname=att.bridge)
            if not found:
                raise ActionError(f"bridge {att.bridge} does not exist")
            extra["master"] = found[0]
        peer: dict[str, Any] = {"ifname": att.ifname, "net_ns_pid": att.pid}
        if att.mtu:
            peer["mtu"] = att.mtu
        if att.mac:
            peer["address"] = att.mac
        try:
            ipr.link("add", ifname=att.host_ifname, kind="veth", state="up", peer=peer, **extra)
        except NetlinkError as exc:
            if exc.code == 17:
                raise ActionError(f"container {att.container} already has an interface "
                                  f"{att.ifname} that runflow did not attach (or the host has "
                                  f"a link {att.host_ifname}): choose another ifname") from None
            raise _netlink_error(exc, f"creating veth {att.host_ifname}") from None
        try:
            self._configure_inside(att)
        except Exception:
            self._delete_host_end(att.host_ifname)
            raise

    def _configure_inside(self, att: Attachment) -> None:
        from pyroute2 import NetlinkError

        with container_netlink(att.pid) as ipr:
            try:
                index = ipr.link_lookup(ifname=att.ifname)[0]
                ipr.link("set", index=index, state="up")
                for address in att.addresses:
                    iface = ipaddress.ip_interface(address)
                    ipr.addr("add", index=index, address=str(iface.ip),
                             prefixlen=iface.network.prefixlen)
                if att.gateway:
                    ipr.route("replace", dst="default", gateway=att.gateway, oif=index,
                              family=10 if ":" in att.gateway else 2)
            except NetlinkError as exc:
                raise _netlink_error(exc, f"configuring {att.ifname} in container "
                                          f"{att.container}") from None

    def _add_ports(self, atts: Sequence[Attachment], grace: float = 1.0) -> None:
        if not atts:
            return
        api = self.ovs()
        stale = [name for att in atts for name in att.stale_ports]
        if stale:  # their own transaction: add_port would find a same-named one
            with api.transaction(check_error=True) as txn:
                for name in stale:
                    txn.add(api.del_port(name, if_exists=True))
        # ovsdbapp's transaction returns once ovs-vswitchd has reconfigured (cur_cfg reached
        # the next_cfg it set), as ovs-vsctl does; its verdict on the ports follows at once.
        with api.transaction(check_error=True) as txn:
            for att in atts:
                txn.add(api.add_port(att.bridge, att.host_ifname, may_exist=True,
                                     external_ids=att.tags))
        deadline = time.monotonic() + grace
        waiting = list(atts)
        while waiting:
            att = waiting[0]
            ofport = _optional(api.db_get("Interface", att.host_ifname, "ofport").execute(
                check_error=True), 0)
            if ofport > 0:
                waiting.pop(0)
                continue
            error = _optional(api.db_get("Interface", att.host_ifname, "error").execute(
                check_error=True), "")
            if ofport < 0 or error or time.monotonic() > deadline:
                raise ActionError(f"{setup_problem(att.host_ifname, error)} "
                                  f"(on bridge {att.bridge})")
            time.sleep(0.001)

    def _delete_host_end(self, name: str) -> None:
        from pyroute2 import NetlinkError

        ipr = self.host_ipr()
        found = ipr.link_lookup(ifname=name)
        if found:
            try:
                ipr.link("del", index=found[0])
            except NetlinkError as exc:
                if exc.code != 19:  # already gone
                    raise _netlink_error(exc, f"deleting {name}") from None

    def remove(self, seen: State) -> None:
        self.ctx.commands += [self.ctx.host.describe(argv)
                              for argv in detach_commands(seen, vsctl_argv(self.ctx.host))]
        self._delete_host_end(seen["host_ifname"])
        if seen["ovs_ports"]:
            api = self.ovs()
            with api.transaction(check_error=True) as txn:
                for port in seen["ovs_ports"]:
                    txn.add(api.del_port(port["name"], if_exists=True))


ContainerAttach.plumbing = Netlink
ContainerDetach.plumbing = Netlink
