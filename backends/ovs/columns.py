"""OVSDB column types, and a workflow's value made into the value a column holds.

`ovs.set` may name any column of any table, so its value is checked against the column's type
before anything runs: a map column takes a table, a number column a number, an enum one of its
words, a ranged one a value in its range. The checks of ranges, enums and sizes are
python-ovs's own (ovs.db.data, the constraints ovsdb-server enforces), so both backends refuse a
bad value the same way, before either touches the host. The types are those of Open vSwitch
3.1's schema (columns.json); a column that schema does not have (a later release's) is left to
the host's database. The ovsdb backend types its writes with the same function and the host's
own schema, read from its connection.

python-ovs is imported only when a column is typed (some 90 ms): for an `ovs.set` step, or by
the ovsdb backend, which has loaded it anyway.
"""

from __future__ import annotations

import json
import uuid
from functools import cache
from importlib import resources
from typing import Any

from .args import text


@cache
def _tables() -> dict[str, dict[str, Any]]:
    return json.loads(resources.files(__package__).joinpath("columns.json").read_text())["tables"]


def schema_type(table: str, column: str) -> Any | None:
    """The python-ovs type (ovs.db.types.Type) of a column of Open vSwitch 3.1's schema, or
    None when that schema has no such column."""
    spec = _tables().get(table, {}).get(column)
    if spec is None:
        return None
    import ovs.db.types

    return ovs.db.types.Type.from_json(spec)


def typed(type_: Any, value: Any, column: str, key: str | None = None) -> Any:
    """value as a column of type `type_` holds it, in python-ovs's Python form (a dict for a
    map, a list for a set, an atom for a column of exactly one); with `key`, value is what
    that key of a map column holds. Raises ValueError saying what the column takes."""
    import ovs.db.data
    import ovs.db.error

    if key is not None:
        if not type_.is_map():
            raise ValueError(f"{column} is not a map column, so {column}:{key} names nothing: "
                             f"set the whole column (column = \"{column}\")")
        value = {key: value}
    if type_.is_map():
        if value == []:  # an empty column, as values read back may spell it
            value = {}
        if not isinstance(value, dict):
            raise ValueError(f"{column} is a map column: give a table (value = {{ key = "
                             f"\"...\" }}) or set one key (column = \"{column}:KEY\")")
        result: Any = {_atom(type_.key, k, column): _atom(type_.value, v, column)
                       for k, v in value.items()}
    elif isinstance(value, dict):
        raise ValueError(f"{column} is not a map column: give {_takes(type_)}, not a table")
    else:
        values = value if isinstance(value, list) else [value]
        result = [_atom(type_.key, v, column) for v in values]
        if type_.is_scalar():  # exactly one value: the atom itself
            if len(result) != 1:
                raise ValueError(f"{column} takes {_takes(type_)}, not a list")
            result = result[0]
    try:
        ovs.db.data.Datum.from_python(type_, result, lambda atom: atom)
    except ovs.db.error.Error as exc:
        raise ValueError(f"{column}: {exc}") from None
    return result


_KINDS = {"integer": "an integer", "real": "a number", "boolean": "true or false",
          "uuid": "a UUID", "string": "a string"}


def _takes(type_: Any) -> str:
    one = _KINDS[type_.key.type.to_string()]
    if type_.is_scalar():
        return one
    return f"{one} (or [] for none)" if type_.is_optional() else f"{one} or a list of them"


def _atom(base: Any, value: Any, column: str) -> Any:
    """One atom as python-ovs holds it. Text is accepted for any kind, as ovs-vsctl reads it
    ("10" for an integer); a workflow's true is not 1."""
    kind = base.type.to_string()
    word = text(value)
    try:
        if kind == "integer":
            if isinstance(value, bool) or not word.lstrip("-").isdigit():
                raise ValueError
            return int(word)
        if kind == "real":
            if isinstance(value, bool):
                raise ValueError
            return float(word)
        if kind == "boolean":
            if word not in ("true", "false"):
                raise ValueError
            return word == "true"
        if kind == "uuid":
            return uuid.UUID(word)
    except ValueError:
        raise ValueError(f"{column}: {word!r} is not {_KINDS[kind]}") from None
    return word
