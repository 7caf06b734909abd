"""Whole records: what a removal destroys, recorded when it is observed, and the ops that make
it again on undo, with every column that can be set.

ovs.bridge.absent, ovs.port.absent and ovs.bond.absent record the rows the removal destroys
and what goes with them:
- a bridge: its Ports and their Interfaces, its Mirrors, NetFlow, sFlow, IPFIX, Controllers,
  Flow_Tables and AutoAttach row, which ovsdb-server deletes with it;
- a port (a fake bridge's ports too): its Interfaces (several for a bond), and which Mirrors
  of its bridge select it or output to it (those references are weak: they go with the port);
- the QoS rows its ports use and their Queues: rows of root tables, which stay when the port
  goes; undo refers to them again, and makes them again only if they are gone too.

A record is nested and has no UUIDs: a row's references to what goes with it hold those rows
(a bridge's "ports" holds its ports' records), a mirror's references to ports hold the ports'
names, and a QoS or Queue record keeps its _uuid only to be found again. So a record observed
after undo equals the one observed before, and the journal shows what will come back.

Columns ovs-vswitchd writes (STATUS: statistics, status, ofport, link_state, error, mtu...) are
left out: they are not configuration, and no one can set them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from runflow.core.actions import Context, State

from . import ipstate
from .args import UUID, Create, Insert, Op, Ref, SetColumns, is_empty, text
from .columns import scalar_default

STATUS: dict[str, tuple[str, ...]] = {
    "Bridge": ("datapath_id", "datapath_version", "status", "rstp_status"),
    "Port": ("bond_active_slave", "status", "statistics", "rstp_status", "rstp_statistics"),
    "Interface": ("admin_state", "bfd_status", "cfm_fault", "cfm_fault_status", "cfm_flap_count",
                  "cfm_health", "cfm_remote_mpids", "cfm_remote_opstate", "duplex", "error",
                  "ifindex", "lacp_current", "link_resets", "link_speed", "link_state",
                  "mac_in_use", "mtu", "ofport", "statistics", "status"),
    "Mirror": ("statistics",),
    "Controller": ("is_connected", "role", "status"),
}
"""Columns ovs-vswitchd writes, by table: never recorded nor restored."""

OWN, SHARED, NAMES = "own", "shared", "names"


class Reference(NamedTuple):
    table: str  # the table referred to
    kind: str  # OWN: rows that go with the row referring to them, made again with it;
    #            SHARED: rows of a root table, which stay: found by _uuid, made again if gone;
    #            NAMES: weak references to the bridge's ports, recorded as the ports' names
    keyed: bool = False  # a map column, whose values are the references


REFERENCES: dict[str, dict[str, Reference]] = {
    "Bridge": {"ports": Reference("Port", OWN), "mirrors": Reference("Mirror", OWN),
               "netflow": Reference("NetFlow", OWN), "sflow": Reference("sFlow", OWN),
               "ipfix": Reference("IPFIX", OWN), "controller": Reference("Controller", OWN),
               "flow_tables": Reference("Flow_Table", OWN, keyed=True),
               "auto_attach": Reference("AutoAttach", OWN)},
    "Port": {"interfaces": Reference("Interface", OWN), "qos": Reference("QoS", SHARED)},
    "QoS": {"queues": Reference("Queue", SHARED, keyed=True)},
    "Mirror": {"select_src_port": Reference("Port", NAMES),
               "select_dst_port": Reference("Port", NAMES),
               "output_port": Reference("Port", NAMES)},
}
"""The references a record follows, table by table (all those of these tables in Open vSwitch
3.1's schema)."""

Select = tuple[str, "str | None", Any]
"""(table, column, value): the rows whose column has the value; column None: every row."""


class RowSource(Protocol):
    def rows(self, ctx: Context, selects: Sequence[Select]) -> list[list[dict[str, Any]]]:
        """For each select, its rows with every column, in normal form, with _uuid."""


def references(value: Any, keyed: bool = False) -> list[str]:
    """The UUIDs in a reference column's value (normal form)."""
    if keyed:
        return list((value or {}).values()) if isinstance(value, dict) else []
    if isinstance(value, list):
        return value
    return [value] if value else []


class Rows:
    """Rows read whole through a backend's client, remembered by UUID, and made into records."""

    def __init__(self, source: RowSource, ctx: Context) -> None:
        self.source = source
        self.ctx = ctx
        self.by_uuid: dict[str, tuple[str, dict[str, Any]]] = {}

    def read(self, selects: Sequence[Select]) -> list[list[dict[str, Any]]]:
        results = self.source.rows(self.ctx, selects) if selects else []
        for (table, _, _), found in zip(selects, results):
            for row in found:
                self.by_uuid[row["_uuid"]] = (table, row)
        return results

    def follow(self, rows: Iterable[tuple[str, dict[str, Any]]],
               also: Iterable[tuple[str, str]] = ()) -> None:
        """Read what these rows refer to (but ports by name), and what that refers to: one
        read a level at most (a bridge's mirrors and a port's QoS, then the QoS's queues).
        also: (table, _uuid) of more rows to read with the first level."""
        level = [(table, row["_uuid"]) for table, row in rows]
        extra = list(also)
        seen: set[str] = set()
        while level or extra:
            referred = extra + [(ref.table, u) for table, uuid in level if uuid not in seen
                                for column, ref in REFERENCES.get(table, {}).items()
                                if ref.kind != NAMES
                                for u in references(self.by_uuid[uuid][1].get(column),
                                                    ref.keyed)]
            seen.update(uuid for _, uuid in level)
            unread = {u: table for table, u in referred if u not in self.by_uuid}
            self.read([(table, "_uuid", u) for u, table in unread.items()])
            level = [(table, u) for table, u in referred if u in self.by_uuid and u not in seen]
            extra = []

    def record(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """The row's record: its settable columns that are not empty, with what it refers to
        in place of the references."""
        node: dict[str, Any] = {}
        for column in sorted(row):
            value = row[column]
            if column.startswith("_") or column in STATUS.get(table, ()):  # _uuid, _version
                continue
            ref = REFERENCES.get(table, {}).get(column)
            if ref is not None:
                value = self._referred(ref, value)
            elif isinstance(value, dict):
                value = {text(k): v for k, v in value.items()}  # JSON keys: numbers as text
            if not is_empty(value) and value != scalar_default(table, column):
                node[column] = value
        return node

    def _referred(self, ref: Reference, value: Any) -> Any:
        if ref.kind == NAMES:
            return sorted(self.by_uuid[u][1]["name"] for u in references(value)
                          if u in self.by_uuid)
        if ref.keyed:
            return {text(k): self._child(ref, u) for k, u in (value or {}).items()
                    if u in self.by_uuid}
        return sorted((self._child(ref, u) for u in references(value) if u in self.by_uuid),
                      key=_order)

    def _child(self, ref: Reference, uuid: str) -> dict[str, Any]:
        node = self.record(ref.table, self.by_uuid[uuid][1])
        return {"_uuid": uuid, **node} if ref.kind == SHARED else node


def _order(node: dict[str, Any]) -> tuple[str, str]:
    return (str(node.get("name", node.get("target", ""))), json.dumps(node, sort_keys=True))


def shared_rows(table: str, node: dict[str, Any]) -> list[tuple[str, str]]:
    """The (table, _uuid) of the rows of root tables a record refers to (QoS, Queue): undo
    needs to know which of them still exist."""
    found: list[tuple[str, str]] = []

    def walk(table: str, node: dict[str, Any]) -> None:
        for column, ref in REFERENCES.get(table, {}).items():
            value = node.get(column)
            if ref.kind == NAMES or not value:
                continue
            for child in value.values() if ref.keyed else value:
                if ref.kind == SHARED:
                    found.append((ref.table, child["_uuid"]))
                walk(ref.table, child)

    walk(table, node)
    return found


class Recreation:
    """The ops that make recorded rows again, in one transaction: each row a Create, children
    before the row that refers to them; rows of root tables that still exist (`existing`, by
    _uuid) are referred to, not made again."""

    def __init__(self, existing: Iterable[str] = ()) -> None:
        self.ops: list[Op] = []
        self.existing = set(existing)
        self.ports: dict[str, Ref] = {}  # the ports made so far, by name (mirrors refer to them)

    def create(self, table: str, node: dict[str, Any], path: str) -> Ref:
        """Make the row of a record (and what goes with it); its Ref."""
        columns: dict[str, Any] = {}
        refs = REFERENCES.get(table, {})

        def ports_first(column: str) -> tuple[bool, str]:  # mirrors refer to them by name
            return refs[column].table != "Port" if column in refs else True, column

        for column in sorted(node, key=ports_first):
            value, ref = node[column], refs.get(column)
            if column == "_uuid":
                continue
            if ref is None:
                columns[column] = value
            elif ref.kind == NAMES:
                columns[column] = [self.ports[n] for n in value if n in self.ports]
            elif ref.keyed:
                columns[column] = {k: self._child(ref, child, f"{path}/{column}/{k}")
                                   for k, child in value.items()}
            else:
                columns[column] = [self._child(ref, child, f"{path}/{column}/{i}")
                                   for i, child in enumerate(value)]
        made = Ref(path)
        self.ops.append(Create(table, made, columns))
        if table == "Port":
            self.ports[node["name"]] = made
        return made

    def _child(self, ref: Reference, node: dict[str, Any], path: str) -> Ref | str:
        if ref.kind == SHARED and node["_uuid"] in self.existing:
            return node["_uuid"]
        return self.create(ref.table, node, path)

    def whole_bridge(self, node: dict[str, Any]) -> list[Op]:
        """A bridge and everything recorded with it, in the Open_vSwitch row's bridges."""
        made = self.create("Bridge", node, node["name"])
        self.ops.append(Insert("Open_vSwitch", ".", "bridges", (made,)))
        return self.ops

    def ports_on(self, bridge: str, nodes: Sequence[dict[str, Any]],
                 mirrors: dict[str, dict[str, list[str]]]) -> list[Op]:
        """Ports on an existing bridge, and the references existing mirrors (by name or _uuid,
        those among `existing`) had to them."""
        made = tuple(self.create("Port", node, f"{bridge}/{node['name']}") for node in nodes)
        self.ops.append(Insert("Bridge", bridge, "ports", made))
        for mirror, columns in mirrors.items():
            if mirror not in self.existing:
                continue
            for column, names in columns.items():
                refs = tuple(self.ports[n] for n in names if n in self.ports)
                if column == "output_port":
                    self.ops.append(SetColumns("Mirror", mirror, {column: list(refs)}))
                elif refs:
                    self.ops.append(Insert("Mirror", mirror, column, refs))
        return self.ops


# ---------------------------------------------------------------------------------------------
# What the removals record
# ---------------------------------------------------------------------------------------------


def bridges_removal(source: RowSource, ctx: Context, names: Sequence[str]) -> list[State]:
    """For each name, what removing that bridge destroys: {"exists": False}, or for a bridge
    {"exists": True, "bridge": record}, or for a fake bridge {"exists": True, "parent": ...,
    "ports": [records], "mirrors": ...} (its port and the parent's ports with its VLAN tag, as
    `ovs-vsctl del-br` removes them)."""
    rows = Rows(source, ctx)
    bridges, ports, _ = rows.read([("Bridge", None, None), ("Port", None, None),
                                   ("Interface", None, None)])
    bridge_named = {row["name"]: row for row in bridges}
    port_named = {row["name"]: row for row in ports}
    holder = {u: row for row in bridges for u in references(row["ports"])}
    plans: list[tuple[str, Any]] = []
    for name in names:
        if name in bridge_named:
            plans.append(("bridge", bridge_named[name]))
        elif port_named.get(name, {}).get("fake_bridge") is True and \
                port_named[name]["_uuid"] in holder:
            fake = port_named[name]
            parent = holder[fake["_uuid"]]
            members = [fake] + [p for p in ports if holder.get(p["_uuid"]) is parent
                                and p is not fake and p.get("fake_bridge") is not True
                                and p.get("tag") == fake.get("tag")]
            plans.append(("fake", (parent, members)))
        else:
            plans.append(("none", None))
    rows.follow([("Bridge", row) for kind, row in plans if kind == "bridge"] +
                [("Port", p) for kind, plan in plans if kind == "fake" for p in plan[1]],
                [("Mirror", u) for kind, plan in plans if kind == "fake"
                 for u in references(plan[0].get("mirrors"))])
    states: list[State] = []
    for kind, plan in plans:
        if kind == "bridge":
            states.append({"exists": True, "bridge": rows.record("Bridge", plan)})
        elif kind == "fake":
            parent, members = plan
            states.append({"exists": True, "parent": parent["name"],
                           **_ports_record(rows, parent, members)})
        else:
            states.append({"exists": False})
    return _with_links(ctx, states)


def ports_removal(source: RowSource, ctx: Context, names: Sequence[str]) -> list[State]:
    """For each port name, what removing the port destroys: {"exists": False}, or
    {"exists": True, "bridge": its bridge, "ports": [its record], "mirrors": {mirror _uuid:
    {column: [port names]}} (the references to it of its bridge's mirrors)}."""
    rows = Rows(source, ctx)
    bridges, *named = rows.read([("Bridge", None, None),
                                 *(("Port", "name", n) for n in names),
                                 *(("Interface", "name", n) for n in names)])
    holder = {u: row for row in bridges for u in references(row["ports"])}
    found = [next(iter(r), None) for r in named[:len(names)]]
    ports = [p for p in found if p is not None and p["_uuid"] in holder]
    rows.follow([("Port", p) for p in ports],
                [("Mirror", u) for p in ports
                 for u in references(holder[p["_uuid"]].get("mirrors"))])
    return _with_links(ctx, [
        {"exists": True, "bridge": holder[p["_uuid"]]["name"],
         **_ports_record(rows, holder[p["_uuid"]], [p])}
        if p is not None and p["_uuid"] in holder else {"exists": False} for p in found])


def _ports_record(rows: Rows, bridge: dict[str, Any], ports: Sequence[dict[str, Any]]
                  ) -> State:
    """The records of ports of a bridge, and its mirrors' references to them (a mirror by
    its name, which it keeps if its bridge is made again, else by its UUID)."""
    uuids = {p["_uuid"]: p["name"] for p in ports}
    mirrors: dict[str, dict[str, list[str]]] = {}
    for u in references(bridge.get("mirrors")):
        mirror = rows.by_uuid.get(u, ("", {}))[1]
        for column in ("select_src_port", "select_dst_port", "output_port"):
            names = sorted(uuids[p] for p in references(mirror.get(column)) if p in uuids)
            if names:
                mirrors.setdefault(mirror.get("name") or u, {})[column] = names
    return {"ports": sorted((rows.record("Port", p) for p in ports), key=_order),
            "mirrors": mirrors}


def _with_links(ctx: Context, states: list[State]) -> list[State]:
    """The states, each with the Linux side of its internal interfaces ("links"), read in
    one go (backends/ovs/ipstate.py)."""
    internal = [[i["name"] for p in _port_records(state) for i in p.get("interfaces", [])
                 if i.get("type") == "internal"] for state in states]
    links = ipstate.read(ctx, [n for names in internal for n in names])
    for state, names in zip(states, internal):
        mine = {n: links[n] for n in names if n in links}
        if mine:
            state["links"] = mine
    return states


def _port_records(state: State) -> list[dict[str, Any]]:
    if "bridge" in state and isinstance(state["bridge"], dict):
        return state["bridge"].get("ports", [])
    return state.get("ports", [])


def removal_ops(state: State, existing: Iterable[str]) -> list[Op]:
    """The ops that make again what a removal destroyed (a state of bridges_removal or
    ports_removal), in one transaction."""
    again = Recreation(existing)
    if isinstance(state.get("bridge"), dict):
        return again.whole_bridge(state["bridge"])
    return again.ports_on(state.get("parent") or state["bridge"], state["ports"],
                          state.get("mirrors", {}))


def removal_lookups(state: State) -> list[Select]:
    """The rows outside the record that its recreation refers to, whose existence undo must
    check: QoS and Queue rows (by _uuid), and the mirrors that referred to ports (by name or
    _uuid). Undo gives restore the names and UUIDs of those that exist."""
    if not state.get("exists"):
        return []
    if isinstance(state.get("bridge"), dict):
        pairs = shared_rows("Bridge", state["bridge"])
    else:
        pairs = [pair for port in state.get("ports", []) for pair in shared_rows("Port", port)]
    found: list[Select] = [(table, "_uuid", u) for table, u in pairs]
    return found + [("Mirror", "_uuid" if UUID.fullmatch(key) else "name", key)
                    for key in state.get("mirrors", {})]


def upgraded(state: State, name: str) -> State:
    """A removal's state as this runflow records it, from the form an older one journaled
    (a bridge's columns and {port: {"bridge", "port", "interface"}}; a port's "port" and
    "interface" columns), so that its runs can still be rolled back."""
    def port(port_name: str, old: dict[str, Any]) -> dict[str, Any]:
        return {**old.get("port", {}), "name": port_name,
                "interfaces": [{**old.get("interface", {}), "name": port_name}]}

    if not state.get("exists"):
        return state
    if isinstance(state.get("ports"), dict):  # ovs.bridge.absent
        return {**state, "bridge": {**state["bridge"], "name": name,
                                    "ports": [port(p, old) for p, old in state["ports"].items()]}}
    if "port" in state:  # ovs.port.absent
        return {"exists": True, "bridge": state["bridge"], "ports": [port(name, state)],
                "mirrors": {}}
    return state
