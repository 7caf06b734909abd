"""What `runflow actions` shows: every action with its family and backends, and one action's
arguments — names, types, defaults and meaning — read from its argument schema (the `Args`
model and its fields' `description`), so that plugins' actions are described like the
built-ins."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from .actions import Args, Registry
from .errors import InputError

# runflow's own argument types (core/fields.py, the backends' args modules) by their
# validator: what an `Annotated[str, AfterValidator(...)]` means.
_NAMED = {"_ifname": "interface name", "_ip": "IP address", "_interface": "address/prefix",
          "_network": "network/prefix", "_name": "name", "_argv": "argv list",
          "_argv_list": "argv list", "_mac": "MAC address", "_image": "image reference",
          "_path": "absolute path", "_netns": "namespace name", "_chain": "chain name",
          "_sysctl_name": "sysctl name", "_table": "table name", "_record": "record name",
          "_string_map": "table of string"}
_BASIC = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "none"}


def _validator_name(metadata: list[Any]) -> str | None:
    for item in metadata:
        func = getattr(item, "func", None)
        if func is not None and getattr(func, "__module__", "").startswith("runflow."):
            return _NAMED.get(func.__name__)
    return None


def _limits(metadata: list[Any]) -> str:
    """Bounds as ` (68-65535)` or ` (> 0)`."""
    bounds = {attr: getattr(item, attr) for item in metadata for attr in ("ge", "gt", "le", "lt")
              if getattr(item, attr, None) is not None}
    if "ge" in bounds and "le" in bounds:
        return f" ({bounds['ge']}-{bounds['le']})"
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{ops[attr]} {value}" for attr, value in bounds.items()]
    return f" ({', '.join(parts)})" if parts else ""


def _flatten(metadata: list[Any]) -> list[Any]:
    """Metadata with the FieldInfo objects of nested `Annotated[..., Field(...)]` opened."""
    flat = []
    for item in metadata:
        flat.extend(item.metadata if isinstance(item, FieldInfo) else [item])
    return flat


def type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A type as a person reads it: `interface name`, `"up" | "down"`, `integer (68-65535)`,
    `list of string`."""
    metadata = _flatten(metadata or [])
    if get_origin(annotation) is Annotated:
        base, *more = get_args(annotation)
        return type_text(base, [*metadata, *more])
    named = _validator_name(metadata)
    if named:
        return named
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        parts = [type_text(a, metadata) for a in get_args(annotation) if a is not type(None)]
        return " | ".join(dict.fromkeys(parts))
    if origin is Literal:
        return " | ".join(json.dumps(v) for v in get_args(annotation))
    if origin in (list, tuple, set):
        (inner, *_) = get_args(annotation) or (Any,)
        if get_origin(inner) in (Union, types.UnionType):
            return "list"
        return f"list of {type_text(inner)}"
    if origin is dict:
        inner = get_args(annotation)[1] if get_args(annotation) else Any
        if get_origin(inner) in (Union, types.UnionType):
            return "table"
        return f"table of {type_text(inner)}"
    if annotation is typing.Any:
        return "any"
    return _BASIC.get(annotation, getattr(annotation, "__name__", str(annotation))) + \
        _limits(metadata)


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = _default(field)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def arguments(schema: type[Args]) -> list[dict[str, Any]]:
    """Each argument of an action: name, type, whether required, default and meaning."""
    return [{"name": name, "type": type_text(field.annotation, field.metadata),
             "required": field.is_required(),
             "default": None if field.is_required() else _default(field),
             "default_text": default_text(field), "description": field.description or ""}
            for name, field in schema.model_fields.items()]


def listing(registry: Registry) -> list[dict[str, Any]]:
    """Every action: its family, summary and backends (each with the targets it serves)."""
    return [overview(registry, action) for action in registry.names()]


def overview(registry: Registry, action: str) -> dict[str, Any]:
    impls = registry.implementations(action)
    return {
        "action": action,
        "family": ", ".join(dict.fromkeys(r.impl.family for r in impls.values())),
        "summary": next((r.impl.summary for r in impls.values() if r.impl.summary), ""),
        "backends": [{"backend": backend, "targets": list(r.impl.targets), "plugin": r.plugin}
                     for backend, r in impls.items()],
    }


def detail(registry: Registry, action: str) -> dict[str, Any]:
    """One action with its arguments; an unknown action is an input error with suggestions."""
    if not registry.implementations(action):
        close = registry.close_names(action)
        hint = f"; did you mean {' or '.join(close)}?" if close else " (see `runflow actions`)"
        raise InputError(f"unknown action {action!r}{hint}")
    schema = registry.args_schema(action)
    doc = schema.__dict__.get("__doc__") or ""
    return {**overview(registry, action), "description": " ".join(doc.split()),
            "arguments": arguments(schema)}


def backends_text(backends: list[dict[str, Any]]) -> str:
    """`iproute2 (centos6), netlink (modern)`; a backend that names no target serves all."""
    return ", ".join(f"{b['backend']} ({', '.join(b['targets']) or 'every target'})"
                     for b in backends)
