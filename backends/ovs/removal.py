"""The shell forms (`runflow export`) of the removals: ovs.bridge.absent (a bridge, or a fake
bridge), ovs.port.absent and ovs.bond.absent.

As a run does (backends/ovs/rows.py), the script records before the removal what it destroys,
and its undo makes it again in one ovs-vsctl invocation. With no Python on the host, the record
is that invocation's words, one a line, written at save time from `ovs-vsctl list` of each row
that goes (its columns but those ovs-vswitchd writes, and empty ones): a `--id=@uUUID create
TABLE COLUMN=VALUE...` command per row, its references to rows made again written as `@uUUID`,
then the `add` that puts the bridge (or ports) back where it was, and the mirrors' selections
of the ports. `list` prints values as `create` reads them, in every Open vSwitch since 1.0.
QoS and Queue rows stay when ports go: the recreated ports refer to them by UUID.
The Linux side of internal ports is recorded as `ip -batch` lines (up, MTU, addresses, routes:
backends/ovs/ipstate.py says which) and replayed after the rows are back.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from runflow.core.actions import ShellStep, sh
from runflow.core.export import value_of, word

from .args import DelBridge, DelPort
from .commands import NEWLINE_WORDS, vsctl, vsctl_ops
from .rows import NAMES, REFERENCES, STATUS

# `list TABLE ROW | awk -v refs="COLUMN=TABLE ..."` → "TABLE UUID" of each row it refers to.
_REFERRED = r"""
BEGIN {
    n = split(refs, r, " ")
    for (k = 1; k <= n; k++) { split(r[k], kv, "="); table[kv[1]] = kv[2] }
}
{
    i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col)
    if (!(col in table)) next
    val = substr($0, i + 1); gsub(/[^0-9a-f-]/, " ", val); m = split(val, w, " ")
    for (k = 1; k <= m; k++) if (length(w[k]) == 36) print table[col], w[k]
}"""

# `list TABLE ROW | awk -v tbl=TABLE -v row=UUID -v made="UUID..." -v skip="TABLE:COLUMN..."`
# → the row's create command, one word a line (references to rows made again as @uUUID).
_CREATE = r"""
BEGIN {
    n = split(skip, s, " "); for (k = 1; k <= n; k++) skipped[s[k]] = 1
    m = split(made, u, " ")
    print "--"; print "--id=@u" row; print "create"; print tbl
}
{
    i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col)
    val = substr($0, i + 2)
    if (col == "_uuid" || ((tbl ":" col) in skipped)) next
    if (val == "[]" || val == "{}" || val == "\"\"") next
    for (k = 1; k <= m; k++) gsub(u[k], "@u" u[k], val)
    print col "=" val
}"""

# `list Interface ROW | awk` → its name if it is an internal port.
_INTERNAL = r"""
{
    i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col)
    val = substr($0, i + 2); gsub(/^"|"$/, "", val); v[col] = val
}
END { if (v["type"] == "internal") print v["name"] }"""

# `ip -o link show dev N | awk -v dev=N` → its MTU and up (the first lines of its batch), or
# with -v last=1 → down (the last line: after its addresses and routes, as ipstate does).
_LINK = r"""
!last && match($0, / mtu [0-9]+/) { print "link set dev " dev substr($0, RSTART, RLENGTH) }
!last && $3 ~ /[<,]UP[,>]/ { print "link set dev " dev " up" }
last && $3 !~ /[<,]UP[,>]/ { print "link set dev " dev " down" }"""

# `ip -o addr show dev N | awk -v dev=N` → `addr add` lines (not IPv6 link-local, nor
# what a daemon gave: dynamic).
_ADDRESSES = r"""
{
    sub(/\\.*/, ""); fam = $3; line = "addr add " $4; skip = 0
    for (k = 5; k <= NF; k++) {
        if ($k == "peer" || $k == "brd" || $k == "label") { line = line " " $k " " $(k + 1); k++ }
        else if ($k == "scope") {
            if ($(k + 1) == "link" && fam == "inet6") skip = 1
            else if ($(k + 1) != "global") line = line " scope " $(k + 1)
            k++
        }
        else if ($k == "dynamic") skip = 1
        else if ($k ~ /^(noprefixroute|nodad|home|mngtmpaddr|autojoin)$/) line = line " " $k
        else if (fam == "inet" && k == NF && $k != dev) line = line " label " $k
    }
    if (!skip) print line " dev " dev
}"""

# `ip route show table all dev N | awk -v dev=N` → `route add` lines (not the kernel's own
# routes, nor learnt or multipath ones).
_ROUTES = r"""
function flush() { if (kept != "") print kept; kept = "" }
/^[ \t]/ { kept = ""; next }
{
    flush()
    if ($1 ~ /^(local|broadcast|multicast|anycast|nat)$/) next
    if (/ proto (kernel|ra)( |$)/ || / table local( |$)/ || / expires / || / cache( |$)/) next
    line = "route add"
    for (k = 1; k <= NF; k++)
        if ($k !~ /^(linkdown|dead|offload|trap|rt_offload|rt_trap|rt_offload_failed)$/ &&
            $k !~ /^(pervasive|notify)$/) line = line " " $k
    kept = line " dev " dev
}
END { flush() }"""


def _refs_of(table: str) -> str:
    """COLUMN=TABLE words of the references to rows that go with a row of table (not to
    ports, which a mirror refers to and are made again anyway, nor to QoS and Queue rows,
    which stay)."""
    return " ".join(f"{column}={ref.table}" for column, ref in REFERENCES.get(table, {}).items()
                    if ref.kind != NAMES and ref.table not in ("QoS", "Queue"))


_SKIPPED = " ".join(f"{table}:{column}" for table, columns in STATUS.items()
                    for column in columns)


class _Names:
    """The shell variables of a removal's shell form, and ovs-vsctl command lines."""

    def __init__(self, db: str | None, var: Callable[[str], str]) -> None:
        self.vsctl = partial(vsctl, db)
        for name in ("rows", "words", "links", "links6", "row", "table", "port", "mirror",
                     "key", "parent", "link"):
            setattr(self, name, var(name))

    def referred(self, table: str, record: str) -> str:
        """A command printing "TABLE UUID" of the rows the record refers to that go with it."""
        return (f"{self.vsctl('list', table, record)} | awk -v refs={sh(_refs_of(table))} "
                f"{sh(_REFERRED)}")

    def each_row(self, body: str) -> str:
        """A loop running body for each "TABLE UUID" line of the rows."""
        return (f"printf '%s\\n' \"${self.rows}\" | while read -r {self.table} {self.row}; "
                f"do {body}; done")


