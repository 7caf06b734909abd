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

from runflow.core.actions import ShellStep, sh
from runflow.core.export import value_of, word

from .args import DelBridge, DelPort
from .commands import NEWLINE_WORDS, vsctl, vsctl_ops
from .rows import NAMES, REFERENCES, STATUS

# `list TABLE ROW | awk ...` → "TABLE UUID" of each row it refers to that goes with it.
_REFERRED = r'''
BEGIN { n = split(refs, r, " "); for (k = 1; k <= n; k++) { split(r[k], kv, "="); table[kv[1]] = kv[2] } }
{
    i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col)
    if (!(col in table)) next
    val = substr($0, i + 1); gsub(/[^0-9a-f-]/, " ", val); m = split(val, w, " ")
    for (k = 1; k <= m; k++) if (length(w[k]) == 36) print table[col], w[k]
}'''

# `list TABLE ROW | awk ...` → the row's create command, one word a line.
_CREATE = r'''
BEGIN {
    n = split(skip, s, " "); for (k = 1; k <= n; k++) skipped[s[k]] = 1
    m = split(made, u, " ")
    print "--"; print "--id=@u" row; print "create"; print tbl
}
{
    i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col); val = substr($0, i + 2)
    if (col == "_uuid" || ((tbl ":" col) in skipped) || val == "[]" || val == "{}" || val == "\"\"") next
    for (k = 1; k <= m; k++) gsub(u[k], "@u" u[k], val)
    print col "=" val
}'''

# `list Interface ROW | awk ...` → its name if it is an internal port.
_INTERNAL = r'''
{ i = index($0, ":"); col = substr($0, 1, i - 1); sub(/ +$/, "", col); val = substr($0, i + 2)
  gsub(/^"|"$/, "", val); v[col] = val }
END { if (v["type"] == "internal") print v["name"] }'''

# `ip -o addr show dev N | awk ...` → `addr add` lines (no link-local IPv6, nothing dynamic).
_ADDRESSES = r'''
{
    sub(/\\.*/, ""); fam = $3; line = "addr add " $4; skip = 0
    for (k = 5; k <= NF; k++) {
        if ($k == "peer" || $k == "brd" || $k == "label") { line = line " " $k " " $(k + 1); k++ }
        else if ($k == "scope") { if ($(k + 1) == "link" && fam == "inet6") skip = 1
                                  else if ($(k + 1) != "global") line = line " scope " $(k + 1); k++ }
        else if ($k == "dynamic") skip = 1
        else if ($k ~ /^(noprefixroute|nodad|home|mngtmpaddr|autojoin)$/) line = line " " $k
        else if (fam == "inet" && k == NF && $k != dev) line = line " label " $k
    }
    if (!skip) print line " dev " dev
}'''

# `ip route show table all dev N | awk ...` → `route add` lines (the kernel's own, learnt and
# multipath routes left out).
_ROUTES = r'''
function flush() { if (kept != "") print kept; kept = "" }
/^[ \t]/ { kept = ""; next }
{
    flush()
    if ($1 ~ /^(local|broadcast|multicast|anycast|nat)$/ || / proto (kernel|ra)( |$)/ || / table local( |$)/ || / expires / || / cache( |$)/) next
    line = "route add"
    for (k = 1; k <= NF; k++) if ($k !~ /^(linkdown|dead|offload|trap|rt_offload|rt_trap|rt_offload_failed|pervasive|notify)$/) line = line " " $k
    kept = line " dev " dev
}
END { flush() }'''


def _refs_of(table: str) -> str:
    """column=TABLE words of the references that go with a row of table (weak ones, to
    ports, are kept as they are made again by name: see _CREATE's @u words)."""
    return " ".join(f"{column}={ref.table}" for column, ref in REFERENCES.get(table, {}).items()
                    if ref.kind != NAMES and ref.table not in ("QoS", "Queue"))


_SKIPPED = " ".join(f"{table}:{column}" for table, columns in STATUS.items()
                    for column in columns)


