"""Reading a host's OVSDB in-process: a small client of the OVSDB protocol (RFC 7047, JSON-RPC
over a unix or TCP socket), which ovsdb-server speaks since Open vSwitch 1.x (CentOS 6 has 1.9).

The ovs-vsctl backend and the pipework backend read through it, where starting `ovs-vsctl` or
`ovsdb-client` for each read would cost a process each time (ovs-vsctl also fetches whole
tables before it looks at one row). They still write with ovs-vsctl, so that what they run is
what `runflow plan` and `runflow export` show. A read is one "transact" request of "select"
operations: the server returns only the rows and columns asked for.

One connection per run and host (`connection(ctx)`): it is opened by the first read, in the
host's worker thread, so a TCP endpoint is reached from inside the host's network namespace,
and closed with the run's other resources.
"""

from __future__ import annotations

import codecs
import json
import os
import socket
from collections.abc import Sequence
from typing import Any, NoReturn

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from .args import from_json

DATABASE = "Open_vSwitch"
TIMEOUT = 30  # seconds: for connecting, and for each answer
_CHUNK = 65536

Select = tuple[str, list[Any], Sequence[str]]
"""A select operation: (table, where conditions in RFC 7047 notation, columns)."""


def default_endpoint() -> str:
    """The database ovs-vsctl and ovsdb-client use when they are given none."""
    return f"unix:{os.environ.get('OVS_RUNDIR', '/var/run/openvswitch')}/db.sock"


def endpoint_of(host: Host) -> str:
    """The host's OVSDB: the inventory's `ovsdb` entry, or the default socket."""
    return host.endpoints.get("ovsdb") or default_endpoint()


def connection(ctx: Context) -> OvsdbWire:
    """The connection to the host's OVSDB for this run (opened on first use)."""
    endpoint = endpoint_of(ctx.host)
    return ctx.resources.get(f"ovsdb-wire:{endpoint}", lambda: OvsdbWire(endpoint))


def where_named(name: str) -> list[Any]:
    return [["name", "==", name]]


def where_uuid(uuid: str) -> list[Any]:
    return [["_uuid", "==", ["uuid", uuid]]]


def where_includes(column: str, uuid: str) -> list[Any]:
    """Rows whose set column holds a reference to the row with this UUID."""
    return [[column, "includes", ["uuid", uuid]]]


def _connect(endpoint: str, timeout: float) -> socket.socket:
    kind, _, address = endpoint.partition(":")
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            return sock
        if kind == "tcp":
            host, _, port = address.rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ActionError(f"cannot reach OVSDB at {endpoint}: {why} (is ovsdb-server running, "
                          "and is the inventory's ovsdb entry right?)") from None
    raise ActionError(f"cannot read OVSDB at {endpoint}: runflow reads through unix:PATH or "
                      "tcp:HOST:PORT endpoints (the inventory's ovsdb entry)")


class OvsdbWire:
    """One JSON-RPC connection to an ovsdb-server. Requests are answered in order, one at a
    time: the client sends one request and reads until its response arrives."""

    def __init__(self, endpoint: str, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock: socket.socket | None = _connect(endpoint, timeout)
        self._text = ""  # received, not yet decoded into messages
        self._utf8 = codecs.getincrementaldecoder("utf-8")()  # a character may span two reads
        self._decoder = json.JSONDecoder()
        self._last_id = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def select(self, selects: Sequence[Select]) -> list[list[dict[str, Any]]]:
        """The rows of each (table, where, columns), with their _uuid, values in normal form
        (backends/ovs/args.py), all read in one transaction."""
        ops = [{"op": "select", "table": table, "where": where, "columns": ["_uuid", *columns]}
               for table, where, columns in selects]
        return [[{c: from_json(v) for c, v in row.items()} for row in result["rows"]]
                for result in self.transact(ops)]

    def holders(self, table: str, column: str, rows: Sequence[dict[str, Any]]
                ) -> list[dict[str, Any] | None]:
        """For each row, the row of `table` whose set `column` refers to it (with its name),
        or None: which bridge holds a port, which port an interface."""
        if not rows:
            return []
        found = self.select([(table, where_includes(column, r["_uuid"]), ["name"]) for r in rows])
        return [held_by[0] if held_by else None for held_by in found]

    def transact(self, ops: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The results of ops, run as one transaction on the Open_vSwitch database; the
        first failed op raises ActionError with the server's message."""
        results = self.call("transact", [DATABASE, *ops])
        for result in results:
            if isinstance(result, dict) and result.get("error"):
                details = f" ({result['details']})" if result.get("details") else ""
                raise ActionError(f"OVSDB at {self.endpoint} refused a read: "
                                  f"{result['error']}{details}")
        return results[:len(ops)]

    def call(self, method: str, params: list[Any]) -> Any:
        """Send one request and return its result."""
        if self._sock is None:
            raise ActionError(f"the connection to OVSDB at {self.endpoint} is closed")
        self._last_id += 1
        request = self._last_id
        self._send({"method": method, "params": params, "id": request})
        while True:
            message = self._receive()
            if message.get("method") == "echo":  # the server checks that the client is alive
                self._send({"result": message.get("params"), "error": None,
                            "id": message.get("id")})
            elif message.get("id") == request and "method" not in message:
                if message.get("error") is not None:
                    raise ActionError(f"OVSDB at {self.endpoint} answered {method} with an "
                                      f"error: {message['error']}")
                return message["result"]
            # Anything else is a notification: this client asks for none, so it is ignored.

    def _send(self, message: dict[str, Any]) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(json.dumps(message, separators=(",", ":")).encode())
        except OSError as exc:
            self._fail(f"lost the connection to OVSDB at {self.endpoint}: {exc}")

    def _receive(self) -> dict[str, Any]:
        """The next message. ovsdb-server sends bare JSON objects one after the other, so a
        message is complete once the text received so far decodes as one."""
        assert self._sock is not None
        while True:
            text = self._text.lstrip()
            if text.endswith("}"):  # a message (or a part of one) ends here
                try:
                    message, end = self._decoder.raw_decode(text)
                except json.JSONDecodeError:
                    pass  # a row or value ended, not the whole message: read on
                else:
                    self._text = text[end:]
                    return message
            try:
                chunk = self._sock.recv(_CHUNK)
            except TimeoutError:
                self._fail(f"OVSDB at {self.endpoint} did not answer within {self.timeout:g} s")
            except OSError as exc:
                self._fail(f"lost the connection to OVSDB at {self.endpoint}: {exc}")
            if not chunk:
                self._fail(f"OVSDB at {self.endpoint} closed the connection")
            self._text += self._utf8.decode(chunk)

    def _fail(self, message: str) -> NoReturn:
        """A connection in an unknown state is not used again: close it, then raise."""
        self.close()
        raise ActionError(message)
