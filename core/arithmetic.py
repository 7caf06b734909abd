"""Integer arithmetic on variables, evaluated as Jinja2 evaluates it, without Jinja2.

Most templates of a workflow are variables and integer arithmetic on them: `va{{ item }}`,
`range(count | int)`, `10.0.{{ item // 250 }}.{{ item % 250 + 1 }}/24`. Importing Jinja2 and
compiling them costs a command 50-60 ms before its first step. This module reads the part of
Jinja2's expression grammar they use, following Jinja2's parser (jinja2/parser.py, from
parse_math1 down) so that precedence is the same:

    sum     := product (("+" | "-") product)*
    product := unary (("*" | "//" | "%") unary)*
    unary   := ("-" | "+") unary-without-filters [filters] | primary [call] [filters]
    filters := ("|" "int")*
    primary := integer | name | "(" sum ")"
    call    := "(" sum ["," sum ["," sum]] ")"       (of `range` only)

and evaluates it only where the result is certainly Jinja2's: operands are ints (not bools,
floats or strings), divisors are not 0, `int` gets an int or a string of digits, `range` gets
ints and stays under the sandbox's limit, and names are variables. Anything else — other
syntax, other types, an undefined name — raises Unsupported, and the caller hands the text to
Jinja2, whose value or error then stands.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

# Jinja2's integer literals without underscores, bases or leading zeros; a literal followed by
# a letter, digit or dot (1.5, 0x10, 1_000) is left to Jinja2.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"\s*(?:(?P<int>0|[1-9][0-9]*)(?![\w.])|(?P<name>" + _NAME.pattern + ")"
                    r"|(?P<op>//|[-+*%|(),]))")
_DIGITS = re.compile(r"[+-]?[0-9]{1,100}")  # what int() reads as Jinja2's `int` filter does
# Names Jinja2 does not look up among the variables: its constants (like True, False and None,
# which are keywords) and `self`, the template itself.
_NOT_VARIABLES = {"true", "false", "none", "self"}
# jinja2.sandbox.MAX_RANGE: a longer range() is an error there (tests check the two agree).
MAX_RANGE = 100_000

Node = Callable[[dict[str, Any]], Any]


class Unsupported(Exception):
    """Not certainly what Jinja2 would make of it: ask Jinja2."""


def evaluate(expression: str, variables: dict[str, Any]) -> Any:
    """The value of `expression`, or Unsupported."""
    return _parse(expression)(variables)


@lru_cache(maxsize=4096)
def _parse(expression: str) -> Node:
    tokens = _tokens(expression)
    parser = _Parser(tokens)
    node = parser.sum()
    if parser.at < len(tokens):
        raise Unsupported(expression)
    return node


def _tokens(expression: str) -> list[str]:
    tokens, at, end = [], 0, len(expression.rstrip())
    while at < end:
        match = _TOKEN.match(expression, at)
        if not match:
            raise Unsupported(expression)
        tokens.append(match[match.lastgroup])
        at = match.end()
    return tokens


class _Parser:
    """Recursive descent over the tokens, building a closure per node."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise Unsupported("the expression ends early")
        self.at += 1
        return token

    def sum(self) -> Node:
        node = self.product()
        while self.peek() in ("+", "-"):
            node = _binary(self.take(), node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "//", "%"):
            node = _binary(self.take(), node, self.unary())
        return node

    def unary(self, with_filters: bool = True) -> Node:
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            node = _signed(sign, self.unary(with_filters=False))
        else:
            node = self.primary()
        if self.peek() == "(":
            raise Unsupported("a call of something other than range()")
        while with_filters and self.peek() == "|":
            self.take()
            if self.take() != "int" or self.peek() == "(":
                raise Unsupported("a filter other than int")
            node = _to_int(node)
        return node

    def primary(self) -> Node:
        token = self.take()
        if token.isdigit():
            number = int(token)
            return lambda variables: number
        if token == "(":
            node = self.sum()
            if self.take() != ")":
                raise Unsupported("a tuple")
            return node
        if token == "range" and self.peek() == "(":
            return self.range_call()
        if _NAME.fullmatch(token) and not keyword.iskeyword(token) and \
                token not in _NOT_VARIABLES:
            return _variable(token)
        raise Unsupported(f"unexpected {token!r}")

    def range_call(self) -> Node:
        self.take()
        args = [self.sum()]
        while self.peek() == "," and len(args) < 3:
            self.take()
            args.append(self.sum())
        if self.take() != ")":
            raise Unsupported("range() takes one to three integers")
        return _range(args)


def _int(value: Any) -> int:
    if type(value) is not int:  # bools are ints to Python, not to this module
        raise Unsupported(f"{type(value).__name__} operand")
    return value


def _variable(name: str) -> Node:
    def node(variables: dict[str, Any]) -> Any:
        if name not in variables:  # Jinja2 says which, and where
            raise Unsupported(f"{name} is not a variable")
        return variables[name]
    return node


def _signed(sign: int, operand: Node) -> Node:
    return lambda variables: sign * _int(operand(variables))


def _binary(operator: str, left: Node, right: Node) -> Node:
    def node(variables: dict[str, Any]) -> int:
        a, b = _int(left(variables)), _int(right(variables))
        if operator == "+":
            return a + b
        if operator == "-":
            return a - b
        if operator == "*":
            return a * b
        if b == 0:
            raise Unsupported("division by zero")
        return a // b if operator == "//" else a % b
    return node


def _to_int(operand: Node) -> Node:
    def node(variables: dict[str, Any]) -> int:
        value = operand(variables)
        if type(value) is str and _DIGITS.fullmatch(value):
            return int(value)
        return _int(value)
    return node


def _range(args: list[Node]) -> Node:
    def node(variables: dict[str, Any]) -> range:
        if "range" in variables:  # a variable named range hides Jinja2's function
            raise Unsupported("range is a variable")
        bounds = [_int(arg(variables)) for arg in args]
        if len(bounds) == 3 and bounds[2] == 0:
            raise Unsupported("a step of 0")
        span = range(*bounds)
        try:
            if len(span) <= MAX_RANGE:
                return span
        except OverflowError:
            pass
        raise Unsupported("a range longer than the sandbox allows")
    return node
