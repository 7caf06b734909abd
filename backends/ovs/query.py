"""Reading a host's OVSDB with a command: `ovsdb-client transact` of select operations
(RFC 7047), for the backends that reach a host only through the commands it runs — the
`ovs-vsctl` backend and pipework (target centos6), which must work over SSH on a CentOS 6 host
where runflow has no socket to talk to (Open vSwitch 1.9's ovsdb-client has `transact`).

A read is one process however many selects it holds (every instance of a for_each step
together), and the server returns only the rows and columns asked for, where `ovs-vsctl find`
would fetch whole tables first (with 500 ports, ~3x the time). The selects of one command are
one transaction, so they see the same database. Commands go through `ctx.run` like every other
command of a step: the journal shows them, and the host decides where they run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError, CommandError

from .args import READ_BACK_COLUMNS, View, from_json
from .endpoint import endpoint_of

DATABASE = "Open_vSwitch"
TIMEOUT = 30  # seconds a read may take
# A transaction travels as one argument, and Linux refuses an argument over 128 KiB (and a
# remote shell's command line is one argument of `sh -c`): larger reads are split.
_ARGUMENT_BUDGET = 64 * 1024

Select = tuple[str, list[Any], Sequence[str]]
"""A select operation: (table, where conditions in RFC 7047 notation, columns)."""


class OvsdbUnreachable(ActionError):
    """The host's ovsdb-server could not be reached (or there is no ovsdb-client)."""


def where_named(name: str) -> list[Any]:
    return [["name", "==", name]]


def where_uuid(uuid: str) -> list[Any]:
    return [["_uuid", "==", ["uuid", uuid]]]


def select(ctx: Context, selects: Sequence[Select]) -> list[list[dict[str, Any]]]:
    """The rows of each (table, where, columns), with their _uuid, values in normal form
    (backends/ovs/args.py). Raises OvsdbUnreachable when the server cannot be reached, and
    ActionError with the server's message when it refuses a select."""
    if not selects:
        return []
    endpoint = endpoint_of(ctx.host)  # explicit: 1.9's ovsdb-client has no default
    ops = [{"op": "select", "table": table, "where": where, "columns": ["_uuid", *columns]}
           for table, where, columns in selects]
    results: list[list[dict[str, Any]]] = []
    for chunk in _chunks(ops):
        argv = ["ovsdb-client", "transact", endpoint,
                json.dumps([DATABASE, *chunk], separators=(",", ":"))]
        try:
            done = ctx.run(argv, timeout=TIMEOUT)
        except CommandError as exc:
            message = f"cannot read OVSDB at {endpoint}: {exc.stderr}"
            if exc.returncode == 127 or "failed to connect" in exc.stderr:
                raise OvsdbUnreachable(f"{message} (is ovsdb-server running, and is the "
                                       "inventory's ovsdb entry right?)") from None
            raise ActionError(message) from None
        results += [_rows(result, endpoint) for result in json.loads(done.stdout)[:len(chunk)]]
    return results


def _chunks(ops: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for op in ops:
        length = len(json.dumps(op, separators=(",", ":")))
        if chunk and size + length > _ARGUMENT_BUDGET:
            yield chunk
            chunk, size = [], 0
        chunk.append(op)
        size += length + 1
    yield chunk


def _rows(result: dict[str, Any], endpoint: str) -> list[dict[str, Any]]:
    if result.get("error"):
        details = f" ({result['details']})" if result.get("details") else ""
        raise ActionError(f"OVSDB at {endpoint} refused a read: {result['error']}{details}")
    return [{c: from_json(v) for c, v in row.items()} for row in result["rows"]]


def interface_problems(ctx: Context, names: Sequence[str], *, whole_table: bool = False
                       ) -> dict[str, str]:
    """What ovs-vswitchd could not set up among these interfaces, by name (read back after a
    change: ovs-vsctl exits 0 all the same). whole_table: read every interface in one select
    rather than one select a name (cheaper for many)."""
    if whole_table:
        rows = select(ctx, [("Interface", [], READ_BACK_COLUMNS)])
    else:
        rows = select(ctx, [("Interface", where_named(n), READ_BACK_COLUMNS) for n in names])
    view = View.from_rows([], [], sum(rows, []))
    return {n: p for n in names if (p := view.problem(n))}

