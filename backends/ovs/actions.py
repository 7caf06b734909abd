"""The ovs.* actions: what both Open vSwitch backends share.

Each action observes a view of the database (backends/ovs/args.py), decides the ops that make
its desired state hold, and hands them to its backend's client — as neutron's OVS agent has one
API and two drivers (vsctl and native OVSDB). A backend is these actions with its client
(`backend_actions`): the `ovs-vsctl` backend's (backends/ovs/vsctl.py) reads with commands and
writes with one chained ovs-vsctl invocation; the `ovsdb` backend's (backends/ovs/ovsdb.py) reads
its replica of the database and writes one OVSDB transaction. Both describe their changes as the
ovs-vsctl commands of backends/ovs/commands.py, and export the same shell script.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.export import indent, value_of, word
from runflow.core.hosts import Host

from .args import (BRIDGE_COLUMNS, RUN_TAG, STEP_TAG, UUID, AddBridge, AddPort, DelBridge,
                   DelPort, Op, OvsBridgeAbsentArgs, OvsBridgeArgs, OvsPortAbsentArgs,
                   OvsPortArgs, OvsSetArgs, RemoveKeys, SetColumns, SetKeys, View, is_empty,
                   same, same_column, set_up_interfaces, text, vsctl_value)
from .commands import (EXPORT_RUN, NAMED_TABLES, NEWLINE_WORDS, SHELL_COLUMNS, conditions,
                       shell_found, shell_holds, shell_port_words, shell_read_back,
                       shell_save_values, shell_tagged, vsctl, vsctl_argv, vsctl_commands,
                       vsctl_ops)


class OvsClient(Protocol):
    """How a backend reads and changes one host's database (one client per run and host)."""

    db: str | None  # the inventory's ovsdb endpoint (None: the default one)

    def __init__(self, host: Host) -> None: ...

    @staticmethod
    def unusable(host: Host) -> str | None:
        """Why the backend cannot run on host (a missing tool or library, a bad endpoint)."""

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None)."""

    def records(self, ctx: Context, wanted: Sequence[tuple[str, str, str]]
                ) -> list[tuple[bool, Any]]:
        """For each (table, record, column): (found, value), the record found as `ovs-vsctl
        set` finds it (by UUID, or by name)."""

    def execute(self, ctx: Context, ops: Sequence[Op], *, read_back: bool = True
                ) -> dict[str, str]:
        """Carry out ops together; return what ovs-vswitchd could not set up, by interface."""


def step_tags(ctx: Context) -> dict[str, str]:
    """What runflow writes into external_ids of what it creates (a Bridge, a Port; an
    Interface goes with its Port). The step id, not the instance: the instances of a for_each
    step are applied together."""
    return {RUN_TAG: ctx.run_id, STEP_TAG: ctx.step.split("[")[0]}


def _differences(current: dict[str, Any], columns: dict[str, Any],
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
        client = self.client(ctx)
        restores = [self.restore(args, before, now, ctx.run_id)
                    for (args, before), now in zip(items, nows)]
        # What undo puts back may have been broken before too: it is not read back.
        client.execute(ctx, [op for ops in restores for op in ops], read_back=False)
        gone = [name for (args, before), now, ops in zip(items, nows, restores)
                for name in self.vanished(args, before, _once_done(now, ops))]
        if gone:
            remove_leftover_taps(ctx, client, gone)

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


def _once_done(now: State, ops: Sequence[Op]) -> State:
    """The state once an undo's ops are done, as far as `vanished` asks: what they removed is
    gone from the database (committed, and reported applied by ovs-vswitchd, as it is by one
    restarted meanwhile, which leaves the taps the dead one made)."""
    removed = any(isinstance(op, (DelBridge, DelPort)) for op in ops)
    return {**now, "exists": False} if removed else now


def vsctl_describe(ops: Sequence[Op], db: str | None = None) -> list[list[str]]:
    """The ovs-vsctl invocation that carries out ops (none for no ops)."""
    return [vsctl_argv(db, vsctl_commands(ops))] if ops else []


def _where(client: OvsClient) -> State:
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

    def vanished(self, args: OvsBridgeArgs, before: State, now: State) -> list[str]:
        return [args.name] if not before["exists"] and not now["exists"] else []

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
        columns = SHELL_COLUMNS["Bridge"]
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
                  f"if ! {exists}; then ({NEWLINE_WORDS}; {vsctl(db)} ${words}); fi",))


class PortAction(OvsAction):
    """An action about one port: it observes the port as undo would recreate it."""

    def scope(self, args: OvsPortArgs | OvsPortAbsentArgs) -> list[str] | None:
        return [args.name]

    def state(self, view: View, args: OvsPortArgs | OvsPortAbsentArgs) -> State:
        record = view.port_record(args.name)
        return {"exists": False} if record is None else {"exists": True, **record}


class PortPresent(PortAction):
    name = "ovs.port.present"
    Args = OvsPortArgs
    summary = "a port on an Open vSwitch bridge (system, internal, gre, vxlan, patch...)"

    @staticmethod
    def wanted(args: OvsPortArgs) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
        """Columns of the Port; columns, and keys of map columns, of its Interface."""
        port = {"tag": args.tag} if args.tag is not None else {}
        iface = {"type": args.type} if args.type is not None else {}
        return port, iface, {"options": args.options, "external_ids": args.external_ids}

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

    def vanished(self, args: OvsPortArgs, before: State, now: State) -> list[str]:
        made = not before["exists"] and args.type == "internal"
        return [args.name] if made and not now["exists"] else []

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


class PortAbsent(PortAction):
    name = "ovs.port.absent"
    Args = OvsPortAbsentArgs
    summary = "no Open vSwitch port of this name (undo recreates it with its type and options)"

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
                  f"({NEWLINE_WORDS}; {vsctl(db)} ${words}); fi",))


class OvsSet(OvsAction):
    name = "ovs.set"
    Args = OvsSetArgs
    summary = "one column (or one key of a map column) of an OVSDB record, as `ovs-vsctl set`"

    def observe_many(self, ctx: Context, args: Sequence[OvsSetArgs]) -> list[State]:
        client = self.client(ctx)
        found = client.records(ctx, [(a.table, a.record, a.column_name) for a in args])
        return [{**self.state_of(a, *record), **_where(client)} for a, record in zip(args, found)]

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
                and same_column(args.column_name, before["value"], args.value))

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
        if args.table in NAMED_TABLES and not UUID.fullmatch(args.record):
            holds = shell_holds(db, args.table, args.record, columns, keys)
        elif args.table == "Open_vSwitch":
            holds = " || ".join(shell_found(db, ["Open_vSwitch", *w])
                                for w in conditions(columns, keys))
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


# ---------------------------------------------------------------------------------------------
# A backend: these actions with its client
# ---------------------------------------------------------------------------------------------

ACTIONS = (BridgePresent, BridgeAbsent, PortPresent, PortAbsent, OvsSet)


def backend_actions(backend: str, client: type[OvsClient],
                    targets: tuple[str, ...]) -> tuple[type[OvsAction], ...]:
    """The ovs.* actions of a backend: each action class with the backend's name, the targets
    it serves and its client."""
    return tuple(type(action.__name__, (action,), {"backend": backend, "targets": targets,
                                                   "Client": client,
                                                   "__module__": client.__module__})
                 for action in ACTIONS)

