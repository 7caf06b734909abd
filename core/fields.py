"""Argument types for action schemas: interface names, addresses, argv lists.

Plugin authors use these in their `Args` models so that a bad value is a validation error
(exit 2) before anything touches the system, never an argument to a command.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

# The kernel's limit is IFNAMSIZ - 1 bytes. Shell metacharacters are refused as well: names also
# end up in exported shell scripts and in commands people copy from `runflow plan`.
_IFNAME_FORBIDDEN = re.compile(r"[\s/\x00'\"`$\\;&|<>(){}\[\]*?!#~=,:%]")


def _ifname(value: str) -> str:
    raw = value.encode()
    if not 1 <= len(raw) <= 15:
        raise ValueError(f"interface name {value!r} must be 1 to 15 bytes, not {len(raw)}")
    if value in (".", ".."):
        raise ValueError(f"{value!r} is not a valid interface name")
    bad = _IFNAME_FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"interface name {value!r} contains the forbidden character {bad.group()!r}")
    # Control and format characters (a bell, a right-to-left override, a zero-width joiner)
    # would make a name print as another one in `ip link`, plan output and exported scripts.
    hidden = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
    if hidden:
        raise ValueError(f"interface name {value!r} contains the control or format character "
                         f"U+{ord(hidden):04X} ({unicodedata.name(hidden, 'unnamed')})")
    return value


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} is not an address with a prefix length (e.g. 10.0.0.1/24)")
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid address/prefix (CIDR)") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid network (CIDR): {exc}") from None


def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", value):
        raise ValueError(
            f"{value!r} is not a valid name (letters, digits, '_', '.', ':', '-'; starting with a "
            "letter or digit; at most 128 characters)"
        )
    return value


def _argv(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments (argv), not a string: no shell is used")
    return value


IfName = Annotated[str, AfterValidator(_ifname)]
"""A network interface name: 1–15 bytes, no whitespace, '/', NUL, shell metacharacters, or
Unicode control or format characters."""

IPAddress = Annotated[str, AfterValidator(_ip)]
"""An IPv4 or IPv6 address, normalised."""

IPInterface = Annotated[str, AfterValidator(_interface)]
"""An address with its prefix length, e.g. 172.16.42.1/24 (host bits allowed)."""

IPNetwork = Annotated[str, AfterValidator(_network)]
"""A network, e.g. 172.16.42.0/24 (host bits must be zero)."""

Name = Annotated[str, AfterValidator(_name)]
"""A safe object name (container, service, OVS record): no spaces or shell metacharacters."""

Argv = Annotated[list[str], BeforeValidator(_argv), Field(min_length=1)]
"""A command as a list of arguments; a plain string is refused."""