def removal_shell(db: str | None, kind: str, name: str, bridge: str | None,
                  var: Callable[[str], str]) -> ShellStep:
    """The shell form of removing a bridge (kind "bridge"; a fake bridge too), or a port or
    bond (kind "port" / "bond", on `bridge` when given)."""
    v = _Names(db, var)
    if kind == "bridge":
        exists = v.vsctl("br-exists", name)
        check, undo_if = f"! {exists}", f"! {exists}"
        collect = _bridge_rows(v, name)
        apply = vsctl_ops(db, [DelBridge(name)])
    else:
        on = f"{v.vsctl('port-to-br', name)} 2>/dev/null"
        check = f"! {on} >/dev/null" if bridge is None else f"[ \"$({on})\" != {word(bridge)} ]"
        # (A port of a fake bridge is on the fake bridge's parent.)
        collect = (f"{v.parent}=$({on})",
                   f"{v.parent}=$({v.vsctl('br-to-parent', value_of(v.parent))})",
                   f"{v.rows}=\"Port $({v.vsctl('get', 'Port', name, '_uuid')})\"")
        undo_if = f"[ -n \"${v.parent}\" ] && ! {on} >/dev/null"
        apply = vsctl_ops(db, [DelPort(bridge, name)])
    # Each port's interfaces go too (its QoS stays: referred to by UUID).
    interfaces = v.each_row(f"if [ \"${v.table}\" = Port ]; then "
                            f"{v.referred('Port', value_of(v.row))}; fi")
    made = f"$(printf '%s\\n' \"${v.rows}\" | awk '{{print $2}}' | tr '\\n' ' ')"
    creates = v.each_row(f"{v.vsctl('list', value_of(v.table), value_of(v.row))} | awk "
                         f"-v tbl=\"${v.table}\" -v row=\"${v.row}\" -v made=\"{made}\" "
                         f"-v skip={sh(_SKIPPED)} {sh(_CREATE)}")
    return ShellStep(
        check=check,
        save=(*collect,
              f"if [ -n \"${v.rows}\" ]; then",
              f"    {v.rows}=$(printf '%s\\n' \"${v.rows}\"; {interfaces})",
              f"    {v.words}=$({creates}; {_placement(v)})",
              *(f"    {line}" for line in _links(v)),
              f"else {v.words}=; {v.links}=; {v.links6}=; fi"),
        saved=(v.parent, v.words, v.links, v.links6),
        apply=(apply,),
        undo=("# shellcheck disable=SC2086",
              f"if [ -n \"${v.words}\" ] && {undo_if}; then",
              f"    ({NEWLINE_WORDS}; {vsctl(db)} ${v.words} >/dev/null)",
              *(f"    if [ -n \"${lines}\" ]; then printf '%s\\n' \"${lines}\" | "
                f"ip {options}-batch -; fi" for lines, options in ((v.links, ""),
                                                                   (v.links6, "-6 "))),
              "fi"))


