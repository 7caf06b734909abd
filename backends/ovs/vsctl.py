"""The ovs.* actions, and their `ovs-vsctl` backend (target centos6).

Each action observes a view of the database, decides the ops that make its desired state hold
(backends/ovs/args.py), and hands them to its backend's client; the `ovsdb` backend
(backends/ovs/ovsdb.py) plugs another client into the same actions, as neutron does with its vsctl
and native OVSDB drivers. Both describe their changes as the ovs-vsctl commands below.

This client sticks to commands Open vSwitch 1.9 (CentOS 6) has. It writes with ovs-vsctl
(add-br, del-br, add-port, del-port, set, remove, --if-exists): the ops of one step, or of all
the instances of a for_each step, go into one invocation chained with `--`, which ovs-vsctl
runs as one transaction. It reads in-process, with select operations over the OVSDB protocol
(backends/ovs/wire.py, one connection per run and host): no process per read, and the server
returns only the rows asked for, where ovs-vsctl fetches whole tables before it looks at one row
(with 500 ports a `find` costs as much as the `add-port` it precedes). ovs.set finds its record
as `ovs-vsctl set` does (by UUID, or by name through the same table of row ids).

ovs-vsctl exits 0 even when ovs-vswitchd could not set up a bridge or port, so success is read
back: ovs-vsctl 2.5 and later report the interfaces they inserted that got no OpenFlow port
(with Interface.error) on stderr after ovs-vswitchd reconfigured, and those reports are used;
for interfaces that were only changed, or with an older ovs-vsctl, the interfaces are read back
with another invocation.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.export import command, indent, value_of, word
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .args import (BRIDGE_COLUMNS, READ_BACK_COLUMNS, RUN_TAG, STEP_TAG, VIEW_COLUMNS,
                       AddBridge, AddPort, DelBridge, DelPort, Op, OvsBridgeAbsentArgs,
                       OvsBridgeArgs, OvsPortAbsentArgs, OvsPortArgs, OvsSetArgs, RemoveKeys,
                       SetColumns, SetKeys, View, inserted_interfaces, is_empty,
                       same, set_up_interfaces, setup_problem, text, vsctl_atom, vsctl_value)
from .wire import OvsdbWire, connection, where_named, where_uuid

TIMEOUT = 30  # seconds ovs-vsctl waits for ovsdb-server and ovs-vswitchd
_SELECT_LIMIT = 8  # beyond this many ports, reading whole tables is cheaper than a select each
# ovs-vsctl's report of an inserted interface that ovs-vswitchd could not set up
_REPORTED = re.compile(r"Error detected while setting up '(?P<name>[^']+)'(?:: (?P<error>.*?))?"
                       r"\.\s+See ovs-vswitchd log")


# ---------------------------------------------------------------------------------------------
# The ovs-vsctl client
# ---------------------------------------------------------------------------------------------


def vsctl_commands(ops: Sequence[Op]) -> list[list[str]]:
    """The ovs-vsctl commands (to be chained with `--`) that carry out ops."""
    commands: list[list[str]] = []
    for op in ops:
        if isinstance(op, AddBridge):
            commands.append(["add-br", op.name])
            if op.columns:
                commands.append(["set", "Bridge", op.name, *_assignments(op.columns)])
        elif isinstance(op, DelBridge):
            commands.append(["--if-exists", "del-br", op.name])
        elif isinstance(op, AddPort):
            commands.append(["add-port", op.bridge, op.name, *_assignments(op.port)])
            if op.interface:
                commands.append(["set", "Interface", op.name, *_assignments(op.interface)])
        elif isinstance(op, DelPort):
            commands.append(["--if-exists", "del-port", *([op.bridge] if op.bridge else []),
                             op.name])
        elif isinstance(op, SetColumns):
            commands.append(["set", op.table, op.record, *_assignments(op.columns)])
        elif isinstance(op, SetKeys):
            commands.append(["set", op.table, op.record,
                             *(f"{op.column}:{vsctl_atom(k)}={vsctl_atom(v)}"
                               for k, v in op.values.items())])
        elif isinstance(op, RemoveKeys):
            commands.append(["remove", op.table, op.record, op.column,
                             *(vsctl_atom(k) for k in op.keys)])
    return commands


def _assignments(columns: dict[str, Any]) -> list[str]:
    return [f"{column}={vsctl_value(value)}" for column, value in columns.items()]


def vsctl_argv(db: str | None, commands: Sequence[Sequence[str]], *,
               json_output: bool = False) -> list[str]:
    argv = ["ovs-vsctl", f"--timeout={TIMEOUT}"]
    if db:
        argv.append(f"--db={db}")
    if json_output:
        argv.append("--format=json")
    for command in commands:
        argv += ["--", *command]
    return argv


class VsctlClient:
    """Reads one host's database in-process (backends/ovs/wire.py) and writes it with
    ovs-vsctl (the inventory's `ovsdb` entry is passed as --db; without one, both use the
    default socket)."""

    def __init__(self, host: Host) -> None:
        self.db = host.endpoints.get("ovsdb")
        self._reports_new_interfaces: bool | None = None

    @staticmethod
    def unusable(host: Host) -> str | None:
        return None if shutil.which("ovs-vsctl") else "ovs-vsctl not installed"

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None)."""
        wire = connection(ctx)
        if ports is None or len(ports) > _SELECT_LIMIT:
            return View.from_rows(*wire.select([(t, [], c) for t, c in VIEW_COLUMNS.items()]))
        # A bridge's list of ports can be long (500 UUIDs are most of what a step would read):
        # read the bridges without it, then ask which bridge holds each port that exists. A
        # select cannot use what another select of its transaction found, so that takes a
        # second round trip, and only when a port exists.
        bridge_columns = [c for c in VIEW_COLUMNS["Bridge"] if c != "ports"]
        tables = wire.select([("Bridge", [], bridge_columns),
                              *(("Port", where_named(n), VIEW_COLUMNS["Port"]) for n in ports),
                              *(("Interface", where_named(n), VIEW_COLUMNS["Interface"])
                                for n in ports)])
        bridges, found = tables[0], sum(tables[1:1 + len(ports)], [])
        members: dict[str, list[str]] = {}
        for port, bridge in zip(found, wire.holders("Bridge", "ports", found)):
            if bridge is not None:
                members.setdefault(bridge["name"], []).append(port["_uuid"])
        for bridge in bridges:
            bridge["ports"] = members.get(bridge["name"], [])
        return View.from_rows(bridges, found, sum(tables[1 + len(ports):], []))

    def problems(self, ctx: Context, names: Sequence[str]) -> dict[str, str]:
        """What ovs-vswitchd could not set up among these interfaces (read back)."""
        rows = connection(ctx).select([("Interface", where_named(n), READ_BACK_COLUMNS)
                                       for n in names])
        view = View.from_rows([], [], sum(rows, []))
        return {n: p for n in names if (p := view.problem(n))}

    def get(self, ctx: Context, table: str, record: str, column: str) -> tuple[bool, Any]:
        """(found, value) of one column of one record, the record found as `ovs-vsctl set`
        finds it."""
        wire = connection(ctx)
        where = _where_record(wire, table, record)
        rows = [] if where is None else wire.select([(table, where, [column])])[0]
        return (True, rows[0][column]) if len(rows) == 1 else (False, None)

    def execute(self, ctx: Context, ops: Sequence[Op], *, read_back: bool = True
                ) -> dict[str, str]:
        """Run ops in one invocation; return what ovs-vswitchd could not set up, by interface."""
        if not ops:
            return {}
        done = ctx.run(vsctl_argv(self.db, vsctl_commands(ops)))
        if not read_back:
            return {}
        problems = {m["name"]: setup_problem(m["name"], m["error"])
                    for m in _REPORTED.finditer(done.stderr)}
        reported = inserted_interfaces(ops) if self._reports(ctx) else set()
        rest = [n for n in set_up_interfaces(ops) if n not in reported and n not in problems]
        if rest:
            problems.update(self.problems(ctx, rest))
        return problems

    def _reports(self, ctx: Context) -> bool:
        """Whether this ovs-vsctl checks the interfaces it inserts once ovs-vswitchd has
        reconfigured (2.5 and later), so that they need no second read."""
        if self._reports_new_interfaces is None:
            out = ctx.run(["ovs-vsctl", "--version"], check=False).stdout
            m = re.search(r"\(Open vSwitch\) (\d+)\.(\d+)", out)
            self._reports_new_interfaces = bool(m) and (int(m[1]), int(m[2])) >= (2, 5)
        return self._reports_new_interfaces


