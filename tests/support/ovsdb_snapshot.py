"""The configuration in an OVSDB as comparable data, to check that a run followed by its
rollback leaves Open vSwitch as it found it.

    before = ovsdb_snapshot("unix:/tmp/x/db.sock")
    ...  # run, roll back
    assert ovsdb_snapshot("unix:/tmp/x/db.sock") == before

Bridges, ports and interfaces are keyed by name, with the columns a configuration sets (type,
options, tag, external_ids, ...) and their members by name. UUIDs and what ovs-vswitchd
writes (ofport, error, statistics, status) are left out: a bridge or port that was deleted and
recreated with the same configuration compares equal. It reads with plain ovs-vsctl, not with
runflow's own code.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

COLUMNS = {
    "Open_vSwitch": ("bridges", "external_ids", "other_config"),
    "Bridge": ("name", "ports", "datapath_type", "fail_mode", "protocols", "stp_enable",
               "other_config", "external_ids"),
    "Port": ("name", "interfaces", "tag", "trunks", "vlan_mode", "other_config",
             "external_ids"),
    "Interface": ("name", "type", "options", "mtu_request", "other_config", "external_ids"),
}


def _value(value: Any, names: dict[str, str]) -> Any:
    """OVSDB JSON notation as plain data; references as the referenced rows' names."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "map":
            return {k: _value(v, names) for k, v in body}
        if kind == "set":
            return sorted(_value(v, names) for v in body)
        if kind == "uuid":
            return names.get(body, body)
    return value


def ovsdb_snapshot(db: str) -> dict[str, Any]:
    """{"Open_vSwitch": {...}, "Bridge": {name: {...}}, "Port": {...}, "Interface": {...}}"""
    argv = ["ovs-vsctl", f"--db={db}", "--format=json"]
    for table, columns in COLUMNS.items():
        argv += ["--", f"--columns=_uuid,{','.join(columns)}", "list", table]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    tables = dict(zip(COLUMNS, (json.loads(line) for line in out.splitlines() if line)))
    rows = {t: [dict(zip(d["headings"], r)) for r in d["data"]] for t, d in tables.items()}
    names = {r["_uuid"][1]: r["name"] for t in ("Bridge", "Port", "Interface") for r in rows[t]}
    result: dict[str, Any] = {}
    for table, table_rows in rows.items():
        cleaned = [{c: _value(v, names) for c, v in r.items() if c != "_uuid"}
                   for r in table_rows]
        if table == "Open_vSwitch":
            result[table] = cleaned[0] if cleaned else {}
        else:
            result[table] = {r.pop("name"): r for r in cleaned}
    return result


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots, for assertion messages."""
    lines = []
    for table in COLUMNS:
        b, a = before.get(table, {}), after.get(table, {})
        if table == "Open_vSwitch":
            b, a = {".": b}, {".": a}
        for name in sorted(set(b) | set(a)):
            if name not in a:
                lines.append(f"{table} {name}: gone")
            elif name not in b:
                lines.append(f"{table} {name}: new {a[name]}")
            elif a[name] != b[name]:
                for column in sorted(set(a[name]) | set(b[name])):
                    if a[name].get(column) != b[name].get(column):
                        lines.append(f"{table} {name}.{column}: {b[name].get(column)!r} -> "
                                     f"{a[name].get(column)!r}")
    return lines
