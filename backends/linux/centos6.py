"""The Linux family on CentOS 6's tools: `Centos6`, the `Linux` of the iproute2 and brctl
backends (target centos6). It reads and changes the host only through commands run by
ctx.run, so that it works wherever a command can run, with nothing but iproute 2.6.32,
bridge-utils 1.2, coreutils, grep and sh:

    links        one `grep -sH '' FILE...` of the files sysfs.py names, for all the links
                 the instances of a step name; `ls /sys/class/net` first when every link is
                 wanted (a veth's peer found by its ifindex); a bridge's ports (to recreate
                 it) with `ls /sys/class/net/BR/brif` and one grep of their numbers and
                 options
    other netns  `ip netns exec NAME ip -o link show dev N` (`nsenter -t PID -n ...`)
    addresses    `ip -o addr show [dev D]`
    routes       `ip -4|-6 route show table T|all [exact PREFIX]`
    rules        `ip -4|-6 rule show`
    changes      consecutive `ip` commands through one `ip -batch -`; consecutive brctl
                 commands started by one `sh` reading them on stdin (a constant program);
                 consecutive /sys writes (bridge options) by one `sh` reading them likewise

The commands are commands.py's `render`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from runflow.core.actions import Context
from runflow.core.errors import CommandError

from .actions import Linux, abridged
from .args import ABSENT, Change, Netns, Record
from .commands import SYSFS_WRITE, parse_addresses, parse_link, parse_routes, parse_rules
from .sysfs import (GREP_FILES, GREP_FULL, GREP_PORT, SYS_NET, Printed, link_record,
                    ports_in_order, ports_options, printed_links)

# Files per grep: its argv stays far below the kernel's limit (2 MiB, and the remote
# command line of an SSH host) whatever the number of links.
FILES_PER_READ = 2400


class Centos6(Linux):
    """Runs `ip` and `brctl`; reads links from /sys with grep, addresses and routes from
    `ip` output."""

    centos6 = True

    # -- observing --

    def links(self, ctx: Context, names: Sequence[str] | None, *,
              full: bool) -> Mapping[str, Record]:
        if names is None:
            names = ctx.run(["ls", "-1", SYS_NET]).stdout.split()
        entries = _grep(ctx, [f"{SYS_NET}/{name}/{leaf}" for name in names
                              for leaf in (GREP_FULL if full else GREP_FILES)])
        records = {}
        for name in names:
            rec = link_record(entries[name], full=full) if name in entries else ABSENT
            if rec["exists"]:
                records[name] = rec
            if full and rec.get("kind") == "bridge":
                ports = ctx.run(["ls", "-1", f"{SYS_NET}/{name}/brif"], check=False).stdout
                read = _grep(ctx, [f"{SYS_NET}/{name}/brif/{port}/{leaf}"
                                   for port in ports.split() for leaf in GREP_PORT])
                bridge = read.get(name, Printed({}))
                rec["ports"] = ports_in_order(bridge, ports.split())
                rec["ports_options"] = ports_options(bridge, rec["ports"])
        return records

    def remote_link(self, ctx: Context, ns: Netns, name: str) -> Record:
        # `ip`, not /sys: nsenter (a process's namespace) does not mount that namespace's /sys
        done = ctx.run([*ns.prefix(), "ip", "-o", "link", "show", "dev", name], check=False)
        found = parse_link(done.stdout) if done.returncode == 0 else None
        return {"exists": True, **found} if found else dict(ABSENT)

    def addresses(self, ctx: Context, dev: str | None) -> dict[str, list[Record]]:
        argv = ["ip", "-o", "addr", "show", *(["dev", dev] if dev else [])]
        done = ctx.run(argv, check=False)
        return parse_addresses(done.stdout) if done.returncode == 0 else {}

    def routes(self, ctx: Context, fam: int, to: str | None,
               table: int | None) -> list[Record]:
        argv = ["ip", f"-{fam}", "route", "show", "table", "all" if table is None else str(table),
                *(["exact", to] if to else [])]
        done = ctx.run(argv, check=False)
        if done.returncode != 0:
            if "table does not exist" in done.stderr:  # nothing was ever put in it
                return []
            raise CommandError(argv, done.returncode, done.stderr, ctx.host.name)
        return parse_routes(done.stdout, fam, table)

    def rules(self, ctx: Context, fam: int) -> list[Record]:
        return parse_rules(ctx.run(["ip", f"-{fam}", "rule", "show"]).stdout, fam)

    # -- changing --

    def execute(self, ctx: Context, changes: Sequence[Change]) -> None:
        for group in _runs(self.describe(changes, ctx.host)):
            if len(group) == 1:
                ctx.run(group[0])
            elif group[0][0] == "ip":
                # One process for a run of `ip` commands; it stops at the first failure and
                # says which line ("Command failed -:3").
                _fed(ctx, ["ip", "-batch", "-"], [" ".join(c[1:]) for c in group])
            elif group[0][0] == "brctl":
                # Still one brctl process per command (bridge-utils has no batch mode), but
                # started by sh rather than by this (much larger) process: sh starts them 20%
                # faster than xargs did. It goes on after a failure and exits 123, as xargs
                # does; the engine then sees which ones took effect.
                _fed(ctx, ["sh", "-c", BRCTL_LINES], [" ".join(c[1:]) for c in group])
            else:  # /sys writes: "PATH VALUE" lines
                _fed(ctx, ["sh", "-c", SYSFS_LINES], [" ".join(c[4:]) for c in group])


def _grep(ctx: Context, files: list[str]) -> dict[str, Printed]:
    """The files' lines, by link, read by grep FILES_PER_READ at a time."""
    if not files:  # grep would read its standard input
        return {}
    printed = ""
    for start in range(0, len(files), FILES_PER_READ):
        # -s: a file that is not there (a link without a master...) is no error to show; grep
        # then exits 2, and 1 if it printed nothing.
        argv = ["grep", "-s", "-H", "", *files[start:start + FILES_PER_READ]]
        printed += ctx.run(argv, check=False).stdout
        if len(argv) > _JOURNALED:  # the journal keeps the command, not every file it read
            ctx.commands[-1] = (f"{ctx.host.describe(argv[:_JOURNALED])} ... "
                                f"({len(argv) - _JOURNALED} more files)")
    return printed_links(printed)


