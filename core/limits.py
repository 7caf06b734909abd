"""The most a workflow may ask for, so that a mistaken or hostile workflow, var or inventory is
an input error (exit 2) instead of taking the machine's memory or bloating the journal (every
var and every rendered argument is journaled). README: "Limits"."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

# Text in one var (--var, [vars], [targets.NAME], inventory host vars), and in any value a
# template makes: a list or table counts the text of its items.
MAX_VALUE_SIZE = 64 * 1024
# Items of one for_each: each is a step instance, journaled with its arguments.
MAX_FOR_EACH_ITEMS = 10_000
# Digits of an integer a template computes: Python turns at most 4,300 into text, so a larger
# one could never reach an argument (it would only cost time: 10 ** 10 ** 9).
MAX_INT_DIGITS = sys.int_info.default_max_str_digits
# Memory a template's evaluation may take beyond what the process had. The checks above stop
# the usual ways of making something big early, naming them; this catches the rest (a loop that
# fills a buffer, a filter asked for a huge width).
MAX_TEMPLATE_MEMORY = 256 * 1024 * 1024


def text_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """About the length of the value written out (a list counts its items and a separator
    each). Counting stops once past `limit`, so a huge or self-repeating value costs no more
    than a value of that size."""
    size, pending = 0, [value]
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, (str, bytes)):
            size += len(item)
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            size += digits(item.bit_length())
        elif isinstance(item, Mapping):
            size += 2 * len(item)
            if size <= limit:
                pending.extend(item.items())
        elif isinstance(item, (list, tuple, set, frozenset)):
            size += 2 * len(item)
            if size <= limit:
                pending.extend(item)
        else:  # floats, ranges, dates, lazy sequences: small until they are turned into items
            size += 8
    return size


def too_large(value: Any) -> bool:
    return text_size(value) > MAX_VALUE_SIZE


def digits(bits: int) -> int:
    """About how many decimal digits a number of this many bits has."""
    return int(bits * 0.30103) + 1
