"""The `ovsdb` backend of the ovs.* actions (target modern): ovsdbapp over the OVSDB protocol.

The actions are those of backends/ovs_vsctl.py with another client. One connection per run and
host (the inventory's `ovsdb` entry, or the default socket) keeps a replica of the database, so
observing costs no round trip; the ops of a step, or of all the instances of a for_each step,
are one OVSDB transaction. ovsdbapp's Open_vSwitch transactions bump next_cfg and wait until
ovs-vswitchd has caught up, so the replica read after the commit shows what the switch made of
the change (Interface.ofport and error).

ovsdbapp pitfalls handled here: a backend class keeps its connection in a class attribute (one
class per connection, or a second host would talk to the first host's database); `add_port` on
an existing port ignores the interface attributes and `db_set` on a map merges keys (so
replacing a map is clear + set); failures log a traceback unless `log_errors=False`.
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from . import ovs_vsctl
from .ovs_args import (AddBridge, AddPort, DelBridge, DelPort, Op, RemoveKeys, SetColumns,
                       SetKeys, View, VIEW_COLUMNS, normal, set_up_interfaces, text)

DEFAULT_ENDPOINT = "unix:/var/run/openvswitch/db.sock"
TIMEOUT = 30  # seconds for connecting and for a transaction (ovs-vswitchd included)

# ovsdbapp logs failures (with tracebacks) that this backend reports as step errors itself.
logging.getLogger("ovsdbapp").addHandler(logging.NullHandler())


class OvsdbClient:
    """An ovsdbapp connection to one host's database, opened once per run and host."""

    def __init__(self, host: Host) -> None:
        from ovsdbapp.backend.ovs_idl import connection
        from ovsdbapp.schema.open_vswitch import impl_idl

        self.endpoint = host.endpoints.get("ovsdb", DEFAULT_ENDPOINT)
        try:
            idl = connection.OvsdbIdl.from_server(self.endpoint, "Open_vSwitch")
            conn = connection.Connection(idl, timeout=TIMEOUT)
            # ovsdbapp keeps the connection in a class attribute: one class per connection.
            api_class = type("HostOvsdbIdl", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
            self.api = api_class(conn)
        except Exception as exc:  # ovsdbapp raises several kinds (socket errors, timeouts)
            raise ActionError(f"cannot reach OVSDB at {self.endpoint}: {exc}") from None
        self.connection = conn

    @staticmethod
    def unusable(host: Host) -> str | None:
        return None if importlib.util.find_spec("ovsdbapp") else "ovsdbapp is not installed"

    def close(self) -> None:
        self.connection.stop()

    # -- reading the replica -----------------------------------------------------------------

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None); read from
        the replica, with no round trip."""
        wanted = None if ports is None else set(ports)
        tables = self.api.tables
        with self.connection.lock:  # the connection thread updates the replica under it
            rows = [[_row(r, VIEW_COLUMNS[t]) for r in tables[t].rows.values()
                     if t == "Bridge" or wanted is None or r.name in wanted]
                    for t in VIEW_COLUMNS]
        return View.from_rows(*rows)

    def get(self, ctx: Context, table: str, record: str, column: str) -> tuple[bool, Any]:
        from ovsdbapp.backend.ovs_idl import idlutils

        self._column_type(table, column)
        with self.connection.lock:
            try:
                row = idlutils.row_by_record(self.api.idl, table, record)
            except (idlutils.RowNotFound, ValueError):
                return False, None
            return True, normal(getattr(row, column))

    # -- writing -----------------------------------------------------------------------------

    def execute(self, ctx: Context, ops: Sequence[Op], *, read_back: bool = True
                ) -> dict[str, str]:
        """Run ops in one transaction; return what ovs-vswitchd could not set up."""
        if not ops:
            return {}
        # The journal keeps commands: record the equivalent ovs-vsctl command line.
        ctx.commands += [f"ovsdb transaction on {self.endpoint}, as: " + " ".join(argv)
                         for argv in ovs_vsctl.vsctl_describe(ops)]
        try:
            with self.api.transaction(check_error=True, log_errors=False) as txn:
                for op in ops:
                    for command in self._commands(op):
                        txn.add(command)
        except ActionError:
            raise
        except Exception as exc:
            raise ActionError(f"OVSDB transaction on {self.endpoint} failed: {exc}") from None
        if not read_back:
            return {}
        view = self.view(ctx)
        return {n: p for n in set_up_interfaces(list(ops)) if (p := view.problem(n))}

    def _commands(self, op: Op) -> list[Any]:
        api = self.api
        if isinstance(op, AddBridge):
            columns = self._typed("Bridge", op.columns)
            datapath = columns.pop("datapath_type", None)
            commands = [api.add_br(op.name, may_exist=False, datapath_type=datapath)]
            return commands + self._set("Bridge", op.name, columns, new=True)
        if isinstance(op, DelBridge):
            return [api.del_br(op.name, if_exists=True)]
        if isinstance(op, AddPort):
            # add_port applies interface attributes only when it creates the port, as here.
            return [api.add_port(op.bridge, op.name, may_exist=False,
                                 **self._typed("Interface", op.interface)),
                    *self._set("Port", op.name, self._typed("Port", op.port), new=True)]
        if isinstance(op, DelPort):
            return [api.del_port(op.name, bridge=op.bridge, if_exists=True)]
        if isinstance(op, SetColumns):
            return self._set(op.table, op.record, self._typed(op.table, op.columns))
        if isinstance(op, SetKeys):
            typed = self._typed(op.table, {op.column: op.values})[op.column]
            return [api.db_set(op.table, op.record, (op.column, typed), if_exists=False)]
        if isinstance(op, RemoveKeys):
            return [api.db_remove(op.table, op.record, op.column, *op.keys, if_exists=True)]
        raise TypeError(f"unknown op {op!r}")

    def _set(self, table: str, record: str, columns: dict[str, Any], *, new: bool = False
             ) -> list[Any]:
        """Set whole columns. db_set merges maps, so an existing record's map is cleared
        first (a record made in this transaction has nothing to clear)."""
        commands = []
        for column, value in columns.items():
            if isinstance(value, dict) and not new:
                commands.append(self.api.db_clear(table, record, column))
            commands.append(self.api.db_set(table, record, (column, value), if_exists=False))
        return commands

    def _typed(self, table: str, columns: dict[str, Any]) -> dict[str, Any]:
        """Values in normal form (or as a workflow wrote them) as the IDL wants them: 10 for
        an integer column even if written "10", a list for a set, a dict for a map."""
        return {c: _python(self._column_type(table, c), v, f"{table}.{c}")
                for c, v in columns.items()}

    def _column_type(self, table: str, column: str) -> Any:
        tables = self.api.idl.tables
        if table not in tables:
            raise ActionError(f"the database at {self.endpoint} has no table {table}")
        columns = tables[table].columns
        if column not in columns:
            raise ActionError(f"table {table} has no column {column!r}")
        return columns[column].type


def _row(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    return {"_uuid": str(row.uuid), **{c: normal(getattr(row, c)) for c in columns}}


def _python(type_: Any, value: Any, where: str) -> Any:
    try:
        if type_.is_map():
            return {_atom(type_.key, k): _atom(type_.value, v) for k, v in (value or {}).items()}
        values = value if isinstance(value, list) else [value]
        if type_.is_scalar():
            return _atom(type_.key, values[0])
        return [_atom(type_.key, v) for v in values]
    except (ValueError, TypeError, IndexError) as exc:
        raise ActionError(f"{where}: {value!r} does not fit the column ({exc})") from None


def _atom(base: Any, value: Any) -> Any:
    kind = base.type.to_string()
    if kind == "integer":
        return int(value)
    if kind == "real":
        return float(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if text(value) not in ("true", "false"):
            raise ValueError("expected true or false")
        return text(value) == "true"
    if kind == "uuid":
        return uuid.UUID(str(value))
    return text(value)


class OvsdbBackend:
    """Mixed into the ovs.* actions: the ovsdb backend is the same actions with this client."""

    backend = "ovsdb"
    Client = OvsdbClient


class BridgePresent(OvsdbBackend, ovs_vsctl.BridgePresent):
    pass


class BridgeAbsent(OvsdbBackend, ovs_vsctl.BridgeAbsent):
    pass


class PortPresent(OvsdbBackend, ovs_vsctl.PortPresent):
    pass


class PortAbsent(OvsdbBackend, ovs_vsctl.PortAbsent):
    pass


class OvsSet(OvsdbBackend, ovs_vsctl.OvsSet):
    pass


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in (BridgePresent, BridgeAbsent, PortPresent, PortAbsent, OvsSet):
        register(action)
