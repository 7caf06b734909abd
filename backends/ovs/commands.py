"""ovs-vsctl command lines: the ops of the ovs.* actions as ovs-vsctl commands — what the
`ovs-vsctl` backend runs, what both backends show in `runflow plan` and the journal — and the
shell forms of the actions for `runflow export` (a POSIX sh script with the same steps, for
hosts without Python 3: it checks with `find` conditions, written like `set` values so that they
compare as ovs-vsctl compares them, saves old values with `get`, whose output `set` takes back,
and reads back Interface.error and ofport after a change, as a run does).

Only commands Open vSwitch 1.9 (CentOS 6) has are used: add-br, del-br, add-port, del-port,
set, remove, get, find, br-exists, port-to-br, list-ports, with --if-exists and --may-exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runflow.core.actions import sh
from runflow.core.export import command, value_of

from .args import (BRIDGE_COLUMNS, RUN_TAG, SYSTEM_SYNONYMS, AddBridge, AddPort, DelBridge,
                   DelPort, Op, RemoveKeys, SetColumns, SetKeys, setup_problem, vsctl_atom,
                   vsctl_value)

TIMEOUT = 30  # seconds ovs-vsctl waits for ovsdb-server and ovs-vswitchd


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


def vsctl_argv(db: str | None, commands: Sequence[Sequence[str]]) -> list[str]:
    """One ovs-vsctl invocation running commands in one transaction (--db: the host's
    database when the inventory names one)."""
    argv = ["ovs-vsctl", f"--timeout={TIMEOUT}", *([f"--db={db}"] if db else [])]
    for words in commands:
        argv += ["--", *words]
    return argv


# ---------------------------------------------------------------------------------------------
# Shell forms (`runflow export`)
# ---------------------------------------------------------------------------------------------

EXPORT_RUN = "export"
"""runflow-run in what an exported script creates: a script has no run id. (runflow-step is
the step's id, as in a run.) Its undo removes only what carries this tag."""

# Columns a recreated port or bridge gets back. Those of later Open vSwitch releases than
# CentOS 6's (Bridge.protocols, Interface.mtu_request) are left out: `get` would fail there.
NAMED_TABLES = ("Bridge", "Port", "Interface", "Mirror", "Flow_Table")  # records by name
SHELL_COLUMNS = {
    "Bridge": tuple(c for c in BRIDGE_COLUMNS if c != "protocols"),
    "Port": ("tag", "trunks", "vlan_mode", "other_config", "external_ids"),
    "Interface": ("type", "options", "other_config", "external_ids"),
}
# Words of a saved command list are one per line: a value in ovs-vsctl's syntax never holds a
# raw newline, so splitting on newlines alone (and no globbing) gives back the exact words.
NEWLINE_WORDS = "IFS=$(printf '\\n_'); IFS=${IFS%_}; set -f"


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


def conditions(columns: dict[str, Any], keys: dict[str, dict[str, Any]]
                ) -> list[list[str]]:
    """`find` conditions that hold when the columns and map keys have these values, one list
    per spelling ("" and "system" mean the same type or datapath)."""
    words = [f"{c}:{vsctl_atom(k)}={vsctl_atom(v)}" for c, values in keys.items()
             for k, v in values.items()]
    variants = [words]
    for column, value in columns.items():
        spellings = ["", "system"] if column in SYSTEM_SYNONYMS and (value or "system") == \
            "system" else [value]
        variants = [[*w, f"{column}={vsctl_value(s)}"] for w in variants for s in spellings]
    return variants


def shell_holds(db: str | None, table: str, name: str, columns: dict[str, Any],
                keys: dict[str, dict[str, Any]]) -> str:
    """A condition: the record named `name` exists with these columns and keys."""
    finds = [shell_found(db, [table, f"name={vsctl_atom(name)}", *words])
             for words in conditions(columns, keys)]
    return finds[0] if len(finds) == 1 else "{ " + " || ".join(finds) + "; }"


def shell_found(db: str | None, find: Sequence[str]) -> str:
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
        columns = [c for c in SHELL_COLUMNS[table] if bridge or c != "type"]
        lines.append(f"printf '%s\\n' -- {command(first)}")
        lines.append(f"{vsctl(db, 'get', table, port, *columns)} | "
                     f"awk -v c={sh(' '.join(columns))} "
                     "'BEGIN { split(c, name, \" \") } { print name[NR] \"=\" $0 }'")
    return "{ " + "; ".join(lines) + "; }"

