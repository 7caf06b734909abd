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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, NetnsHost

from .args import SysctlArgs, outside_netns

PROC_SYS = "/proc/sys"


def normalize(value: str) -> str:
    """Multi-value sysctls read back tab-separated ("4096\t87380\t6291456")."""
    return " ".join(value.split())


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
        why = outside_netns(args.name) if isinstance(ctx.host, NetnsHost) else None
        if why:
            return {"refused": f"{why} (host {ctx.host.name} is {ctx.host.where()})"}
        if ctx.host.remote:
            return self.observe_many(ctx, [args])[0]
        try:
            with open(self.path(args)) as f:
                return {"exists": True, "value": normalize(f.read())}
        except FileNotFoundError:
            return {"exists": False}
        except PermissionError:  # write-only entries such as net.ipv4.route.flush
            return {"exists": True, "value": None}

    def observe_many(self, ctx: Context, args: Any) -> list[State]:
        if not ctx.host.remote:
            return [self.observe(ctx, a) for a in args]
        # One round trip: `cat` of each file on its own (a missing or write-only one says so
        # on stderr and the others are still read).
        done = ctx.host.run_many([["cat", self.path(a)] for a in args])
        return [{"exists": True, "value": normalize(d.stdout)} if d.returncode == 0 else
                {"exists": "No such file" not in d.stderr, "value": None} for d in done]

    def check(self, args: SysctlArgs, before: State) -> bool:
        return before.get("value") == normalize(args.value)

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
        self._write(ctx, args, args.value)

    def undo(self, ctx: Context, args: SysctlArgs, before: State) -> None:
        old = before.get("value")
        if old is not None and self.observe(ctx, args).get("value") != old:
            self._write(ctx, args, old)

    @staticmethod
    def _argv(args: SysctlArgs, value: str) -> list[str]:
        return ["sysctl", "-w", f"{args.name}={value}"]

    def describe(self, args: SysctlArgs, before: State | None = None) -> list[list[str]]:
        return [self._argv(args, args.value)]

    def describe_undo(self, args: SysctlArgs, before: State | None = None) -> list[list[str]]:
        old = (before or {}).get("value")
        return [self._argv(args, old)] if old is not None else []

    def shell(self, host: Host, args: SysctlArgs, var: Callable[[str], str]) -> ShellStep:
        """The file under /proc/sys read and written by the script, as here (`ip netns exec`
        gives a namespace's script its own /proc/sys/net)."""
        path = sh(self.path(args))
        old = var("old")
        return ShellStep(
            check=f"[ \"$(tr -s '[:blank:]' ' ' <{path})\" = {sh(normalize(args.value))} ]",
            save=(f"{old}=$(cat {path} 2>/dev/null || true)",), saved=(old,),
            apply=(f"printf '%s\\n' {sh(args.value)} >{path}",),
            undo=(f"if [ -n \"${old}\" ] && [ \"$(cat {path})\" != \"${old}\" ]; then "
                  f"printf '%s\\n' \"${old}\" >{path}; fi",))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(SysctlSet)
