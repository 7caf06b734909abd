"""Links, addresses, veth pairs, namespaces and routes with CentOS 6's `ip` (backend `iproute2`),
and what every Linux link backend shares: reading links from /sys, looking into other
namespaces, and the actions themselves, written once (`LinkAction`) over a `Linux` backend
that reads addresses and routes and carries out changes. brctl.py (the bridge actions) and
netlink.py build on it; the records and changes are args.py's.

A step, for every link action and backend:

    observe   reads plain records: links from /sys/class/net (no process), addresses and
              routes from the backend (`ip -o addr`, `ip route` here; a netlink dump there)
    check     compares the records with the arguments (no I/O)
    apply     turns arguments and records into changes (AddBridge, Enslave, AddAddr, ...) that
              the backend carries out: as commands here — consecutive `ip` commands go through
              one `ip -batch -` — and as netlink messages in netlink.py
    undo      observes again and carries out the changes that lead back to the "before"
              records; with nothing left to restore it does nothing
    describe  renders the same changes as commands.

Commands used, all present in CentOS 6 (iproute 2.6.32, bridge-utils 1.2):
    ip -batch -                  commands on stdin, stops at the first failure
    sh -c 'while read ...'       several brctl commands from one spawn (a constant program)
    ip -o addr show [dev D]      ip -4|-6 route show exact PREFIX|default
    ip link add N type veth peer name P        ip link delete N
    ip link set N [mtu M] [address MAC] [up|down] | netns PID|NAME | name NEW
    ip addr add|del A dev D [brd B] [scope S] [label L]
    ip [-6] route replace|del PREFIX [via G] [dev D] [metric M] [proto P] [scope S] [src A]
    brctl addbr|delbr|addif|delif   (bridges: iproute2 2.6.32 can neither create a bridge nor
                                     set a master; `ip link set N down` before `brctl delbr`)
Named namespaces (`netns NAME`, `ip netns exec`) are the backport in CentOS 6.5's iproute; a
move by pid works with any 2.6.32. Commands inside a process's namespace use nsenter
(util-linux 2.23, which CentOS 6 lacks). Not used: `ip -j` (4.13), `ip -n`, `ip link add type
bridge`, `ip link set master` (3.x).
"""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from runflow.core.actions import Action, Context, ShellStep, State
from runflow.core.errors import ActionError
from runflow.core.export import command, indent, value_of, word
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .rtnetlink import LinkDump, dump_links
from .args import (ABSENT, HOME, ROUTE_DEFAULTS, AddAddr, AddBridge, AddrAbsentArgs,
                         AddrPresentArgs, AddVeth, Change, DelAddr, DelLink, DelRoute, Enslave,
                         LinkSetArgs, MoveLink, Netns, NetnsMoveArgs, Record, Release,
                         RenameLink, ReplaceRoute, RouteArgs, RoutePresentArgs, SetLink,
                         VethAbsentArgs, VethPresentArgs, desired_route, family, managed,
                         restore_addresses, restore_link, restore_routes, route_matches,
                         simulate)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------------------------



