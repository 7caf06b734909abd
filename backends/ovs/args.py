"""What the two Open vSwitch backends share: the arguments of the ovs.* actions, how OVSDB
values are compared and written, the view of the database the actions observe, and the
changes ("ops") they make.

Both backends (`ovs-vsctl`, with CentOS 6 era commands, and `ovsdb`, ovsdbapp over the OVSDB
protocol) read the database into a `View`, decide a list of ops, and hand the whole list to
their client: one chained ovs-vsctl invocation or one OVSDB transaction. Values are kept in one
normal form whichever way they were read (ovs-vsctl's JSON or the IDL's Python): a map is a
dict, a set of one is its element, any other set (the empty one too) is a list, a UUID is its
string.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import (AfterValidator, BeforeValidator, Field, StrictBool, StrictFloat, StrictInt,
                      StrictStr, model_validator)

from runflow.core.actions import Args
from runflow.core.fields import IfName

RUN_TAG = "runflow-run"
STEP_TAG = "runflow-step"
"""external_ids keys on everything runflow creates: rollback and later tools remove only what
carries the run's id."""

# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
_MAP_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_BARE = re.compile(r"[A-Za-z0-9_.-]+")  # what ovs-vsctl reads unquoted in every position


def text(value: Any) -> str:
    """An atom as OVSDB and ovs-vsctl spell it (true, 10, 10.0.0.2)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def comparable(value: Any) -> Any:
    """The normal form of a value with every atom as text: 10 and "10" compare equal, as
    they do for ovs-vsctl, and a one-element list equals its element."""
    if isinstance(value, dict):
        return {text(k): text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return text(value[0])
        return sorted(text(v) for v in value)
    return text(value)


def same(a: Any, b: Any) -> bool:
    return comparable(a) == comparable(b)


SYSTEM_SYNONYMS = ("datapath_type", "type")  # columns where "" and "system" mean the same
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def same_column(column: str, have: Any, want: Any) -> bool:
    if column in SYSTEM_SYNONYMS:
        return (have or "system") == (want or "system")
    return same(have, want)


def normal(value: Any) -> Any:
    """The normal form of a value read through ovsdbapp's IDL (or given by a user)."""
    if isinstance(value, dict):
        return {normal(k): normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [normal(v) for v in value]
        return items[0] if len(items) == 1 else sorted(items, key=text)
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "uuid"):  # an IDL row referenced from another row
        return str(value.uuid)
    return value


def from_json(value: Any) -> Any:
    """The normal form of a value in OVSDB's JSON notation (ovs-vsctl --format=json)."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "map":
            return {from_json(k): from_json(v) for k, v in body}
        if kind == "set":
            return normal([from_json(v) for v in body])
        if kind in ("uuid", "named-uuid"):
            return body
    return value


def vsctl_atom(value: Any) -> str:
    """An atom in ovs-vsctl's syntax: bare when that is unambiguous, else double-quoted."""
    s = text(value)
    return s if _BARE.fullmatch(s) else json.dumps(s, ensure_ascii=False)