# How ovs-vsctl finds a record by name (the row ids of vsctl.c): the table and column holding
# the name, and the column of that row that refers to the record (None: the row itself). A
# table not listed takes UUIDs only; a table without a name column has one row, named ".".
_RECORD_IDS: dict[str, tuple[str, str | None, str | None]] = {
    "Open_vSwitch": ("Open_vSwitch", None, None),
    "Bridge": ("Bridge", "name", None),
    "Port": ("Port", "name", None),
    "Interface": ("Interface", "name", None),
    "Mirror": ("Mirror", "name", None),
    "Flow_Table": ("Flow_Table", "name", None),
    "Manager": ("Manager", "target", None),
    "Controller": ("Bridge", "name", "controller"),
    "NetFlow": ("Bridge", "name", "netflow"),
    "sFlow": ("Bridge", "name", "sflow"),
    "IPFIX": ("Bridge", "name", "ipfix"),
    "AutoAttach": ("Bridge", "name", "auto_attach"),
    "QoS": ("Port", "name", "qos"),
    "SSL": ("Open_vSwitch", None, "ssl"),
}


def _where_record(wire: OvsdbWire, table: str, record: str) -> list[Any] | None:
    """Conditions that select the record `record` names in `table`, as ovs-vsctl reads the
    name (None: it names no record)."""
    if _UUID.fullmatch(record):
        return where_uuid(record)
    if table not in _RECORD_IDS:
        return None
    named_in, name_column, reference = _RECORD_IDS[table]
    if name_column is None and record != ".":
        return None
    where = [[name_column, "==", record]] if name_column else []
    if reference is None:
        return where
    rows = wire.select([(named_in, where, [reference])])[0]
    # Only a reference to exactly one row names a record (a set of several names none).
    target = rows[0][reference] if len(rows) == 1 else None
    return where_uuid(target) if isinstance(target, str) else None


