"""The ovs.* actions: what both Open vSwitch backends share.

Each action observes the database (a view of it, backends/ovs/args.py, or whole rows for the
removals, backends/ovs/rows.py), decides the ops that make its desired state hold, and hands
them to its backend's client — as neutron's OVS agent has one API and two drivers (vsctl and
native OVSDB). This module holds what every action shares: the client's interface, `OvsAction`
(observe, apply, undo and describe from those parts) and how maps and columns are compared
and changed. The actions are beside it: bridge.py (ovs.bridge.*), port.py (ovs.port.*,
ovs.bond.*) and record.py (ovs.set, ovs.unset, ovs.get); backend.py makes a backend of them
with a client: the `ovs-vsctl` backend's (backends/ovs/vsctl.py) reads with commands and writes
with one chained ovs-vsctl invocation; the `ovsdb` backend's (backends/ovs/ovsdb.py) reads its
replica of the database and writes one OVSDB transaction. Both describe their changes as the
ovs-vsctl commands of backends/ovs/commands.py, and export the same shell script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from runflow.core.actions import Action, Context, State
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from . import ipstate
from .args import (RUN_TAG, STEP_TAG, DelBridge, DelPort, Op, RemoveKeys, SetColumns, SetKeys,
                   View, is_empty, same, same_column, set_up_interfaces, transactions)
from .commands import vsctl_argv, vsctl_commands
from .rows import Select, removal_lookups, removal_ops, upgraded


class OvsClient(Protocol):
    """How a backend reads and changes one host's database (one client per run and host)."""

    db: str | None  # the inventory's ovsdb endpoint (None: the default one)

    def __init__(self, host: Host) -> None: ...

    @staticmethod
    def unusable(host: Host) -> str | None:
        """Why the backend cannot run on host (a missing tool or library, a bad endpoint)."""

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None)."""

    def records(self, ctx: Context, wanted: Sequence[tuple[str, str, Sequence[str]]]
                ) -> list[tuple[bool, dict[str, Any]]]:
        """For each (table, record, columns): (found, {column: value}), the record found as
        `ovs-vsctl set` finds it (by UUID, or by name)."""

    def rows(self, ctx: Context, selects: Sequence[Select]) -> list[list[dict[str, Any]]]:
        """For each (table, column, value): the rows whose column has the value (every row
        when column is None), with every column."""

    def execute(self, ctx: Context, ops: Sequence[Op], *, read_back: bool = True
                ) -> dict[str, str]:
        """Carry out ops together (one transaction: no Barrier among them); return what
        ovs-vswitchd could not set up, by interface."""


def step_tags(ctx: Context) -> dict[str, str]:
    """What runflow writes into external_ids of what it creates (a Bridge, a Port; an
    Interface goes with its Port). The step id, not the instance: the instances of a for_each
    step are applied together."""
    return {RUN_TAG: ctx.run_id, STEP_TAG: ctx.step.split("[")[0]}


def differences(current: dict[str, Any], columns: dict[str, Any],
                keys: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The whole columns, and the keys of map columns, whose wanted values do not hold."""
    cols = {c: v for c, v in columns.items() if not same_column(c, current.get(c, []), v)}
    diff_keys = {}
    for column, values in keys.items():
        have = current.get(column) or {}
        diff = {k: v for k, v in values.items() if k not in have or not same(have[k], v)}
        if diff:
            diff_keys[column] = diff
    return cols, diff_keys


def holds(current: dict[str, Any], columns: dict[str, Any],
          keys: dict[str, dict[str, Any]]) -> bool:
    cols, diff_keys = differences(current, columns, keys)
    return not cols and not diff_keys


def change(table: str, record: str, current: dict[str, Any], columns: dict[str, Any],
           keys: dict[str, dict[str, Any]]) -> list[Op]:
    """The ops that give a record these columns and map keys, where they do not hold."""
    cols, diff_keys = differences(current, columns, keys)
    return setting(table, record, cols, diff_keys)


def setting(table: str, record: str, columns: dict[str, Any],
            keys: dict[str, dict[str, Any]]) -> list[Op]:
    """The ops that set these columns and map keys (whatever they hold now)."""
    ops: list[Op] = [SetColumns(table, record, columns)] if columns else []
    ops += [SetKeys(table, record, column, values) for column, values in keys.items() if values]
    return ops


def put_back(table: str, record: str, before: dict[str, Any], columns: dict[str, Any],
             keys: dict[str, dict[str, Any]]) -> list[Op]:
    """Undo what `change` did to a record that existed: its old values, absent keys removed."""
    cols, diff_keys = differences(before, columns, keys)
    ops: list[Op] = [SetColumns(table, record, {c: before.get(c, []) for c in cols})] \
        if cols else []
    for column, diff in diff_keys.items():
        old = before.get(column) or {}
        back = {k: old[k] for k in diff if k in old}
        gone = tuple(k for k in diff if k not in old)
        if back:
            ops.append(SetKeys(table, record, column, back))
        if gone:
            ops.append(RemoveKeys(table, record, column, gone))
    return ops