def vsctl_value(value: Any) -> str:
    """A whole column value in ovs-vsctl's syntax: atom, [set] or {map}."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{vsctl_atom(k)}={vsctl_atom(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(vsctl_atom(v) for v in value) + "]"
    return vsctl_atom(value)


def is_empty(value: Any) -> bool:
    """A column at its default: nothing to restore when recreating a record."""
    return value in ([], {}, "", None)


# ---------------------------------------------------------------------------------------------
# Argument schemas (one per action, shared by both backends)
# ---------------------------------------------------------------------------------------------


def _string_map(value: Any) -> Any:
    """Maps such as options and external_ids hold strings in OVSDB; TOML numbers and booleans
    are written as OVS writes them ("4789", "true")."""
    if not isinstance(value, dict):
        return value
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _MAP_KEY.fullmatch(key):
            raise ValueError(f"key {key!r} must be 1-128 letters, digits, '_', '.', ':' or '-'")
        if isinstance(item, (dict, list)):
            raise ValueError(f"{key}: must be a string, number or boolean, not a "
                             f"{'table' if isinstance(item, dict) else 'list'}")
        result[key] = text(item)
    return result


StringMap = Annotated[dict[str, str], BeforeValidator(_string_map)]
DatapathType = Annotated[str, Field(pattern=r"^[a-z0-9_-]{0,32}$")]
PortType = Literal["system", "internal", "tap", "gre", "vxlan", "geneve", "patch"]
TUNNEL_TYPES = ("gre", "vxlan", "geneve")

# Interface options (ovs-vswitchd.conf.db(5)). The tunnel endpoints, keys and port are checked
# for what Open vSwitch takes; any other option's value is a word: ovs-vswitchd would ignore or
# refuse what is not, and a value such as "$(touch x)" must not reach a command line or an
# exported script, even quoted.
_KEY = re.compile(r"0|[1-9][0-9]*|0[xX][0-9a-fA-F]+")  # decimal or hex, as strtoull reads them
_KEY_BITS = {"gre": 32, "vxlan": 24, "geneve": 24}  # others (stt, unknown): 64
_OPTION_WORD = re.compile(r"[A-Za-z0-9_.:,/+=@%-]{1,256}")


def option_problem(key: str, value: str, port_type: str | None = None) -> str | None:
    """What is wrong with the value of Interface option `key` (None: nothing)."""
    if key in ("remote_ip", "local_ip"):
        if value == "flow":
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return f"{value!r} is not an IP address (or \"flow\")"
        if key == "remote_ip" and (ip.is_multicast or ip.is_unspecified):
            return f"{value} is not a unicast address"
        return None
    if key in ("key", "in_key", "out_key"):
        if value == "flow":
            return None
        bits = _KEY_BITS.get(port_type or "", 64)
        if not _KEY.fullmatch(value) or int(value, 0) >= 2 ** bits:
            kind = f"a {port_type} key" if port_type in _KEY_BITS else "a key"
            return f"{value!r} is not {kind}: a number below 2^{bits} (or \"flow\")"
        return None
    if key == "dst_port":
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
            return f"{value!r} is not a port number (1-65535)"
        return None
    if not _OPTION_WORD.fullmatch(value):
        return (f"{value!r} is not an option value: letters, digits and _ . : , / + = @ % - "
                "only")
    return None


def _options_problems(options: dict[str, str], port_type: str | None) -> list[str]:
    return [f"{key}: {problem}" for key, value in options.items()
            if (problem := option_problem(key, value, port_type))]


class OvsBridgeArgs(Args):
    """ovs.bridge.present: the bridge exists with these settings (maps are merged: the keys
    given have these values, other keys are left alone)."""

    name: IfName = Field(description="the Open vSwitch bridge")
    datapath_type: DatapathType | None = Field(
        default=None, description='"netdev" for the userspace datapath, "system" for the kernel '
                                  "module's")
    fail_mode: Literal["standalone", "secure"] | None = Field(
        default=None, description="what the bridge does without a controller")
    other_config: StringMap = Field(default_factory=dict,
                                    description="keys of the bridge's other_config to set")
    external_ids: StringMap = Field(default_factory=dict,
                                    description="keys of the bridge's external_ids to set")


class OvsBridgeAbsentArgs(Args):
    name: IfName = Field(description="the Open vSwitch bridge")


class OvsPortArgs(Args):
    """ovs.port.present: the port is on the bridge with these settings. `type`, `options` and
    `external_ids` are the Interface's (as ovs-docker and neutron keep them), `tag` the Port's.
    Without `type`, an existing port keeps its type and a new one is a system port."""

    bridge: IfName = Field(description="the Open vSwitch bridge the port is on")
    name: IfName = Field(description="the port (and its interface)")
    type: PortType | None = Field(
        default=None, description="the interface's type (default: an existing port keeps its "
                                  "own, a new one is a system port)")
    options: StringMap = Field(default_factory=dict, description=(
        'the interface\'s options, e.g. { remote_ip = "10.0.0.2" } for gre and vxlan, '
        '{ peer = "patch1" } for patch'))
    tag: int | None = Field(default=None, ge=0, le=4095,
                            description="the port's VLAN tag (an access port)")
    external_ids: StringMap = Field(default_factory=dict,
                                    description="keys of the interface's external_ids to set")

    @model_validator(mode="after")
    def _needs_its_options(self) -> OvsPortArgs:
        if self.type in TUNNEL_TYPES and "remote_ip" not in self.options:
            raise ValueError(f"options: a {self.type} port needs options.remote_ip")
        if self.type == "patch" and "peer" not in self.options:
            raise ValueError("options: a patch port needs options.peer (the other patch port)")
        problems = _options_problems(self.options, self.type)
        if problems:
            raise ValueError("options." + "; options.".join(problems))
        return self


class OvsPortAbsentArgs(Args):
    """ovs.port.absent: no port of this name (on `bridge`, when given)."""

    name: IfName = Field(description="the port")
    bridge: IfName | None = Field(default=None,
                                  description="only on this bridge (default: on any bridge)")


TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface", "Flow_Table", "QoS", "Queue",
          "Mirror", "Controller", "Manager", "NetFlow", "SSL", "sFlow", "IPFIX",
          "Flow_Sample_Collector_Set", "AutoAttach", "Datapath", "CT_Zone",
          "CT_Timeout_Policy")
_TABLES_BY_LOWER = {t.lower(): t for t in TABLES}


def _table(value: str) -> str:
    """Table names as ovs-vsctl accepts them in old recipes (`set bridge ...`), spelled as
    the schema does (OVSDB and ovsdbapp are case-sensitive)."""
    try:
        return _TABLES_BY_LOWER[value.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown table {value!r} (tables: {', '.join(TABLES)})") from None


def _record(value: str) -> str:
    if not re.fullmatch(r"\.|[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", value):
        raise ValueError(f"{value!r} is not a record name, UUID or '.'")
    return value


Value = Union[Scalar, list[Scalar], dict[str, Scalar]]


class OvsSetArgs(Args):
    """ovs.set: one column of one record has a value, as `ovs-vsctl set TABLE RECORD
    COLUMN[:KEY]=VALUE` sets it. `column = "options:remote_ip"` sets one key of a map."""

    table: Annotated[str, AfterValidator(_table)] = Field(
        description='the table, e.g. "Bridge" or "Interface" (in any case)')
    record: Annotated[str, AfterValidator(_record)] = Field(
        description='the record: its name, its UUID, or "." for the Open_vSwitch row')
    column: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(:[A-Za-z0-9_.:-]{1,128})?$")] = \
        Field(description='the column, or "column:key" for one key of a map column')
    value: Value = Field(description="a string, number or boolean; a list for a set column, a "
                                     "table for a map")

    @model_validator(mode="after")
    def _fits_the_column(self) -> OvsSetArgs:
        """The value is one the column takes (and a tunnel option's one it allows), checked
        here so that both backends refuse it alike, before anything runs."""
        from .columns import schema_type, typed

        column_type = schema_type(self.table, self.column_name)
        try:
            if column_type is not None:
                typed(column_type, self.value, self.column_name, self.key)
        except ValueError as exc:
            raise ValueError(f"value: {exc}") from None
        if self.table == "Interface" and self.column_name == "options":
            options = {self.key: self.value} if self.key else self.value
            problems = _options_problems({k: text(v) for k, v in options.items()}, None)
            if problems:
                raise ValueError("value: options." + "; options.".join(problems))
        return self

    @property
    def column_name(self) -> str:
        return self.column.partition(":")[0]

    @property
    def key(self) -> str | None:
        return self.column.partition(":")[2] or None


# ---------------------------------------------------------------------------------------------
# The view: the part of the database the actions observe
# ---------------------------------------------------------------------------------------------

BRIDGE_COLUMNS = ("datapath_type", "fail_mode", "protocols", "other_config", "external_ids")
PORT_COLUMNS = ("tag", "trunks", "vlan_mode", "other_config", "external_ids")
INTERFACE_COLUMNS = ("type", "options", "mtu_request", "other_config", "external_ids")
INTERFACE_STATUS = ("ofport", "error")  # written by ovs-vswitchd: read back, never restored
VIEW_COLUMNS = {  # what a View is built from, table by table (besides _uuid)
    "Bridge": ("name", "ports", *BRIDGE_COLUMNS),
    "Port": ("name", "interfaces", *PORT_COLUMNS),
    "Interface": ("name", *INTERFACE_COLUMNS, *INTERFACE_STATUS),
}
READ_BACK_COLUMNS = ("name", "type", "options", *INTERFACE_STATUS)  # what View.problem needs


@dataclass
class View:
    """Bridges, ports and interfaces by name, their columns in normal form. A bridge also
    has "ports" (names), a port "bridge" (name or None) and "interfaces" (names)."""

    bridges: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, bridges: list[dict[str, Any]], ports: list[dict[str, Any]],
                  interfaces: list[dict[str, Any]]) -> View:
        """Build a view from rows whose references ("ports", "interfaces") are UUIDs."""
        iface_names = {r["_uuid"]: r["name"] for r in interfaces}
        port_names = {r["_uuid"]: r["name"] for r in ports}
        view = cls()
        for row in interfaces:
            view.interfaces[row["name"]] = {c: row[c] for c in (*INTERFACE_COLUMNS,
                                                                 *INTERFACE_STATUS) if c in row}
        for row in ports:
            view.ports[row["name"]] = {
                **{c: row[c] for c in PORT_COLUMNS if c in row},
                "bridge": None,
                "interfaces": sorted(iface_names.get(u, u) for u in _uuids(row["interfaces"])),
            }
        for row in bridges:
            names = sorted(port_names[u] for u in _uuids(row["ports"]) if u in port_names)
            view.bridges[row["name"]] = {**{c: row[c] for c in BRIDGE_COLUMNS if c in row},
                                         "ports": names}
            for name in names:
                view.ports[name]["bridge"] = row["name"]
        return view

    def port_record(self, name: str) -> dict[str, Any] | None:
        """A port as undo recreates it: its bridge, its columns, its interface's columns.
        A bond (several interfaces) is marked: runflow does not recreate bonds."""
        port = self.ports.get(name)
        if port is None:
            return None
        record = {"bridge": port["bridge"],
                  "port": {c: port[c] for c in PORT_COLUMNS if c in port},
                  "interface": {}}
        if port["interfaces"] != [name]:
            record["bond"] = port["interfaces"]
        else:
            iface = self.interfaces.get(name, {})
            record["interface"] = {c: iface[c] for c in INTERFACE_COLUMNS if c in iface}
        return record

    def problem(self, name: str) -> str | None:
        """Why ovs-vswitchd could not set up interface `name` (None: it did, or it is gone).

        A patch port whose peer does not exist yet is no problem: its peer may come in a later
        step (ovs-vswitchd says "No usable peer" until then)."""
        iface = self.interfaces.get(name)
        if iface is None:
            return None
        error = iface.get("error") or None
        if iface.get("type") == "patch" and str(error).startswith("No usable peer"):
            return None
        if error or iface.get("ofport") in ([], -1, None):
            return setup_problem(name, error)
        return None


def setup_problem(name: str, error: str | None) -> str:
    """The message of a step whose interface ovs-vswitchd could not set up."""
    if error:
        return f"ovs-vswitchd could not set up {name}: {error}"
    return (f"ovs-vswitchd could not set up {name}: it got no OpenFlow port and "
            "Interface.error is empty (the ovs-vswitchd log says why; a bridge with the 'system' "
            "datapath needs the openvswitch kernel module: use datapath_type = \"netdev\" for "
            "the userspace datapath)")


def _uuids(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------------------------------------
# Ops: the changes an action makes, executed together by a backend's client
# ---------------------------------------------------------------------------------------------

# NamedTuples, like args.py's changes (and for the same reason: a frozen dataclass costs
# ~1 ms to define, in every command that loads this module).


class AddBridge(NamedTuple):
    name: str
    columns: dict[str, Any]  # of the Bridge row


class DelBridge(NamedTuple):
    name: str


class AddPort(NamedTuple):
    bridge: str
    name: str
    port: dict[str, Any]  # columns of the Port row
    interface: dict[str, Any]  # columns of its Interface (same name)


class DelPort(NamedTuple):
    bridge: str | None
    name: str


class SetColumns(NamedTuple):
    """Whole columns: a map given here replaces the map."""

    table: str
    record: str
    columns: dict[str, Any]


class SetKeys(NamedTuple):
    """Some keys of a map column; the other keys stay."""

    table: str
    record: str
    column: str
    values: dict[str, Any]


class RemoveKeys(NamedTuple):
    table: str
    record: str
    column: str
    keys: tuple[str, ...]


Op = Union[AddBridge, DelBridge, AddPort, DelPort, SetColumns, SetKeys, RemoveKeys]


def set_up_interfaces(ops: list[Op]) -> list[str]:
    """The interfaces ovs-vswitchd (re)configures because of these ops: the ones to read back.
    Changing a bridge (its datapath, say) reconfigures the bridge's own interface."""
    names: list[str] = []
    for op in ops:
        if isinstance(op, (AddBridge, AddPort)):
            names.append(op.name)
        elif isinstance(op, (SetColumns, SetKeys, RemoveKeys)) and op.table in ("Bridge",
                                                                              "Interface"):
            names.append(op.record)
    return list(dict.fromkeys(names))


def inserted_interfaces(ops: list[Op]) -> set[str]:
    return {op.name for op in ops if isinstance(op, (AddBridge, AddPort))}
