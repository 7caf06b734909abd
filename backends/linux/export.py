"""The shell forms of the Linux actions, for `runflow export`: the same records and changes
as the backends use, as a POSIX sh script reads and makes them on the host. Links are read
from /sys as sysfs.py reads them (brport/bridge is the master on 2.6.32), addresses from
`ip -o addr show`, routes from `ip route show [table T] exact`, rules from `ip rule show`;
the commands are `render`'s. What a step saves for its undo goes into its variables (`var`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runflow.core.actions import ShellStep
from runflow.core.export import command, indent, value_of, word
from runflow.core.hosts import Host

from .args import (RT_TABLE_MAIN, TABLES, AddAddr, AddBridge, AddVeth, Change, DelAddr, DelLink,
                   Enslave, Release, RouteArgs, SetBridge, SetLink)
from .commands import render, sysfs_write
from .options import BRIDGE_OPTIONS, PORT_OPTIONS, ordered
from .sysfs import SYS_NET

ShellVar = Callable[[str], str]
ALL_KEYS = ("exists", "options", "ports", "ports_opts", "mtu", "master", "port_opts", "addrs4",
            "addrs6", "mac", "mac_set", "up", "routes4", "routes6")
# a veth has no bridge options or ports, and its MAC comes back
VETH_KEYS = tuple(k for k in ALL_KEYS if k not in ("options", "ports", "ports_opts", "mac_set"))

# `ip -o addr show` → "ADDRESS BRD SCOPE LABEL" per address runflow restores (not IPv6
# link-local ones), "-" for none, as `parse_addresses` reads them; $D is the device.
_ADDRESS_SPECS = (
    'awk \'{ sub(/\\\\.*/, ""); b = "-"; s = "global"; l = "-"; '
    'for (i = 5; i < NF; i++) { if ($i == "brd") b = $(i + 1); if ($i == "scope") s = $(i + 1) } '
    'if ($3 == "inet" && index($NF, ENVIRON["D"] ":") == 1) l = $NF; '
    'if ($3 == "inet" || s != "link") print $4, b, s, l }\'')


def sys_path(name: str, *leaf: str) -> str:
    """A /sys/class/net path as one shell word (name may be a `value_of` placeholder)."""
    return word("/".join([SYS_NET, name, *leaf]))


def shell_exists(name: str) -> str:
    return f"[ -e {sys_path(name)} ]"


def shell_is_port(bridge: str, name: str) -> str:
    return f"[ -e {sys_path(bridge, 'brif', name)} ]"


def shell_master(name: str, into: str) -> str:
    """Sets variable `into` to the bridge `name` is a port of, or to nothing."""
    return (f"{into}=$(readlink {sys_path(name, 'brport', 'bridge')} 2>/dev/null || true); "
            f"{into}=${{{into}##*/}}")


def link_routes(dev: str, fam: int) -> str:
    """A pipeline printing the routes of every table that leave by dev and that runflow puts
    back with it (not the kernel's: `restorable`), as `ip route replace ... dev DEV` takes
    them back: `ip route show dev` leaves the device out."""
    return (f"{{ ip -{fam} route show table all dev {word(dev)} 2>/dev/null || true; }} | "
            "grep -v ' proto kernel' | sed 's/ linkdown//' || true")


def _options_lines(directory: str, names: Sequence[str], prefix: str = "") -> str:
    """A loop printing "[PREFIX ]OPTION VALUE" for the options of `names` that the /sys
    directory (a shell word) has."""
    return (f"for o in {' '.join(names)}; do f={directory}/$o; if [ -f \"$f\" ]; then "
            f"printf '%s\\n' \"{prefix}$o $(cat \"$f\")\"; fi; done")


def address_specs(dev: str, fam: int) -> str:
    """A pipeline printing dev's addresses of a family as `_ADDRESS_SPECS` lines."""
    return f"ip -o -{fam} addr show dev {word(dev)} 2>/dev/null | D={word(dev)} {_ADDRESS_SPECS}"


class ShellLinux:
    """The shell forms of one backend's changes on one host."""

    def __init__(self, centos6: bool, host: Host) -> None:
        self.centos6 = centos6  # whose commands: CentOS 6's, or today's iproute2
        self.host = host

    def run(self, *changes: Change) -> list[str]:
        return [command(argv) for c in changes
                for argv in render(c, centos6=self.centos6, host=self.host)]

    def one_line(self, *changes: Change) -> str:
        return "; ".join(self.run(*changes))

    # -- saving a link's record ---------------------------------------------------------------

    def save_link(self, name: str, v: ShellVar, keys: Sequence[str]
                  ) -> tuple[list[str], list[str]]:
        """Lines reading what restore_link needs of link `name` into v(key), for the keys
        given (exists, up, mtu, master, mac, mac_set, ports in port order, addrs4, addrs6,
        options: a bridge's, ports_opts: its ports', port_opts: its own as a port, routes4,
        routes6), and the names of those variables."""
        p = lambda *leaf: sys_path(name, *leaf)  # noqa: E731
        reads = {
            "options": f"{v('options')}=$({_options_lines(p('bridge'), list(BRIDGE_OPTIONS))})",
            "ports_opts": f"{v('ports_opts')}=$(for port in {p('brif')}/*; do "
                          "if [ -e \"$port\" ]; then "
                          f"{_options_lines(chr(34) + '$port' + chr(34), list(PORT_OPTIONS), '${port##*/} ')}; "
                          "fi; done)",
            "port_opts": f"{v('port_opts')}=$({_options_lines(p('brport'), list(PORT_OPTIONS))})",
            "routes4": f"{v('routes4')}=$({link_routes(name, 4)})",
            "routes6": f"{v('routes6')}=$({link_routes(name, 6)})",
            "up": f"{v('up')}=$(( $(cat {p('flags')}) & 1 ))",
            "mtu": f"{v('mtu')}=$(cat {p('mtu')})",
            "master": shell_master(name, v("master")),
            "mac": f"{v('mac')}=$(cat {p('address')})",
            "mac_set": f"{v('mac_set')}=$(cat {p('addr_assign_type')} 2>/dev/null || echo 0)",
            "ports": f"{v('ports')}=$(for port in {p('brif')}/*; do [ -e \"$port\" ] && "
                     "printf '%d %s\\n' \"$(cat \"$port/port_no\")\" \"${port##*/}\"; done "
                     "| sort -n | cut -d' ' -f2)",
            "addrs4": f"{v('addrs4')}=$({address_specs(name, 4)})",
            "addrs6": f"{v('addrs6')}=$({address_specs(name, 6)})",
        }
        wanted = [k for k in reads if k in keys]
        names = [*([v("exists")] if "exists" in keys else []), *(v(k) for k in wanted)]
        empty = "; ".join(f"{n}=" for n in names if n != v("exists"))
        lines = [f"if {shell_exists(name)}; then",
                 *([f"    {v('exists')}=1"] if "exists" in keys else []),
                 *(f"    {reads[k]}" for k in wanted),
                 "else",
                 *([f"    {v('exists')}=0"] if "exists" in keys else []),
                 f"    {empty or ':'}",
                 "fi"]
        return lines, names

    # -- putting it back ----------------------------------------------------------------------

    def restore_link(self, name: str, v: ShellVar, keys: Sequence[str], *,
                     kind: str = "", peer: str | None = None) -> list[str]:
        """Lines that put back what save_link read, for the keys given, as `restore_link`
        does: with "exists", a link that was not there is deleted, and one that was (a
        bridge, or a veth with `peer`) is recreated; then its bridge options, ports (with
        theirs), MTU, master (with its options there), addresses, MAC (of a recreated link),
        state and routes. Options are written to /sys as /sys showed them (the STP state
        first when it goes off, last when it goes on)."""
        body: list[str] = []
        if "exists" in keys:
            made = [AddBridge(name)] if kind == "bridge" else [AddVeth(name, peer or "")]
            body.append(f"if [ ! -e {sys_path(name)} ]; then {self.one_line(*made)}; "
                        f"{v('fresh')}=1; else {v('fresh')}=0; fi")
        if "options" in keys:
            saved = f"printf '%s\\n' \"${v('options')}\""
            body += [f"{{ {saved} | grep '^stp_state 0$' || true; "
                     f"{saved} | grep -v '^stp_state ' || true; "
                     f"{saved} | grep '^stp_state [1-9]' || true; }} |",
                     f"    while read -r o val; do {_write_option(sys_path(name, 'bridge'))}; done"]
        if "ports" in keys:
            port = value_of(v("port"))
            body += ["# shellcheck disable=SC2086",
                     f"for {v('port')} in ${v('ports')}; do "
                     f"{shell_is_port(name, port)} || {self.one_line(Enslave(port, name))}; done"]
        if "ports_opts" in keys:
            body.append(f"printf '%s\\n' \"${v('ports_opts')}\" | while read -r p o val; do "
                        f"{_write_option(f'{SYS_NET}/' + chr(34) + '$p' + chr(34) + '/brport')}; "
                        "done")
        if "mtu" in keys:
            body.append(f"[ \"$(cat {sys_path(name, 'mtu')})\" = \"${v('mtu')}\" ] || "
                        + self.one_line(SetLink(name, mtu=value_of(v("mtu")))))  # type: ignore
        if "master" in keys:
            now, was = value_of(v("now")), value_of(v("master"))
            body += [shell_master(name, v("now")),
                     f"if [ \"${v('now')}\" != \"${v('master')}\" ]; then",
                     f"    if [ -n \"${v('now')}\" ]; then {self.one_line(Release(name, now))}; fi",
                     f"    if [ -n \"${v('master')}\" ]; then "
                     f"{self.one_line(Enslave(name, was))}; fi",
                     "fi"]
        if "port_opts" in keys:
            body.append(f"printf '%s\\n' \"${v('port_opts')}\" | while read -r o val; do "
                        f"{_write_option(sys_path(name, 'brport'))}; done")
        for fam in (4, 6):
            if f"addrs{fam}" in keys:
                body += self.restore_addresses(name, fam, v)
        if "exists" in keys:
            mac = self.one_line(SetLink(name, mac=value_of(v("mac"))))
            wanted = "true" if kind == "veth" else f"[ \"${v('mac_set')}\" = 3 ]"
            body.append(f"if [ \"${v('fresh')}\" = 1 ] && {wanted}; then {mac}; fi")
        if "up" in keys:
            body.append(f"if [ \"${v('up')}\" = 1 ]; then {self.one_line(SetLink(name, up=True))}; "
                        f"else {self.one_line(SetLink(name, up=False))}; fi")
        for fam in (4, 6):
            if f"routes{fam}" in keys:
                body += self.restore_routes(name, fam, v)
        if "exists" not in keys:
            return [f"if {shell_exists(name)}; then", *indent(body), "fi"]
        gone = self.one_line(DelLink(name, kind))
        return [f"if [ \"${v('exists')}\" = 0 ]; then",
                f"    if {shell_exists(name)}; then {gone}; fi",
                "else", *indent(body), "fi"]

    def restore_routes(self, dev: str, fam: int, v: ShellVar) -> list[str]:
        """Lines that put back dev's saved routes v("routes4|6") (`ip route replace`: one
        that is there already stays as it is)."""
        route = v("route")
        return ["# shellcheck disable=SC2086",
                f"printf '%s\\n' \"${v(f'routes{fam}')}\" | while read -r {route}; do "
                f"if [ -n \"${route}\" ]; then (set -f; ip -{fam} route replace ${route} dev "
                f"{word(dev)}); fi; done"]

    def restore_addresses(self, dev: str, fam: int, v: ShellVar) -> list[str]:
        """Lines that turn dev's addresses of a family back into the saved v("addrs4|6"):
        what follows the common beginning is deleted last-first and the saved ones re-added
        in order, as `restore_addresses` does (the first of a subnet is its primary)."""
        saved, now, keep = v(f"addrs{fam}"), v("addrs_now"), v("keep")
        nth = "sed -n \"$(({keep} + 1))p\" | cut -d' ' -f1".format(keep=keep)
        add = self.one_line(AddAddr(dev, value_of("a")))
        return [
            f"{now}=$({address_specs(dev, fam)})",
            f"{keep}=0",
            "while :; do",
            f"    a=$(printf '%s\\n' \"${saved}\" | {nth}); b=$(printf '%s\\n' \"${now}\" | {nth})",
            "    if [ -z \"$a\" ] || [ \"$a\" != \"$b\" ]; then break; fi",
            f"    {keep}=$(({keep} + 1))",
            "done",
            f"printf '%s\\n' \"${now}\" | awk -v k=\"${keep}\" "
            "'NR > k && NF { l[++n] = $1 } END { for (i = n; i > 0; i--) print l[i] }' |",
            f"    while read -r a; do {self.one_line(DelAddr(dev, value_of('a')))}; done",
            f"printf '%s\\n' \"${saved}\" | awk -v k=\"${keep}\" 'NR > k && NF' |",
            "    while read -r a b s l; do",
            f"        set -- {add}",
            "        if [ \"$b\" != - ]; then set -- \"$@\" brd \"$b\"; fi",
            "        if [ \"$s\" != global ]; then set -- \"$@\" scope \"$s\"; fi",
            "        if [ \"$l\" != - ]; then set -- \"$@\" label \"$l\"; fi",
            "        \"$@\"",
            "    done"]


def _write_option(directory: str) -> str:
    """Write $val to the option $o of a /sys directory (a shell word) where it differs."""
    f = f'{directory}/"$o"'
    return (f"if [ -n \"$o\" ] && [ -f {f} ] && [ \"$(cat {f})\" != \"$val\" ]; then "
            f"echo \"$val\" >{f}; fi")


def creating_step(out: ShellLinux, removal: DelLink, var: ShellVar, holds: str,
                  apply: Sequence[str]) -> ShellStep:
    """A step that creates a link: it saves whether the link was there, and undo deletes it
    (`removal`) if it was not."""
    exists, name = var("exists"), removal.name
    return ShellStep(
        check=holds, save=(f"if {shell_exists(name)}; then {exists}=1; else {exists}=0; fi",),
        saved=(exists,), apply=tuple(apply),
        undo=(f"if [ \"${exists}\" = 0 ] && {shell_exists(name)}; then "
              f"{out.one_line(removal)}; fi",))


def addresses_step(out: ShellLinux, dev: str, fam: int, var: ShellVar, holds: str,
                   apply: Sequence[str], *, removing: bool) -> ShellStep:
    """A step that changes dev's addresses of one family: it saves them, and undo puts them
    back; one that removes addresses saves the link's routes of that family too (the kernel
    deletes those that needed them) and undo puts them back."""
    keys = (f"addrs{fam}", *([f"routes{fam}"] if removing else []))
    save, saved = out.save_link(dev, var, keys)
    return ShellStep(check=holds, save=tuple(save), saved=tuple(saved), apply=tuple(apply),
                     undo=tuple(out.restore_link(dev, var, keys)))


def table_words(args: RouteArgs) -> str:
    """` table T` for a route of another table than main (`ip route show table T` does not
    print it)."""
    return "" if args.table == RT_TABLE_MAIN else f" table {args.table}"


def _routes_to(args: RouteArgs) -> str:
    """The routes to args.to in its table as `ip route show` prints them, less the "linkdown"
    flag (a state, which `ip route del|replace` would not take back)."""
    table = ["table", str(args.table)] if args.table != RT_TABLE_MAIN else []
    return (f"{command(['ip', f'-{args.family}', 'route', 'show', *table, 'exact', args.to])} "
            "| sed 's/ linkdown//'")


def matching_routes(args: RouteArgs) -> str:
    """A pipeline printing the routes `ip route show exact` gives for args.to that match
    type, via, dev, metric and src where given (`route_matches`). A line starts with the
    route's type unless it is unicast."""
    to = args.to
    short = to.rsplit("/", 1)[0] if to.endswith(("/32", "/128")) else to  # ip's host routes
    wanted = " ".join(f"{key} {getattr(args, key)}" for key in ("via", "dev", "metric", "src")
                      if getattr(args, key) is not None)
    return (f"{_routes_to(args)} | T1={word(to)} T2={word(short)} W={word(wanted)} "
            f"Y={word(args.type or '')} awk 'BEGIN {{ n = split(ENVIRON[\"W\"], w, \" \") }} "
            "{ t = \"unicast\"; o = 0 } "
            "$1 == \"unicast\" || $1 == \"blackhole\" || $1 == \"unreachable\" || "
            "$1 == \"prohibit\" { t = $1; o = 1 } "
            "($(1 + o) == ENVIRON[\"T1\"] || $(1 + o) == ENVIRON[\"T2\"]) && "
            "(ENVIRON[\"Y\"] == \"\" || ENVIRON[\"Y\"] == t) { m = 0; "
            "for (j = 1; j < n; j += 2) for (i = 2; i < NF; i++) "
            "if ($i == w[j] && $(i + 1) == w[j + 1]) m++; if (2 * m == n) print }'")


def _replayed(saved: str, now: str, line: str, delete: str, add: str) -> tuple[str, ...]:
    """Undo lines that run `delete` for each line of variable `now` that is not in `saved`,
    then `add` for each line of `saved` that is not in `now` (both hold lines as `ip ...
    show` prints them, which `ip ... del|add|replace` take back as arguments; the commands
    use the line as ${line})."""
    def each(have: str, other: str, run: str) -> str:
        return (f"printf '%s\\n' \"${have}\" | while read -r {line}; do "
                f"if [ -n \"${line}\" ] && ! printf '%s\\n' \"${other}\" | grep -qxF -- "
                f"\"${line}\"; then (set -f; {run}); fi; done")

    return ("# shellcheck disable=SC2086", each(now, saved, delete),
            "# shellcheck disable=SC2086", each(saved, now, add))


def routes_step(args: RouteArgs, var: ShellVar, holds: str, apply: Sequence[str]) -> ShellStep:
    """A step that changes the routes to args.to: it saves them (as `ip route show` prints
    them, which `ip route replace` takes back), and undo deletes the ones that were not there
    and puts back the ones that were (`restore_routes`)."""
    saved, now, route = var("routes"), var("routes_now"), var("route")
    show = _routes_to(args)
    ip, table = f"ip -{args.family} route", table_words(args)
    return ShellStep(
        check=holds, save=(f"{saved}=$({show})",), saved=(saved,), apply=tuple(apply),
        undo=(f"{now}=$({show})", *_replayed(saved, now, route, f"{ip} del ${route}{table}",
                                              f"{ip} replace ${route}{table}")))


_TABLE_NAMES = {number: name for name, number in TABLES.items()}


def _rule_words(args: Any, exact: bool) -> dict[str, str]:
    """What `ip rule show` prints for the rule's selectors, table and priority ("" for none,
    "all" for from; "*" for any, where `exact` is false and the argument is not given)."""
    wanted, given = args.selectors(), args.given()
    mark = "" if wanted["fwmark"] is None else f"{wanted['fwmark']:#x}" + (
        f"/{wanted['fwmask']:#x}" if wanted["fwmask"] != 0xFFFFFFFF else "")

    def network(value: str | None) -> str:
        if value is None:
            return ""
        return value.rsplit("/", 1)[0] if value.endswith(("/32", "/128")) else value

    words = {"F": network(wanted["from"]) or "all", "TO": network(wanted["to"]),
             "I": wanted["iif"] or "", "O": wanted["oif"] or "", "M": mark}
    if not exact:
        keys = {"F": "from", "TO": "to", "I": "iif", "O": "oif", "M": "fwmark"}
        words = {k: v if keys[k] in given else "*" for k, v in words.items()}
    table = "*" if args.table is None else _TABLE_NAMES.get(args.table, str(args.table))
    return {**words, "TB": table, "P": "*" if args.priority is None else str(args.priority)}


def matching_rules(args: Any, *, exact: bool, odd: bool = False) -> str:
    """A pipeline printing the rules `ip rule show` lists that have the selectors given (and
    the table and priority, if given; `exact`: and no other selectors), as `ip rule add|del`
    arguments: "priority P [from F] [to T] [iif I] [oif O] [fwmark M] table T"
    (`rule_matches`). With `odd`, those that match but have more than runflow manages."""
    env = " ".join(f"{key}={word(value)}" for key, value in _rule_words(args, exact).items())

    def same(variable: str, key: str) -> str:
        return f'({variable} == ENVIRON["{key}"] || ENVIRON["{key}"] == "*")'

    return (f"ip -{args.family} rule show | {env} X={int(odd)} awk '"
            "{ p = $1; sub(/:$/, \"\", p); f = \"all\"; t = \"\"; i = \"\"; o = \"\"; m = \"\"; "
            "tb = \"\"; x = 0; "
            "for (k = 2; k <= NF; k++) { if ($k == \"from\") f = $(++k); "
            "else if ($k == \"to\") t = $(++k); else if ($k == \"iif\" || $k == \"dev\") i = $(++k); "
            "else if ($k == \"oif\") o = $(++k); else if ($k == \"fwmark\") m = $(++k); "
            "else if ($k == \"lookup\" || $k == \"table\") tb = $(++k); "
            "else if ($k != \"[detached]\") x = 1 } "
            f"if (tb == \"\") x = 1; if (x == ENVIRON[\"X\"] && {same('f', 'F')} && "
            f"{same('t', 'TO')} && {same('i', 'I')} && {same('o', 'O')} && {same('m', 'M')} && "
            f"{same('tb', 'TB')} && {same('p', 'P')}) {{ line = \"priority \" p; "
            "if (f != \"all\") line = line \" from \" f; if (t != \"\") line = line \" to \" t; "
            "if (i != \"\") line = line \" iif \" i; if (o != \"\") line = line \" oif \" o; "
            "if (m != \"\") line = line \" fwmark \" m; print line \" table \" tb } }'")


def rules_step(args: Any, var: ShellVar, holds: str, apply: Sequence[str], *,
               exact: bool) -> ShellStep:
    """A step that changes the rules with args' selectors: it saves them (with their
    priorities), and undo deletes the ones that were not there and adds back the ones that
    were (`restore_rules`)."""
    saved, now, rule = var("rules"), var("rules_now"), var("rule")
    ip = f"ip -{args.family} rule"
    return ShellStep(
        check=holds, save=(f"{saved}=$({matching_rules(args, exact=exact)})",), saved=(saved,),
        apply=tuple(apply),
        undo=(f"{now}=$({matching_rules(args, exact=exact)})",
              *_replayed(saved, now, rule, f"{ip} del ${rule}", f"{ip} add ${rule}")))


def bridge_settings_step(out: ShellLinux, name: str, options: dict[str, str], mtu: int | None,
                         var: ShellVar) -> ShellStep:
    """bridge.present with options or an MTU: the bridge is made if missing, then each option
    and the MTU set where they differ (STP turned off first, or on last: `ordered`). Undo
    deletes a bridge it made, or puts back the options and MTU as /sys showed them."""
    exists = var("exists")

    def path(key: str) -> str:
        return sys_path(name, "bridge", key)

    def current(key: str) -> str:  # VLAN filtering is off where the kernel has none
        return f"$(cat {path(key)} 2>/dev/null || echo 0)" if key == "vlan_filtering" else \
            f"$(cat {path(key)})"

    holds = [f"[ -d {sys_path(name, 'bridge')} ]",
             *(f"[ \"{current(k)}\" = {word(v)} ]" for k, v in options.items()),
             *([f"[ \"$(cat {sys_path(name, 'mtu')})\" = {mtu} ]"] if mtu is not None else [])]
    save = [f"if {shell_exists(name)}; then {exists}=1; else {exists}=0; fi"]
    saved = [exists]
    for key in options:
        save.append(f"{var(key)}=$(cat {path(key)} 2>/dev/null || true)")
        saved.append(var(key))
    apply = [f"if [ ! -e {sys_path(name)} ]; then {out.one_line(AddBridge(name))}; fi"]
    for batch in ordered(options):
        for key, value in batch.items():
            apply.append(f"[ \"{current(key)}\" = {word(value)} ] || "
                         f"{out.one_line(SetBridge(name, {key: value}))}")
    restore = []
    for key in options:
        back = value_of(var(key))
        # the value as /sys printed it: written back there on CentOS 6, given to `ip` today
        put = command(sysfs_write(f"{SYS_NET}/{name}/bridge/{key}", back)) if out.centos6 \
            else out.one_line(SetBridge(name, {key: back}))
        restore.append(f"if [ -n \"${var(key)}\" ] && [ \"{current(key)}\" != \"${var(key)}\" ]; "
                       f"then {put}; fi")
    if "stp_state" in options:  # off before the others, on after them
        stp = restore.pop(list(options).index("stp_state"))
        restore = [f"if [ \"${var('stp_state')}\" = 0 ]; then", *indent([stp]), "fi", *restore,
                   f"if [ \"${var('stp_state')}\" != 0 ]; then", *indent([stp]), "fi"]
    if mtu is not None:
        save.append(f"{var('mtu')}=$(cat {sys_path(name, 'mtu')} 2>/dev/null || true)")
        saved.append(var("mtu"))
        apply.append(f"[ \"$(cat {sys_path(name, 'mtu')})\" = {mtu} ] || "
                     f"{out.one_line(SetLink(name, mtu=mtu))}")
        restore.append(f"if [ -n \"${var('mtu')}\" ]; then [ \"$(cat {sys_path(name, 'mtu')})\" "
                       f"= \"${var('mtu')}\" ] || "
                       f"{out.one_line(SetLink(name, mtu=value_of(var('mtu'))))}; fi")  # type: ignore
    gone = out.one_line(DelLink(name, "bridge"))
    return ShellStep(
        check=" && ".join(holds), save=tuple(save), saved=tuple(saved), apply=tuple(apply),
        undo=(f"if [ \"${exists}\" = 0 ]; then",
              f"    if {shell_exists(name)}; then {gone}; fi",
              f"elif {shell_exists(name)}; then", *indent(restore), "fi"))
