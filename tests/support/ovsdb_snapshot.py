"""The configuration in an OVSDB as comparable data, to check that a run followed by its
rollback leaves Open vSwitch as it found it.

    before = ovsdb_snapshot("unix:/tmp/x/db.sock")
    ...  # run, roll back
    assert ovsdb_snapshot("unix:/tmp/x/db.sock") == before

Every table of the schema, every column but what ovs-vswitchd and ovsdb-server write
(statistics, status, ofport, error, link state, the configuration counters...: the schema's
ephemeral columns and STATUS below). Bridges, ports and interfaces are keyed by name, and
references to them are their names; a reference to a row of another table is that row's
content (a bridge's "netflow" is its NetFlow row), and each of those tables is the sorted list
of its rows' contents. So no UUID appears: a bridge deleted and recreated with the same
configuration, with its mirrors and NetFlow, compares equal; one recreated without its
NetFlow, or that left an extra QoS row behind, does not. It reads with plain ovs-vsctl and
the schema file, not with runflow's own code.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from typing import Any

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
NAMED = ("Bridge", "Port", "Interface")
# Written by ovs-vswitchd or ovsdb-server, and not marked ephemeral in the schema.
STATUS = {
    "Open_vSwitch": ("cur_cfg", "next_cfg", "db_version", "ovs_version", "system_type",
                     "system_version", "datapath_types", "iface_types", "dpdk_initialized",
                     "dpdk_version"),
    "Bridge": ("datapath_version",),
    "Port": ("bond_active_slave",),
    "Interface": ("ofport", "error", "cfm_flap_count"),
}


@cache
def _columns() -> dict[str, tuple[str, ...]]:
    """The compared columns of each table."""
    with open(SCHEMA) as f:
        tables = json.load(f)["tables"]
    return {table: tuple(sorted(c for c, spec in schema["columns"].items()
                                if not spec.get("ephemeral") and c not in STATUS.get(table, ())))
            for table, schema in tables.items()}


def ovsdb_snapshot(db: str) -> dict[str, Any]:
    """{"Open_vSwitch": {...}, "Bridge": {name: {...}}, "Port": {...}, "Interface": {...},
    "Mirror": [...], "NetFlow": [...], ...}"""
    columns = _columns()
    argv = ["ovs-vsctl", f"--db={db}", "--format=json"]
    for table in columns:
        argv += ["--", f"--columns=_uuid,{','.join(columns[table])}", "list", table]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    listed = dict(zip(columns, (json.loads(line) for line in out.splitlines() if line)))
    rows = {table: [dict(zip(d["headings"], r)) for r in d["data"]]
            for table, d in listed.items()}
    by_uuid = {r["_uuid"][1]: (table, r) for table, table_rows in rows.items()
               for r in table_rows}

    def value(v: Any) -> Any:
        """OVSDB JSON notation as plain data; references as names or the rows' contents."""
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
            kind, body = v
            if kind == "map":
                return {json.dumps(value(k)) if isinstance(k, list) else k: value(x)
                        for k, x in body}
            if kind == "set":
                return sorted((value(x) for x in body), key=json.dumps)
            if kind == "uuid":
                return content(body)
        return v

    def content(uuid: str) -> Any:
        if uuid not in by_uuid:
            return uuid  # a dangling weak reference: left as it is
        table, row = by_uuid[uuid]
        if table in NAMED:
            return row["name"]
        return {c: value(x) for c, x in row.items() if c != "_uuid"}

    result: dict[str, Any] = {}
    for table, table_rows in rows.items():
        if table == "Open_vSwitch":
            result[table] = content(table_rows[0]["_uuid"][1]) if table_rows else {}
        elif table in NAMED:
            result[table] = {r["name"]: {c: value(x) for c, x in r.items()
                                         if c not in ("_uuid", "name")} for r in table_rows}
        else:
            result[table] = sorted((content(r["_uuid"][1]) for r in table_rows),
                                   key=json.dumps)
    return result


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots, for assertion messages."""
    lines = []
    for table in sorted(set(before) | set(after)):
        b, a = before.get(table), after.get(table)
        if b == a:
            continue
        if table in NAMED:
            for name in sorted(set(b or {}) | set(a or {})):
                if name not in (a or {}):
                    lines.append(f"{table} {name}: gone")
                elif name not in (b or {}):
                    lines.append(f"{table} {name}: new {a[name]}")
                elif a[name] != b[name]:
                    lines += [f"{table} {name}.{column}: {b[name].get(column)!r} -> "
                              f"{a[name].get(column)!r}"
                              for column in sorted(set(a[name]) | set(b[name]))
                              if a[name].get(column) != b[name].get(column)]
        elif table == "Open_vSwitch":
            lines += [f"Open_vSwitch .{column}: {b.get(column)!r} -> {a.get(column)!r}"
                      for column in sorted(set(a) | set(b)) if a.get(column) != b.get(column)]
        else:
            lines.append(f"{table}: {b!r} -> {a!r}")
    return lines
