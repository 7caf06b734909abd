"""What the Linux link and bridge actions mean, for every backend that implements them
(iproute2, brctl: target centos6; netlink: target modern): the actions themselves, written
once over `Linux`, the interface a backend implements to read and change one host. The
arguments, records and changes are args.py's; each backend module binds these actions to its
`Linux` (`backend_actions`) and registers them.

A step, for every action and backend:

    observe   reads plain records through a `View` of the host: links as /sys shows them
              (sysfs.py), addresses and routes; a for_each step's instances are observed
              together, each kind of thing read once for all of them
    check     compares the records with the arguments (no I/O)
    apply     turns arguments and records into changes (AddBridge, Enslave, AddAddr, ...) that
              the backend carries out: as commands (centos6.py) or netlink requests
              (netlink.py)
    undo      observes again and carries out the changes that lead back to the "before"
              records; with nothing left to restore it does nothing
    describe  renders the same changes as commands (commands.py)
    shell     the step as POSIX sh for `runflow export` (export.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from runflow.core.actions import Action, Context, ShellStep, State
from runflow.core.errors import ActionError
from runflow.core.export import command, indent, value_of, word
from runflow.core.hosts import Host

from .args import (ABSENT, HOME, AddAddr, AddBridge, AddrAbsentArgs, AddrPresentArgs, AddVeth,
                   BridgeArgs, BridgePortArgs, Change, DelAddr, DelLink, DelRoute, Enslave,
                   LinkSetArgs, MoveLink, Netns, NetnsMoveArgs, Record, Release, RenameLink,
                   ReplaceRoute, RouteArgs, RoutePresentArgs, SetLink, VethAbsentArgs,
                   VethPresentArgs, AddRule, DelRule, RuleAbsentArgs, RulePresentArgs,
                   BridgePresentArgs, bridge_changes, desired_route, desired_rule, family,
                   managed, port_changes, restorable, restore_addresses, restore_link,
                   restore_routes, restore_rules, route_matches, rule_matches, simulate)
from .commands import render
from .export import (ALL_KEYS, VETH_KEYS, ShellLinux, ShellVar, address_specs, addresses_step,
                     bridge_settings_step, creating_step, matching_routes, matching_rules,
                     routes_step, rules_step, shell_exists, shell_is_port, shell_master,
                     sys_path, table_words)
from .sysfs import SYS_NET

# ---------------------------------------------------------------------------------------------
# What a backend implements
# ---------------------------------------------------------------------------------------------


class Linux:
    """How a backend reads and changes one host's links, addresses and routes. One object per
    run and host (ctx.resources)."""

    centos6: ClassVar[bool]  # which commands `describe` shows: CentOS 6's, or today's `ip`

    @classmethod
    def of(cls, ctx: Context) -> Linux:
        return ctx.resources.get(f"linux:{cls.__name__}", cls)

    def links(self, ctx: Context, names: Sequence[str] | None, *,
              full: bool) -> Mapping[str, Record]:
        """The records of the links named that exist, or of every link (names None); with
        `full` what recreating them needs too (see sysfs.py)."""
        raise NotImplementedError

    def remote_link(self, ctx: Context, ns: Netns, name: str) -> Record:
        """A link in another namespace: {"exists", "ifindex", "mtu", "up", "mac"}, or ABSENT
        (no such link, or no such namespace)."""
        raise NotImplementedError

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        """Addresses by device (of one device, or all)."""
        raise NotImplementedError

    def routes(self, ctx: Context, fam: int, to: str | None,
               table: int | None) -> list[Record]:
        """The routes of a family of the types runflow manages (unicast, blackhole,
        unreachable, prohibit) in one table (None: every table), to one destination (or
        all)."""
        raise NotImplementedError

    def rules(self, ctx: Context, fam: int) -> list[Record]:
        """The policy routing rules of a family."""
        raise NotImplementedError

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        raise NotImplementedError

    @classmethod
    def describe(cls, changes: Sequence[Change], host: Host | None = None) -> list[list[str]]:
        return [argv for c in changes for argv in render(c, centos6=cls.centos6, host=host)]

    def close(self) -> None:
        """Nothing to close by default."""


def abridged(lines: list[str], keep: int = 8) -> list[str]:
    """The lines of a batch as the journal keeps them. Every instance of a for_each step
    journals the commands of the whole batch, so a long batch is shortened: otherwise a
    batch of N would put N x N lines in the journal."""
    if len(lines) <= keep:
        return lines
    return [*lines[:keep - 2], f"... {len(lines) - keep + 1} more ...", lines[-1]]


# ---------------------------------------------------------------------------------------------
# Observing
# ---------------------------------------------------------------------------------------------


class View:
    """One observation pass. The links the instances of a step name (`LinkAction.link_names`)
    are read together first, and every address and every route of a family once for all the
    instances of a for_each step: on the command backends one command each, not one per
    instance."""

    def __init__(self, linux: Linux, ctx: Context, names: Sequence[str] = (), *,
                 many: int = 1) -> None:
        self.linux = linux
        self.ctx = ctx
        self.many = many > 1
        wanted = list(dict.fromkeys(names))
        self._read: dict[str, Record] = dict.fromkeys(wanted, ABSENT)
        if wanted:
            self._read.update(linux.links(ctx, wanted, full=False))
        self._every: dict[bool, Mapping[str, Record]] = {}
        self._addresses: dict[str, list[Record]] | None = None
        self._routes: dict[tuple[int, int | None], list[Record]] = {}

    def link(self, name: str, *, addresses: bool = False, full: bool = False,
             options: bool = False) -> Record:
        """A link's record; with its addresses; with (options) what sysfs.py reads with
        `full`: its bridge or port options, its MAC; or (full) all that recreating it needs,
        its addresses and routes included."""
        if full or options:
            found = self.every(full=True) if self.many else \
                self.linux.links(self.ctx, [name], full=True)
        else:
            if name not in self._read:
                self._read[name] = self.linux.links(self.ctx, [name], full=False).get(
                    name, ABSENT)
            found = self._read
        rec = dict(found.get(name, ABSENT))  # instances add to their copy (a veth's peer)
        if rec["exists"] and (addresses or full):
            rec["addresses"] = self.addresses(name)
        if rec["exists"] and full:
            rec["routes"] = self.routes_of(name)
        return rec

    def every(self, full: bool = False) -> Mapping[str, Record]:
        """Every link of the host."""
        if full not in self._every:
            self._every[full] = self.linux.links(self.ctx, None, full=full)
        return self._every[full]

    def name_of(self, ifindex: int) -> str | None:
        """The link with this ifindex (a veth's peer, whose ifindex is the veth's iflink)."""
        every = self.every()
        return next((name for name in every
                     if every.get(name, ABSENT).get("ifindex") == ifindex), None)

    def addresses(self, dev: str) -> list[Record]:
        if not self.many:
            return self.linux.addresses(self.ctx, dev).get(dev, [])
        if self._addresses is None:
            self._addresses = self.linux.addresses(self.ctx, None)
        return self._addresses.get(dev, [])

    def routes(self, fam: int, to: str | None, table: int | None) -> list[Record]:
        """Routes of a family in a table (None: every table) to a destination (None: all)."""
        if not self.many and to is not None:
            return self.linux.routes(self.ctx, fam, to, table)
        if (fam, table) not in self._routes:
            self._routes[fam, table] = self.linux.routes(self.ctx, fam, None, table)
        return [r for r in self._routes[fam, table] if to is None or r["to"] == to]

    def routes_of(self, dev: str) -> list[Record]:
        """The routes that leave by a link, in every table, that runflow puts back with it
        (not those the kernel makes for its addresses)."""
        return [r for fam in (4, 6) for r in self.routes(fam, None, None)
                if r["dev"] == dev and restorable(r)]

    def rules(self, fam: int) -> list[Record]:
        return self.linux.rules(self.ctx, fam)

    def remote(self, ns: Netns, name: str) -> Record:
        """A link in another namespace (ABSENT: no such link or namespace)."""
        return self.linux.remote_link(self.ctx, ns, name)


class Unobserved(View):
    """What describe assumes when nothing was observed (e.g. a script exported for another
    host): no links, addresses or routes."""

    def __init__(self) -> None:
        self.ctx = None  # type: ignore[assignment]

    def link(self, name: str, *, addresses: bool = False, full: bool = False) -> Record:
        return dict(ABSENT)

    def name_of(self, ifindex: int) -> str | None:
        return None

    def addresses(self, dev: str) -> list[Record]:
        return []

    def routes(self, fam: int, to: str | None, table: int | None) -> list[Record]:
        return []

    def rules(self, fam: int) -> list[Record]:
        return []

    def remote(self, ns: Netns, name: str) -> Record:
        return dict(ABSENT)


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

    def link_names(self, args: Any) -> list[str]:
        """The links `look` reads (but for full reads): read together before it runs."""
        return []

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
        return self.look(View(self.linux.of(ctx), ctx, self.link_names(args)), args)

    def observe_many(self, ctx: Context, args: Sequence[Any]) -> list[State]:
        view = View(self.linux.of(ctx), ctx, [n for a in args for n in self.link_names(a)],
                    many=len(args))
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


def releases(rec: Record, wanted: str | None) -> bool:
    """Whether making `wanted` the link's master (None: none) takes it from a bridge."""
    return rec.get("master") is not None and rec["master"] != wanted


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

    def link_names(self, args: LinkSetArgs) -> list[str]:
        return [args.name, *([args.master] if args.master else [])]

    def look(self, view: View, args: LinkSetArgs) -> State:
        rec = view.link(args.name)
        leaves = args.master is not None and releases(rec, args.master or None)  # "": none
        if rec["exists"] and (args.state == "down" or leaves):
            # what the change takes away, for undo: the IPv4 routes a link loses when it goes
            # down, the options a port loses when it leaves its bridge
            rec = view.link(args.name, full=True)
        links = {args.name: rec}
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
        touched += [key for key in ("routes",) if key in was and key in seen]
        touched += [key for key in ("port_options",) if key in was]
        return restore_link(args.name, {**seen, **{k: was[k] for k in touched}}, seen)

    def shell(self, host: Host, args: LinkSetArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
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
        # what the link loses: its IPv4 routes going down, its options leaving a bridge
        touched += ["routes4"] * (args.state == "down") + ["port_opts"] * (args.master is not None)
        save, saved = out.save_link(args.name, var, touched)
        return ShellStep(check=" && ".join(holds), save=tuple(save), saved=tuple(saved),
                         apply=tuple(apply),
                         undo=tuple(out.restore_link(args.name, var, touched)))


class AddressAction(LinkAction):
    """addr.present and addr.absent: undo puts the link's addresses back, and only while the
    link is there (the step that made or removed the link undoes that). A step that removes
    addresses also keeps the link's routes: the kernel deletes those that needed them (a
    gateway in their subnet, one as source), and undo puts them back."""

    def link_names(self, args: Any) -> list[str]:
        return [args.dev]

    def look(self, view: View, args: Any) -> State:
        rec = view.link(args.dev, addresses=True)
        if rec["exists"] and self.removing(args):
            rec["routes"] = view.routes_of(args.dev)
        return {"links": {args.dev: rec}}

    def removing(self, args: Any) -> bool:
        return True

    def restore(self, args: Any, before: State, now: State) -> list[Change]:
        was, seen = link_record(before, args.dev), link_record(now, args.dev)
        if not (was["exists"] and seen["exists"]):
            return []
        return [*restore_addresses(args.dev, was.get("addresses", []), seen.get("addresses", [])),
                *(restore_routes(was["routes"], seen["routes"])
                  if "routes" in was and "routes" in seen else [])]


class AddrPresent(AddressAction):
    name = "addr.present"
    family = "link"
    Args = AddrPresentArgs
    summary = "an address is on a link (exclusive: the only one of its family)"

    def removing(self, args: AddrPresentArgs) -> bool:
        return args.exclusive

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
        out = ShellLinux(self.linux.centos6, host)
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
        return addresses_step(out, args.dev, fam, var, holds, apply, removing=args.exclusive)


class AddrAbsent(AddressAction):
    name = "addr.absent"
    family = "link"
    Args = AddrAbsentArgs
    summary = "an address is not on a link (undo puts it back, with the routes that went with it)"

    def check(self, args: AddrAbsentArgs, before: State) -> bool:
        return not self.changes(args, before)

    def changes(self, args: AddrAbsentArgs, before: State) -> list[Change]:
        present = [a["address"] for a in link_record(before, args.dev).get("addresses", [])]
        return [DelAddr(args.dev, args.address)] if args.address in present else []

    def shell(self, host: Host, args: AddrAbsentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        fam = family(args.address)
        holds = (f"! {{ {address_specs(args.dev, fam)} | cut -d' ' -f1 | "
                 f"grep -qxF -- {word(args.address)}; }}")
        return addresses_step(out, args.dev, fam, var, holds,
                              out.run(DelAddr(args.dev, args.address)), removing=True)


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
    found = peer or view.name_of(rec["iflink"])
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

    def link_names(self, args: VethPresentArgs) -> list[str]:
        return [args.name, *([args.peer] if args.peer_netns is None else [])]

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
        out = ShellLinux(self.linux.centos6, host)
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
        # Undo deletes our end, and the peer goes with it, wherever it is.
        return creating_step(out, DelLink(args.name, "veth"), var, holds,
                             out.run(*self.changes(args, {})))


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
        out = ShellLinux(self.linux.centos6, host)

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

    def link_names(self, args: NetnsMoveArgs) -> list[str]:
        return [args.name]

    def look(self, view: View, args: NetnsMoveArgs) -> State:
        target = self._target(view, args)
        there = view.remote(target, args.rename or args.name) if target else None
        # full: what the link leaves behind (addresses, routes, its options as a port)
        return {"links": {args.name: view.link(args.name, full=True)},
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
        # A link that changes namespace arrives down, without master, addresses or routes.
        arrived = {**was, "up": False, "master": None, "addresses": [], "routes": []}
        arrived.pop("port_options", None)
        return changes + restore_link(args.name, was, arrived)


def _route_state(view: View, args: RouteArgs) -> State:
    return {"routes": view.routes(args.family, args.to, args.table)}


class RoutePresent(LinkAction):
    name = "route.present"
    family = "link"
    Args = RoutePresentArgs
    summary = ("a route in a table, main by default (replacing one to the same destination "
               "and metric)")

    def look(self, view: View, args: RoutePresentArgs) -> State:
        return _route_state(view, args)

    def check(self, args: RoutePresentArgs, before: State) -> bool:
        return any(route_matches(r, args) for r in before["routes"])

    def changes(self, args: RoutePresentArgs, before: State) -> list[Change]:
        return [] if self.check(args, before) else [ReplaceRoute(desired_route(args))]

    def restore(self, args: RoutePresentArgs, before: State, now: State) -> list[Change]:
        return restore_routes(before["routes"], now["routes"])

    def shell(self, host: Host, args: RoutePresentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        return routes_step(args, var, f"{matching_routes(args)} | grep -q .",
                           out.run(ReplaceRoute(desired_route(args))))


class RouteAbsent(RoutePresent):
    name = "route.absent"
    Args = RouteArgs
    summary = ("no route of a table (main by default) matches (undo puts the deleted ones "
               "back)")

    def check(self, args: RouteArgs, before: State) -> bool:
        return not any(route_matches(r, args) for r in before["routes"])

    def changes(self, args: RouteArgs, before: State) -> list[Change]:
        return [DelRoute(r) for r in before["routes"] if route_matches(r, args)]

    def shell(self, host: Host, args: RouteArgs, var: ShellVar) -> ShellStep:
        route = var("route")
        return routes_step(args, var, f"! {{ {matching_routes(args)} | grep -q .; }}", [
            "# shellcheck disable=SC2086",
            f"{matching_routes(args)} | while read -r {route}; do "
            f"(set -f; ip -{args.family} route del ${route}{table_words(args)}); done"])


class RulePresent(LinkAction):
    name = "rule.present"
    family = "link"
    Args = RulePresentArgs
    summary = "a policy routing rule sends what it matches to a table (added if missing)"

    exact: ClassVar[bool] = True  # the rules to look at: those with exactly these selectors

    def look(self, view: View, args: Any) -> State:
        return {"rules": [r for r in view.rules(args.family)
                          if rule_matches(r, args, exact=self.exact)]}

    def check(self, args: Any, before: State) -> bool:
        return bool(before["rules"])

    def changes(self, args: Any, before: State) -> list[Change]:
        return [] if self.check(args, before) else [AddRule(desired_rule(args))]

    def restore(self, args: Any, before: State, now: State) -> list[Change]:
        return restore_rules(before["rules"], now["rules"])

    def shell(self, host: Host, args: Any, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        return rules_step(args, var, f"{matching_rules(args, exact=True)} | grep -q .",
                          out.run(AddRule(desired_rule(args))), exact=True)


class RuleAbsent(RulePresent):
    name = "rule.absent"
    Args = RuleAbsentArgs
    summary = ("no policy routing rule has these selectors (undo puts the deleted ones back, "
               "with their priorities)")
    exact = False  # every rule with these selectors, whatever others it has

    def check(self, args: Any, before: State) -> bool:
        return not before["rules"]

    def refuse(self, args: Any, before: State) -> str | None:
        odd = [r["priority"] for r in before["rules"] if r["other"]]
        return (f"the rules of priority {', '.join(map(str, odd))} match, but have what runflow "
                "could not put back (a tos, ipproto, port or uid range, \"not\", an action other "
                "than a table lookup...): delete them with `ip rule del`, or name them more "
                "closely") if odd else None

    def changes(self, args: Any, before: State) -> list[Change]:
        return [DelRule(r) for r in before["rules"]]

    def shell(self, host: Host, args: Any, var: ShellVar) -> ShellStep:
        rule, matching = var("rule"), matching_rules(args, exact=False)
        odd = matching_rules(args, exact=False, odd=True)
        return rules_step(args, var, f"! {{ {matching} | grep -q .; }} && ! {{ {odd} | grep -q .; }}", [
            f"if {odd} | grep -q .; then echo \"rules that runflow could not put back match "
            f"(a tos, ipproto, port or uid range, not, ...): $({odd} | tr '\\n' ';')\" >&2; "
            "false; fi",
            "# shellcheck disable=SC2086",
            f"{matching} | while read -r {rule}; do "
            f"(set -f; ip -{args.family} rule del ${rule}); done"], exact=False)


LINK_ACTIONS = (LinkSet, AddrPresent, AddrAbsent, VethPresent, VethAbsent, NetnsMove,
                RoutePresent, RouteAbsent, RulePresent, RuleAbsent)


# ---------------------------------------------------------------------------------------------
# Bridges (bridge.present, bridge.absent, bridge.port): with brctl on CentOS 6 (bridge-utils
# 1.2; iproute 2.6.32 can neither create a bridge nor set a master), over netlink on modern
# hosts
# ---------------------------------------------------------------------------------------------


class BridgePresent(LinkAction):
    name = "bridge.present"
    family = "bridge"
    Args = BridgePresentArgs
    summary = "a Linux bridge exists, with the options given (undo puts the old ones back)"

    def link_names(self, args: BridgePresentArgs) -> list[str]:
        return [args.name]

    def look(self, view: View, args: BridgePresentArgs) -> State:
        return {"links": {args.name: view.link(args.name, options=bool(args.options()))}}

    def check(self, args: BridgePresentArgs, before: State) -> bool:
        return bridge_problem(before, args.name) is None and not self.changes(args, before)

    def refuse(self, args: BridgePresentArgs, before: State) -> str | None:
        rec = link_record(before, args.name)
        if not rec["exists"]:
            return None
        problem = bridge_problem(before, args.name)
        if problem:
            return problem
        lacking = [key for key in self._wanted(args) if key not in rec["bridge_options"]]
        return (f"the kernel's bridges have no {', '.join(lacking)} (Linux 3.8 or later with "
                "CONFIG_BRIDGE_VLAN_FILTERING has vlan_filtering; 2.6.34 or later "
                "multicast_snooping)") if lacking else None

    @staticmethod
    def _wanted(args: BridgePresentArgs) -> dict[str, str]:
        # VLAN filtering off is what a kernel without it has.
        return {k: v for k, v in args.options().items() if (k, v) != ("vlan_filtering", "0")}

    def changes(self, args: BridgePresentArgs, before: State) -> list[Change]:
        rec = link_record(before, args.name)
        changes: list[Change] = [] if rec["exists"] else [AddBridge(args.name)]
        now = rec.get("bridge_options", {}) if rec["exists"] else None
        if now is not None and now.get("stp_state") == "2" and args.stp:
            now = {**now, "stp_state": "1"}  # STP run by a user-space daemon is on too
        changes += bridge_changes(args.name, self._wanted(args), now)
        if args.mtu is not None and args.mtu != rec.get("mtu"):
            changes.append(SetLink(args.name, mtu=args.mtu))
        return changes

    def restore(self, args: BridgePresentArgs, before: State, now: State) -> list[Change]:
        # What this step changes: the bridge itself, or the options and MTU it was given.
        was, seen = link_record(before, args.name), link_record(now, args.name)
        if not (was["exists"] and seen["exists"]):
            return restore_link(args.name, was, seen)
        touched = {k: v for k, v in was.get("bridge_options", {}).items() if k in args.options()}
        return [*bridge_changes(args.name, touched, seen.get("bridge_options", {})),
                *([SetLink(args.name, mtu=was["mtu"])]
                  if args.mtu is not None and was["mtu"] != seen["mtu"] else [])]

    def shell(self, host: Host, args: BridgePresentArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        if not args.options() and args.mtu is None:
            return creating_step(out, DelLink(args.name, "bridge"), var,
                                 f"[ -d {sys_path(args.name, 'bridge')} ]",
                                 out.run(AddBridge(args.name)))
        return bridge_settings_step(out, args.name, self._wanted(args), args.mtu, var)


class BridgeAbsent(LinkAction):
    name = "bridge.absent"
    family = "bridge"
    Args = BridgeArgs
    summary = ("a Linux bridge does not exist (undo recreates it with its options, ports, "
               "addresses and routes)")

    def look(self, view: View, args: BridgeArgs) -> State:
        return {"links": {args.name: view.link(args.name, full=True)}}

    def check(self, args: BridgeArgs, before: State) -> bool:
        return not link_record(before, args.name)["exists"]

    def refuse(self, args: BridgeArgs, before: State) -> str | None:
        return bridge_problem(before, args.name)

    def changes(self, args: BridgeArgs, before: State) -> list[Change]:
        return [DelLink(args.name, "bridge")] if link_record(before, args.name)["exists"] else []

    def shell(self, host: Host, args: BridgeArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        save, saved = out.save_link(args.name, var, ALL_KEYS)
        return ShellStep(
            check=f"! {shell_exists(args.name)}", save=tuple(save), saved=tuple(saved),
            apply=tuple(out.run(DelLink(args.name, "bridge"))),
            undo=tuple(out.restore_link(args.name, var, ALL_KEYS, kind="bridge")))


class BridgePort(LinkAction):
    name = "bridge.port"
    family = "bridge"
    Args = BridgePortArgs
    summary = "a link is (or is not) a port of a Linux bridge"

    def link_names(self, args: BridgePortArgs) -> list[str]:
        return [args.name, args.bridge]

    def look(self, view: View, args: BridgePortArgs) -> State:
        rec = view.link(args.name)
        if rec["exists"] and releases(rec, args.bridge if args.present else None) and \
                (args.present or rec["master"] == args.bridge):
            rec = view.link(args.name, full=True)  # its options as a port, for undo
        return {"links": {args.name: rec, args.bridge: view.link(args.bridge)}}

    def check(self, args: BridgePortArgs, before: State) -> bool:
        rec = link_record(before, args.name)
        if not rec["exists"]:
            return not args.present
        return (rec["master"] == args.bridge) == args.present

    def refuse(self, args: BridgePortArgs, before: State) -> str | None:
        if not link_record(before, args.name)["exists"]:
            return f"link {args.name} does not exist"
        return bridge_problem(before, args.bridge) if args.present else None

    def changes(self, args: BridgePortArgs, before: State) -> list[Change]:
        current = link_record(before, args.name).get("master")
        if args.present:
            return master_changes(args.name, current, args.bridge)
        return [Release(args.name, args.bridge)] if current == args.bridge else []

    def restore(self, args: BridgePortArgs, before: State, now: State) -> list[Change]:
        was, seen = link_record(before, args.name), link_record(now, args.name)
        if not (was["exists"] and seen["exists"]):
            return []
        changes = master_changes(args.name, seen["master"], was["master"])
        if changes and was["master"]:
            changes += port_changes(args.name, was["master"], was.get("port_options"), None)
        return changes

    def shell(self, host: Host, args: BridgePortArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux.centos6, host)
        now = var("now")
        release = f"if [ -n \"${now}\" ]; then " \
                  f"{out.one_line(Release(args.name, value_of(now)))}; fi"
        if args.present:
            holds = shell_is_port(args.bridge, args.name)
            change = (f"if [ \"${now}\" != {word(args.bridge)} ]; then {release}; "
                      f"{out.one_line(Enslave(args.name, args.bridge))}; fi")
        else:
            holds = f"! {shell_is_port(args.bridge, args.name)}"
            change = f"if [ \"${now}\" = {word(args.bridge)} ]; then {release}; fi"
        save, saved = out.save_link(args.name, var, ("master", "port_opts"))
        return ShellStep(check=holds, save=tuple(save), saved=tuple(saved),
                         apply=(shell_master(args.name, now), change),
                         undo=tuple(out.restore_link(args.name, var, ("master", "port_opts"))))


BRIDGE_ACTIONS = (BridgePresent, BridgeAbsent, BridgePort)


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
