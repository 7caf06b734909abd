"""Firewall rules and chain policies with iptables (backend `iptables`, both targets).

Checks parse `iptables-save -t TABLE`, because `iptables -C` is unreliable in CentOS 6's
iptables 1.4.7. iptables-save prints a rule in its own form (`-s 10.0.0.1` becomes
`-s 10.0.0.1/32`, `-p tcp --dport 80` gains `-m tcp`, basic options come in a fixed order), so
both sides are compared in a canonical form (`canonical`). A rule iptables accepted but that
still cannot be found afterwards is taken out again and the step fails, asking for the rule as
iptables-save prints it: a rule is never added twice.

Identical rules are counted, never lumped together: a copy someone adds by hand beside the one
a run added is theirs. firewall.rule.present's undo deletes one copy, the run's — only when
there are more copies than before, and the one nearest to where apply put it — and
firewall.rule.absent's undo puts back only the copies that are missing, each at its old place.

Options used, all in iptables 1.4.7: -t TABLE, -A CHAIN, -I CHAIN N, -D CHAIN N, -N, -X, -P;
iptables-save -t TABLE. (-w, -C and -S are newer or unreliable there.) IPv4 only: the rules
are iptables', not ip6tables'.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from typing import Any

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, tools_missing

from .args import FirewallPolicyArgs, FirewallRuleAbsentArgs, FirewallRuleArgs

# -- reading iptables-save ----------------------------------------------------------------------


def parse_save(text: str) -> dict[str, Any]:
    """One table of `iptables-save` → {"policies": {chain: policy or "-"}, "rules": {chain:
    [argv, ...]}}, rules in chain order."""
    policies: dict[str, str] = {}
    rules: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chain, policy = line[1:].split()[:2]
            policies[chain] = policy
            rules.setdefault(chain, [])
        elif line.startswith("-A "):
            words = shlex.split(line)
            rules.setdefault(words[1], []).append(words[2:])
    return {"policies": policies, "rules": rules}


def saved(ctx: Context, table: str) -> dict[str, Any]:
    return parse_save(ctx.run(["iptables-save", "-t", table]).stdout)


# -- comparing rules ----------------------------------------------------------------------------

_BASIC = {"-s": "-s", "--source": "-s", "--src": "-s", "-d": "-d", "--destination": "-d",
          "--dst": "-d", "-i": "-i", "--in-interface": "-i", "-o": "-o",
          "--out-interface": "-o", "-p": "-p", "--protocol": "-p"}
_ALIASES = {"--jump": "-j", "--goto": "-g", "--match": "-m", "--fragment": "-f"}
_PROTOCOLS = {"1": "icmp", "6": "tcp", "17": "udp", "47": "gre", "58": "ipv6-icmp",
              "132": "sctp"}


def _basic_value(option: str, value: str) -> str:
    if option in ("-s", "-d"):
        try:  # iptables masks and prints the prefix: 10.0.0.1 → 10.0.0.1/32
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            return value
    if option == "-p":
        return _PROTOCOLS.get(value, value.lower())
    return value


def _split(rule: list[str]) -> tuple[dict[str, tuple[bool, str]], list[str]]:
    """The basic options (-s -d -i -o -p: negated?, value as iptables-save prints it), and
    the rest in order with long aliases in their short form."""
    basic: dict[str, tuple[bool, str]] = {}
    rest: list[str] = []
    negate = False
    i = 0
    while i < len(rule):
        arg = rule[i]
        if arg == "!":
            negate = True
        elif arg in _BASIC and i + 1 < len(rule):
            option = _BASIC[arg]
            basic[option] = (negate, _basic_value(option, rule[i + 1]))
            negate = False
            i += 1
        else:
            if negate:
                rest.append("!")
                negate = False
            rest.append(_ALIASES.get(arg, arg))
        i += 1
    return basic, rest


def canonical(rule: list[str]) -> tuple[Any, ...]:
    """A rule as a comparable value: basic options (-s -d -i -o -p, negated or not) as a set,
    the rest in order, without the `-m PROTO` iptables-save adds after `-p PROTO`, and with
    state lists sorted."""
    basic, rest = _split(rule)
    proto = basic.get("-p", (False, ""))[1]
    for j in range(len(rest) - 1):
        if rest[j] == "-m" and rest[j + 1] == proto:
            del rest[j:j + 2]
            break
    for j in range(len(rest) - 1):
        if rest[j] in ("--state", "--ctstate"):
            rest[j + 1] = ",".join(sorted(rest[j + 1].split(",")))
    return tuple(sorted(basic.items())), tuple(rest)


_SAVE_ORDER = ("-s", "-d", "-i", "-o", "-p")
_PORT_ALIASES = {"--destination-port": "--dport", "--source-port": "--sport",
                 "--destination-ports": "--dports", "--source-ports": "--sports"}
_SAVE_BARE = re.compile(r"[A-Za-z0-9_.,:/+!=@%-]+")


def save_line(chain: str, rule: list[str]) -> str:
    """The rule as `iptables-save` prints it: `-A CHAIN`, the basic options in its order
    (prefix lengths added, protocols by name), `-m PROTO` before protocol options given
    without it, the rest as given (short option names, words with blanks in double quotes).
    For a rule iptables rewrites some other way, the exported script finds out after adding
    it, as apply does here."""
    basic, rest = _split(rule)
    words = ["-A", chain]
    for option in _SAVE_ORDER:
        if option in basic:
            negate, value = basic[option]
            words += ["!", option, value] if negate else [option, value]
    rest = [_PORT_ALIASES.get(w, w) for w in rest]
    if "-p" in basic and rest and rest[0].startswith("--"):
        words += ["-m", basic["-p"][1]]
    words += rest
    return " ".join(w if _SAVE_BARE.fullmatch(w) else
                    '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in words)


def _positions(rules: list[list[str]], rule: list[str]) -> list[int]:
    want = canonical(rule)
    return [n for n, r in enumerate(rules, start=1) if canonical(r) == want]

# -- shell forms (runflow export) ---------------------------------------------------------------


def _shell_rules(args: Any) -> str:
    """A pipeline printing the chain's rules as iptables-save does (`-A CHAIN ...`)."""
    return (f"iptables-save -t {sh(args.table)} | awk -v c={sh(args.chain)} "
            "'$1 == \"-A\" && $2 == c'")


