"""Jinja2, as runflow evaluates a workflow's templates: sandboxed, strict about undefined
variables, each distinct template compiled once, and bounded (core/limits.py) so that no
template can take the machine's memory.

Imported by core/templating.py on the first template that is more than one variable: a
workflow without such templates never pays for Jinja2 (30-40 ms to import).
"""

from __future__ import annotations

import math
import os
import resource
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import islice
from typing import Any

from jinja2 import StrictUndefined, Undefined, UndefinedError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .limits import MAX_INT_DIGITS, MAX_TEMPLATE_MEMORY, MAX_VALUE_SIZE, digits, text_size

# str methods whose first argument is the length of what they return.
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class LimitExceeded(SecurityError):
    """A template asked for more than core/limits.py allows."""


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE_SIZE:
        raise LimitExceeded(f"{what} would hold at least {size:,} characters; a value may hold "
                            f"at most {MAX_VALUE_SIZE:,}")


def _check_int(bits: int, what: str) -> None:
    if digits(bits) > MAX_INT_DIGITS:
        raise LimitExceeded(f"{what} would be a number of about {digits(bits):,} digits; at "
                            f"most {MAX_INT_DIGITS:,} can be written out")


def _is_int(value: Any) -> bool:
    return isinstance(value, int)  # bools too: True * "a" is "a"


_SEQUENCES = (str, bytes, list, tuple)  # what + joins and * repeats


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox (no attribute of Python's internals, no changes to lists or
    dicts, range() of at most 100,000 items), and no operation that makes a value larger than
    the limits: repetition and `+` of text and lists, `*` and `**` of numbers, padding to a
    width, whatever a call returns, and the text a template renders. Without lipsum(): it
    writes placeholder text paragraph by paragraph, for as long as it is asked to."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, _SEQUENCES):
            _check_size(text_size(left) + text_size(right), "joining them")
        elif operator == "*" and _is_int(left) and _is_int(right):
            _check_int(abs(left).bit_length() + abs(right).bit_length(), "the product")
        elif operator == "*" and isinstance(left, _SEQUENCES) and _is_int(right):
            _check_size(text_size(left) * max(right, 0), "the repetition")
        elif operator == "*" and isinstance(right, _SEQUENCES) and _is_int(left):
            _check_size(text_size(right) * max(left, 0), "the repetition")
        elif operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1 and \
                right > 0:
            _check_int(math.ceil(math.log2(abs(left)) * right), "the power")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # (Jinja2's own names: a keyword argument may be called `self` or `context`.)
        if isinstance(getattr(__obj, "__self__", None), (str, bytes)) and args and \
                getattr(__obj, "__name__", "") in _PADDING_METHODS and _is_int(args[0]):
            _check_size(args[0], f"{__obj.__name__}()")
        value = super().call(__context, __obj, *args, **kwargs)
        _check_size(text_size(value), "what the call returns")
        return value

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """A template's output (or a macro's, or a block's), stopped as soon as it is too long:
        Jinja2 joins the parts as the template yields them."""
        kept, size = [], 0
        for part in parts:
            size += len(part)
            _check_size(size, "the rendered text")
            kept.append(part)
        return "".join(kept)


@lru_cache(maxsize=1)
def _env() -> BoundedSandbox:
    return BoundedSandbox(undefined=StrictUndefined, keep_trailing_newline=True)


@lru_cache(maxsize=4096)
def _template(text: str) -> Any:
    return _env().from_string(text)


@lru_cache(maxsize=4096)
def _expression(text: str) -> Any:
    return _env().compile_expression(text, undefined_to_none=False)


def render(text: str, variables: dict[str, Any]) -> str:
    return _capped(lambda: _template(text).render(variables))


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    return _capped(lambda: _value(_expression(expression)(variables)))


def _value(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # a StrictUndefined raises the UndefinedError that names the variable
    if isinstance(value, Iterator):  # a filter's lazy result (map, select...): its items, now
        value = list(islice(value, MAX_VALUE_SIZE + 1))
    _check_size(text_size(value), "the value")
    return value


def _capped(evaluation: Callable[[], Any]) -> Any:
    """Compile and evaluate a template while the process may map at most MAX_TEMPLATE_MEMORY
    more than it has: beyond it an allocation fails with MemoryError (that of 'a' * 10 ** 10
    fails at once, without touching memory). The limit is the process's, which is why it is
    set only for the moment of one evaluation, and only while this is the process's only
    thread: a command evaluates templates while it builds a plan, before any step runs, but
    `runflow watch` builds a run's plan while other runs apply, and there the cap would fail
    their allocations. The operation checks of BoundedSandbox bound a template all the same."""
    if threading.active_count() > 1:
        return evaluation()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _mapped() + MAX_TEMPLATE_MEMORY
    if soft != resource.RLIM_INFINITY and soft <= cap:  # already tighter: keep it
        return evaluation()
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        return evaluation()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _mapped() -> int:
    """The bytes the process maps (VmSize)."""
    return int(os.pread(_statm(os.getpid()), 32, 0).split()[0]) * _PAGE_SIZE


@lru_cache(maxsize=1)
def _statm(pid: int) -> int:
    # Kept open, it is read in 3-4 us. By pid: a forked child must read its own.
    return os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)


def explain(exc: Exception, template: str,
            variables: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """What went wrong, for an error message, and the undefined variables if that was it."""
    if isinstance(exc, UndefinedError):
        undefined = _undefined_names(template, variables)
        if undefined:
            return "undefined variable " + ", ".join(map(repr, undefined)), undefined
        return f"undefined: {exc.message}", ()  # an attribute or item, not a variable
    if isinstance(exc, LimitExceeded):
        return str(exc), ()
    if isinstance(exc, RecursionError):
        return "it is nested too deeply for Python to evaluate", ()
    if isinstance(exc, MemoryError):
        return (f"evaluating it would take more than {MAX_TEMPLATE_MEMORY // 2**20} MiB of "
                "memory"), ()
    return f"{type(exc).__name__}: {exc}", ()


def _undefined_names(template: str, variables: dict[str, Any]) -> tuple[str, ...]:
    """The variables a template uses that are neither given nor Jinja2's own (range, dict...)."""
    used = meta.find_undeclared_variables(_env().parse(template))
    return tuple(sorted(n for n in used if n not in variables and n not in _env().globals))
