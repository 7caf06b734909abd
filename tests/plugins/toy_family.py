"""A third-party backend family for the plugin tests: `toy.file` (a file holds a line of text)
with one backend per target, as a plugin following contrib/PLUGINS.md would have them:

    toy-sh  centos6  runs printf/rm through the host, and has a shell form for export
    toy-py  modern   writes in Python: records the command it amounts to, and logs a line

`TOY_PY_BROKEN=why` in the environment makes toy-py unusable, for the tests of the choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from runflow.core.actions import Action, Args, Context, ShellStep, State, sh
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host


class ToyArgs(Args):
    path: str = Field(pattern=r"^/[A-Za-z0-9_./-]+$", description="an absolute file path")
    text: str = Field(pattern=r"^[A-Za-z0-9 _.-]*$", description="the line it holds")


class ToyFile(Action):
    name = "toy.file"
    family = "toy"
    Args = ToyArgs
    summary = "a file holds a line of text (test plugin)"

    def observe(self, ctx: Context, args: ToyArgs) -> State:
        path = Path(args.path)
        return {"text": path.read_text() if path.exists() else None}

    def check(self, args: ToyArgs, before: State) -> bool:
        return before["text"] == args.text

    def write(self, ctx: Context, path: str, text: str | None) -> None:
        raise NotImplementedError

    def apply(self, ctx: Context, args: ToyArgs, before: State) -> None:
        self.write(ctx, args.path, args.text)

    def undo(self, ctx: Context, args: ToyArgs, before: State) -> None:
        if self.observe(ctx, args)["text"] != before["text"]:
            self.write(ctx, args.path, before["text"])

    def describe(self, args: ToyArgs, before: State | None = None) -> list[list[str]]:
        return [["printf", "%s", args.text]]


class ToySh(ToyFile):
    backend = "toy-sh"
    targets = ("centos6",)

    def write(self, ctx: Context, path: str, text: str | None) -> None:
        if text is None:
            ctx.run(["rm", "-f", path])
        else:
            ctx.run(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, path])

    def shell(self, host: Host, args: ToyArgs, var: Callable[[str], str]) -> ShellStep:
        old, had = var("old"), var("had")
        path = sh(args.path)
        return ShellStep(
            check=f'[ -e {path} ] && [ "$(cat {path})" = {sh(args.text)} ]',
            save=(f"{had}=0; {old}=''; if [ -e {path} ]; then {had}=1; {old}=$(cat {path}); fi",),
            saved=(had, old),
            apply=(f"printf '%s' {sh(args.text)} > {path}",),
            undo=(f'if [ "${had}" = 1 ]; then printf \'%s\' "${old}" > {path}; '
                  f"else rm -f {path}; fi",))


class ToyPy(ToyFile):
    backend = "toy-py"
    targets = ("modern",)

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return os.environ.get("TOY_PY_BROKEN") or None

    def write(self, ctx: Context, path: str, text: str | None) -> None:
        if text is None:
            Path(path).unlink(missing_ok=True)
            ctx.record(["rm", "-f", path])
        else:
            Path(path).write_text(text)
            ctx.record(["printf", "%s", text])
        ctx.log(f"toy-py wrote {path}")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(ToySh)
    register(ToyPy)