def _shell_holds(args: Any) -> str:
    return f"{_shell_rules(args)} | grep -qxF -- {sh(save_line(args.chain, args.rule))}"


def _shell_chain_exists(args: Any) -> str:
    return (f"iptables-save -t {sh(args.table)} | awk -v c={sh(':' + args.chain)} "
            "'$1 == c { f = 1 } END { exit !f }'")


def _shell_positions(args: Any) -> str:
    """A pipeline printing the positions of the rule's copies in the chain, one a line."""
    return (f"{_shell_rules(args)} | grep -nxF -- {sh(save_line(args.chain, args.rule))} "
            "| cut -d: -f1")


def _shell_count(args: Any) -> str:
    return f"$({_shell_positions(args)} | wc -l)"


def _shell_delete_matches(args: Any, var: Callable[[str], str]) -> list[str]:
    """Delete every copy, by position, last first (as `_delete_matches`: killed half-way,
    the first copies are the ones left), until none is left."""
    n = var("n")
    return [f"while {n}=$({_shell_positions(args)} | tail -n 1) && [ -n \"${n}\" ]; do",
            f"    {sh(*Iptables.argv(args, '-D', args.chain))} \"${n}\"",
            "done"]


# -- actions ------------------------------------------------------------------------------------


class Iptables(Action):
    backend = "iptables"
    family = "firewall"

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return tools_missing("iptables", "iptables-save")

    @staticmethod
    def argv(args: Any, *words: str) -> list[str]:
        return ["iptables", "-t", args.table, *words]


class RuleAction(Iptables):
    def observe(self, ctx: Context, args: Any) -> State:
        table = saved(ctx, args.table)
        rules = table["rules"].get(args.chain, [])
        return {"chain_exists": args.chain in table["policies"], "length": len(rules),
                "matches": [{"position": n, "rule": rules[n - 1]}
                            for n in _positions(rules, args.rule)]}

    def _delete_matches(self, args: Any, state: State) -> list[list[str]]:
        """Delete every copy, last first so the positions stay right."""
        return [self.argv(args, "-D", args.chain, str(m["position"]))
                for m in reversed(state["matches"])]


