"""The `ovs-vsctl` backend of the ovs.* actions (target centos6): the actions of
backends/ovs/actions.py with a client that only runs commands, so that it works wherever runflow
can run the host's own tools — over SSH on a CentOS 6 host too, with no socket to talk to.

It sticks to what Open vSwitch 1.9 (CentOS 6) has. It writes with ovs-vsctl: the ops of one
step, or of all the instances of a for_each step, go into one invocation chained with `--`,
which ovs-vsctl runs as one transaction. It reads with `ovsdb-client transact` of select
operations (backends/ovs/query.py): one command per observation of a step, whatever its
number of instances, returning only the rows asked for. ovs.set finds its record as
`ovs-vsctl set` does (by UUID, or by name through the same table of row ids).

ovs-vsctl exits 0 even when ovs-vswitchd could not set up a bridge or port, so success is read
back: ovs-vsctl 2.5 and later report the interfaces they inserted that got no OpenFlow port
(with Interface.error) on stderr after ovs-vswitchd reconfigured, and those reports are used;
for interfaces that were only changed, or with an older ovs-vsctl, the interfaces are read back
with one more read.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from typing import Any

from runflow.core.actions import Context
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .actions import backend_actions
from .args import (UUID, VIEW_COLUMNS, Op, View, inserted_interfaces, set_up_interfaces,
                   setup_problem)
from .commands import vsctl_argv, vsctl_commands
from .endpoint import endpoint_problem
from .query import interface_problems, select, where_named, where_uuid

TOOLS = ("ovs-vsctl", "ovsdb-client")
# Up to this many ports, a step reads them by name; beyond, whole tables cost less to ask for.
_SELECT_LIMIT = 8
# ovs-vsctl's report of an inserted interface that ovs-vswitchd could not set up
_REPORTED = re.compile(r"Error detected while setting up '(?P<name>[^']+)'(?:: (?P<error>.*?))?"
                       r"\.\s+See ovs-vswitchd log")


class VsctlClient:
    """Reads one host's database with ovsdb-client and writes it with ovs-vsctl (the
    inventory's `ovsdb` entry is passed to both; without one, the default socket)."""

    def __init__(self, host: Host) -> None:
        self.db = host.endpoints.get("ovsdb")
        self._reports_new_interfaces: bool | None = None

    @staticmethod
    def unusable(host: Host) -> str | None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            return f"{' and '.join(missing)} not installed"
        return endpoint_problem(host)

    def view(self, ctx: Context, ports: Sequence[str] | None = None) -> View:
        """Every bridge, and the ports and interfaces named (all of them when None): one read.
        A bridge's list of ports comes whole (500 UUIDs, some 20 KB, for a big bridge): which
        bridge holds a port is known only from there."""
        if ports is None or len(ports) > _SELECT_LIMIT:
            return View.from_rows(*select(ctx, [(t, [], c) for t, c in VIEW_COLUMNS.items()]))
        tables = select(ctx, [("Bridge", [], VIEW_COLUMNS["Bridge"]),
                              *(("Port", where_named(n), VIEW_COLUMNS["Port"]) for n in ports),
                              *(("Interface", where_named(n), VIEW_COLUMNS["Interface"])
                                for n in ports)])
        return View.from_rows(tables[0], sum(tables[1:1 + len(ports)], []),
                              sum(tables[1 + len(ports):], []))

    def records(self, ctx: Context, wanted: Sequence[tuple[str, str, str]]
                ) -> list[tuple[bool, Any]]:
        """(found, value) of one column of each record, the records found as `ovs-vsctl set`
        finds them: one read, and one more for records named through another table's row
        (a bridge's Controller, a port's QoS)."""
        ways = [_way_to(table, record) for table, record, _ in wanted]
        refs = [way for way in ways if way is not None and way[2] is not None]
        held = iter(select(ctx, [(table, where, [ref]) for table, where, ref in refs]))
        wheres = [None if way is None else way[1] if way[2] is None else
                  _referred(next(held), way[2]) for way in ways]
        asked = [(table, where, [column])
                 for (table, _, column), where in zip(wanted, wheres) if where is not None]
        found = iter(select(ctx, asked))
        result = []
        for (_, _, column), where in zip(wanted, wheres):
            rows = [] if where is None else next(found)
            result.append((True, rows[0][column]) if len(rows) == 1 else (False, None))
        return result

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
            problems.update(interface_problems(ctx, rest, whole_table=len(rest) > _SELECT_LIMIT))
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


def _way_to(table: str, record: str) -> tuple[str, list[Any], str | None] | None:
    """How to select the record `record` names in `table`, as ovs-vsctl reads the name: the
    table to select from, the conditions, and the column of that row that refers to the
    record (None: the row is the record). None: the name names no record."""
    if UUID.fullmatch(record):
        return table, where_uuid(record), None
    if table not in _RECORD_IDS:
        return None
    named_in, name_column, reference = _RECORD_IDS[table]
    if name_column is None and record != ".":
        return None
    return named_in, [[name_column, "==", record]] if name_column else [], reference


def _referred(rows: list[dict[str, Any]], reference: str) -> list[Any] | None:
    """Conditions selecting the row that the one row found refers to (None: it names none:
    no row, several, or a reference to several records)."""
    target = rows[0][reference] if len(rows) == 1 else None
    return where_uuid(target) if isinstance(target, str) else None


ACTIONS = backend_actions("ovs-vsctl", VsctlClient, ("centos6",))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in ACTIONS:
        register(action)