_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def in_netns(ns: Netns, fn: Callable[[], T]) -> T:
    """Run fn in a short-lived thread that entered the namespace: sockets it opens and
    if_nametoindex() see that namespace (its /sys does not follow; nothing here reads /sys)."""
    result: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(ns.path, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns.path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name=f"netns-{ns.arg}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


_SIOCGIFFLAGS, _SIOCGIFMTU, _SIOCGIFHWADDR, _SIOCGIFINDEX = 0x8913, 0x8921, 0x8927, 0x8933


def _ioctl_link(name: str) -> Record:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16s16x", name.encode())

        def ask(code: int) -> bytes:
            return fcntl.ioctl(sock, code, request)

        try:
            (ifindex,) = struct.unpack_from("i", ask(_SIOCGIFINDEX), 16)
        except OSError:
            return dict(ABSENT)
        (mtu,) = struct.unpack_from("i", ask(_SIOCGIFMTU), 16)
        (flags,) = struct.unpack_from("H", ask(_SIOCGIFFLAGS), 16)
        mac = ask(_SIOCGIFHWADDR)[18:24]
    return {"exists": True, "ifindex": ifindex, "mtu": mtu, "up": bool(flags & 1),
            "mac": ":".join(f"{b:02x}" for b in mac)}


def remote_link(ns: Netns, name: str) -> Record | None:
    """A link in another namespace, asked with ioctls on a socket opened there (that
    namespace's /sys is not mounted here): ABSENT, or None if the namespace does not exist."""
    if not os.path.exists(ns.path):
        return None
    return in_netns(ns, lambda: _ioctl_link(name))


# ---------------------------------------------------------------------------------------------
# Links from /sys
# ---------------------------------------------------------------------------------------------

SYS_NET = "/sys/class/net"


def _read(path: str) -> str:
    # os.open/os.read: a third of the cost of open(); observe reads a few files per link
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _kind(base: str, ifindex: int, iflink: int) -> str:
    if os.path.isdir(f"{base}/bridge"):
        return "bridge"
    if iflink == ifindex:
        return "physical" if os.path.exists(f"{base}/device") else "virtual"
    # A veth reports its peer's ifindex as iflink; so do vlans and macvlans, which say so.
    for line in _read(f"{base}/uevent").splitlines():
        if line.startswith("DEVTYPE="):
            return line.removeprefix("DEVTYPE=")
    return "veth"


def read_link(name: str, *, full: bool = False) -> Record:
    """A link as /sys shows it (the thread's namespace), or ABSENT. `full` adds what
    recreating it needs: its MAC and, for a bridge, its ports."""
    base = f"{SYS_NET}/{name}"
    try:
        ifindex = int(_read(f"{base}/ifindex"))
        iflink = int(_read(f"{base}/iflink"))
        rec = {
            "exists": True,
            "kind": _kind(base, ifindex, iflink),
            "up": bool(int(_read(f"{base}/flags"), 16) & 1),
            "mtu": int(_read(f"{base}/mtu")),
            # `master` on kernels since 3.x, brport/bridge on CentOS 6's 2.6.32
            "master": _link_name(f"{base}/master") or _link_name(f"{base}/brport/bridge"),
            "ifindex": ifindex,
            "iflink": iflink,
        }
        if full:
            rec["mac"] = _read(f"{base}/address")
            # 3: set by hand (kept on recreation); 1: random, as a new veth's
            rec["mac_set"] = _read(f"{base}/addr_assign_type") == "3"
            if rec["kind"] == "bridge":
                rec["ports"] = _ports(base)
    except FileNotFoundError:  # not there, or gone while reading
        return dict(ABSENT)
    return rec


def read_links() -> Mapping[str, Record]:
    """Every link of the thread's namespace as read_link gives it (not `full`), from one
    netlink dump: observing a for_each step of hundreds of links, that costs what ten links
    read from /sys cost. Each link's record is made when it is looked up."""
    return _DumpedLinks(dump_links())


class _DumpedLinks(Mapping[str, Record]):
    def __init__(self, dump: LinkDump) -> None:
        self.dump = dump

    def __getitem__(self, name: str) -> Record:
        d = self.dump[name]
        return {"exists": True, "kind": _dumped_kind(d), "up": d["up"], "mtu": d["mtu"],
                "master": self.dump.names.get(d["master_index"]), "ifindex": d["ifindex"],
                "iflink": d["iflink"]}

    def __iter__(self) -> Iterator[str]:
        return iter(self.dump)

    def __len__(self) -> int:
        return len(self.dump)


def _dumped_kind(d: dict[str, Any]) -> str:
    """_kind from what the dump says where that is enough (bridges, veths; most links of a
    large step), else from /sys as for one link."""
    if d["info_kind"] == "bridge":
        return "bridge"
    if d["info_kind"] == "veth" and d["iflink"] != d["ifindex"]:
        return "veth"
    return _kind(f"{SYS_NET}/{d['name']}", d["ifindex"], d["iflink"])


def _ports(base: str) -> list[str]:
    """A bridge's ports in port-number order (re-adding them in it gives the same numbers)."""
    names = os.listdir(f"{base}/brif")
    return sorted(names, key=lambda p: int(_read(f"{base}/brif/{p}/port_no"), 16))


def ifindex_names() -> dict[int, str]:
    return {int(_read(f"{SYS_NET}/{n}/ifindex")): n for n in os.listdir(SYS_NET)}


def _route_args(r: Record, *, full: bool) -> list[str]:
    argv = ["ip", *(["-6"] if r["family"] == 6 else []), "route", "replace" if full else "del",
            r["to"]]
    for key, word in (("via", "via"), ("dev", "dev"), ("metric", "metric")):
        if r.get(key) is not None:
            argv += [word, str(r[key])]
    if full:
        for key, word in (("proto", "proto"), ("scope", "scope"), ("src", "src")):
            if r.get(key) not in (None, *ROUTE_DEFAULTS.get(key, ())):
                argv += [word, str(r[key])]
    return argv


def render(change: Change, *, centos6: bool, host: Host | None = None) -> list[list[str]]:
    """The commands of a change: CentOS 6's (ip 2.6.32 and brctl) or today's iproute2 (the
    command line equivalent to what the netlink backend sends)."""
    inside = getattr(change, "inside", None)
    prefix = inside.resolve(host).prefix() if inside else []
    return [[*prefix, *argv] for argv in _commands(change, centos6, host)]


def _commands(change: Change, centos6: bool, host: Host | None) -> list[list[str]]:
    match change:
        case AddBridge(name):
            return [["brctl", "addbr", name] if centos6 else
                    ["ip", "link", "add", name, "type", "bridge"]]
        case AddVeth(name, peer):
            return [["ip", "link", "add", name, "type", "veth", "peer", "name", peer]]
        case DelLink(name, "bridge") if centos6:
            return [["ip", "link", "set", name, "down"], ["brctl", "delbr", name]]
        case DelLink(name, _):
            return [["ip", "link", "delete", name]]
        case SetLink(name, mtu, mac, up, _):
            argv = ["ip", "link", "set", name]
            if mtu is not None:
                argv += ["mtu", str(mtu)]
            if mac is not None:
                argv += ["address", mac]
            if up is not None:
                argv.append("up" if up else "down")
            return [argv]
        case Enslave(name, bridge):
            return [["brctl", "addif", bridge, name] if centos6 else
                    ["ip", "link", "set", name, "master", bridge]]
        case Release(name, bridge):
            return [["brctl", "delif", bridge, name] if centos6 else
                    ["ip", "link", "set", name, "nomaster"]]
        case AddAddr(dev, address, brd, scope, label):
            argv = ["ip", "addr", "add", address, "dev", dev]
            for word, value in (("brd", brd), ("scope", scope), ("label", label)):
                if value is not None:
                    argv += [word, value]
            return [argv]
        case DelAddr(dev, address):
            return [["ip", "addr", "del", address, "dev", dev]]
        case MoveLink(name, to, _):
            return [["ip", "link", "set", name, "netns", to.resolve(host).arg]]
        case RenameLink(name, new, _):
            return [["ip", "link", "set", name, "name", new]]
        case ReplaceRoute(route):
            return [_route_args(route, full=True)]
        case DelRoute(route):
            return [_route_args(route, full=False)]
    raise TypeError(f"unknown change {change!r}")


# ---------------------------------------------------------------------------------------------
# A backend's view of the host
# ---------------------------------------------------------------------------------------------


class Linux:
    """How a backend reads addresses and routes and carries out changes on one host. One
    object per run and host (ctx.resources); links are read from /sys by `View`."""

    centos6: ClassVar[bool]  # which commands `describe` shows

    @classmethod
    def of(cls, ctx: Context) -> Linux:
        return ctx.resources.get(f"linux:{cls.__name__}", cls)

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        """Addresses by device (of one device, or all)."""
        raise NotImplementedError

    def routes(self, ctx: Context, fam: int, to: str | None) -> list[Record]:
        """Main-table unicast routes of a family (to one destination, or all)."""
        raise NotImplementedError

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        raise NotImplementedError

    @classmethod
    def describe(cls, changes: Sequence[Change], host: Host | None = None) -> list[list[str]]:
        return [argv for c in changes for argv in render(c, centos6=cls.centos6, host=host)]

    def close(self) -> None:
        """Nothing to close by default."""


class View:
    """One observation pass. Observing many instances of a for_each step, it asks the
    backend once for all addresses and routes instead of once per instance, reads a link
    the instances share (their bridge) once, and from DUMP_FROM instances on reads all links
    with one netlink dump."""

    DUMP_FROM = 16

    def __init__(self, linux: Linux, ctx: Context, *, many: int = 1) -> None:
        self.linux = linux
        self.ctx = ctx
        self.many = many > 1
        self._dumps = many >= self.DUMP_FROM
        self._dumped: Mapping[str, Record] | None = None
        self._addresses: dict[str, list[Record]] | None = None
        self._routes: dict[int, list[Record]] = {}
        self._links: dict[tuple[str, bool, bool], Record] = {}

    def link(self, name: str, *, addresses: bool = False, full: bool = False) -> Record:
        """A link's record; with its addresses, or (full) all that recreating it needs."""
        key = (name, addresses, full)
        if key not in self._links:
            rec = self._read(name, full)
            if rec["exists"] and (addresses or full):
                rec["addresses"] = self.addresses(name)
            if not self.many:
                return rec
            self._links[key] = rec
        return dict(self._links[key])  # instances add to their copy (a veth's peer)

    def _read(self, name: str, full: bool) -> Record:
        if full or not self._dumps:
            return read_link(name, full=full)
        if self._dumped is None:
            self._dumped = read_links()
        return dict(self._dumped.get(name, ABSENT))

    def addresses(self, dev: str) -> list[Record]:
        if not self.many:
            return self.linux.addresses(self.ctx, dev).get(dev, [])
        if self._addresses is None:
            self._addresses = self.linux.addresses(self.ctx, None)
        return self._addresses.get(dev, [])

    def routes(self, fam: int, to: str) -> list[Record]:
        if not self.many:
            return self.linux.routes(self.ctx, fam, to)
        if fam not in self._routes:
            self._routes[fam] = self.linux.routes(self.ctx, fam, None)
        return [r for r in self._routes[fam] if r["to"] == to]

    def remote(self, ns: Netns, name: str) -> Record | None:
        """A link in another namespace (None: no such namespace)."""
        return remote_link(ns, name)


class Unobserved(View):
    """What describe assumes when nothing was observed (e.g. a script exported for another
    host): no links, addresses or routes."""

    def __init__(self) -> None:
        self.ctx = None  # type: ignore[assignment]

    def link(self, name: str, *, addresses: bool = False, full: bool = False) -> Record:
        return dict(ABSENT)

    def addresses(self, dev: str) -> list[Record]:
        return []

    def routes(self, fam: int, to: str) -> list[Record]:
        return []

    def remote(self, ns: Netns, name: str) -> Record | None:
        return None


# ---------------------------------------------------------------------------------------------
# The actions, written once over Linux and View
# ---------------------------------------------------------------------------------------------


class LinkAction(Action):
    """Base of the link actions. A backend subclasses each action and sets `linux`; the
    actions say what to observe (`look`), when it holds (`check`), what to change."""

    linux: ClassVar[type[Linux]]

    # -- what each action defines --

    def look(self, view: View, args: Any) -> State:
        raise NotImplementedError

    def changes(self, args: Any, before: State) -> list[Change]:
        raise NotImplementedError

    def refuse(self, args: Any, before: State) -> str | None:
        """Why apply must not start (e.g. the name is taken by another kind of link)."""
        return None

    def restore(self, args: Any, before: State, now: State) -> list[Change]:
        changes: list[Change] = []
        for name, was in before.get("links", {}).items():
            step = restore_link(name, was, now["links"].get(name, ABSENT))
            changes += step
            now = simulate(now, step)
        return changes

    # -- the Action contract --

    def observe(self, ctx: Context, args: Any) -> State:
        return self.look(View(self.linux.of(ctx), ctx), args)

    def observe_many(self, ctx: Context, args: Sequence[Any]) -> list[State]:
        view = View(self.linux.of(ctx), ctx, many=len(args))
        return [self.look(view, a) for a in args]

    def apply(self, ctx: Context, args: Any, before: State) -> None:
        # If it fails half-way, the engine undoes what the step changed.
        self._carry_out(ctx, [(args, before)])

    def apply_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        try:
            self._carry_out(ctx, items)
        except Exception:
            self._put_back(ctx, items)
            raise

    def _carry_out(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        for args, before in items:
            problem = self.refuse(args, before)
            if problem:
                raise ActionError(problem)
        changes = [c for args, before in items for c in self.changes(args, before)]
        self.linux.of(ctx).execute(ctx, changes)

    def _put_back(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        """After a batch failed, undo what its failing instances did in part: the engine
        keeps the instances that took effect (and rolls them back with the run), but a failed
        instance is never undone, so it must leave things as they were."""
        now = self.observe_many(ctx, [args for args, _ in items])
        for (args, before), seen in zip(items, now):
            if not self.check(args, seen):
                try:
                    self.linux.of(ctx).execute(ctx, self.restore(args, before, seen))
                except Exception:  # the original error is the one to report
                    pass

    def undo(self, ctx: Context, args: Any, before: State) -> None:
        self.undo_many(ctx, [(args, before)])

    def undo_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        # restore works from what is seen now: an instance restored already needs nothing
        now = self.observe_many(ctx, [args for args, _ in items])
        self.linux.of(ctx).execute(ctx, [c for (args, before), seen in zip(items, now)
                                         for c in self.restore(args, before, seen)])

    def describe(self, args: Any, before: State | None = None) -> list[list[str]]:
        return self.linux.describe(self.changes(args, before or self.look(Unobserved(), args)))

    def describe_undo(self, args: Any, before: State | None = None) -> list[list[str]]:
        before = before or self.look(Unobserved(), args)
        after = simulate(before, self.changes(args, before))
        return self.linux.describe(self.restore(args, before, after))


def link_record(before: State, name: str) -> Record:
    return before.get("links", {}).get(name, ABSENT)


def bridge_problem(before: State, name: str) -> str | None:
    rec = link_record(before, name)
    if not rec["exists"]:
        return f"bridge {name} does not exist"
    if rec["kind"] != "bridge":
        return f"{name} is not a Linux bridge (it is a {rec['kind']} link)"
    return None


def master_changes(name: str, current: str | None, wanted: str | None) -> list[Change]:
    if current == wanted:
        return []
    return ([Release(name, current)] if current else []) + \
        ([Enslave(name, wanted)] if wanted else [])


class LinkSet(LinkAction):
    name = "link.set"
    family = "link"
    Args = LinkSetArgs
    summary = "set a link's state, MTU or master"

    def look(self, view: View, args: LinkSetArgs) -> State:
        links = {args.name: view.link(args.name)}
        if args.master:
            links[args.master] = view.link(args.master)
        return {"links": links}

    def check(self, args: LinkSetArgs, before: State) -> bool:
        rec = link_record(before, args.name)
        return rec["exists"] and not self.changes(args, before)

    def refuse(self, args: LinkSetArgs, before: State) -> str | None:
        if not link_record(before, args.name)["exists"]:
            return f"link {args.name} does not exist"
        return bridge_problem(before, args.master) if args.master else None

    def changes(self, args: LinkSetArgs, before: State) -> list[Change]:
        rec = link_record(before, args.name)
        mtu = args.mtu if args.mtu is not None and args.mtu != rec.get("mtu") else None
        up = None if args.state is None or (args.state == "up") == rec.get("up") else \
            args.state == "up"
        masters = [] if args.master is None else \
            master_changes(args.name, rec.get("master"), args.master or None)
        if not masters:
            return [SetLink(args.name, mtu=mtu, up=up)] if (mtu, up) != (None, None) else []
        return ([SetLink(args.name, mtu=mtu)] if mtu is not None else []) + masters + \
            ([SetLink(args.name, up=up)] if up is not None else [])

    def restore(self, args: LinkSetArgs, before: State, now: State) -> list[Change]:
        # Only what this step sets, and only on the link itself (the master's record was read
        # for checking): a later step may have changed the rest, and undoing that is its job.
        was, seen = link_record(before, args.name), link_record(now, args.name)
        if not (was["exists"] and seen["exists"]):
            return []
        touched = [key for key, given in (("mtu", args.mtu), ("up", args.state),
                                          ("master", args.master)) if given is not None]
        return restore_link(args.name, {**seen, **{k: was[k] for k in touched}}, seen)

    def shell(self, host: Host, args: LinkSetArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        holds = [shell_exists(args.name)]
        apply: list[str] = []
        if args.mtu is not None:
            holds.append(f"[ \"$(cat {sys_path(args.name, 'mtu')})\" = {args.mtu} ]")
            apply += out.run(SetLink(args.name, mtu=args.mtu))
        if args.master is not None:
            now = value_of(var("now"))
            holds.append(shell_is_port(args.master, args.name) if args.master else
                         f"[ ! -e {sys_path(args.name, 'brport')} ]")
            release = f"if [ -n \"${var('now')}\" ]; then {out.one_line(Release(args.name, now))}; fi"
            apply.append(shell_master(args.name, var("now")))
            apply.append(f"if [ \"${var('now')}\" != {word(args.master)} ]; then {release}; "
                         f"{out.one_line(Enslave(args.name, args.master))}; fi"
                         if args.master else release)
        if args.state is not None:
            holds.append(f"[ $(( $(cat {sys_path(args.name, 'flags')}) & 1 )) = "
                         f"{int(args.state == 'up')} ]")
            apply += out.run(SetLink(args.name, up=args.state == "up"))
        touched = [key for key, given in (("mtu", args.mtu), ("master", args.master),
                                          ("up", args.state)) if given is not None]
        save, saved = out.save_link(args.name, var, touched)
        return ShellStep(check=" && ".join(holds), save=tuple(save), saved=tuple(saved),
                         apply=tuple(apply),
                         undo=tuple(out.restore_link(args.name, var, touched)))


class AddressAction(LinkAction):
    """addr.present and addr.absent: undo puts the link's addresses back, and only while the
    link is there (the step that made or removed the link undoes that)."""

    def restore(self, args: Any, before: State, now: State) -> list[Change]:
        was, seen = link_record(before, args.dev), link_record(now, args.dev)
        if not (was["exists"] and seen["exists"]):
            return []
        return restore_addresses(args.dev, was.get("addresses", []), seen.get("addresses", []))


class AddrPresent(AddressAction):
    name = "addr.present"
    family = "link"
    Args = AddrPresentArgs
    summary = "an address is on a link (exclusive: the only one of its family)"

    def look(self, view: View, args: AddrPresentArgs) -> State:
        return {"links": {args.dev: view.link(args.dev, addresses=True)}}

    def _family_list(self, args: AddrPresentArgs, before: State) -> list[str]:
        fam = family(args.address)
        return [a["address"] for a in link_record(before, args.dev).get("addresses", [])
                if family(a["address"]) == fam and managed(a)]

    def check(self, args: AddrPresentArgs, before: State) -> bool:
        if not link_record(before, args.dev)["exists"]:
            return False
        present = self._family_list(args, before)
        return present == [args.address] if args.exclusive else args.address in present

    def refuse(self, args: AddrPresentArgs, before: State) -> str | None:
        return None if link_record(before, args.dev)["exists"] else f"link {args.dev} does not exist"

    def changes(self, args: AddrPresentArgs, before: State) -> list[Change]:
        present = self._family_list(args, before)
        if not args.exclusive:
            return [] if args.address in present else [AddAddr(args.dev, args.address)]
        # Delete the others last-first (secondaries before their primary). If ours is not the
        # first of its family it may be a secondary of one of them: it goes too, and comes back.
        keep = bool(present) and present[0] == args.address
        gone = [a for a in present if a != args.address or not keep]
        changes: list[Change] = [DelAddr(args.dev, a) for a in reversed(gone)]
        return changes + ([] if keep else [AddAddr(args.dev, args.address)])

    def shell(self, host: Host, args: AddrPresentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        fam = family(args.address)
        present = f"{address_specs(args.dev, fam)} | cut -d' ' -f1"
        if not args.exclusive:
            holds = f"{present} | grep -qxF -- {word(args.address)}"
            apply = out.run(AddAddr(args.dev, args.address))
        else:
            # As `changes`: the others go last-first; ours stays if it is the first.
            holds = f"[ \"$({present})\" = {word(args.address)} ]"
            first, a = var("first"), value_of(var("a"))
            last_first = "awk '{ l[NR] = $0 } END { for (i = NR; i > 0; i--) print l[i] }'"
            apply = [f"{first}=$({present} | head -n 1)",
                     f"for {var('a')} in $({present} | {last_first}); do",
                     f"    if [ \"${var('a')}\" != {word(args.address)} ] || "
                     f"[ \"${first}\" != {word(args.address)} ]; then "
                     f"{out.one_line(DelAddr(args.dev, a))}; fi",
                     "done",
                     f"if [ \"${first}\" != {word(args.address)} ]; then "
                     f"{out.one_line(AddAddr(args.dev, args.address))}; fi"]
        return addresses_step(out, args.dev, fam, var, holds, apply)


class AddrAbsent(AddressAction):
    name = "addr.absent"
    family = "link"
    Args = AddrAbsentArgs
    summary = "an address is not on a link"

    def look(self, view: View, args: AddrAbsentArgs) -> State:
        return {"links": {args.dev: view.link(args.dev, addresses=True)}}

    def check(self, args: AddrAbsentArgs, before: State) -> bool:
        return not self.changes(args, before)

    def changes(self, args: AddrAbsentArgs, before: State) -> list[Change]:
        present = [a["address"] for a in link_record(before, args.dev).get("addresses", [])]
        return [DelAddr(args.dev, args.address)] if args.address in present else []

    def shell(self, host: Host, args: AddrAbsentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        fam = family(args.address)
        holds = (f"! {{ {address_specs(args.dev, fam)} | cut -d' ' -f1 | "
                 f"grep -qxF -- {word(args.address)}; }}")
        return addresses_step(out, args.dev, fam, var, holds,
                              out.run(DelAddr(args.dev, args.address)))


def _veth_state(view: View, name: str, peer: str | None, peer_netns: str | None, *,
                full: bool) -> State:
    """The link, and whether its peer is where it should be."""
    rec = view.link(name, full=full)
    if not rec["exists"] or rec["kind"] != "veth":
        return {"links": {name: rec}}
    if peer_netns is not None and peer is not None:
        there = view.remote(Netns(name=peer_netns), peer) or ABSENT
        rec["peer"] = {"name": peer, "netns": peer_netns, "mac": there.get("mac"),
                       "mtu": there.get("mtu"), "up": there.get("up"),
                       "ok": there["exists"] and there["ifindex"] == rec["iflink"]}
        return {"links": {name: rec}}
    names = ifindex_names() if peer is None else {}
    found = peer or names.get(rec["iflink"])
    other = view.link(found, full=full) if found else dict(ABSENT)
    ok = other["exists"] and other["ifindex"] == rec["iflink"] and \
        other["iflink"] == rec["ifindex"]
    rec["peer"] = {"name": found if ok else None, "netns": None, "ok": ok}
    return {"links": {name: rec, found: other} if ok and found else {name: rec}}


class VethPresent(LinkAction):
    name = "veth.present"
    family = "link"
    Args = VethPresentArgs
    summary = "a veth pair exists (its peer optionally in another namespace)"

    def look(self, view: View, args: VethPresentArgs) -> State:
        state = _veth_state(view, args.name, args.peer, args.peer_netns, full=False)
        return {"links": {args.name: state["links"][args.name]}}  # undo only deletes it

    def check(self, args: VethPresentArgs, before: State) -> bool:
        rec = link_record(before, args.name)
        return rec["exists"] and rec.get("peer", {}).get("ok", False)

    def refuse(self, args: VethPresentArgs, before: State) -> str | None:
        rec = link_record(before, args.name)
        if rec["exists"]:
            where = f" in namespace {args.peer_netns}" if args.peer_netns else ""
            return f"{args.name} exists and is not a veth whose peer is {args.peer}{where}"
        return None

    def changes(self, args: VethPresentArgs, before: State) -> list[Change]:
        if link_record(before, args.name)["exists"]:
            return []
        changes: list[Change] = [AddVeth(args.name, args.peer)]
        if args.peer_netns:
            changes.append(MoveLink(args.peer, Netns(name=args.peer_netns)))
        return changes

    def restore(self, args: VethPresentArgs, before: State, now: State) -> list[Change]:
        # Created here: deleting our end deletes the peer, wherever it is.
        seen = link_record(now, args.name)
        return [DelLink(args.name, "veth")] if not link_record(before, args.name)["exists"] and \
            seen["exists"] else []

    def shell(self, host: Host, args: VethPresentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        ifindex = f"$(cat {sys_path(args.name, 'iflink')})"
        if args.peer_netns:
            there = command(["ip", "netns", "exec", args.peer_netns, "cat",
                             f"{SYS_NET}/{args.peer}/ifindex"])
            holds = f"{shell_exists(args.name)} && [ \"{ifindex}\" = \"$({there} 2>/dev/null)\" ]"
        else:
            holds = (f"{shell_exists(args.name)} && {shell_exists(args.peer)} && "
                     f"[ \"{ifindex}\" = \"$(cat {sys_path(args.peer, 'ifindex')})\" ] && "
                     f"[ \"$(cat {sys_path(args.peer, 'iflink')})\" = "
                     f"\"$(cat {sys_path(args.name, 'ifindex')})\" ]")
        exists = var("exists")
        return ShellStep(
            check=holds,
            save=(f"if {shell_exists(args.name)}; then {exists}=1; else {exists}=0; fi",),
            saved=(exists,),
            apply=tuple(out.run(*self.changes(args, {}))),
            # Created here: deleting our end deletes the peer, wherever it is.
            undo=(f"if [ \"${exists}\" = 0 ] && {shell_exists(args.name)}; then "
                  f"{out.one_line(DelLink(args.name, 'veth'))}; fi",))


class VethAbsent(LinkAction):
    name = "veth.absent"
    family = "link"
    Args = VethAbsentArgs
    summary = "a veth pair does not exist (undo recreates both ends with their settings)"

    def look(self, view: View, args: VethAbsentArgs) -> State:
        return _veth_state(view, args.name, args.peer, args.peer_netns, full=True)

    def check(self, args: VethAbsentArgs, before: State) -> bool:
        return not link_record(before, args.name)["exists"]

    def refuse(self, args: VethAbsentArgs, before: State) -> str | None:
        rec = link_record(before, args.name)
        if rec["kind"] != "veth":
            return f"{args.name} is not a veth (it is a {rec['kind']} link)"
        if not rec["peer"]["ok"]:
            return (f"the peer of {args.name} is not in this namespace"
                    + (f" or is not {args.peer} in {args.peer_netns}" if args.peer_netns else "")
                    + ": give peer and peer_netns, so that undo can recreate the pair")
        return None

    def changes(self, args: VethAbsentArgs, before: State) -> list[Change]:
        return [DelLink(args.name, "veth")] if link_record(before, args.name)["exists"] else []

    def shell(self, host: Host, args: VethAbsentArgs, var: ShellVar) -> ShellStep:
        """Undo recreates the pair as `restore` does: both ends' MTU, master, addresses, MAC
        and state when the peer is beside it; the peer's MAC, MTU and state in peer_netns."""
        out = ShellLinux(self.linux, host)

        def ours(key: str) -> str:
            return var(f"a_{key}")

        def peers(key: str) -> str:
            return var(f"b_{key}")

        save, saved = out.save_link(args.name, ours, VETH_KEYS)
        peer = var("peer")
        undo: list[str]
        if args.peer_netns:
            there = ["ip", "netns", "exec", args.peer_netns]
            path = f"{SYS_NET}/{args.peer}"
            save += [f"{peer}={word(args.peer)}",
                     f"{peers('mtu')}=$({command([*there, 'cat', path + '/mtu'])} 2>/dev/null || true)",
                     f"{peers('mac')}=$({command([*there, 'cat', path + '/address'])} 2>/dev/null "
                     "|| true)",
                     f"{peers('up')}=$(( $({command([*there, 'cat', path + '/flags'])} "
                     "2>/dev/null || echo 0) & 1 ))"]
            saved += [peer, peers("mtu"), peers("mac"), peers("up")]
            name = value_of(peer)
            moved = Netns(name=args.peer_netns)
            recreate = out.restore_link(args.name, ours, VETH_KEYS, kind="veth", peer=name)
            undo = [*recreate,
                    f"if [ \"${ours('fresh')}\" = 1 ]; then",
                    *indent(out.run(SetLink(name, mtu=value_of(peers("mtu")),
                                             mac=value_of(peers("mac"))), MoveLink(name, moved))),
                    f"    if [ \"${peers('up')}\" = 1 ]; then "
                    f"{out.one_line(SetLink(name, up=True, inside=moved))}; fi",
                    "fi"]
        else:
            if args.peer:
                save.append(f"{peer}={word(args.peer)}")
            else:  # the link whose ifindex is our iflink
                save += [f"{peer}=",
                         f"for link in {word(SYS_NET)}/*; do if [ \"$(cat \"$link/ifindex\")\" = "
                         f"\"$(cat {sys_path(args.name, 'iflink')} 2>/dev/null)\" ]; then "
                         f"{peer}=${{link##*/}}; fi; done"]
            name = value_of(peer)
            more, names = out.save_link(name, peers, VETH_KEYS[1:])
            save += more
            saved += [peer, *names]
            undo = [*out.restore_link(args.name, ours, VETH_KEYS, kind="veth", peer=name),
                    *out.restore_link(name, peers, VETH_KEYS[1:]),
                    f"if [ \"${ours('fresh')}\" = 1 ]; then "
                    f"{out.one_line(SetLink(name, mac=value_of(peers('mac'))))}; fi"]
        return ShellStep(check=f"! {shell_exists(args.name)}", save=tuple(save),
                         saved=tuple(saved),
                         apply=tuple(out.run(DelLink(args.name, "veth"))), undo=tuple(undo))


class NetnsMove(LinkAction):
    name = "netns.move"
    family = "link"
    Args = NetnsMoveArgs
    summary = "move a link into a network namespace (by name, pid or container)"

    @staticmethod
    def _target(view: View, args: NetnsMoveArgs) -> Netns | None:
        if args.netns:
            return Netns(name=args.netns)
        if args.pid:
            return Netns(pid=args.pid)
        if view.ctx is None:  # not observed: the container's process is not known
            return None
        from ..docker.client import inspect  # only a move into a container needs docker

        info = inspect(view.ctx, args.container) or {}
        pid = info.get("State", {}).get("Pid") or 0
        return Netns(pid=pid) if pid else None

    def look(self, view: View, args: NetnsMoveArgs) -> State:
        target = self._target(view, args)
        there = view.remote(target, args.rename or args.name) if target else None
        return {"links": {args.name: view.link(args.name, addresses=True)},
                "target": target.to_json() if target else None,
                "there": bool(there and there["exists"])}

    def check(self, args: NetnsMoveArgs, before: State) -> bool:
        return not link_record(before, args.name)["exists"] and before["there"]

    def refuse(self, args: NetnsMoveArgs, before: State) -> str | None:
        if before["target"] is None:
            return f"container {args.container} does not exist or is not running"
        target = Netns(**before["target"])
        if not os.path.exists(target.path):
            return f"the target namespace ({target.path}) does not exist"
        if not link_record(before, args.name)["exists"]:
            return f"link {args.name} does not exist"
        return None

    def changes(self, args: NetnsMoveArgs, before: State) -> list[Change]:
        if not link_record(before, args.name)["exists"]:
            return []
        target = Netns(**(before["target"] or {"name": args.netns, "pid": args.pid}))
        changes: list[Change] = [MoveLink(args.name, target)]
        if args.rename and args.rename != args.name:
            changes.append(RenameLink(args.name, args.rename, inside=target))
        return changes

    def restore(self, args: NetnsMoveArgs, before: State, now: State) -> list[Change]:
        was, seen = link_record(before, args.name), link_record(now, args.name)
        if not was["exists"]:
            return []
        if seen["exists"] or not now.get("there"):
            return restore_link(args.name, was, seen) if seen["exists"] else []
        target = Netns(**before["target"])
        changes: list[Change] = []
        if args.rename and args.rename != args.name:
            changes.append(RenameLink(args.rename, args.name, inside=target))
        changes.append(MoveLink(args.name, HOME, inside=target))
        # A link that changes namespace arrives down, without master or addresses.
        arrived = {**was, "up": False, "master": None, "addresses": []}
        return changes + restore_link(args.name, was, arrived)


def _route_state(view: View, args: RouteArgs) -> State:
    return {"routes": view.routes(args.family, args.to)}


class RoutePresent(LinkAction):
    name = "route.present"
    family = "link"
    Args = RoutePresentArgs
    summary = "a route in the main table (replacing one to the same destination and metric)"

    def look(self, view: View, args: RoutePresentArgs) -> State:
        return _route_state(view, args)

    def check(self, args: RoutePresentArgs, before: State) -> bool:
        return any(route_matches(r, args) for r in before["routes"])

    def changes(self, args: RoutePresentArgs, before: State) -> list[Change]:
        return [] if self.check(args, before) else [ReplaceRoute(desired_route(args))]

    def restore(self, args: RoutePresentArgs, before: State, now: State) -> list[Change]:
        return restore_routes(before["routes"], now["routes"])

    def shell(self, host: Host, args: RoutePresentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        return routes_step(args, var, f"{matching_routes(args)} | grep -q .",
                           out.run(ReplaceRoute(desired_route(args))))


class RouteAbsent(RoutePresent):
    name = "route.absent"
    Args = RouteArgs
    summary = "no route in the main table matches (undo puts the deleted ones back)"

    def check(self, args: RouteArgs, before: State) -> bool:
        return not any(route_matches(r, args) for r in before["routes"])

    def changes(self, args: RouteArgs, before: State) -> list[Change]:
        return [DelRoute(r) for r in before["routes"] if route_matches(r, args)]

    def shell(self, host: Host, args: RouteArgs, var: ShellVar) -> ShellStep:
        route = var("route")
        return routes_step(args, var, f"! {{ {matching_routes(args)} | grep -q .; }}", [
            "# shellcheck disable=SC2086",
            f"{matching_routes(args)} | while read -r {route}; do "
            f"(set -f; ip -{args.family} route del ${route}); done"])


LINK_ACTIONS = (LinkSet, AddrPresent, AddrAbsent, VethPresent, VethAbsent, NetnsMove,
                RoutePresent, RouteAbsent)


def backend_actions(linux: type[Linux], backend: str, targets: tuple[str, ...],
                    unusable: Callable[[Host], str | None],
                    actions: Sequence[type[LinkAction]]) -> list[type[LinkAction]]:
    """The actions bound to one backend (serving `targets`): a subclass of each, named like
    `Iproute2LinkSet`."""
    prefix = backend.title().replace("-", "")
    return [type(f"{prefix}{a.__name__}", (a,),
                 {"backend": backend, "targets": targets, "linux": linux, "unusable": classmethod(
                     lambda cls, host: unusable(host)), "__module__": linux.__module__})
            for a in actions]


# ---------------------------------------------------------------------------------------------
# CentOS 6: ip and brctl commands
# ---------------------------------------------------------------------------------------------


def parse_addresses(text: str) -> dict[str, list[Record]]:
    """`ip -o addr show` → addresses by device, in the kernel's order."""
    result: dict[str, list[Record]] = {}
    for line in text.splitlines():
        words = line.split("\\")[0].split()
        if len(words) < 4 or words[2] not in ("inet", "inet6"):
            continue
        dev = words[1].split("@")[0]
        addr: Record = {"address": str(ipaddress.ip_interface(words[3])), "brd": None,
                        "scope": "global", "label": None}
        rest = words[4:]
        for i, word in enumerate(rest[:-1]):
            if word in ("brd", "scope"):
                addr[word] = rest[i + 1]
        # IPv4 lines end with the label: the device's name, or one starting with it (br0:1)
        if words[2] == "inet" and rest and rest[-1].split(":")[0] == dev:
            addr["label"] = rest[-1]
        result.setdefault(dev, []).append(addr)
    return result


_ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable",
                "prohibit", "blackhole", "nat", "anycast"}
_ROUTE_KEYS = ("via", "dev", "metric", "proto", "scope", "src")


def parse_routes(text: str, fam: int) -> list[Record]:
    """`ip route show` (main table) → unicast route records."""
    routes = []
    for line in text.splitlines():
        words = line.split()
        if not words or (words[0] in _ROUTE_TYPES and words[0] != "unicast"):
            continue
        if words[0] == "unicast":
            words = words[1:]
        to = words[0]
        if to != "default":
            to = str(ipaddress.ip_network(to, strict=False))
        route: Record = {"family": fam, "to": to, "via": None, "dev": None, "metric": None,
                         "proto": "boot", "scope": "global", "src": None}
        for i, word in enumerate(words[1:-1], start=1):
            if word in _ROUTE_KEYS:
                route[word] = words[i + 1]
        if route["metric"] is not None:
            route["metric"] = int(route["metric"])
        routes.append(route)
    return routes


class Centos6(Linux):
    """Runs `ip` and `brctl`; reads addresses and routes from `ip` output."""

    centos6 = True

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        argv = ["ip", "-o", "addr", "show", *(["dev", dev] if dev else [])]
        done = ctx.run(argv, check=False)
        return parse_addresses(done.stdout) if done.returncode == 0 else {}

    def routes(self, ctx: Context, fam: int, to: str | None) -> list[Record]:
        argv = ["ip", f"-{fam}", "route", "show", *(["exact", to] if to else [])]
        return parse_routes(ctx.run(argv).stdout, fam)

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        for group in _runs(self.describe(changes, ctx.host)):
            if len(group) == 1:
                ctx.run(group[0])
            elif group[0][0] == "ip":
                # One process for a run of `ip` commands; it stops at the first failure and
                # says which line ("Command failed -:3").
                _fed(ctx, ["ip", "-batch", "-"], group)
            else:
                # Still one brctl process per command (bridge-utils has no batch mode), but
                # started by sh rather than by this (much larger) process: sh starts them 20%
                # faster than xargs did. It goes on after a failure and exits 123, as xargs
                # does; the engine then sees which ones took effect.
                _fed(ctx, ["sh", "-c", BRCTL_LINES], group)


# A constant program: the commands' words (validated link names) reach it as data on stdin and
# are passed on as quoted arguments, never read as shell syntax.
BRCTL_LINES = ('status=0; while read -r command a b; do '
               'brctl "$command" "$a" ${b:+"$b"} || status=123; done; exit $status')


def _fed(ctx: Context, argv: list[str], group: list[list[str]]) -> None:
    """Run argv with the commands of group (without their program name) on stdin, one per
    line, and journal it as a here-document."""
    # Names and addresses are validated (no blanks, quotes or backslashes): safe as words.
    lines = [" ".join(command[1:]) for command in group]
    try:
        ctx.run(argv, input="".join(line + "\n" for line in lines))
    finally:
        ctx.commands[-1] += " <<EOF\n" + "\n".join(abridged(lines)) + "\nEOF"


def abridged(lines: list[str], keep: int = 8) -> list[str]:
    """The lines of a batch as the journal keeps them. Every instance of a for_each step
    journals the commands of the whole batch, so a long batch is shortened: otherwise a
    batch of N would put N x N lines in the journal."""
    if len(lines) <= keep:
        return lines
    return [*lines[:keep - 2], f"... {len(lines) - keep + 1} more ...", lines[-1]]


def _runs(commands: list[list[str]]) -> Iterator[list[list[str]]]:
    """Consecutive plain `ip` commands together, consecutive `brctl` commands together, every
    other command (ip netns exec, nsenter) alone."""
    def kind(argv: list[str]) -> str | None:
        if argv[0] == "ip" and argv[1] != "netns":
            return "ip"
        return "brctl" if argv[0] == "brctl" else None

    group: list[list[str]] = []
    for argv in commands:
        if group and kind(argv) != kind(group[0]):
            yield group
            group = []
        if kind(argv):
            group.append(argv)
        else:
            yield [argv]
    if group:
        yield group


def tools_missing(*tools: str) -> str | None:
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _unusable(host: Host) -> str | None:
    return tools_missing("ip")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "iproute2", ("centos6",), _unusable, LINK_ACTIONS):
        register(action)



# ---------------------------------------------------------------------------------------------
# Shell forms (`runflow export`): the same records and changes, as a POSIX sh script reads and
# makes them on the host. Links are read from /sys as `read_link` does (brport/bridge is the
# master on 2.6.32), addresses from `ip -o addr show`, routes from `ip route show exact`; the
# commands are `render`'s. What a step saves for its undo goes into its variables (`var`).
# ---------------------------------------------------------------------------------------------

ShellVar = Callable[[str], str]
ALL_KEYS = ("exists", "ports", "mtu", "master", "addrs4", "addrs6", "mac", "mac_set", "up")
VETH_KEYS = tuple(k for k in ALL_KEYS if k not in ("ports", "mac_set"))  # a veth's MAC comes back

# `ip -o addr show` → "ADDRESS BRD SCOPE LABEL" per address runflow restores (not IPv6
# link-local ones), "-" for none, as `parse_addresses` reads them; $D is the device.
_ADDRESS_SPECS = (
    'awk \'{ sub(/\\\\.*/, ""); b = "-"; s = "global"; l = "-"; '
    'for (i = 5; i < NF; i++) { if ($i == "brd") b = $(i + 1); if ($i == "scope") s = $(i + 1) } '
    'if ($3 == "inet" && index($NF, ENVIRON["D"] ":") == 1) l = $NF; '
    'if ($3 == "inet" || s != "link") print $4, b, s, l }\'')


def sys_path(name: str, *leaf: str) -> str:
    """A /sys/class/net path as one shell word (name may be a `value_of` placeholder)."""
    return word("/".join([SYS_NET, name, *leaf]))


def shell_exists(name: str) -> str:
    return f"[ -e {sys_path(name)} ]"


def shell_is_port(bridge: str, name: str) -> str:
    return f"[ -e {sys_path(bridge, 'brif', name)} ]"


def shell_master(name: str, into: str) -> str:
    """Sets variable `into` to the bridge `name` is a port of, or to nothing."""
    return (f"{into}=$(readlink {sys_path(name, 'brport', 'bridge')} 2>/dev/null || true); "
            f"{into}=${{{into}##*/}}")


def address_specs(dev: str, fam: int) -> str:
    """A pipeline printing dev's addresses of a family as `_ADDRESS_SPECS` lines."""
    return f"ip -o -{fam} addr show dev {word(dev)} 2>/dev/null | D={word(dev)} {_ADDRESS_SPECS}"


class ShellLinux:
    """The shell forms of one backend's changes on one host."""

    def __init__(self, linux: type[Linux], host: Host) -> None:
        self.linux = linux
        self.host = host

    def run(self, *changes: Change) -> list[str]:
        return [command(argv) for c in changes
                for argv in render(c, centos6=self.linux.centos6, host=self.host)]

    def one_line(self, *changes: Change) -> str:
        return "; ".join(self.run(*changes))

    # -- saving a link's record ---------------------------------------------------------------

    def save_link(self, name: str, v: ShellVar, keys: Sequence[str]
                  ) -> tuple[list[str], list[str]]:
        """Lines reading what restore_link needs of link `name` into v(key), for the keys
        given (exists, up, mtu, master, mac, mac_set, ports in port order, addrs4, addrs6), and the
        names of those variables."""
        p = lambda *leaf: sys_path(name, *leaf)  # noqa: E731
        reads = {
            "up": f"{v('up')}=$(( $(cat {p('flags')}) & 1 ))",
            "mtu": f"{v('mtu')}=$(cat {p('mtu')})",
            "master": shell_master(name, v("master")),
            "mac": f"{v('mac')}=$(cat {p('address')})",
            "mac_set": f"{v('mac_set')}=$(cat {p('addr_assign_type')} 2>/dev/null || echo 0)",
            "ports": f"{v('ports')}=$(for port in {p('brif')}/*; do [ -e \"$port\" ] && "
                     "printf '%d %s\\n' \"$(cat \"$port/port_no\")\" \"${port##*/}\"; done "
                     "| sort -n | cut -d' ' -f2)",
            "addrs4": f"{v('addrs4')}=$({address_specs(name, 4)})",
            "addrs6": f"{v('addrs6')}=$({address_specs(name, 6)})",
        }
        wanted = [k for k in reads if k in keys]
        names = [*([v("exists")] if "exists" in keys else []), *(v(k) for k in wanted)]
        empty = "; ".join(f"{n}=" for n in names if n != v("exists"))
        lines = [f"if {shell_exists(name)}; then",
                 *([f"    {v('exists')}=1"] if "exists" in keys else []),
                 *(f"    {reads[k]}" for k in wanted),
                 "else",
                 *([f"    {v('exists')}=0"] if "exists" in keys else []),
                 f"    {empty or ':'}",
                 "fi"]
        return lines, names

    # -- putting it back ----------------------------------------------------------------------

    def restore_link(self, name: str, v: ShellVar, keys: Sequence[str], *,
                     kind: str = "", peer: str | None = None) -> list[str]:
        """Lines that put back what save_link read, for the keys given, as `restore_link`
        does: with "exists", a link that was not there is deleted, and one that was (a
        bridge, or a veth with `peer`) is recreated; then its ports, MTU, master, addresses,
        MAC (of a recreated link) and state."""
        body: list[str] = []
        if "exists" in keys:
            made = [AddBridge(name)] if kind == "bridge" else [AddVeth(name, peer or "")]
            body.append(f"if [ ! -e {sys_path(name)} ]; then {self.one_line(*made)}; "
                        f"{v('fresh')}=1; else {v('fresh')}=0; fi")
        if "ports" in keys:
            port = value_of(v("port"))
            body += ["# shellcheck disable=SC2086",
                     f"for {v('port')} in ${v('ports')}; do "
                     f"{shell_is_port(name, port)} || {self.one_line(Enslave(port, name))}; done"]
        if "mtu" in keys:
            body.append(f"[ \"$(cat {sys_path(name, 'mtu')})\" = \"${v('mtu')}\" ] || "
                        + self.one_line(SetLink(name, mtu=value_of(v("mtu")))))  # type: ignore
        if "master" in keys:
            now, was = value_of(v("now")), value_of(v("master"))
            body += [shell_master(name, v("now")),
                     f"if [ \"${v('now')}\" != \"${v('master')}\" ]; then",
                     f"    if [ -n \"${v('now')}\" ]; then {self.one_line(Release(name, now))}; fi",
                     f"    if [ -n \"${v('master')}\" ]; then "
                     f"{self.one_line(Enslave(name, was))}; fi",
                     "fi"]
        for fam in (4, 6):
            if f"addrs{fam}" in keys:
                body += self.restore_addresses(name, fam, v)
        if "exists" in keys:
            mac = self.one_line(SetLink(name, mac=value_of(v("mac"))))
            wanted = "true" if kind == "veth" else f"[ \"${v('mac_set')}\" = 3 ]"
            body.append(f"if [ \"${v('fresh')}\" = 1 ] && {wanted}; then {mac}; fi")
        if "up" in keys:
            body.append(f"if [ \"${v('up')}\" = 1 ]; then {self.one_line(SetLink(name, up=True))}; "
                        f"else {self.one_line(SetLink(name, up=False))}; fi")
        if "exists" not in keys:
            return [f"if {shell_exists(name)}; then", *indent(body), "fi"]
        gone = self.one_line(DelLink(name, kind))
        return [f"if [ \"${v('exists')}\" = 0 ]; then",
                f"    if {shell_exists(name)}; then {gone}; fi",
                "else", *indent(body), "fi"]

    def restore_addresses(self, dev: str, fam: int, v: ShellVar) -> list[str]:
        """Lines that turn dev's addresses of a family back into the saved v("addrs4|6"):
        what follows the common beginning is deleted last-first and the saved ones re-added
        in order, as `restore_addresses` does (the first of a subnet is its primary)."""
        saved, now, keep = v(f"addrs{fam}"), v("addrs_now"), v("keep")
        nth = "sed -n \"$(({keep} + 1))p\" | cut -d' ' -f1".format(keep=keep)
        add = self.one_line(AddAddr(dev, value_of("a")))
        return [
            f"{now}=$({address_specs(dev, fam)})",
            f"{keep}=0",
            "while :; do",
            f"    a=$(printf '%s\\n' \"${saved}\" | {nth}); b=$(printf '%s\\n' \"${now}\" | {nth})",
            "    if [ -z \"$a\" ] || [ \"$a\" != \"$b\" ]; then break; fi",
            f"    {keep}=$(({keep} + 1))",
            "done",
            f"printf '%s\\n' \"${now}\" | awk -v k=\"${keep}\" "
            "'NR > k && NF { l[++n] = $1 } END { for (i = n; i > 0; i--) print l[i] }' |",
            f"    while read -r a; do {self.one_line(DelAddr(dev, value_of('a')))}; done",
            f"printf '%s\\n' \"${saved}\" | awk -v k=\"${keep}\" 'NR > k && NF' |",
            "    while read -r a b s l; do",
            f"        set -- {add}",
            "        if [ \"$b\" != - ]; then set -- \"$@\" brd \"$b\"; fi",
            "        if [ \"$s\" != global ]; then set -- \"$@\" scope \"$s\"; fi",
            "        if [ \"$l\" != - ]; then set -- \"$@\" label \"$l\"; fi",
            "        \"$@\"",
            "    done"]


def addresses_step(out: ShellLinux, dev: str, fam: int, var: ShellVar, holds: str,
                   apply: Sequence[str]) -> ShellStep:
    """A step that changes dev's addresses of one family: it saves them, and undo puts them
    back."""
    saved = var(f"addrs{fam}")
    return ShellStep(check=holds, save=(f"{saved}=$({address_specs(dev, fam)})",),
                     saved=(saved,), apply=tuple(apply),
                     undo=(f"if {shell_exists(dev)}; then", *indent(out.restore_addresses(
                         dev, fam, var)), "fi"))


def _routes_to(args: RouteArgs) -> str:
    """The routes to args.to as `ip route show` prints them, less the "linkdown" flag (a
    state, which `ip route del|replace` would not take back)."""
    return f"ip -{args.family} route show exact {word(args.to)} | sed 's/ linkdown//'"


def matching_routes(args: RouteArgs) -> str:
    """A pipeline printing the routes `ip route show exact` gives for args.to that match
    via, dev and metric where given (`route_matches`)."""
    to = args.to
    short = to.rsplit("/", 1)[0] if to.endswith(("/32", "/128")) else to  # ip's host routes
    wanted = " ".join(f"{key} {getattr(args, key)}" for key in ("via", "dev", "metric")
                      if getattr(args, key) is not None)
    return (f"{_routes_to(args)} | T1={word(to)} T2={word(short)} "
            f"W={word(wanted)} awk 'BEGIN {{ n = split(ENVIRON[\"W\"], w, \" \") }} "
            "$1 == ENVIRON[\"T1\"] || $1 == ENVIRON[\"T2\"] { m = 0; "
            "for (j = 1; j < n; j += 2) for (i = 2; i < NF; i++) "
            "if ($i == w[j] && $(i + 1) == w[j + 1]) m++; if (2 * m == n) print }'")


def routes_step(args: RouteArgs, var: ShellVar, holds: str, apply: Sequence[str]) -> ShellStep:
    """A step that changes the routes to args.to: it saves them (as `ip route show` prints
    them, which `ip route replace` takes back), and undo deletes the ones that were not there
    and puts back the ones that were (`restore_routes`)."""
    saved, now, route = var("routes"), var("routes_now"), var("route")
    show = _routes_to(args)
    ip = f"ip -{args.family} route"
    return ShellStep(
        check=holds, save=(f"{saved}=$({show})",), saved=(saved,), apply=tuple(apply),
        undo=(f"{now}=$({show})",
              "# shellcheck disable=SC2086",
              f"printf '%s\\n' \"${now}\" | while read -r {route}; do "
              f"if [ -n \"${route}\" ] && ! printf '%s\\n' \"${saved}\" | grep -qxF -- "
              f"\"${route}\"; then (set -f; {ip} del ${route}); fi; done",
              "# shellcheck disable=SC2086",
              f"printf '%s\\n' \"${saved}\" | while read -r {route}; do "
              f"if [ -n \"${route}\" ] && ! printf '%s\\n' \"${now}\" | grep -qxF -- "
              f"\"${route}\"; then (set -f; {ip} replace ${route}); fi; done"))
