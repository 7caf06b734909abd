"""ovs.set, ovs.unset and ovs.get: one column (or one key of a map column) of any record, as
`ovs-vsctl set`, `remove`/`clear` and `get` name it — set, emptied, or read into a var."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from runflow.core.actions import Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.export import value_of
from runflow.core.hosts import Host

from .actions import OvsAction, where
from .args import (UUID, Barrier, Insert, Op, OvsGetArgs, OvsSetArgs, OvsUnsetArgs, RecordColumn,
                   RemoveKeys, SetColumns, SetKeys, is_empty, same, same_column, text,
                   vsctl_atom, vsctl_value)
from .columns import shaped
from .commands import (NAMED_TABLES, conditions, shell_found, shell_holds, shell_save_values,
                       vsctl, vsctl_ops)


class RecordAction(OvsAction):
    """An action on one column of one record: observe reads that column (found or not)."""

    def columns(self, args: RecordColumn) -> list[str]:
        """The columns observe reads."""
        return [args.column_name]

    def observe_many(self, ctx: Context, args: Sequence[RecordColumn]) -> list[State]:
        client = self.client(ctx)
        found = client.records(ctx, [(a.table, a.record, self.columns(a)) for a in args])
        return [{**self.state_of(a, *record), **where(client)} for a, record in zip(args, found)]

    def state_of(self, args: Any, found: bool, values: dict[str, Any]) -> State:
        return {"found": True, "value": values[args.column_name]} if found else {"found": False}

    def missing(self, args: RecordColumn) -> ActionError:
        return ActionError(f"there is no record {args.record!r} in table {args.table}")


def _kernel_mtu(args: RecordColumn) -> bool:
    """Whether the column is an interface's mtu_request: undo must also bring back the MTU
    the device had (Open vSwitch does not lower it when the request goes)."""
    return args.table == "Interface" and args.column_name == "mtu_request" and args.key is None


class OvsSet(RecordAction):
    name = "ovs.set"
    Args = OvsSetArgs
    summary = "one column (or one key of a map column) of an OVSDB record, as `ovs-vsctl set`"

    def columns(self, args: OvsSetArgs) -> list[str]:
        return [args.column_name, *(["mtu"] if _kernel_mtu(args) else [])]

    def state_of(self, args: OvsSetArgs, found: bool, values: dict[str, Any]) -> State:
        if not found:
            return {"found": False}
        value = values[args.column_name]
        if args.key is None:
            return {"found": True, "value": value, **({"mtu": values["mtu"]}
                                                      if "mtu" in values else {})}
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
            back = SetColumns(args.table, args.record, {args.column_name: before["value"]})
            mtu = before.get("mtu")
            if _kernel_mtu(args) and is_empty(before["value"]) and not is_empty(mtu) and \
                    now.get("mtu") != mtu:
                # Ask for the old MTU, let ovs-vswitchd set it, then take the request away.
                return [SetColumns(args.table, args.record, {"mtu_request": mtu}), Barrier(),
                        back]
            return [back]
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
            got = vsctl(db, "get", args.table, args.record, args.column,
                        options=("--if-exists",) if args.key else ())
            holds = _shell_spelled(got, args.value)
        save, names, undo = shell_save_values(
            db, args.table, args.record, list(columns), {c: list(k) for c, k in keys.items()},
            var, "old")
        if _kernel_mtu(args):
            mtu = var("mtu")
            save.append(f"{mtu}=$({vsctl(db, 'get', 'Interface', args.record, 'mtu')})")
            names.append(mtu)
            # As restore does: the old MTU asked for, then the request (none) put back.
            again = vsctl(db, "set", "Interface", args.record, f"mtu_request={value_of(mtu)}")
            undo.insert(0, f"if [ \"${names[0]}\" = '[]' ]; then {again}; fi")
        return ShellStep(check=holds, save=tuple(save), saved=tuple(names),
                         apply=(vsctl_ops(db, self.changes(args, {}, {})),), undo=tuple(undo))


def _shell_spelled(got: str, value: Any) -> str:
    """A condition: the output of the `get` command line `got` spells value."""
    spellings = {vsctl_value(value), json.dumps(text(value))} \
        if not isinstance(value, (list, dict)) else {vsctl_value(value)}
    either = "|".join(sh(s) for s in sorted(spellings))
    return f"case \"$({got} 2>/dev/null)\" in {either}) true ;; *) false ;; esac"


class OvsUnset(RecordAction):
    name = "ovs.unset"
    Args = OvsUnsetArgs
    summary = ("keys of a map column, values of a set column, or a whole column of an OVSDB "
               "record are gone, as `ovs-vsctl remove` / `clear`")

    def check(self, args: OvsUnsetArgs, before: State) -> bool:
        return before["found"] and not self.present(args, before["value"])

    @staticmethod
    def present(args: OvsUnsetArgs, value: Any) -> list[Any]:
        """What is there of what the step takes away (for a clear: the whole value)."""
        keys = args.removed_keys()
        if keys is not None:
            return [k for k in keys if k in (value or {})]
        if args.values is not None:
            have = value if isinstance(value, list) else [value]
            return [v for v in args.values if any(same(v, h) for h in have)]
        return [] if is_empty(value) else [value]

    def changes(self, args: OvsUnsetArgs, before: State, tags: dict[str, str]) -> list[Op]:
        if not before["found"]:
            raise self.missing(args)
        keys = args.removed_keys()
        if keys is not None or args.values is not None:
            return [RemoveKeys(args.table, args.record, args.column_name,
                               tuple(keys if keys is not None else args.values))]
        return [SetColumns(args.table, args.record, {args.column_name: _empty(args)})]

    def restore(self, args: OvsUnsetArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not now["found"] or not before["found"]:
            return []
        gone = self.present(args, before["value"])
        if not gone:
            return []
        if args.removed_keys() is not None:
            return [SetKeys(args.table, args.record, args.column_name,
                            {k: before["value"][k] for k in gone})]
        if args.values is not None:
            return [Insert(args.table, args.record, args.column_name, tuple(gone))]
        return [SetColumns(args.table, args.record, {args.column_name: before["value"]})]

    def unobserved(self, args: OvsUnsetArgs) -> State:
        keys = args.removed_keys()
        value: Any = {k: "OLD" for k in keys} if keys is not None else \
            list(args.values) if args.values is not None else "OLD"
        return {"found": True, "value": value}

    def after(self, args: OvsUnsetArgs) -> State:
        return {"found": True}

    def shell(self, host: Host, args: OvsUnsetArgs, var: Callable[[str], str]) -> ShellStep:
        """Map keys are checked and saved one by one (`get --if-exists TABLE RECORD
        COLUMN:KEY`); set values and whole columns by the column's `get` output, saved whole
        and set back whole."""
        db = host.endpoints.get("ovsdb")
        column, keys = args.column_name, args.removed_keys()
        apply = (vsctl_ops(db, self.changes(args, {"found": True}, {})),)
        if keys is not None:
            save, names, undo = shell_save_values(db, args.table, args.record, [],
                                                  {column: keys}, var, "old")
            gets = [vsctl(db, "get", args.table, args.record, f"{column}:{k}",
                          options=("--if-exists",)) for k in keys]
            found = " ".join(f"$({got})" for got in gets)
            return ShellStep(check=f"[ -z \"{found}\" ]", save=tuple(save), saved=tuple(names),
                             apply=apply, undo=tuple(undo))
        save, names, undo = shell_save_values(db, args.table, args.record, [column], {}, var,
                                              "old")
        got = vsctl(db, "get", args.table, args.record, column)
        if args.values is None:
            check = _shell_spelled(got, _empty(args))
        else:
            spellings = [s for v in args.values
                         for s in (vsctl_atom(v), json.dumps(text(v)))]
            listed = f"$({got} 2>/dev/null | tr -d '[]{{}} ' | tr ',' '\\n')"
            check = (f"! printf '%s\\n' \"{listed}\" | grep -qxF "
                     + " ".join(f"-e {sh(s)}" for s in dict.fromkeys(spellings)))
        return ShellStep(check=check, save=tuple(save), saved=tuple(names), apply=apply,
                         undo=tuple(undo))


def _empty(args: RecordColumn) -> Any:
    """An empty value of the column: {} for a map, else []."""
    column_type = args.column_type()
    return {} if column_type is not None and column_type.is_map() else []


class OvsGet(RecordAction):
    name = "ovs.get"
    Args = OvsGetArgs
    summary = ("reads one column (or one key of a map column) of an OVSDB record, for later "
               "steps (register = \"NAME\"); changes nothing")
    holds_message = "read"

    def check(self, args: OvsGetArgs, before: State) -> bool:
        return before["found"] and (args.key is None or args.key in (before["value"] or {})
                                    or args.default is not None)

    def result(self, args: OvsGetArgs, state: State) -> Any:
        value = state["value"]
        if args.key is None:
            return shaped(args.column_type(), value)
        return (value or {}).get(args.key, args.default)

    def changes(self, args: OvsGetArgs, before: State, tags: dict[str, str]) -> list[Op]:
        """There is nothing to read: the step fails (apply is called only then)."""
        if not before["found"]:
            raise self.missing(args)
        raise ActionError(f"record {args.record!r} of table {args.table} has no key "
                          f"{args.key!r} in {args.column_name} (give a default to read one "
                          "anyway)")

    def restore(self, args: OvsGetArgs, before: State, now: State, run_id: str) -> list[Op]:
        return []

    def describe(self, args: OvsGetArgs, before: State | None = None) -> list[list[str]]:
        return []
