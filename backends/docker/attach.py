"""container.attach / container.detach with netlink and OVSDB (`docker` backend, target
modern): a veth pair is created with its peer directly inside the container's network
namespace, in one process, no command per change. The netlink requests are the Linux family's
(backends/linux/rtnl.py, through pyroute2): the host's socket is the one the netlink backend
uses on this host, and one is opened inside the container's namespace for configuring its end."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from runflow.core.actions import State
from runflow.core.errors import ActionError

from ..ovs.args import setup_problem
from .attachment import (Attachment, ContainerAttach, ContainerDetach, Plumbing, attach_commands,
                         detach_commands, global_addresses, vsctl_argv)

if TYPE_CHECKING:
    from ..linux.rtnl import Rtnl

DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
_AF_INET, _AF_INET6, _EEXIST, _ENODEV = socket.AF_INET, socket.AF_INET6, 17, 19
_RT_TABLE_MAIN, _RTPROT_BOOT, _RTN_UNICAST = 254, 3, 1  # as `ip route replace` makes it


@contextmanager
def container_rtnl(pid: int) -> Iterator[Rtnl]:
    """A netlink socket inside the network namespace of process pid."""
    from ..linux.rtnl import Rtnl

    try:
        rtnl = Rtnl(f"/proc/{pid}/ns/net")
    except FileNotFoundError:  # the process is gone
        raise ActionError(f"no network namespace for pid {pid}") from None
    try:
        yield rtnl
    finally:
        rtnl.close()


def _optional(value: Any, default: Any) -> Any:
    """An OVSDB optional column's value: ovsdbapp gives [] when unset, [x] or x when set."""
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


class Netlink(Plumbing):
    """Attach and detach with the Linux family's rtnetlink (host and container) and ovsdbapp
    (OVS ports)."""

    def host_rtnl(self) -> Rtnl:
        from ..linux.rtnl import host_rtnl

        return host_rtnl(self.ctx)

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
        with container_rtnl(pid) as rtnl:
            link = rtnl.link(ifname)
            if link is None:
                return None
            index = link["ifindex"]
            addresses = [f"{a['address']}/{a['prefixlen']}" for a in rtnl.addresses(index)
                         if a["index"] == index]
            seen = {"addresses": global_addresses(addresses), "mtu": link["mtu"],
                    "mac": link["mac"], "up": link["up"], "gateway": None}
            if gateway:
                for family in (_AF_INET, _AF_INET6):
                    for route in rtnl.routes(family, _RT_TABLE_MAIN):
                        if route["dst_len"] == 0 and route["oif"] == index and route["gateway"]:
                            seen["gateway"] = route["gateway"]
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
        from ..linux.rtnl import CREATE, RTM_NEWLINK, Refused, link_message, veth_peer

        self.ctx.commands += [self.ctx.host.describe(argv)
                              for argv in attach_commands(att, vsctl_argv(self.ctx.host)).all()]
        master = None
        if att.kind == "linux":
            try:
                master = socket.if_nametoindex(att.bridge)
            except OSError:
                raise ActionError(f"bridge {att.bridge} does not exist") from None
        # The container's end is made inside its namespace, with its name, MTU and MAC.
        veth = link_message(RTM_NEWLINK, CREATE, name=att.host_ifname, up=True, mtu=att.mtu,
                            master=master, info_kind="veth",
                            peer=veth_peer(att.ifname, mtu=att.mtu, mac=att.mac,
                                           netns_pid=att.pid))
        try:
            self.host_rtnl().send([(veth, f"creating veth {att.host_ifname}")])
        except Refused as exc:
            if exc.code == _EEXIST:
                raise ActionError(f"container {att.container} already has an interface "
                                  f"{att.ifname} that runflow did not attach (or the host has "
                                  f"a link {att.host_ifname}): choose another ifname") from None
            raise
        try:
            self._configure_inside(att)
        except Exception:
            self._delete_host_end(att.host_ifname)
            raise

    def _configure_inside(self, att: Attachment) -> None:
        from ..linux.rtnl import (CREATE, REPLACE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE,
                                  address_message, link_message, route_message)

        where = f"{att.ifname} in container {att.container}"
        with container_rtnl(att.pid) as rtnl:
            index = rtnl.index(att.ifname)
            if index is None:
                raise ActionError(f"configuring {where}: it is not there")
            requests = [(link_message(RTM_NEWLINK, index=index, up=True), f"setting {where} up")]
            requests += [(address_message(RTM_NEWADDR, CREATE, index, address, 0),
                          f"adding {address} to {where}") for address in att.addresses]
            if att.gateway:
                requests.append((route_message(
                    RTM_NEWROUTE, REPLACE, family=_AF_INET6 if ":" in att.gateway else _AF_INET,
                    table=_RT_TABLE_MAIN, dst=None, protocol=_RTPROT_BOOT,
                    route_type=_RTN_UNICAST, gateway=att.gateway, oif=index),
                    f"the default route of {where} via {att.gateway}"))
            rtnl.send(requests)

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
        from ..linux.rtnl import RTM_DELLINK, Refused, link_message

        try:
            self.host_rtnl().send([(link_message(RTM_DELLINK, name=name), f"deleting {name}")])
        except Refused as exc:
            if exc.code != _ENODEV:  # already gone
                raise

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