class FirewallRulePresent(RuleAction):
    name = "firewall.rule.present"
    Args = FirewallRuleArgs
    summary = "a rule is in a chain (appended, or inserted at position; never twice)"

    def check(self, args: FirewallRuleArgs, before: State) -> bool:
        return bool(before["matches"])

    def _position(self, before: State, args: FirewallRuleArgs) -> int:
        return args.position or before.get("length", 0) + 1

    def describe(self, args: FirewallRuleArgs, before: State | None = None) -> list[list[str]]:
        before = before or {"chain_exists": True}
        if before.get("matches"):
            return []
        new = [] if before["chain_exists"] else [self.argv(args, "-N", args.chain)]
        add = ["-I", args.chain, str(args.position)] if args.position else ["-A", args.chain]
        return [*new, self.argv(args, *add, *args.rule)]

    def apply(self, ctx: Context, args: FirewallRuleArgs, before: State) -> None:
        for argv in self.describe(args, before):
            ctx.run(argv)
        after = self.observe(ctx, args)
        if after["matches"]:
            return
        # Added, yet not recognised in iptables-save's output: take it out again.
        position = self._position(before, args)
        shown = " ".join(saved(ctx, args.table)["rules"][args.chain][position - 1])
        ctx.run(self.argv(args, "-D", args.chain, str(position)))
        if not before["chain_exists"]:
            ctx.run(self.argv(args, "-X", args.chain))
        raise ActionError(f"iptables accepted the rule but iptables-save shows it as "
                          f"{shown!r}; write the rule that way so that it can be recognised")

    def undo(self, ctx: Context, args: FirewallRuleArgs, before: State) -> None:
        """From any point apply reached (nothing, the chain made, the rule added): compared
        with the journaled before, not with what the step found on a later look."""
        now = self.observe(ctx, args)
        for argv in self._removal(args, before, now):
            ctx.run(argv)

    def describe_undo(self, args: FirewallRuleArgs,
                      before: State | None = None) -> list[list[str]]:
        before = before or {"chain_exists": True}
        added = {"position": self._position(before, args)}
        return self._removal(args, before, {"matches": [added], "chain_exists": True,
                                            "length": before.get("length", 0) + 1})

    def _removal(self, args: FirewallRuleArgs, before: State, now: State) -> list[list[str]]:
        """Take out the one copy apply added, if there are more copies than before (one made
        by hand since stays): the one nearest to where apply put it. Then the chain, if apply
        made it and nothing else is in it."""
        commands = []
        if len(now["matches"]) > len(before["matches"]):
            added = self._position(before, args)
            ours = min(now["matches"], key=lambda m: abs(m["position"] - added))
            commands.append(self.argv(args, "-D", args.chain, str(ours["position"])))
        if not before["chain_exists"] and now["chain_exists"] and \
                now["length"] == len(commands):
            commands.append(self.argv(args, "-X", args.chain))
        return commands

    def shell(self, host: Host, args: FirewallRuleArgs, var: Callable[[str], str]
              ) -> ShellStep:
        """Checked against iptables-save's form of the rule (`save_line`); a rule added but not
        found that way is taken out again and the step fails, as in apply."""
        existed, shown = var("chain_existed"), var("shown")
        count, at, n = var("count"), var("at"), var("n")
        add = ["-I", args.chain, str(args.position)] if args.position else ["-A", args.chain]
        where = f"sed -n {args.position}p" if args.position else "tail -n 1"
        drop_chain = f"if [ \"${existed}\" = 0 ]; then {sh(*self.argv(args, '-X', args.chain))}; fi"
        # undo's pick, as _removal's: the copy nearest to where apply put it, if there are
        # more copies than before
        nearest = ("awk -v p=\"$" + at + "\" -v c=\"$" + count + "\" '{ d = $1 - p; if (d < 0) "
                   "d = -d; if (NR == 1 || d < best) { best = d; pick = $1 } } "
                   "END { if (NR > c) print pick }'")
        return ShellStep(
            check=_shell_holds(args),
            save=(f"if {_shell_chain_exists(args)}; then {existed}=1; else {existed}=0; fi",
                  f"{count}={_shell_count(args)}",
                  f"{at}={args.position}" if args.position else
                  f"{at}=$(( $({_shell_rules(args)} | wc -l) + 1 ))"),
            saved=(existed, count, at),
            apply=(f"{_shell_chain_exists(args)} || {sh(*self.argv(args, '-N', args.chain))}",
                   sh(*self.argv(args, *add, *args.rule)),
                   f"if ! {_shell_holds(args)}; then",
                   f"    {shown}=$({_shell_rules(args)} | {where})",
                   f"    {sh(*self.argv(args, '-D', args.chain, *args.rule))}",
                   f"    {drop_chain}",
                   "    echo \"iptables accepted the rule but iptables-save shows it as "
                   f"'${shown}'; write the rule that way so that it can be recognised\" >&2",
                   "    false",
                   "fi"),
            undo=(f"{n}=$({_shell_positions(args)} | {nearest})",
                  f"if [ -n \"${n}\" ]; then {sh(*self.argv(args, '-D', args.chain))} \"${n}\"; fi",
                  f"if [ \"${existed}\" = 0 ] && {_shell_chain_exists(args)} && "
                  f"[ -z \"$({_shell_rules(args)})\" ]; then "
                  f"{sh(*self.argv(args, '-X', args.chain))}; fi"))


