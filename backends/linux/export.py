"""The shell forms of the Linux actions, for `runflow export`: the same records and changes
as the backends use, as a POSIX sh script reads and makes them on the host. Links are read
from /sys as sysfs.py reads them (brport/bridge is the master on 2.6.32), addresses from
`ip -o addr show`, routes from `ip route show exact`; the commands are `render`'s. What a
step saves for its undo goes into its variables (`var`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from runflow.core.actions import ShellStep
from runflow.core.export import command, indent, value_of, word
from runflow.core.hosts import Host

from .args import (AddAddr, AddBridge, AddVeth, Change, DelAddr, DelLink, Enslave, Release,
                   RouteArgs, SetLink)
from .commands import render
from .sysfs import SYS_NET

ShellVar = Callable[[str], str]
ALL_KEYS = ("exists", "ports", "mtu", "master", "addrs4", "addrs6", "mac", "mac_set", "up")
VETH_KEYS = tuple(k for k in ALL_KEYS if k not in ("ports", "mac_set"))  # a veth's MAC comes back

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
        given (exists, up, mtu, master, mac, mac_set, ports in port order, addrs4, addrs6), and the
        names of those variables."""
        p = lambda *leaf: sys_path(name, *leaf)  # noqa: E731
        reads = {
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
        bridge, or a veth with `peer`) is recreated; then its ports, MTU, master, addresses,
        MAC (of a recreated link) and state."""
        body: list[str] = []
        if "exists" in keys:
            made = [AddBridge(name)] if kind == "bridge" else [AddVeth(name, peer or "")]
            body.append(f"if [ ! -e {sys_path(name)} ]; then {self.one_line(*made)}; "
                        f"{v('fresh')}=1; else {v('fresh')}=0; fi")
        if "ports" in keys:
            port = value_of(v("port"))
            body += ["# shellcheck disable=SC2086",
                     f"for {v('port')} in ${v('ports')}; do "
                     f"{shell_is_port(name, port)} || {self.one_line(Enslave(port, name))}; done"]
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
        if "exists" not in keys:
            return [f"if {shell_exists(name)}; then", *indent(body), "fi"]
        gone = self.one_line(DelLink(name, kind))
        return [f"if [ \"${v('exists')}\" = 0 ]; then",
                f"    if {shell_exists(name)}; then {gone}; fi",
                "else", *indent(body), "fi"]

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
                   apply: Sequence[str]) -> ShellStep:
    """A step that changes dev's addresses of one family: it saves them, and undo puts them
    back."""
    saved = var(f"addrs{fam}")
    return ShellStep(check=holds, save=(f"{saved}=$({address_specs(dev, fam)})",),
                     saved=(saved,), apply=tuple(apply),
                     undo=(f"if {shell_exists(dev)}; then", *indent(out.restore_addresses(
                         dev, fam, var)), "fi"))


def _routes_to(args: RouteArgs) -> str:
    """The routes to args.to as `ip route show` prints them, less the "linkdown" flag (a
    state, which `ip route del|replace` would not take back)."""
    return f"ip -{args.family} route show exact {word(args.to)} | sed 's/ linkdown//'"


def matching_routes(args: RouteArgs) -> str:
    """A pipeline printing the routes `ip route show exact` gives for args.to that match
    via, dev and metric where given (`route_matches`)."""
    to = args.to
    short = to.rsplit("/", 1)[0] if to.endswith(("/32", "/128")) else to  # ip's host routes
    wanted = " ".join(f"{key} {getattr(args, key)}" for key in ("via", "dev", "metric")
                      if getattr(args, key) is not None)
    return (f"{_routes_to(args)} | T1={word(to)} T2={word(short)} "
            f"W={word(wanted)} awk 'BEGIN {{ n = split(ENVIRON[\"W\"], w, \" \") }} "
            "$1 == ENVIRON[\"T1\"] || $1 == ENVIRON[\"T2\"] { m = 0; "
            "for (j = 1; j < n; j += 2) for (i = 2; i < NF; i++) "
            "if ($i == w[j] && $(i + 1) == w[j + 1]) m++; if (2 * m == n) print }'")


def routes_step(args: RouteArgs, var: ShellVar, holds: str, apply: Sequence[str]) -> ShellStep:
    """A step that changes the routes to args.to: it saves them (as `ip route show` prints
    them, which `ip route replace` takes back), and undo deletes the ones that were not there
    and puts back the ones that were (`restore_routes`)."""
    saved, now, route = var("routes"), var("routes_now"), var("route")
    show = _routes_to(args)
    ip = f"ip -{args.family} route"
    return ShellStep(
        check=holds, save=(f"{saved}=$({show})",), saved=(saved,), apply=tuple(apply),
        undo=(f"{now}=$({show})",
              "# shellcheck disable=SC2086",
              f"printf '%s\\n' \"${now}\" | while read -r {route}; do "
              f"if [ -n \"${route}\" ] && ! printf '%s\\n' \"${saved}\" | grep -qxF -- "
              f"\"${route}\"; then (set -f; {ip} del ${route}); fi; done",
              "# shellcheck disable=SC2086",
              f"printf '%s\\n' \"${saved}\" | while read -r {route}; do "
              f"if [ -n \"${route}\" ] && ! printf '%s\\n' \"${now}\" | grep -qxF -- "
              f"\"${route}\"; then (set -f; {ip} replace ${route}); fi; done"))
