"""`{{ var }}` templates, `when` conditions and `for_each` expressions.

Jinja2's sandbox with StrictUndefined: a template cannot call into Python, and an undefined
variable is an error, never an empty string. A value that is exactly one `{{ expression }}`
keeps the expression's type (a list stays a list, 1500 stays an int), so `mtu = "{{ mtu }}"`
and `for_each = "{{ ports }}"` work as expected.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from . import arithmetic

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}).)*)\}\}$", re.DOTALL)

# Plain text and `{{ expression }}`s ("va{{ item }}", "10.0.{{ item // 250 }}.1/24"), as most
# templates are: core/arithmetic.py fills them in as Jinja2 would, or declines. Other syntax —
# braces in the text, whitespace control ({{- and -}}), \r (which Jinja2 turns into \n) — goes
# to Jinja2.
_TEXT_PART = re.compile(r"([^{}\r]*)\{\{(?![-+])([^{}]*?)(?<![-+])\}\}")
_PLAIN = re.compile(r"[^{}\r]*")


class TemplateProblem(ValueError):
    """A template or expression that cannot be evaluated; the message says why."""


@lru_cache(maxsize=1)
def _env() -> Any:
    # Imported on first use: a workflow without templates never pays for Jinja2.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def _errors() -> tuple[type[Exception], ...]:
    from jinja2 import TemplateError

    return (TemplateError, TypeError, ValueError, ArithmeticError)


@lru_cache(maxsize=4096)
def _template(text: str) -> Any:
    return _env().from_string(text)


@lru_cache(maxsize=4096)
def _expression(text: str) -> Any:
    return _env().compile_expression(text, undefined_to_none=False)


def _explain(exc: Exception) -> str:
    from jinja2 import UndefinedError

    if isinstance(exc, UndefinedError):
        return f"undefined variable: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a bare expression such as `ovs_datapath == 'netdev'` or `range(1, 201)`."""
    try:
        return arithmetic.evaluate(expression, variables)
    except arithmetic.Unsupported:
        pass
    try:
        value = _expression(expression)(**variables)
    except _errors() as exc:
        raise TemplateProblem(f"cannot evaluate {expression!r}: {_explain(exc)}") from None
    if hasattr(value, "_undefined_name"):
        raise TemplateProblem(f"cannot evaluate {expression!r}: undefined variable "
                              f"{value._undefined_name!r}")
    return value


def render(value: Any, variables: dict[str, Any]) -> Any:
    """Render the templates in a value (strings, and the strings inside lists and tables)."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        single = _SINGLE_EXPRESSION.match(value.strip())
        if single:  # the whole value: keeps its type
            return evaluate(single.group("expr"), variables)
        try:
            return _fill_in(value, variables)
        except arithmetic.Unsupported:
            pass
        try:
            return _template(value).render(**variables)
        except _errors() as exc:
            raise TemplateProblem(f"cannot render {value!r}: {_explain(exc)}") from None
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    return value


def _fill_in(text: str, variables: dict[str, Any]) -> str:
    """The text with each `{{ expression }}` replaced by str() of its value, as Jinja2 renders
    it; arithmetic.Unsupported if that takes Jinja2."""
    filled, at = [], 0
    while part := _TEXT_PART.match(text, at):
        value = arithmetic.evaluate(part[2], variables)
        try:
            filled += [part[1], str(value)]
        except ValueError:  # an int too long for str(): Jinja2 says so
            raise arithmetic.Unsupported(text) from None
        at = part.end()
    if not _PLAIN.fullmatch(text, at):
        raise arithmetic.Unsupported(text)
    filled.append(text[at:])
    return "".join(filled)
