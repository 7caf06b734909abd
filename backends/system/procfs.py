"""`sysctl.set` by reading and writing /proc/sys (backend `procfs`, both targets).

No process: the step's thread reads and writes the file itself, and in a netns host's worker
thread /proc/sys/net belongs to that namespace. Other sysctls (kernel.*, vm.*, and most of
the rest) and a few under net. are the whole machine's, so a netns host refuses them at
validation (SysctlArgs, with args.outside_netns saying why), before a run or an export; observe
refuses them again, for arguments a plugin or a test built without validation. `describe`
shows the equivalent `sysctl -w NAME=VALUE` (procps 3.2.8 in CentOS 6 has -w).

An SSH host's /proc/sys is not this process's: there the file is read with `cat` (the
instances of a for_each step with one `cat` of all their files) and written with `tee`, the
value on its standard input.

With `persist`, the setting is also written into a file of /etc/sysctl.d as a `NAME = VALUE`
line (the name's other lines there go: the last one would win), and undo puts the file back
as observed, or removes it and the directories made for it. A network namespace's file is its
own, /etc/netns/NAMESPACE/sysctl.d/FILE: `ip netns exec` mounts /etc/netns/NAMESPACE/* over
/etc, so that what runs in the namespace sees it as /etc/sysctl.d/FILE (and the machine's
own boot does not apply it to the machine). On an SSH host the file is read and written by
commands there (files.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, NetnsHost

from .args import SysctlArgs, outside_netns, sysctl_parts
from .files import WRITE, missing_dirs, read_text, remove_dirs, remove_file, write_text

PROC_SYS = "/proc/sys"


def normalize(value: str) -> str:
    """Multi-value sysctls read back tab-separated ("4096\t87380\t6291456")."""
    return " ".join(value.split())


def persist_path(host: Host, args: SysctlArgs) -> str | None:
    """The file `persist` names, on this host (a network namespace's own: see above)."""
    if args.persist is None:
        return None
    if isinstance(host, NetnsHost):
        return f"/etc/netns/{host.netns}{args.persist.removeprefix('/etc')}"
    return args.persist


def _setting(line: str) -> tuple[list[str], str] | None:
    """A sysctl.d line's name (as its parts) and value, or None (a comment, a blank line)."""
    text = line.strip()
    if not text or text[0] in "#;" or "=" not in text:
        return None
    name, _, value = text.partition("=")
    return sysctl_parts(name.strip().lstrip("-")), normalize(value)


def persisted(text: str | None, args: SysctlArgs) -> str | None:
    """The value the file gives the sysctl (its last line for it), or None."""
    found = None
    for line in (text or "").splitlines():
        setting = _setting(line)
        if setting and setting[0] == args.path_parts:
            found = setting[1]
    return found


def with_setting(text: str | None, args: SysctlArgs) -> str:
    """The file with the sysctl's line in place of its first line for it (its other lines
    removed), or added at the end."""
    wanted = f"{args.name} = {args.value}"
    lines, placed = [], False
    for line in (text or "").splitlines():
        setting = _setting(line)
        if setting and setting[0] == args.path_parts:
            if not placed:
                lines.append(wanted)
                placed = True
            continue
        lines.append(line)
    if not placed:
        lines.append(wanted)
    return "".join(f"{line}\n" for line in lines)


class SysctlSet(Action):
    name = "sysctl.set"
    backend = "procfs"
    family = "sysctl"
    Args = SysctlArgs
    summary = "a kernel parameter has a value (undo puts the old one back)"

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        if host.remote:
            return None
        return None if os.path.isdir(PROC_SYS) else f"{PROC_SYS} is not mounted"

    @staticmethod
    def path(args: SysctlArgs) -> str:
        return os.path.join(PROC_SYS, *args.path_parts)

    def observe(self, ctx: Context, args: SysctlArgs) -> State:
        return self.observe_many(ctx, [args])[0]

    def observe_many(self, ctx: Context, args: Any) -> list[State]:
        if ctx.host.remote:
            # One round trip: `cat` of each file on its own (a missing or write-only one says
            # so on stderr and the others are still read).
            done = ctx.host.run_many([["cat", self.path(a)] for a in args])
            states = [{"exists": True, "value": normalize(d.stdout)} if d.returncode == 0 else
                      {"exists": "No such file" not in d.stderr, "value": None} for d in done]
        else:
            states = [self._value(ctx, a) for a in args]
        for a, state in zip(args, states):
            path = persist_path(ctx.host, a)
            if path is not None and "refused" not in state:
                state["file"] = {"path": path, "text": read_text(path, ctx.host),
                                 "missing_dirs": missing_dirs(ctx, path)}
        return states

    def _value(self, ctx: Context, args: SysctlArgs) -> State:
        why = outside_netns(args.name) if isinstance(ctx.host, NetnsHost) else None
        if why:
            return {"refused": f"{why} (host {ctx.host.name} is {ctx.host.where()})"}
        try:
            with open(self.path(args)) as f:
                return {"exists": True, "value": normalize(f.read())}
        except FileNotFoundError:
            return {"exists": False}
        except PermissionError:  # write-only entries such as net.ipv4.route.flush
            return {"exists": True, "value": None}

    def check(self, args: SysctlArgs, before: State) -> bool:
        file = before.get("file")
        return before.get("value") == normalize(args.value) and (
            file is None or persisted(file["text"], args) == normalize(args.value))

    def _write(self, ctx: Context, args: SysctlArgs, value: str) -> None:
        if ctx.host.remote:
            ctx.run(["tee", self.path(args)], input=value)
            return
        ctx.commands.append(f"procfs: {ctx.host.describe(self._argv(args, value))}")
        try:
            with open(self.path(args), "w") as f:
                f.write(value)
        except OSError as exc:
            raise ActionError(f"cannot set {args.name} to {value!r}: {exc.strerror}") from None

    def apply(self, ctx: Context, args: SysctlArgs, before: State) -> None:
        if "refused" in before:
            raise ActionError(before["refused"])
        if not before["exists"]:
            raise ActionError(f"there is no sysctl {args.name} ({self.path(args)} does not "
                              "exist)")
        if before.get("value") != normalize(args.value):
            self._write(ctx, args, args.value)
        file = before.get("file")
        if file is not None and persisted(file["text"], args) != normalize(args.value):
            try:
                write_text(ctx, file["path"], with_setting(file["text"], args))
            except OSError as exc:
                raise ActionError(f"cannot write {file['path']}: {exc.strerror}") from None

    def undo(self, ctx: Context, args: SysctlArgs, before: State) -> None:
        now = self.observe(ctx, args)
        old = before.get("value")
        if old is not None and now.get("value") != old:
            self._write(ctx, args, old)
        file = before.get("file")
        if file is None:
            return
        path, text = file["path"], file["text"]
        current = read_text(path, ctx.host)
        if text is None and current is not None:
            remove_file(ctx, path)
        elif text is not None and current != text:
            write_text(ctx, path, text)
        remove_dirs(ctx, file["missing_dirs"])

    @staticmethod
    def _argv(args: SysctlArgs, value: str) -> list[str]:
        return ["sysctl", "-w", f"{args.name}={value}"]

    def describe(self, args: SysctlArgs, before: State | None = None) -> list[list[str]]:
        commands = [self._argv(args, args.value)]
        if args.persist is not None:
            file = (before or {}).get("file")
            commands.append([*WRITE, with_setting(file["text"], args), file["path"]] if file
                            else [*WRITE, f"... {args.name} = {args.value}", args.persist])
        return commands

    def describe_undo(self, args: SysctlArgs, before: State | None = None) -> list[list[str]]:
        old = (before or {}).get("value")
        commands = [self._argv(args, old)] if old is not None else []
        file = (before or {}).get("file")
        if file is not None:
            commands.append(["rm", "-f", file["path"]] if file["text"] is None
                            else [*WRITE, file["text"], file["path"]])
            commands += [["rmdir", d] for d in reversed(file["missing_dirs"])]
        return commands

    def shell(self, host: Host, args: SysctlArgs, var: Callable[[str], str]) -> ShellStep:
        """The file under /proc/sys read and written by the script, as here (`ip netns exec`
        gives a namespace's script its own /proc/sys/net); with persist, the file of
        /etc/sysctl.d edited with awk as `with_setting` edits it."""
        path = sh(self.path(args))
        old = var("old")
        step = ShellStep(
            check=f"[ \"$(tr -s '[:blank:]' ' ' <{path})\" = {sh(normalize(args.value))} ]",
            save=(f"{old}=$(cat {path} 2>/dev/null || true)",), saved=(old,),
            apply=(f"[ \"$(tr -s '[:blank:]' ' ' <{path})\" = {sh(normalize(args.value))} ] || "
                   f"printf '%s\\n' {sh(args.value)} >{path}",),
            undo=(f"if [ -n \"${old}\" ] && [ \"$(cat {path})\" != \"${old}\" ]; then "
                  f"printf '%s\\n' \"${old}\" >{path}; fi",))
        file = persist_path(host, args)
        return step if file is None else _persisting(step, file, args, var)


def _persisting(step: ShellStep, file: str, args: SysctlArgs,
                var: Callable[[str], str]) -> ShellStep:
    """The step with its setting also in `file`: the file's text saved (with an "x" after it:
    $(...), here and where the journal keeps it, would take its last newlines away), its
    lines for the name replaced by one by awk, and undo writing the text back or removing the
    file and the directories made for it."""
    f, had, text, made = sh(file), var("had"), var("text"), var("made")
    parents, parent = [], os.path.dirname(file)
    while parent not in ("/", "/etc"):
        parents.insert(0, parent)
        parent = os.path.dirname(parent)
    parts = args.path_parts
    names = {".".join(parts), "/".join(parts)} if "." not in "".join(parts) else {"/".join(parts)}
    names.add(args.name)
    env = f"K={sh(' '.join(sorted(names)))} L={sh(f'{args.name} = {args.value}')}"
    # a line's name: what is before its '=', without blanks and a leading '-'
    name_of = 'k = $0; sub(/=.*/, "", k); gsub(/^[ \\t-]+|[ \\t]+$/, "", k); ' \
              'n = split(ENVIRON["K"], ks, " "); m = 0; ' \
              'if (index($0, "=") && $0 !~ /^[ \\t]*[#;]/) for (i = 1; i <= n; i++) ' \
              'if (k == ks[i]) m = 1; '
    holds = (f"[ \"$({env} awk '{{ {name_of}if (m) {{ v = $0; sub(/^[^=]*=/, \"\", v); "
             "gsub(/[ \\t]+/, \" \", v); gsub(/^ | $/, \"\", v) } } END { print v }' "
             f"{f} 2>/dev/null)\" = {sh(normalize(args.value))} ]")
    rewrite = (f"{{ [ -e {f} ] && cat {f}; true; }} | {env} awk '{{ {name_of}"
               "if (m) { if (!done) print ENVIRON[\"L\"]; done = 1; next } print } "
               f"END {{ if (!done) print ENVIRON[\"L\"] }}' >{f}.runflow-tmp && "
               f"mv {f}.runflow-tmp {f}")
    return ShellStep(
        check=f"{step.check} && {holds}",
        save=(*step.save,
              f"if [ -e {f} ]; then {had}=1; {text}=$(cat {f}; echo x); "
              f"else {had}=0; {text}=; fi",
              f"{made}=; for d in {' '.join(sh(p) for p in parents)}; do "
              f"[ -d \"$d\" ] || {made}=\"$d ${made}\"; done"),
        saved=(*step.saved, had, text, made),
        apply=(*step.apply, f"mkdir -p {sh(os.path.dirname(file))}", f"{holds} || {{ {rewrite}; }}"),
        undo=(*step.undo,
              f"if [ \"${had}\" = 1 ]; then printf '%s' \"${{{text}%x}}\" >{f}; else rm -f {f}; fi",
              "# shellcheck disable=SC2086",
              f"for d in ${made}; do rmdir \"$d\" 2>/dev/null || break; done"))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(SysctlSet)