# ---------------------------------------------------------------------------------------------
# The actions, for any client
# ---------------------------------------------------------------------------------------------


def step_tags(ctx: Context) -> dict[str, str]:
    """What runflow writes into external_ids of what it creates (a Bridge, a Port; an
    Interface goes with its Port). The step id, not the instance: the instances of a for_each
    step are applied together."""
    return {RUN_TAG: ctx.run_id, STEP_TAG: ctx.step.split("[")[0]}


_SYSTEM_SYNONYMS = {"datapath_type", "type"}  # "" and "system" mean the same there


def _same_column(column: str, have: Any, want: Any) -> bool:
    if column in _SYSTEM_SYNONYMS:
        return (have or "system") == (want or "system")
    return same(have, want)


def _differences(current: dict[str, Any], columns: dict[str, Any],
                 keys: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The whole columns, and the keys of map columns, whose wanted values do not hold."""
    cols = {c: v for c, v in columns.items() if not _same_column(c, current.get(c, []), v)}
    diff_keys = {}
    for column, values in keys.items():
        have = current.get(column) or {}
        diff = {k: v for k, v in values.items() if k not in have or not same(have[k], v)}
        if diff:
            diff_keys[column] = diff
    return cols, diff_keys


def _holds(current: dict[str, Any], columns: dict[str, Any],
           keys: dict[str, dict[str, Any]]) -> bool:
    cols, diff_keys = _differences(current, columns, keys)
    return not cols and not diff_keys


def _change(table: str, record: str, current: dict[str, Any], columns: dict[str, Any],
            keys: dict[str, dict[str, Any]]) -> list[Op]:
    cols, diff_keys = _differences(current, columns, keys)
    ops: list[Op] = [SetColumns(table, record, cols)] if cols else []
    ops += [SetKeys(table, record, column, values) for column, values in diff_keys.items()]
    return ops


def _put_back(table: str, record: str, before: dict[str, Any], columns: dict[str, Any],
              keys: dict[str, dict[str, Any]]) -> list[Op]:
    """Undo what _change did to a record that existed: its old values, absent keys removed."""
    cols, diff_keys = _differences(before, columns, keys)
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


def _set(values: dict[str, Any]) -> dict[str, Any]:
    """Columns worth writing into a new record (defaults are left out)."""
    return {c: v for c, v in values.items() if not is_empty(v)}


def _created_by(external_ids: dict[str, Any] | None, run_id: str) -> bool:
    return (external_ids or {}).get(RUN_TAG) == run_id


class OvsAction(Action):
    """An ovs.* action: observe a view, decide ops, hand them to the backend's client.

    Subclasses define `scope` (which ports to read), `state` (what observe reports, from the
    view), `check`, `changes` (the ops of apply) and `restore` (the ops of undo, given what
    observe saw before apply and sees now)."""

    family = "ovs"
    backend = "ovs-vsctl"
    targets: ClassVar[tuple[str, ...]] = ("centos6",)
    Client: ClassVar[Any] = VsctlClient

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return cls.Client.unusable(host)

    def client(self, ctx: Context) -> Any:
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

    # -- the Action contract -----------------------------------------------------------------

    def observe(self, ctx: Context, args: Any) -> State:
        return self.observe_many(ctx, [args])[0]

    def observe_many(self, ctx: Context, args: Sequence[Any]) -> list[State]:
        scopes = [self.scope(a) for a in args]
        names = None if None in scopes else sorted({n for s in scopes for n in s})
        client = self.client(ctx)
        view = client.view(ctx, names)
        return [{**self.state(view, a), **_where(client)} for a in args]

    def apply(self, ctx: Context, args: Any, before: State) -> None:
        self.apply_many(ctx, [(args, before)])

    def apply_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        """All instances in one invocation or transaction, then read back. Instances that
        ovs-vswitchd could not set up are put back as they were (rollback does not visit a
        failed step), and the step fails with the daemon's messages."""
        tags = step_tags(ctx)
        planned = [(args, before, self.changes(args, before, tags)) for args, before in items]
        client = self.client(ctx)
        problems = client.execute(ctx, [op for _, _, ops in planned for op in ops])
        if not problems:
            return
        failed = [(args, before) for args, before, ops in planned
                  if any(n in problems for n in set_up_interfaces(ops))]
        nows = self.observe_many(ctx, [args for args, _ in failed])
        client.execute(ctx, [op for (args, before), now in zip(failed, nows)
                             for op in self.restore(args, before, now, ctx.run_id)],
                       read_back=False)
        raise ActionError("; ".join(problems.values()))

    def undo(self, ctx: Context, args: Any, before: State) -> None:
        self.undo_many(ctx, [(args, before)])

    def undo_many(self, ctx: Context, items: Sequence[tuple[Any, State]]) -> None:
        nows = self.observe_many(ctx, [args for args, _ in items])
        # What undo puts back may have been broken before too: it is not read back.
        self.client(ctx).execute(ctx, [op for (args, before), now in zip(items, nows)
                                       for op in self.restore(args, before, now, ctx.run_id)],
                                 read_back=False)

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


def vsctl_describe(ops: Sequence[Op], db: str | None = None) -> list[list[str]]:
    """The ovs-vsctl invocation that carries out ops (none for no ops)."""
    return [vsctl_argv(db, vsctl_commands(ops))] if ops else []


def _where(client: Any) -> State:
    """Observed states name the database they were read from, unless it is the default one,
    so that describe can give the exact command (with --db)."""
    return {"db": client.db} if client.db else {}


class BridgePresent(OvsAction):
    name = "ovs.bridge.present"
    Args = OvsBridgeArgs
    summary = "an Open vSwitch bridge exists, with a datapath type, fail mode and settings"

    @staticmethod
    def wanted(args: OvsBridgeArgs) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
        columns = {c: getattr(args, c) for c in ("datapath_type", "fail_mode")
                   if getattr(args, c) is not None}
        return columns, {"other_config": args.other_config, "external_ids": args.external_ids}

    def state(self, view: View, args: OvsBridgeArgs) -> State:
        bridge = view.bridges.get(args.name)
        if bridge is None:
            return {"exists": False}
        return {"exists": True, **{c: bridge.get(c, []) for c in BRIDGE_COLUMNS}}

    def check(self, args: OvsBridgeArgs, before: State) -> bool:
        return before["exists"] and _holds(before, *self.wanted(args))

    def changes(self, args: OvsBridgeArgs, before: State, tags: dict[str, str]) -> list[Op]:
        columns, keys = self.wanted(args)
        if not before["exists"]:
            return [AddBridge(args.name, _set({**columns, **keys,
                                               "external_ids": {**args.external_ids, **tags}}))]
        return _change("Bridge", args.name, before, columns, keys)

    def restore(self, args: OvsBridgeArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not before["exists"]:
            created = now["exists"] and _created_by(now.get("external_ids"), run_id)
            return [DelBridge(args.name)] if created else []
        if not now["exists"]:
            return []
        return _put_back("Bridge", args.name, before, *self.wanted(args))

    def after(self, args: OvsBridgeArgs) -> State:
        return {"exists": True, "external_ids": {RUN_TAG: "RUN"}}

    def shell(self, host: Host, args: OvsBridgeArgs, var: Callable[[str], str]) -> ShellStep:
        db = host.endpoints.get("ovsdb")
        columns, keys = self.wanted(args)
        existed = var("existed")
        exists = vsctl(db, "br-exists", args.name)
        save, names, put_back = shell_save_values(db, "Bridge", args.name, list(columns),
                                                  {c: list(k) for c, k in keys.items()}, var,
                                                  "old")
        tags = {RUN_TAG: EXPORT_RUN, STEP_TAG: getattr(var, "step", EXPORT_RUN)}
        create = self.changes(args, {"exists": False}, tags)
        change = _change("Bridge", args.name, {}, columns, keys)
        return ShellStep(
            check=f"{exists} && {shell_holds(db, 'Bridge', args.name, columns, keys)}",
            save=(f"if {exists}; then {existed}=1", *indent(save),
                  f"else {existed}=0; {'; '.join(f'{n}=' for n in names) or ':'}; fi"),
            saved=(existed, *names),
            apply=(f"if {exists}; then {vsctl_ops(db, change) if change else ':'}; "
                   f"else {vsctl_ops(db, create, may_exist=True)}; fi",
                   *shell_read_back(db, args.name, var)),
            undo=(f"if [ \"${existed}\" = 0 ]; then",
                  f"    if {shell_tagged(db, 'Bridge', args.name)}; then "
                  f"{vsctl_ops(db, [DelBridge(args.name)])}; fi",
                  f"elif {exists}; then", *indent(put_back or [":"]), "fi"))


class BridgeAbsent(OvsAction):
    name = "ovs.bridge.absent"
    Args = OvsBridgeAbsentArgs
    summary = "no Open vSwitch bridge of this name (undo recreates it with its ports)"

    def scope(self, args: OvsBridgeAbsentArgs) -> list[str] | None:
        return None

    def state(self, view: View, args: OvsBridgeAbsentArgs) -> State:
        bridge = view.bridges.get(args.name)
        if bridge is None:
            return {"exists": False}
        return {"exists": True,
                "bridge": {c: bridge.get(c, []) for c in BRIDGE_COLUMNS},
                "ports": {p: view.port_record(p) for p in bridge["ports"]}}

    def check(self, args: OvsBridgeAbsentArgs, before: State) -> bool:
        return not before["exists"]

    def changes(self, args: OvsBridgeAbsentArgs, before: State, tags: dict[str, str]
                ) -> list[Op]:
        bonds = [p for p, record in before.get("ports", {}).items() if "bond" in record]
        if bonds:
            raise ActionError(f"bridge {args.name} has bonded ports ({', '.join(bonds)}), which "
                              "undo could not recreate: remove them first")
        return [DelBridge(args.name)]

    def restore(self, args: OvsBridgeAbsentArgs, before: State, now: State, run_id: str
                ) -> list[Op]:
        if now["exists"]:
            return []
        ops: list[Op] = [AddBridge(args.name, _set(before["bridge"]))]
        for name, record in before["ports"].items():
            if name != args.name:
                ops.append(AddPort(args.name, name, _set(record["port"]),
                                   _set(record["interface"])))
                continue
            # The bridge's own port comes with add-br; put back what was set on it.
            port, iface = _set(record["port"]), _set(record["interface"])
            iface.pop("type", None)
            ops += [SetColumns(table, name, columns)
                    for table, columns in (("Port", port), ("Interface", iface)) if columns]
        return ops

    def unobserved(self, args: OvsBridgeAbsentArgs) -> State:
        return {"exists": True, "bridge": {}, "ports": {}}

    def shell(self, host: Host, args: OvsBridgeAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        """Undo recreates the bridge with its settings and its ports (their Port and
        Interface columns) in one invocation, from the words saved before."""
        db = host.endpoints.get("ovsdb")
        words, port = var("words"), var("port")
        exists = vsctl(db, "br-exists", args.name)
        columns = _SHELL_COLUMNS["Bridge"]
        bridge = (f"printf '%s\\n' -- add-br {word(args.name)} -- set Bridge {word(args.name)}; "
                  f"{vsctl(db, 'get', 'Bridge', args.name, *columns)} | awk -v c="
                  f"{sh(' '.join(columns))} "
                  "'BEGIN { split(c, name, \" \") } { print name[NR] \"=\" $0 }'")
        return ShellStep(
            check=f"! {exists}",
            save=(f"{words}=$({bridge}; {shell_port_words(db, args.name)}",
                  f"    for {port} in $({vsctl(db, 'list-ports', args.name)}); do "
                  f"{shell_port_words(db, value_of(port), args.name)}; done)",),
            saved=(words,),
            apply=(vsctl_ops(db, [DelBridge(args.name)]),),
            undo=("# shellcheck disable=SC2086",
                  f"if ! {exists}; then ({_NEWLINE_WORDS}; {vsctl(db)} ${words}); fi",))


class PortPresent(OvsAction):
    name = "ovs.port.present"
    Args = OvsPortArgs
    summary = "a port on an Open vSwitch bridge (system, internal, gre, vxlan, patch...)"

    @staticmethod
    def wanted(args: OvsPortArgs) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
        """Columns of the Port; columns, and keys of map columns, of its Interface."""
        port = {"tag": args.tag} if args.tag is not None else {}
        iface = {"type": args.type} if args.type is not None else {}
        return port, iface, {"options": args.options, "external_ids": args.external_ids}

    def scope(self, args: OvsPortArgs) -> list[str] | None:
        return [args.name]

    def state(self, view: View, args: OvsPortArgs) -> State:
        record = view.port_record(args.name)
        return {"exists": False} if record is None else {"exists": True, **record}

    def check(self, args: OvsPortArgs, before: State) -> bool:
        if not before["exists"] or before["bridge"] != args.bridge or "bond" in before:
            return False
        port, iface, keys = self.wanted(args)
        return _holds(before["port"], port, {}) and _holds(before["interface"], iface, keys)

    def changes(self, args: OvsPortArgs, before: State, tags: dict[str, str]) -> list[Op]:
        port, iface, keys = self.wanted(args)
        if not before["exists"]:
            if iface.get("type") == "system":
                del iface["type"]  # what add-port makes anyway
            return [AddPort(args.bridge, args.name, {**port, "external_ids": tags},
                            _set({**iface, **keys}))]
        if before["bridge"] != args.bridge:
            raise ActionError(f"port {args.name} is on bridge {before['bridge']}, not "
                              f"{args.bridge}: remove it from there first (ovs.port.absent)")
        if "bond" in before:
            raise ActionError(f"port {args.name} is a bond ({', '.join(before['bond'])}); "
                              "runflow manages single-interface ports")
        return (_change("Port", args.name, before["port"], port, {})
                + _change("Interface", args.name, before["interface"], iface, keys))

    def restore(self, args: OvsPortArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not before["exists"]:
            created = now["exists"] and _created_by(now["port"].get("external_ids"), run_id)
            return [DelPort(now["bridge"], args.name)] if created else []
        if not now["exists"]:
            return []
        port, iface, keys = self.wanted(args)
        return (_put_back("Port", args.name, before["port"], port, {})
                + _put_back("Interface", args.name, before["interface"], iface, keys))

    def after(self, args: OvsPortArgs) -> State:
        return {"exists": True, "bridge": args.bridge, "port": {"external_ids": {RUN_TAG: "RUN"}},
                "interface": {}}

    def shell(self, host: Host, args: OvsPortArgs, var: Callable[[str], str]) -> ShellStep:
        db = host.endpoints.get("ovsdb")
        port, iface, keys = self.wanted(args)
        existed, bridge = var("existed"), var("bridge")
        on_bridge = f"[ \"$({vsctl(db, 'port-to-br', args.name)} 2>/dev/null)\" = {word(args.bridge)} ]"
        holds = " && ".join([on_bridge, *([shell_holds(db, "Port", args.name, port, {})]
                                          if port else []),
                             shell_holds(db, "Interface", args.name, iface, keys)])
        save_port, port_names, undo_port = shell_save_values(
            db, "Port", args.name, list(port), {}, var, "port")
        save_iface, iface_names, undo_iface = shell_save_values(
            db, "Interface", args.name, list(iface), {c: list(k) for c, k in keys.items()}, var,
            "iface")
        names = [*port_names, *iface_names]
        tags = {RUN_TAG: EXPORT_RUN, STEP_TAG: getattr(var, "step", EXPORT_RUN)}
        create = self.changes(args, {"exists": False}, tags)
        change = (_change("Port", args.name, {}, port, {})
                  + _change("Interface", args.name, {}, iface, keys))
        elsewhere = (f"port {args.name} is on bridge ${bridge}, not {args.bridge}: remove it "
                     "from there first (ovs.port.absent)")
        return ShellStep(
            check=holds,
            save=(f"if {vsctl(db, 'port-to-br', args.name)} >/dev/null 2>&1; then {existed}=1",
                  *indent([*save_port, *save_iface]),
                  f"else {existed}=0; {'; '.join(f'{n}=' for n in names) or ':'}; fi"),
            saved=(existed, *names),
            apply=(f"{bridge}=$({vsctl(db, 'port-to-br', args.name)} 2>/dev/null || true)",
                   f"if [ -z \"${bridge}\" ]; then {vsctl_ops(db, create, may_exist=True)}",
                   f"elif [ \"${bridge}\" != {word(args.bridge)} ]; then "
                   f"echo \"{elsewhere}\" >&2; false",
                   f"else {vsctl_ops(db, change) if change else ':'}; fi",
                   *shell_read_back(db, args.name, var)),
            undo=(f"if [ \"${existed}\" = 0 ]; then",
                  f"    if {shell_tagged(db, 'Port', args.name)}; then "
                  f"{vsctl_ops(db, [DelPort(None, args.name)])}; fi",
                  f"elif {vsctl(db, 'port-to-br', args.name)} >/dev/null 2>&1; then",
                  *indent([*undo_port, *undo_iface] or [":"]), "fi"))


class PortAbsent(OvsAction):
    name = "ovs.port.absent"
    Args = OvsPortAbsentArgs
    summary = "no Open vSwitch port of this name (undo recreates it with its type and options)"

    def scope(self, args: OvsPortAbsentArgs) -> list[str] | None:
        return [args.name]

    def state(self, view: View, args: OvsPortAbsentArgs) -> State:
        record = view.port_record(args.name)
        return {"exists": False} if record is None else {"exists": True, **record}

    def check(self, args: OvsPortAbsentArgs, before: State) -> bool:
        return not before["exists"] or (args.bridge is not None
                                        and before["bridge"] != args.bridge)

    def changes(self, args: OvsPortAbsentArgs, before: State, tags: dict[str, str]
                ) -> list[Op]:
        if "bond" in before:
            raise ActionError(f"port {args.name} is a bond ({', '.join(before['bond'])}), "
                              "which undo could not recreate: runflow does not remove it")
        return [DelPort(before.get("bridge") or args.bridge, args.name)]

    def restore(self, args: OvsPortAbsentArgs, before: State, now: State, run_id: str
                ) -> list[Op]:
        if now["exists"]:
            return []
        return [AddPort(before["bridge"], args.name, _set(before["port"]),
                        _set(before["interface"]))]

    def unobserved(self, args: OvsPortAbsentArgs) -> State:
        return {"exists": True, "bridge": args.bridge or "BRIDGE", "port": {}, "interface": {}}

    def shell(self, host: Host, args: OvsPortAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        db = host.endpoints.get("ovsdb")
        words, bridge = var("words"), var("bridge")
        on = f"{vsctl(db, 'port-to-br', args.name)} 2>/dev/null"
        holds = f"! {on} >/dev/null" if args.bridge is None else \
            f"[ \"$({on})\" != {word(args.bridge)} ]"
        return ShellStep(
            check=holds,
            save=(f"{bridge}=$({on} || true)",
                  f"if [ -n \"${bridge}\" ]; then "
                  f"{words}=$({shell_port_words(db, args.name, value_of(bridge))}); "
                  f"else {words}=; fi"),
            saved=(words,),
            apply=(vsctl_ops(db, [DelPort(args.bridge, args.name)]),),
            undo=("# shellcheck disable=SC2086",
                  f"if [ -n \"${words}\" ] && ! {on} >/dev/null; then "
                  f"({_NEWLINE_WORDS}; {vsctl(db)} ${words}); fi",))


class OvsSet(OvsAction):
    name = "ovs.set"
    Args = OvsSetArgs
    summary = "one column (or one key of a map column) of an OVSDB record, as `ovs-vsctl set`"

    def observe_many(self, ctx: Context, args: Sequence[OvsSetArgs]) -> list[State]:
        client = self.client(ctx)
        return [{**self.state_of(a, *client.get(ctx, a.table, a.record, a.column_name)),
                 **_where(client)} for a in args]

    @staticmethod
    def state_of(args: OvsSetArgs, found: bool, value: Any) -> State:
        if not found:
            return {"found": False}
        if args.key is None:
            return {"found": True, "value": value}
        value = value or {}
        return {"found": True, "present": args.key in value, "value": value.get(args.key)}

    def check(self, args: OvsSetArgs, before: State) -> bool:
        return (before["found"] and before.get("present", True)
                and _same_column(args.column_name, before["value"], args.value))

    def changes(self, args: OvsSetArgs, before: State, tags: dict[str, str]) -> list[Op]:
        # A missing record fails the set itself, with the database's message.
        if args.key is None:
            return [SetColumns(args.table, args.record, {args.column_name: args.value})]
        return [SetKeys(args.table, args.record, args.column_name, {args.key: args.value})]

    def restore(self, args: OvsSetArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not now["found"]:
            return []
        if args.key is None:
            return [SetColumns(args.table, args.record, {args.column_name: before["value"]})]
        if before["present"]:
            return [SetKeys(args.table, args.record, args.column_name,
                            {args.key: before["value"]})]
        return [RemoveKeys(args.table, args.record, args.column_name, (args.key,))]

    def unobserved(self, args: OvsSetArgs) -> State:
        return {"found": True, "present": False, "value": []}

    def after(self, args: OvsSetArgs) -> State:
        return {"found": True}

    def shell(self, host: Host, args: OvsSetArgs, var: Callable[[str], str]) -> ShellStep:
        """Checked with `find` for records found by name (and the one Open_vSwitch record),
        else by comparing `get`'s output with the value's spellings."""
        db = host.endpoints.get("ovsdb")
        column = args.column_name
        keys = {column: {args.key: args.value}} if args.key else {}
        columns = {} if args.key else {column: args.value}
        if args.table in _NAMED_TABLES and not _UUID.fullmatch(args.record):
            holds = shell_holds(db, args.table, args.record, columns, keys)
        elif args.table == "Open_vSwitch":
            holds = " || ".join(_shell_found(db, ["Open_vSwitch", *w])
                                for w in _conditions(columns, keys))
        else:
            spellings = {vsctl_value(args.value), json.dumps(text(args.value))} \
                if not isinstance(args.value, (list, dict)) else {vsctl_value(args.value)}
            got = vsctl(db, "get", args.table, args.record, args.column,
                        options=("--if-exists",) if args.key else ())
            either = "|".join(sh(s) for s in sorted(spellings))
            holds = f"case \"$({got} 2>/dev/null)\" in {either}) true ;; *) false ;; esac"
        save, names, undo = shell_save_values(
            db, args.table, args.record, list(columns), {c: list(k) for c, k in keys.items()},
            var, "old")
        return ShellStep(check=holds, save=tuple(save), saved=tuple(names),
                         apply=(vsctl_ops(db, self.changes(args, {}, {})),), undo=tuple(undo))

# ---------------------------------------------------------------------------------------------
# Shell forms (`runflow export`): the same ops as ovs-vsctl commands in a POSIX sh script, which
# checks with `find` conditions (written like `set` values, so compared as ovs-vsctl compares
# them), saves old values with `get` (whose output `set` takes back) and reads back
# Interface.error and ofport after a change, as `execute` does.
# ---------------------------------------------------------------------------------------------

EXPORT_RUN = "export"
"""runflow-run in what an exported script creates: a script has no run id. (runflow-step is
the step's id, as in a run.) Its undo removes only what carries this tag."""

# Columns a recreated port or bridge gets back. Those of later Open vSwitch releases than
# CentOS 6's (Bridge.protocols, Interface.mtu_request) are left out: `get` would fail there.
_NAMED_TABLES = ("Bridge", "Port", "Interface", "Mirror", "Flow_Table")  # records by name
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHELL_COLUMNS = {
    "Bridge": tuple(c for c in BRIDGE_COLUMNS if c != "protocols"),
    "Port": ("tag", "trunks", "vlan_mode", "other_config", "external_ids"),
    "Interface": ("type", "options", "other_config", "external_ids"),
}
# Words of a saved command list are one per line: a value in ovs-vsctl's syntax never holds a
# raw newline, so splitting on newlines alone (and no globbing) gives back the exact words.
_NEWLINE_WORDS = "IFS=$(printf '\\n_'); IFS=${IFS%_}; set -f"


def vsctl(db: str | None, *words: Any, options: Sequence[str] = ()) -> str:
    """An ovs-vsctl command line (global options, then one command), every word quoted."""
    argv = vsctl_argv(db, [])
    return command([*argv, *options, *words])


def vsctl_ops(db: str | None, ops: Sequence[Op], *, may_exist: bool = False) -> str:
    """The invocation that carries out ops, as `vsctl_describe` gives it; may_exist adds
    --may-exist to add-br and add-port (a re-run after an interruption finds them there)."""
    commands = [["--may-exist", *c] if may_exist and c[0] in ("add-br", "add-port") else c
                for c in vsctl_commands(ops)]
    return command(vsctl_argv(db, commands))


def _conditions(columns: dict[str, Any], keys: dict[str, dict[str, Any]]
                ) -> list[list[str]]:
    """`find` conditions that hold when the columns and map keys have these values, one list
    per spelling ("" and "system" mean the same type or datapath)."""
    words = [f"{c}:{vsctl_atom(k)}={vsctl_atom(v)}" for c, values in keys.items()
             for k, v in values.items()]
    variants = [words]
    for column, value in columns.items():
        spellings = ["", "system"] if column in _SYSTEM_SYNONYMS and (value or "system") == \
            "system" else [value]
        variants = [[*w, f"{column}={vsctl_value(s)}"] for w in variants for s in spellings]
    return variants


def shell_holds(db: str | None, table: str, name: str, columns: dict[str, Any],
                keys: dict[str, dict[str, Any]]) -> str:
    """A condition: the record named `name` exists with these columns and keys."""
    finds = [_shell_found(db, [table, f"name={vsctl_atom(name)}", *words])
             for words in _conditions(columns, keys)]
    return finds[0] if len(finds) == 1 else "{ " + " || ".join(finds) + "; }"


def _shell_found(db: str | None, find: Sequence[str]) -> str:
    """A condition: `ovs-vsctl find` finds a record (find: the table, then conditions)."""
    uuids = vsctl(db, "find", *find, options=("--bare", "--columns=_uuid"))
    return f"[ -n \"$({uuids})\" ]"


def shell_tagged(db: str | None, table: str, name: str) -> str:
    """A condition: the record was created by an exported script."""
    return shell_holds(db, table, name, {}, {"external_ids": {RUN_TAG: EXPORT_RUN}})


def shell_save_values(db: str | None, table: str, record: str, columns: Sequence[str],
                      keys: dict[str, Sequence[str]], var: Callable[[str], str], tag: str
                      ) -> tuple[list[str], list[str], list[str]]:
    """What `_put_back` needs: lines saving the columns' and map keys' values (a key that
    is absent saves as nothing), their variables, and the undo lines putting them back."""
    save, names, sets, undo = [], [], [], []
    for i, column in enumerate(columns):
        v = var(f"{tag}{i}")
        save.append(f"{v}=$({vsctl(db, 'get', table, record, column)})")
        names.append(v)
        sets.append(f"{column}={value_of(v)}")
    for i, (column, key) in enumerate((c, k) for c, ks in keys.items() for k in ks):
        v = var(f"{tag}k{i}")
        entry = f"{column}:{vsctl_atom(key)}"
        save.append(f"{v}=$({vsctl(db, 'get', table, record, entry, options=('--if-exists',))})")
        names.append(v)
        undo.append(f"if [ -n \"${v}\" ]; then "
                    f"{vsctl(db, 'set', table, record, f'{entry}={value_of(v)}')}; "
                    f"else {vsctl(db, 'remove', table, record, column, vsctl_atom(key))}; fi")
    if sets:
        undo.insert(0, vsctl(db, "set", table, record, *sets))
    return save, names, undo


def shell_read_back(db: str | None, name: str, var: Callable[[str], str]) -> list[str]:
    """Lines that fail the step when ovs-vswitchd could not set up interface `name`
    (`View.problem`; a patch port waiting for its peer is no problem)."""
    error, ofport = var("error"), var("ofport")
    return [f"{error}=$({vsctl(db, 'get', 'Interface', name, 'error')})",
            f"{ofport}=$({vsctl(db, 'get', 'Interface', name, 'ofport')})",
            f"case \"${error}\" in *'No usable peer'*) ;; *)",
            f"    if [ \"${error}\" != '[]' ]; then",
            f"        echo \"ovs-vswitchd could not set up {name}: ${error}\" >&2; false",
            f"    elif [ \"${ofport}\" = '[]' ] || [ \"${ofport}\" = -1 ]; then",
            f"        echo {sh(setup_problem(name, None))} >&2; false",
            "    fi ;;",
            "esac"]


def shell_port_words(db: str | None, port: str, bridge: str | None = None) -> str:
    """A command printing, one word a line, the ovs-vsctl commands that recreate `port` with
    its Port and Interface columns (on `bridge`, or on the bridge it is on now). Without a
    bridge (the bridge's own port), they set the columns only."""
    lines = []
    for table, first in (("Port", ["add-port", bridge, port] if bridge else ["set", "Port", port]),
                         ("Interface", ["set", "Interface", port])):
        columns = [c for c in _SHELL_COLUMNS[table] if bridge or c != "type"]
        lines.append(f"printf '%s\\n' -- {command(first)}")
        lines.append(f"{vsctl(db, 'get', table, port, *columns)} | "
                     f"awk -v c={sh(' '.join(columns))} "
                     "'BEGIN { split(c, name, \" \") } { print name[NR] \"=\" $0 }'")
    return "{ " + "; ".join(lines) + "; }"


ACTIONS = (BridgePresent, BridgeAbsent, PortPresent, PortAbsent, OvsSet)


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in ACTIONS:
        register(action)