def non_empty(values: dict[str, Any]) -> dict[str, Any]:
    """Columns worth writing into a new record (defaults are left out)."""
    return {c: v for c, v in values.items() if not is_empty(v)}


def created_by(external_ids: dict[str, Any] | None, run_id: str) -> bool:
    return (external_ids or {}).get(RUN_TAG) == run_id


class OvsAction(Action):
    """An ovs.* action: observe a view, decide ops, hand them to the backend's client.

    Subclasses define `scope` (which ports to read), `state` (what observe reports, from the
    view), `check`, `changes` (the ops of apply) and `restore` (the ops of undo, given what
    observe saw before apply and sees now). Removals observe whole rows (observe_many) and say
    what their undo needs besides: `lookups` (rows whose existence it depends on) and `links`
    (the Linux side of internal ports to put back)."""

    family = "ovs"
    backend: ClassVar[str]  # set by backend_actions, with the backend's client class:
    Client: ClassVar[type[OvsClient]]

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return cls.Client.unusable(host)

    def client(self, ctx: Context) -> OvsClient:
        return ctx.resources.get(f"ovs.{self.backend}", lambda: self.Client(ctx.host))

    # -- what each action defines ------------------------------------------------------------

    def scope(self, args: Any) -> list[str] | None:
        """The ports (and interfaces of the same names) observe needs; None: all of them."""
        return []

    def state(self, view: View, args: Any) -> State:
        raise NotImplementedError

    def changes(self, args: Any, before: State, tags: dict[str, str]) -> list[Op]:
        raise NotImplementedError

    def restore(self, args: Any, before: State, now: State, run_id: str) -> list[Op]:
        raise NotImplementedError

    def lookups(self, args: Any, before: State) -> list[Select]:
        """Rows restore refers to and did not record whole, as (table, column, value): undo
        reads which of them exist, and gives restore those values as now["existing"]."""
        return []

    def links(self, args: Any, before: State) -> dict[str, ipstate.LinkState]:
        """The Linux side of internal ports (their devices) that undo puts back once its ops
        are carried out (backends/ovs/ipstate.py)."""
        return {}

    def vanished(self, args: Any, before: State, now: State) -> list[str]:
        """The kernel devices ovs-vswitchd made for what the step created, when undo finds it
        gone from the database, before or after its own removal (see remove_leftover_taps)."""
        return []

    # -- the Action contract -----------------------------------------------------------------

    def observe(self, ctx: Context, args: Any) -> State:
        return self.observe_many(ctx, [args])[0]

    def observe_many(self, ctx: Context, args: Sequence[Any]) -> list[State]:
        scopes = [self.scope(a) for a in args]
        names = None if None in scopes else sorted({n for s in scopes for n in s})
        client = self.client(ctx)
        view = client.view(ctx, names)
        return [{**self.state(view, a), **where(client)} for a in args]

    def apply(self, ctx: Context, args: Any, before: State) -> None:
        self.apply_many(ctx, [(args, before)])

    def apply_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        """All instances in one invocation or transaction, then read back. Instances that
        ovs-vswitchd could not set up are put back as they were (rollback does not visit a
        failed step), and the step fails with the daemon's messages."""
        tags = step_tags(ctx)
        planned = [(args, before, self.changes(args, before, tags)) for args, before in items]
        client = self.client(ctx)
        problems = execute(ctx, client, [op for _, _, ops in planned for op in ops])
        if not problems:
            return
        failed = [(args, before) for args, before, ops in planned
                  if any(n in problems for n in set_up_interfaces(ops))]
        nows = self.observe_many(ctx, [args for args, _ in failed])
        execute(ctx, client, [op for (args, before), now in zip(failed, nows)
                              for op in self.restore(args, before, now, ctx.run_id)],
                read_back=False)
        raise ActionError("; ".join(problems.values()))

    def undo(self, ctx: Context, args: Any, before: State) -> None:
        self.undo_many(ctx, [(args, before)])

    def undo_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        client = self.client(ctx)
        nows = self._with_existing(ctx, client, items,
                                   self.observe_many(ctx, [args for args, _ in items]))
        restores = [self.restore(args, before, now, ctx.run_id)
                    for (args, before), now in zip(items, nows)]
        # What undo puts back may have been broken before too: it is not read back.
        execute(ctx, client, [op for ops in restores for op in ops], read_back=False)
        links = {name: state for args, before in items
                 for name, state in self.links(args, before).items()}
        if links:
            ipstate.restore(ctx, links)
        gone = [name for (args, before), now, ops in zip(items, nows, restores)
                for name in self.vanished(args, before, _once_done(now, ops))]
        if gone:
            remove_leftover_taps(ctx, client, gone)

    def _with_existing(self, ctx: Context, client: OvsClient,
                       items: Sequence[tuple[Any, State]], nows: list[State]) -> list[State]:
        """The fresh observations, each with "existing": which of the rows its restore refers
        to (lookups) exist now (one read for all)."""
        lookups = [self.lookups(args, before) for args, before in items]
        wanted = list(dict.fromkeys(pair for pairs in lookups for pair in pairs))
        if not wanted:
            return nows
        found = client.rows(ctx, wanted)
        existing = {value for (_, _, value), rows in zip(wanted, found) if rows}
        return [{**now, "existing": sorted(v for _, _, v in selects if v in existing)}
                if selects else now for now, selects in zip(nows, lookups)]

    def describe(self, args: Any, before: State | None = None) -> list[list[str]]:
        tags = {RUN_TAG: "RUN", STEP_TAG: "STEP"}  # the run's id is not known yet
        before = before or self.unobserved(args)
        try:
            return vsctl_describe(self.changes(args, before, tags), before.get("db"))
        except ActionError:  # apply would refuse (a bond, a port on another bridge)
            return []

    def describe_undo(self, args: Any, before: State | None = None) -> list[list[str]]:
        before = before or self.unobserved(args)
        return vsctl_describe(self.restore(args, before, self.after(args), "RUN"),
                              before.get("db"))

    def unobserved(self, args: Any) -> State:
        """What describe assumes when the host was not observed (e.g. for an export)."""
        return {"exists": False}

    def after(self, args: Any) -> State:
        """What observe would see after apply (for describe_undo), as far as undo cares."""
        return {"exists": False}


