"""`shell.run`: the escape hatch — run a command, with an explicit undo and an optional check.

Every command is an argv list, run without a shell. `check` exiting 0 means "already done"
(the step is skipped); `undo` is what rollback runs (an empty list says there is nothing to
undo).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from runflow.core.actions import Action, Args, Context, ShellStep, State, sh
from runflow.core.fields import Argv
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host


class ShellRunArgs(Args):
    cmd: Argv = Field(description="the command, as a list of arguments (no shell)")
    undo: list[str] = Field(description="the command rollback runs; [] when there is nothing "
                                        "to undo")
    check: Argv | None = Field(default=None, description=(
        "a command whose exit 0 means the step is done already (it is skipped)"))
    timeout: float | None = Field(default=None, gt=0,
                                  description="seconds each command may take")


class ShellRun(Action):
    name = "shell.run"
    backend = "shell"
    family = "shell"
    Args = ShellRunArgs
    summary = "run a command (argv list) with an explicit undo and an optional check"

    def observe(self, ctx: Context, args: ShellRunArgs) -> State:
        if args.check is None:
            return {}
        done = ctx.run(args.check, check=False, timeout=args.timeout)
        return {"check_exit": done.returncode}

    def check(self, args: ShellRunArgs, before: State) -> bool:
        return before.get("check_exit") == 0

    def observable(self, args: ShellRunArgs) -> bool:
        return args.check is not None

    def apply(self, ctx: Context, args: ShellRunArgs, before: State) -> None:
        ctx.run(args.cmd, timeout=args.timeout)

    def undo(self, ctx: Context, args: ShellRunArgs, before: State) -> None:
        if args.undo:
            ctx.run(args.undo, timeout=args.timeout)

    def describe(self, args: ShellRunArgs, before: State | None = None) -> list[list[str]]:
        return [list(args.cmd)]

    def describe_undo(self, args: ShellRunArgs, before: State | None = None) -> list[list[str]]:
        return [list(args.undo)] if args.undo else []

    def shell(self, host: Host, args: ShellRunArgs, var: Callable[[str], str]) -> ShellStep:
        return ShellStep(check=sh(*args.check) if args.check else None, apply=(sh(*args.cmd),),
                         undo=(sh(*args.undo),) if args.undo else ())


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(ShellRun)