def _bridge_rows(v: _Names, name: str) -> tuple[str, ...]:
    """Lines setting `parent` and `rows` ("TABLE UUID" lines) for a bridge: the bridge and the
    rows that go with it; or for a fake bridge, its parent and its ports (its own, and those
    with its VLAN)."""
    to_parent = f"$({v.vsctl('br-to-parent', name)})"
    return (f"if [ \"{to_parent}\" != {word(name)} ]; then {v.parent}={to_parent}",
            f"    {v.rows}=$(for {v.port} in {word(name)} $({v.vsctl('list-ports', name)}); "
            f"do echo Port \"$({v.vsctl('get', 'Port', value_of(v.port), '_uuid')})\"; done)",
            f"else {v.parent}=",
            f"    {v.rows}=$(echo Bridge \"$({v.vsctl('get', 'Bridge', name, '_uuid')})\"; "
            f"{v.referred('Bridge', name)})",
            "fi")


def _placement(v: _Names) -> str:
    """A command printing the words that put the rows back where they were: the bridge into
    the Open_vSwitch row; or the ports into their bridge, and into the selections of its
    mirrors that had them (a mirror by its name, which it keeps if its bridge is made again,
    else by its UUID)."""
    selections = "".join(
        f"if {v.vsctl('get', 'Mirror', value_of(v.mirror), column)} | grep -q \"${v.row}\"; "
        f"then printf '%s\\n' -- {words}; fi; "
        for column, words in (
            ("select_src_port", f"add Mirror \"${v.key}\" select_src_port \"@u${v.row}\""),
            ("select_dst_port", f"add Mirror \"${v.key}\" select_dst_port \"@u${v.row}\""),
            ("output_port", f"set Mirror \"${v.key}\" \"output_port=@u${v.row}\"")))
    mirrors = (f"for {v.mirror} in $({v.vsctl('get', 'Bridge', value_of(v.parent), 'mirrors')}"
               f" | tr -d '[],'); do "
               f"{v.key}=$({v.vsctl('get', 'Mirror', value_of(v.mirror), 'name')} | "
               f"tr -d '\"'); [ -n \"${v.key}\" ] || {v.key}=\"${v.mirror}\"; "
               f"{selections}done")
    bridge = f"$(printf '%s\\n' \"${v.rows}\" | awk '$1 == \"Bridge\" {{print $2}}')"
    ports = v.each_row(f"[ \"${v.table}\" = Port ] || continue; "
                       f"printf '%s\\n' -- add Bridge \"${v.parent}\" ports \"@u${v.row}\"; "
                       f"{mirrors}")
    return (f"if [ -z \"${v.parent}\" ]; then "
            f"printf '%s\\n' -- add Open_vSwitch . bridges \"@u{bridge}\"; else {ports}; fi")


def _links(v: _Names) -> tuple[str, str]:
    """Lines setting `links` and `links6` to the `ip -batch` lines that put back the Linux
    side of the internal ports among the rows (backends/ovs/ipstate.py says which)."""
    names = v.each_row(f"[ \"${v.table}\" = Interface ] && "
                       f"{v.vsctl('list', 'Interface', value_of(v.row))} | awk {sh(_INTERNAL)}")
    dev = f"\"${v.link}\""
    show = f"ip -o link show dev {dev} 2>/dev/null | awk -v dev={dev}"
    v4 = (f"{show} {sh(_LINK)}; "
          f"ip -o addr show dev {dev} | awk -v dev={dev} {sh(_ADDRESSES)}; "
          f"ip -4 route show table all dev {dev} | awk -v dev={dev} {sh(_ROUTES)}; "
          f"{show} -v last=1 {sh(_LINK)}")
    v6 = f"ip -6 route show table all dev {dev} | awk -v dev={dev} {sh(_ROUTES)}"
    return (f"{v.links}=$(for {v.link} in $({names}); do {v4}; done)",
            f"{v.links6}=$(for {v.link} in $({names}); do {v6}; done)")