def removal_shell(db: str | None, kind: str, name: str, bridge: str | None,
                  var: Callable[[str], str]) -> ShellStep:
    """The shell form of removing a bridge (kind "bridge"; a fake bridge too), or a port or
    bond (kind "port" / "bond", on `bridge` when given)."""
    rows, words, links, links6 = var("rows"), var("words"), var("links"), var("links6")
    row, table, port, mirror = var("row"), var("table"), var("port"), var("mirror")
    parent = var("parent")
    vs = lambda *w, **o: vsctl(db, *w, **o)  # noqa: E731 (a short name for long lines)
    listed = lambda t, r: vs("list", t, r)  # noqa: E731

    def referred(of_table: str, record: str) -> str:
        return f"{listed(of_table, record)} | awk -v refs={sh(_refs_of(of_table))} {sh(_REFERRED)}"

    if kind == "bridge":
        exists = vs("br-exists", name)
        check = f"! {exists}"
        fake = f"[ -n \"$({vs('br-to-parent', name)})\" ] && [ \"$({vs('br-to-parent', name)})\" != {word(name)} ]"
        # A fake bridge's rows are its ports (its own and those with its VLAN) on its parent.
        collect = (
            f"if {fake}; then {parent}=$({vs('br-to-parent', name)})",
            f"    {rows}=$(for {port} in {word(name)} $({vs('list-ports', name)}); do "
            f"echo Port \"$({vs('get', 'Port', value_of(port), '_uuid')})\"; done)",
            f"else {parent}=",
            f"    {rows}=$(echo Bridge \"$({vs('get', 'Bridge', name, '_uuid')})\"; "
            f"{referred('Bridge', name)})",
            "fi",
        )
        undo_if = f"! {exists}"
        apply = vsctl_ops(db, [DelBridge(name)])
    else:
        on = f"{vs('port-to-br', name)} 2>/dev/null"
        check = f"! {on} >/dev/null" if bridge is None else f"[ \"$({on})\" != {word(bridge)} ]"
        # (A port of a fake bridge is on the fake bridge's parent.)
        collect = (f"{parent}=$({on})",
                   f"{parent}=$({vs('br-to-parent', value_of(parent))})",
                   f"{rows}=\"Port $({vs('get', 'Port', name, '_uuid')})\"")
        undo_if = f"[ -n \"${parent}\" ] && ! {on} >/dev/null"
        apply = vsctl_ops(db, [DelPort(bridge, name)])
    # Each port's interfaces (and their QoS stays: referred to by UUID).
    interfaces = (f"{rows}=$(printf '%s\\n' \"${rows}\"; printf '%s\\n' \"${rows}\" | "
                  f"while read -r {table} {row}; do if [ \"${table}\" = Port ]; then "
                  f"{referred('Port', value_of(row))}; fi; done)")
    made = f"$(printf '%s\\n' \"${rows}\" | awk '{{print $2}}' | tr '\\n' ' ')"
    creates = (f"printf '%s\\n' \"${rows}\" | while read -r {table} {row}; do "
               f"{listed(value_of(table), value_of(row))} | awk -v tbl=\"${table}\" "
               f"-v row=\"${row}\" -v made=\"{made}\" -v skip={sh(_SKIPPED)} {sh(_CREATE)}; done")
    # Where the rows go back: the bridge into the Open_vSwitch row; or the ports into their
    # bridge, and into the selections of its mirrors that had them (a mirror by its name,
    # which it keeps if its bridge is made again, else by its UUID).
    key = var("mirror_key")
    selections = (
        f"{key}=$({vs('get', 'Mirror', value_of(mirror), 'name')} | tr -d '\"'); "
        f"[ -n \"${key}\" ] || {key}=\"${mirror}\"; "
        + "".join(
            f"if {vs('get', 'Mirror', value_of(mirror), column)} | grep -q \"${row}\"; then "
            f"printf '%s\\n' -- {how}; fi; "
            for column, how in (
                ("select_src_port", f"add Mirror \"${key}\" select_src_port \"@u${row}\""),
                ("select_dst_port", f"add Mirror \"${key}\" select_dst_port \"@u${row}\""),
                ("output_port", f"set Mirror \"${key}\" \"output_port=@u${row}\""))))
    top = (f"if [ -z \"${parent}\" ]; then printf '%s\\n' -- add Open_vSwitch . bridges "
           f"\"@u$(printf '%s\\n' \"${rows}\" | awk '$1 == \"Bridge\" {{print $2}}')\"; "
           f"else printf '%s\\n' \"${rows}\" | while read -r {table} {row}; do "
           f"[ \"${table}\" = Port ] || continue; "
           f"printf '%s\\n' -- add Bridge \"${parent}\" ports \"@u${row}\"; "
           f"for {mirror} in $({vs('get', 'Bridge', value_of(parent), 'mirrors')} | tr -d '[],'); "
           f"do {selections}done; done; fi")
    # The Linux side of the internal ports among the rows.
    names = (f"printf '%s\\n' \"${rows}\" | while read -r {table} {row}; do "
             f"[ \"${table}\" = Interface ] && {listed('Interface', value_of(row))} | "
             f"awk {sh(_INTERNAL)}; done")
    link = var("link")
    per_link = (f"for {link} in $({names}); do "
                f"ip -o link show dev \"${link}\" 2>/dev/null | awk -v dev=\"${link}\" "
                + sh(r'{ if (match($0, / mtu [0-9]+/)) print "link set dev " dev substr($0, RSTART, RLENGTH)'
                     r'; if ($3 ~ /[<,]UP[,>]/) print "link set dev " dev " up" }')
                + f"; ip -o addr show dev \"${link}\" | awk -v dev=\"${link}\" {sh(_ADDRESSES)}; "
                f"ip -4 route show table all dev \"${link}\" | awk -v dev=\"${link}\" {sh(_ROUTES)}; "
                f"ip -o link show dev \"${link}\" 2>/dev/null | awk -v dev=\"${link}\" "
                + sh(r'$3 !~ /[<,]UP[,>]/ { print "link set dev " dev " down" }')
                + "; done")
    per_link6 = (f"for {link} in $({names}); do ip -6 route show table all dev \"${link}\" | "
                 f"awk -v dev=\"${link}\" {sh(_ROUTES)}; done")
    return ShellStep(
        check=check,
        save=(*collect,
              f"if [ -n \"${rows}\" ]; then",
              f"    {interfaces}",
              f"    {words}=$({creates}; {top})",
              f"    {links}=$({per_link})",
              f"    {links6}=$({per_link6})",
              f"else {words}=; {links}=; {links6}=; fi"),
        saved=(parent, words, links, links6),
        apply=(apply,),
        undo=("# shellcheck disable=SC2086",
              f"if [ -n \"${words}\" ] && {undo_if}; then",
              f"    ({NEWLINE_WORDS}; {vsctl(db)} ${words} >/dev/null)",
              f"    if [ -n \"${links}\" ]; then printf '%s\\n' \"${links}\" | ip -batch -; fi",
              f"    if [ -n \"${links6}\" ]; then printf '%s\\n' \"${links6}\" | ip -6 -batch -; fi",
              "fi"))
