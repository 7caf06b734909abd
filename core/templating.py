"""`{{ var }}` templates, `when` conditions and `for_each` expressions.

Templates are Jinja2's, in its sandbox (core/sandbox.py) with StrictUndefined: a template cannot
call into Python, an undefined variable is an error, never an empty string, and no template can
make a value larger than core/limits.py allows. A value that is exactly one `{{ expression }}`
keeps the expression's type (a list stays a list, 1500 stays an int), so `mtu = "{{ mtu }}"`
and `for_each = "{{ ports }}"` work as expected.

A template that is one variable and nothing else (`{{ bridge }}`, most of them) is looked up
here, as Jinja2 would: it needs neither Jinja2's import nor a compiled template.
"""

from __future__ import annotations

import re
from typing import Any

_SINGLE_EXPRESSION = re.compile(r"^\{\{(?P<expr>(?:(?!\}\}).)*)\}\}$", re.DOTALL)
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
# Names Jinja2 does not look up among the variables: its constants, `self` (the template
# itself) and `not` (an operator). tests/unit/test_templating.py checks this against Jinja2.
_NOT_VARIABLES = frozenset({"true", "false", "none", "True", "False", "None", "self", "not"})


class TemplateProblem(ValueError):
    """A template or expression that cannot be evaluated; the message says why. `undefined`
    names the variables it uses that are not set, if that is the problem."""

    def __init__(self, message: str, undefined: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.undefined = undefined


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """Evaluate a bare expression such as `ovs_datapath == 'netdev'` or `range(1, 201)`."""
    name = _NAME.fullmatch(expression)
    if name and name[1] in variables and name[1] not in _NOT_VARIABLES:
        return variables[name[1]]
    return _with_jinja2("evaluate", expression, variables)


def render(value: Any, variables: dict[str, Any]) -> Any:
    """Render the templates in a value (strings, and the strings inside lists and tables)."""
    if isinstance(value, str):
        if "{" not in value:
            return value
        single = _SINGLE_EXPRESSION.match(value.strip())
        if single:  # the whole value: keeps its type
            return evaluate(single["expr"], variables)
        return _with_jinja2("render", value, variables)
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    return value


def _with_jinja2(verb: str, text: str, variables: dict[str, Any]) -> Any:
    from . import sandbox

    try:
        if verb == "evaluate":
            return sandbox.evaluate(text, variables)
        return sandbox.render(text, variables)
    except Exception as exc:  # whatever a template raises is the template's problem
        template = text if verb == "render" else f"{{{{{text}}}}}"
        why, undefined = sandbox.explain(exc, template, variables)
        problem = TemplateProblem(f"cannot {verb} {_abridged(text.strip())}: {why}", undefined)
    # Raised out here, not in the except clause: the exception it replaces, and with it what
    # a template that ran out of memory had filled, is freed now rather than kept as context.
    raise problem


def _abridged(text: str) -> str:
    """The template, quoted, or its start if it is long."""
    return repr(text) if len(text) <= 100 else f"{text[:80]!r}... ({len(text):,} characters)"