class FirewallRuleAbsent(RuleAction):
    name = "firewall.rule.absent"
    Args = FirewallRuleAbsentArgs
    summary = "a rule is not in a chain (undo puts it back where it was)"

    def check(self, args: FirewallRuleAbsentArgs, before: State) -> bool:
        return not before["matches"]

    def describe(self, args: FirewallRuleAbsentArgs,
                 before: State | None = None) -> list[list[str]]:
        if before is None:
            return [self.argv(args, "-D", args.chain, *args.rule)]
        return self._delete_matches(args, before)

    def apply(self, ctx: Context, args: FirewallRuleAbsentArgs, before: State) -> None:
        for argv in self.describe(args, before):
            ctx.run(argv)

    def undo(self, ctx: Context, args: FirewallRuleAbsentArgs, before: State) -> None:
        """Put back the copies that are missing, from any point apply reached: apply deletes
        the last copy first, so the missing ones are the last of those before had."""
        now = self.observe(ctx, args)
        was = before["matches"]
        missing = was[len(now["matches"]):] if len(now["matches"]) < len(was) else []
        for argv in self._reinsert(args, missing, now["length"]):
            ctx.run(argv)

    def describe_undo(self, args: FirewallRuleAbsentArgs,
                      before: State | None = None) -> list[list[str]]:
        was = (before or {}).get("matches", [])
        return self._reinsert(args, was, (before or {}).get("length", len(was)) - len(was))

    def _reinsert(self, args: FirewallRuleAbsentArgs, matches: list[dict[str, Any]],
                  length: int) -> list[list[str]]:
        """Insert copies at their old positions, lowest first (each then lands where it was
        before the next one), and no further than the chain's end."""
        commands = []
        for m in matches:
            length += 1
            commands.append(self.argv(args, "-I", args.chain, str(min(m["position"], length)),
                                      *m["rule"]))
        return commands

    def shell(self, host: Host, args: FirewallRuleAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        positions, n, left = var("positions"), var("n"), var("left")
        return ShellStep(
            check=f"! {{ {_shell_holds(args)}; }}",
            save=(f"{positions}=$({_shell_positions(args)})",),
            saved=(positions,),
            apply=tuple(_shell_delete_matches(args, var)),
            # As undo: the copies still there are the first ones; the others go back at their
            # positions, lowest first (each insert puts one where it was before the next).
            undo=(f"{left}={_shell_count(args)}",
                  f"for {n} in ${positions}; do",
                  f"    if [ \"${left}\" -gt 0 ]; then {left}=$(( {left} - 1 )); "
                  f"else {sh(*self.argv(args, '-I', args.chain))} \"${n}\" {sh(*args.rule)}; fi",
                  "done"))


class FirewallPolicy(Iptables):
    name = "firewall.policy"
    Args = FirewallPolicyArgs
    summary = "a built-in chain's policy (ACCEPT or DROP)"

    def observe(self, ctx: Context, args: FirewallPolicyArgs) -> State:
        return {"policy": saved(ctx, args.table)["policies"].get(args.chain)}

    def check(self, args: FirewallPolicyArgs, before: State) -> bool:
        return before["policy"] == args.policy

    def apply(self, ctx: Context, args: FirewallPolicyArgs, before: State) -> None:
        if before["policy"] in (None, "-"):
            raise ActionError(f"{args.chain} is not a built-in chain of table {args.table}: "
                              "only those have a policy")
        ctx.run(self.argv(args, "-P", args.chain, args.policy))

    def undo(self, ctx: Context, args: FirewallPolicyArgs, before: State) -> None:
        if self.observe(ctx, args)["policy"] != before["policy"]:
            for argv in self.describe_undo(args, before):
                ctx.run(argv)

    def describe(self, args: FirewallPolicyArgs, before: State | None = None) -> list[list[str]]:
        return [self.argv(args, "-P", args.chain, args.policy)]

    def describe_undo(self, args: FirewallPolicyArgs,
                      before: State | None = None) -> list[list[str]]:
        old = (before or {}).get("policy")
        return [self.argv(args, "-P", args.chain, old)] if old not in (None, "-") else []

    def shell(self, host: Host, args: FirewallPolicyArgs, var: Callable[[str], str]
              ) -> ShellStep:
        old = var("policy")
        policy = (f"iptables-save -t {sh(args.table)} | awk -v c={sh(':' + args.chain)} "
                  "'$1 == c { print $2 }'")
        return ShellStep(
            check=f"[ \"$({policy})\" = {sh(args.policy)} ]",
            save=(f"{old}=$({policy})",), saved=(old,),
            apply=(sh(*self.argv(args, "-P", args.chain, args.policy)),),
            undo=(f"if [ -n \"${old}\" ] && [ \"${old}\" != - ]; then "
                  f"{sh(*self.argv(args, '-P', args.chain))} \"${old}\"; fi",))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in (FirewallRulePresent, FirewallRuleAbsent, FirewallPolicy):
        register(action)
