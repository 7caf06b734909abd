"""`{{ var }}` templates, `when` conditions and `for_each` expressions.

Jinja2's sandbox with StrictUndefined: a template cannot call into Python, and an undefined
variable is an error, never an empty string. A value that is exactly one `{{ expression }}`
keeps the expression's type (a list stays a list, 1500 stays an int), so `mtu = "{{ mtu }}"`
and `for_each = "{{ ports }}"` work as expected.
"""

from __future__ import annotations

import keyword
import re
from functools import lru_cache
from typing import Any

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}).)*)\}\}$", re.DOTALL)

# `{{ name }}` alone or between plain text is by far the most common template ("veth{{ item }}",
# "{{ bridge_name }}"). Filled in here as Jinja2 fills it in (the value itself when it is the
# whole template, str() of it within text), it skips the context Jinja2 builds for every
# render: 25-35 µs a template, most of the plan of a for_each over hundreds of items. Anything
# else — filters, operators, other delimiters, a name that is not a variable — goes to Jinja2.
# (Jinja2 also turns the text's \r\n into \n: text with \r is left to it.)
_NAME_IN_TEXT = re.compile(r"([^{}\r]*)\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}([^{}\r]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names Jinja2 does not look up among the variables: its constants (like True, False and None,
# which are keywords) and `self`, the template itself.
_NOT_VARIABLES = {"true", "false", "none", "self"}


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


def _is_variable(name: str, variables: dict[str, Any]) -> bool:
    """Is `{{ name }}` the variable's value, as Jinja2 would resolve it?"""
    return (name in variables and _NAME.fullmatch(name) is not None
            and not keyword.iskeyword(name) and name not in _NOT_VARIABLES)


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a bare expression such as `ovs_datapath == 'netdev'` or `range(1, 201)`."""
    name = expression.strip()
    if _is_variable(name, variables):
        return variables[name]
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
        plain = _NAME_IN_TEXT.fullmatch(value)
        if plain and _is_variable(plain[2], variables):
            before, name, after = plain.groups()
            if not before.strip() and not after.strip():  # the whole value: keeps its type
                return variables[name]
            return before + str(variables[name]) + after
        single = _SINGLE_EXPRESSION.match(value.strip())
        if single:
            return evaluate(single.group("expr"), variables)
        try:
            return _template(value).render(**variables)
        except _errors() as exc:
            raise TemplateProblem(f"cannot render {value!r}: {_explain(exc)}") from None
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    return value