def execute(ctx: Context, client: OvsClient, ops: Sequence[Op], *, read_back: bool = True
            ) -> dict[str, str]:
    """Carry out ops: one invocation or transaction, or one for each part between Barriers,
    each waiting for ovs-vswitchd; what ovs-vswitchd could not set up, by interface."""
    problems: dict[str, str] = {}
    for part in transactions(ops):
        problems.update(client.execute(ctx, part, read_back=read_back))
    return problems


class Removal(OvsAction):
    """What the removals (ovs.bridge.absent, ovs.port.absent, ovs.bond.absent) share: their
    observation records the whole rows they destroy (rows.py), and undo makes those rows
    again, then gives their internal ports back their Linux side (ipstate.py)."""

    def restore(self, args: Any, before: State, now: State, run_id: str) -> list[Op]:
        if now["exists"] or not before["exists"]:
            return []
        before = upgraded(before, args.name)
        existing = now.get("existing", [key for _, _, key in removal_lookups(before)])
        return removal_ops(before, existing)

    def lookups(self, args: Any, before: State) -> list[Select]:
        return removal_lookups(upgraded(before, args.name))

    def links(self, args: Any, before: State) -> dict[str, ipstate.LinkState]:
        return before.get("links", {})


def _once_done(now: State, ops: Sequence[Op]) -> State:
    """The state once an undo's ops are done, as far as `vanished` asks: what they removed is
    gone from the database (committed, and reported applied by ovs-vswitchd, as it is by one
    restarted meanwhile, which leaves the taps the dead one made)."""
    removed = any(isinstance(op, (DelBridge, DelPort)) for op in ops)
    return {**now, "exists": False} if removed else now


def vsctl_describe(ops: Sequence[Op], db: str | None = None) -> list[list[str]]:
    """The ovs-vsctl invocations that carry out ops (none for no ops)."""
    return [vsctl_argv(db, vsctl_commands(part)) for part in transactions(ops)]


def where(client: OvsClient) -> State:
    """Observed states name the database they were read from, unless it is the default one,
    so that describe can give the exact command (with --db)."""
    return {"db": client.db} if client.db else {}


# ---------------------------------------------------------------------------------------------
# Devices ovs-vswitchd left behind
# ---------------------------------------------------------------------------------------------

NETDEV_DATAPATH = "ovs-netdev"
"""The userspace datapath's own tap, made with the first netdev bridge, removed with the last."""


def remove_leftover_taps(ctx: Context, client: OvsClient, names: Sequence[str]) -> None:
    """Delete the tap devices of bridges and internal ports the run created that are gone
    from the database.

    With the userspace datapath, ovs-vswitchd makes a persistent tap for each bridge and
    internal port and deletes it when the record goes. When the record went while ovs-vswitchd
    was not running (stopped mid-run: an undo commits and waits for it, then times out, or
    sees the restarted one catch up), the restarted ovs-vswitchd never knew the record and the
    tap stays, with the datapath's own tap when no netdev bridge is left. Only taps are deleted
    (tun_flags in /sys): they are what ovs-vswitchd made. A tap that cannot be deleted fails
    the undo. The kernel is looked at first: usually ovs-vswitchd deleted them, and that one
    command is all."""
    flags = {f"/sys/class/net/{name}/tun_flags": name for name in (*names, NETDEV_DATAPATH)}
    listed = ctx.run(["ls", "-d", *flags], check=False).stdout.split()
    present = {flags[path] for path in listed if path in flags}
    left = [name for name in names if name in present]
    if not left:
        return
    view = client.view(ctx, left)
    gone = [name for name in left if name not in view.bridges and name not in view.ports]
    if (gone and NETDEV_DATAPATH in present
            and not any(b.get("datapath_type") == "netdev" for b in view.bridges.values())):
        gone.append(NETDEV_DATAPATH)
    for name in gone:
        ctx.run(["ip", "link", "del", name])

