"""`mylab.mtu`: a link's MTU, as an out-of-tree plugin would write it.

Install with `pip install contrib/example-plugin`; `runflow backends` then lists it. The same
file also works as `runflow --plugin contrib/example-plugin/runflow_mtu/plugin.py ...`.
"""

from __future__ import annotations

from pydantic import Field

from runflow.core.actions import Action, Args, Context, State
from runflow.core.errors import ActionError
from runflow.core.fields import IfName
from runflow.core.hookspecs import hookimpl


class MtuArgs(Args):
    name: IfName
    mtu: int = Field(ge=68, le=65535)


class MtuSet(Action):
    name = "mylab.mtu"
    backend = "mylab"
    family = "mylab"
    Args = MtuArgs
    summary = "a link's MTU (example plugin)"

    def observe(self, ctx: Context, args: MtuArgs) -> State:
        try:
            with open(f"/sys/class/net/{args.name}/mtu") as f:
                return {"exists": True, "mtu": int(f.read())}
        except FileNotFoundError:
            return {"exists": False, "mtu": None}

    def check(self, args: MtuArgs, before: State) -> bool:
        return before["mtu"] == args.mtu

    def apply(self, ctx: Context, args: MtuArgs, before: State) -> None:
        if not before["exists"]:
            raise ActionError(f"link {args.name} does not exist")
        ctx.run(["ip", "link", "set", args.name, "mtu", str(args.mtu)])

    def undo(self, ctx: Context, args: MtuArgs, before: State) -> None:
        if before["exists"]:
            ctx.run(["ip", "link", "set", args.name, "mtu", str(before["mtu"])])

    def describe(self, args: MtuArgs, before: State | None = None) -> list[list[str]]:
        return [["ip", "link", "set", args.name, "mtu", str(args.mtu)]]


@hookimpl
def runflow_register_actions(register):  # type: ignore[no-untyped-def]
    register(MtuSet)