_JOURNALED = 4 + 2 * len(GREP_FILES)  # grep's arguments and two links' files


# A constant program: the commands' words (validated link names) reach it as data on stdin and
# are passed on as quoted arguments, never read as shell syntax.
BRCTL_LINES = ('status=0; while read -r command a b c; do '
               'brctl "$command" "$a" ${b:+"$b"} ${c:+"$c"} || status=123; done; exit $status')
# The same for writes of /sys files (a path and a value a line); it stops at the first failure,
# as the kernel refusing one option makes the next ones doubtful.
SYSFS_LINES = 'while read -r path value; do echo "$value" >"$path" || exit 1; done'


def _fed(ctx: Context, argv: list[str], lines: list[str]) -> None:
    """Run argv with the lines on stdin, and journal it as a here-document."""
    # Names, addresses and option values are validated or read from /sys (no blanks, quotes
    # or backslashes): safe as words.
    try:
        ctx.run(argv, input="".join(line + "\n" for line in lines))
    finally:
        ctx.commands[-1] += " <<EOF\n" + "\n".join(abridged(lines)) + "\nEOF"


def _runs(commands: list[list[str]]) -> Iterator[list[list[str]]]:
    """Consecutive plain `ip` commands together, consecutive `brctl` commands together,
    consecutive /sys writes together, every other command (ip netns exec, nsenter, and `ip -6`:
    a batch's lines take no options) alone."""
    def kind(argv: list[str]) -> str | None:
        if argv[0] == "ip" and argv[1] != "netns" and not argv[1].startswith("-"):
            return "ip"
        if argv[:3] == ["sh", "-c", SYSFS_WRITE]:
            return "sysfs"
        return "brctl" if argv[0] == "brctl" else None

    group: list[list[str]] = []
    for argv in commands:
        if group and kind(argv) != kind(group[0]):
            yield group
            group = []
        if kind(argv):
            group.append(argv)
        else:
            yield [argv]
    if group:
        yield group
