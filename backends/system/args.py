"""Argument schemas of the system actions — sysctls, firewall rules and services — shared by
every backend that implements them (procfs, iptables, systemd, service)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from runflow.core.actions import Args
from runflow.core.fields import Name


# -- sysctl -------------------------------------------------------------------------------------


def _sysctl_name(value: str) -> str:
    # "net.ipv4.ip_forward", or with '/' separators when a component holds a dot
    # ("net/ipv4/conf/eth0.1/forwarding"), as sysctl(8) accepts.
    parts = value.split("/") if "/" in value else value.split(".")
    if len(parts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*", p)
                                 for p in parts):
        raise ValueError(f"{value!r} is not a sysctl name (e.g. net.ipv4.ip_forward)")
    return value


def _sysctl_value(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a string or a number, e.g. \"1\"")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and ("\n" in value.strip() or "\x00" in value):
        raise ValueError("must be a single line")
    return value


class SysctlArgs(Args):
    name: Annotated[str, AfterValidator(_sysctl_name)] = Field(
        description='the kernel parameter, e.g. "net.ipv4.ip_forward"')
    value: Annotated[str, BeforeValidator(_sysctl_value), Field(min_length=1, max_length=4096)] \
        = Field(description='its value as text, e.g. "1" (a number is taken as text)')

    @property
    def path_parts(self) -> list[str]:
        return self.name.split("/") if "/" in self.name else self.name.split(".")


# -- firewall (iptables) ------------------------------------------------------------------------

Table = Literal["filter", "nat", "mangle", "raw", "security"]

# Options that would start another command or pick another table or chain: those come from
# the table, chain and position arguments, never from the rule. --modprobe names a program
# iptables would run.
_COMMAND_LONG = ("--append", "--insert", "--delete", "--replace", "--table", "--policy",
                 "--new-chain", "--delete-chain", "--flush", "--zero", "--list", "--list-rules",
                 "--rename-chain", "--check", "--modprobe")
_COMMAND_SHORT = set("AIDRPNXFZLSECt")


def _chain(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,27}", value):
        raise ValueError(f"{value!r} is not a chain name (at most 28 letters, digits, '_', '.', "
                         "'+', '-'; not starting with '-')")
    return value


def _rule(value: list[str]) -> list[str]:
    for i, arg in enumerate(value):
        where = f"rule[{i}] {arg!r}"
        if "\x00" in arg or "\n" in arg:
            raise ValueError(f"{where} contains a control character")
        if arg.startswith("--"):
            option = arg.split("=", 1)[0]
            # getopt accepts any unambiguous prefix of a long option (--app = --append)
            if len(option) > 2 and any(c.startswith(option) for c in _COMMAND_LONG):
                raise ValueError(f"{where}: the table, chain and position come from their own "
                                 "arguments, not from the rule")
        elif re.fullmatch(r"-[A-Za-z]+", arg) and _COMMAND_SHORT & set(arg[1:]):
            raise ValueError(f"{where}: the table, chain and position come from their own "
                             "arguments, not from the rule (it must not hold -A, -I, -D, -t, "
                             "-P, ...)")
    return value


def _argv_list(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("must be a list of arguments, e.g. [\"-o\", \"docker0\", \"-j\", "
                         "\"ACCEPT\"], not a string: no shell is used")
    return value


Rule = Annotated[list[str], BeforeValidator(_argv_list), Field(min_length=1),
                 AfterValidator(_rule)]
ChainName = Annotated[str, AfterValidator(_chain)]


class FirewallRuleArgs(Args):
    """A rule in a chain. A missing rule is appended, or inserted at `position` (1 = first);
    a rule already in the chain is left where it is (never added twice)."""

    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="the chain, e.g. FORWARD or POSTROUTING")
    rule: Rule = Field(description='the rule\'s matches and target as a list, e.g. ["-o", '
                                   '"docker0", "-j", "ACCEPT"]')
    position: int | None = Field(default=None, ge=1, description=(
        "insert a missing rule at this position, 1 the first (default: append)"))


class FirewallRuleAbsentArgs(Args):
    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="the chain")
    rule: Rule = Field(description="the rule's matches and target as a list")


class FirewallPolicyArgs(Args):
    table: Table = Field(default="filter", description="the iptables table")
    chain: ChainName = Field(description="a built-in chain, e.g. FORWARD")
    policy: Literal["ACCEPT", "DROP"] = Field(description="its policy")


# -- services -----------------------------------------------------------------------------------


class ServiceRestartArgs(Args):
    name: Name = Field(description="the service, e.g. docker")


class ServicePresentArgs(Args):
    name: Name = Field(description="the service, e.g. docker")
    state: Literal["running", "stopped"] = Field(default="running",
                                                 description="running or stopped")
