"""The `ovsdb` backend of the ovs.* actions (target modern): ovsdbapp (python-ovs's IDL) over
the OVSDB protocol.

The actions are those of backends/ovs/actions.py with this client. One connection per run and
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
import itertools
import logging
import shlex
import uuid
from collections.abc import Sequence
from typing import Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .actions import backend_actions
from .args import (READ_BACK_COLUMNS, VIEW_COLUMNS, AddBridge, AddPort, DelBridge, DelPort, Op,
                   RemoveKeys, SetColumns, SetKeys, View, normal, set_up_interfaces)
from .columns import typed
from .commands import vsctl_commands
from .endpoint import endpoint_of, endpoint_problem

TIMEOUT = 30  # seconds for connecting and for a transaction (ovs-vswitchd included)
_SUMMARY_COMMANDS = 10

# Columns ovs-vswitchd keeps rewriting (counters, link state): never configuration, and their
# updates, parsed in Python, would cost more than the transactions (a third of a 500-port one).
_STATUS_COLUMNS = {
    "Interface": ("statistics", "status", "link_state", "link_resets", "link_speed", "duplex",
                  "mac_in_use", "ifindex", "mtu", "admin_state", "lacp_current", "bfd_status",
                  "cfm_fault", "cfm_fault_status", "cfm_remote_mpids", "cfm_flap_count",
                  "cfm_health", "cfm_remote_opstate"),
    "Port": ("statistics", "status", "rstp_statistics", "rstp_status", "bond_active_slave"),
    "Bridge": ("status", "rstp_status", "datapath_id", "datapath_version"),
}

# ovsdbapp logs failures (with tracebacks) that this backend reports as step errors itself.
logging.getLogger("ovsdbapp").addHandler(logging.NullHandler())


class OvsdbClient:
    """An ovsdbapp connection to one host's database, opened once per run and host."""

    def __init__(self, host: Host) -> None:
        from ovsdbapp.backend.ovs_idl import connection, idlutils
        from ovsdbapp.schema.open_vswitch import impl_idl

        self.db = host.endpoints.get("ovsdb")  # None: the default socket
        self.endpoint = endpoint_of(host)
        try:
            # an SSH host's socket is reached forwarded over its master connection
            address = host.service_address(self.endpoint)
            helper = idlutils.get_schema_helper(address, "Open_vSwitch")
            for table, schema in helper.schema_json["tables"].items():
                skip = _STATUS_COLUMNS.get(table, ())
                helper.register_columns(table, [c for c in schema["columns"] if c not in skip])
            idl = connection.OvsdbIdl(address, helper)
            conn = connection.Connection(idl, timeout=TIMEOUT)
            # ovsdbapp keeps the connection in a class attribute: one class per connection.
            api_class = type("HostOvsdbIdl", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
            self.api = api_class(conn)
        except Exception as exc:  # ovsdbapp raises several kinds (socket errors, timeouts)
            raise ActionError(f"cannot reach OVSDB at {self.endpoint}: {exc}") from None
        self.connection = conn

    @staticmethod
    def unusable(host: Host) -> str | None:
        if importlib.util.find_spec("ovsdbapp") is None:
            return "ovsdbapp is not installed"
        return endpoint_problem(host)

    def close(self) -> None:
        self.connection.stop()

    # -- reading the replica -----------------------------------------------------------------

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None), from the
        replica: no round trip."""
        with self.connection.lock:  # the connection thread updates the replica under it
            return View.from_rows(*(self._rows(table, None if table == "Bridge" else ports,
                                               VIEW_COLUMNS[table])
                                    for table in VIEW_COLUMNS))

    def problems(self, ctx: Context, names: Sequence[str]) -> dict[str, str]:
        """What ovs-vswitchd could not set up among these interfaces (read back)."""
        with self.connection.lock:
            view = View.from_rows([], [], self._rows("Interface", names, READ_BACK_COLUMNS))
        return {n: p for n in names if (p := view.problem(n))}

    def _rows(self, table: str, names: Sequence[str] | None, columns: Sequence[str]
              ) -> list[dict[str, Any]]:
        """Rows of a table (those named, through the name index, or all), with these columns.
        Reading a column of an IDL row costs a conversion: only what is asked for is read."""
        from ovsdbapp.backend.ovs_idl import idlutils

        idl = self.api.idl
        if names is None:
            rows = list(idl.tables[table].rows.values())
        else:
            found = (idlutils.row_by_value(idl, table, "name", n, None) for n in names)
            rows = [r for r in found if r is not None]
        return [_row(r, columns) for r in rows]

    def records(self, ctx: Context, wanted: Sequence[tuple[str, str, str]]
                ) -> list[tuple[bool, Any]]:
        """(found, value) of one column of each record, found by ovsdbapp as ovs-vsctl finds
        it, from the replica."""
        return [self._record(table, record, column) for table, record, column in wanted]

    def _record(self, table: str, record: str, column: str) -> tuple[bool, Any]:
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
        ctx.commands.append(self.summary(ops))
        try:
            with self.api.transaction(check_error=True, log_errors=False) as txn:
                for command in self._all_commands(ops):
                    txn.add(command)
        except ActionError:
            raise
        except Exception as exc:
            raise ActionError(f"OVSDB transaction on {self.endpoint} failed: {exc}") from None
        if not read_back:
            return {}
        return self.problems(ctx, set_up_interfaces(list(ops)))

    def summary(self, ops: Sequence[Op]) -> str:
        """The transaction for the journal, as the equivalent ovs-vsctl commands (the first
        ones only, for a large for_each batch: every instance's journal entry holds it)."""
        commands = vsctl_commands(ops)
        shown = " -- ".join(shlex.join(c) for c in commands[:_SUMMARY_COMMANDS])
        more = len(commands) - _SUMMARY_COMMANDS
        return (f"ovsdb transaction on {self.endpoint}, as ovs-vsctl: {shown}"
                + (f" -- ... ({more} more commands)" if more > 0 else ""))

    def _all_commands(self, ops: Sequence[Op]) -> list[Any]:
        """The ovsdbapp commands of ops, in order; consecutive DelPorts go together."""
        commands = []
        for deleting, group in itertools.groupby(ops, key=lambda op: isinstance(op, DelPort)):
            if deleting:
                commands += self._del_ports(list(group))
            else:
                commands += [command for op in group for command in self._commands(op)]
        return commands

    def _del_ports(self, ops: Sequence[DelPort]) -> list[Any]:
        """Take the ports off their bridges: one db_remove per bridge, and ovsdb-server
        drops the Port and Interface rows no bridge refers to any more. ovsdbapp's del_port
        reads the bridge's whole port list for each port it deletes: rolling back 500 ports
        was a 5 s commit that way, and is 0.3 s this way. As `ovs-vsctl --if-exists
        del-port` does, a port that does not exist is no error, one on another bridge is."""
        from ovsdbapp.backend.ovs_idl import idlutils

        idl = self.api.idl
        ports: dict[str, list[uuid.UUID]] = {}
        with self.connection.lock:
            bridge_of = {port: bridge.name for bridge in idl.tables["Bridge"].rows.values()
                         for port in _refs(bridge, "ports")}
            for op in ops:
                row = idlutils.row_by_value(idl, "Port", "name", op.name, None)
                bridge = bridge_of.get(str(row.uuid)) if row is not None else None
                if bridge is None:
                    continue
                if op.bridge and bridge != op.bridge:
                    raise ActionError(f"port {op.name} is on bridge {bridge}, not {op.bridge}")
                ports.setdefault(bridge, []).append(row.uuid)
        return [self.api.db_remove("Bridge", bridge, "ports", *uuids)
                for bridge, uuids in ports.items()]

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
        if isinstance(op, SetColumns):
            return self._set(op.table, op.record, self._typed(op.table, op.columns))
        if isinstance(op, SetKeys):
            values = self._typed(op.table, {op.column: op.values})[op.column]
            return [api.db_set(op.table, op.record, (op.column, values), if_exists=False)]
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
        an integer column even if written "10", a list for a set, a dict for a map; typed with
        the host's own schema (a workflow's values were checked with Open vSwitch 3.1's)."""
        result = {}
        for column, value in columns.items():
            try:
                result[column] = typed(self._column_type(table, column), value, column)
            except ValueError as exc:
                raise ActionError(f"{table}: {exc}") from None
        return result

    def _column_type(self, table: str, column: str) -> Any:
        tables = self.api.idl.tables
        if table not in tables:
            raise ActionError(f"the database at {self.endpoint} has no table {table}")
        columns = tables[table].columns
        if column in _STATUS_COLUMNS.get(table, ()):
            raise ActionError(f"{table}.{column} is status written by ovs-vswitchd, not "
                              "configuration")
        if column not in columns:
            raise ActionError(f"table {table} has no column {column!r}")
        return columns[column].type


def _row(row: Any, columns: Sequence[str]) -> dict[str, Any]:
    return {"_uuid": str(row.uuid),
            **{c: _refs(row, c) if c in _REFERENCES else normal(getattr(row, c))
               for c in columns}}


_REFERENCES = ("ports", "interfaces")


def _refs(row: Any, column: str) -> list[str]:
    """The UUIDs in a reference column. Reading it as an attribute makes a Row object of each
    (2.4 ms for a bridge with 500 ports, at every step); a row without pending changes has
    them as plain UUIDs in its datum."""
    if row._data is not None and not row._changes and not row._mutations:
        return [str(u) for u in row._data[column].as_list()]
    return [str(r.uuid) for r in getattr(row, column)]


ACTIONS = backend_actions("ovsdb", OvsdbClient, ("modern",))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in ACTIONS:
        register(action)
