"""`mylab.mtu`: a link's MTU — a template for a runflow plugin (see contrib/PLUGINS.md).

One action, two backends that implement it the same way, each serving one target:

    mylab-ip        centos6   runs `ip link set dev NAME mtu N`, so it also works over SSH and
                              has a shell form for `runflow export`
    mylab-pyroute2  modern    talks netlink through pyroute2 (in the host's network
                              namespace), and records the equivalent command for the journal

Install the package (`pip install contrib/example-plugin`: entry point group "runflow"), or
load this one file: `runflow --plugin contrib/example-plugin/runflow_mtu/plugin.py ...`.
It is self-contained for that reason: a file plugin is loaded on its own, not as part of its
package, so it must not import its siblings.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from pydantic import Field

from runflow.core.actions import Action, Args, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.fields import IfName
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, NetnsHost

RUNFLOW_API_VERSION = (1, 1)  # the plugin API this was written for (Action.targets, ctx.log)


class MtuArgs(Args):
    """The link must exist; only its MTU changes."""

    name: IfName = Field(description="the link")
    mtu: int = Field(ge=68, le=65535, description="its MTU in bytes")


class MtuSet(Action):
    """What both backends share: the action, its arguments, check and undo. A backend says how
    to read and write the MTU."""

    name = "mylab.mtu"
    family = "mylab"
    Args = MtuArgs
    summary = "a link's MTU (example plugin)"

    def read(self, ctx: Context, link: str) -> int | None:
        """The link's MTU, or None when there is no such link."""
        raise NotImplementedError

    def write(self, ctx: Context, link: str, mtu: int) -> None:
        raise NotImplementedError

    def observe(self, ctx: Context, args: MtuArgs) -> State:
        # Plain JSON: the journal keeps it as the step's "before", and undo gets it back.
        mtu = self.read(ctx, args.name)
        return {"exists": mtu is not None, "mtu": mtu}

    def check(self, args: MtuArgs, before: State) -> bool:
        return before["mtu"] == args.mtu

    def apply(self, ctx: Context, args: MtuArgs, before: State) -> None:
        if not before["exists"]:
            raise ActionError(f"link {args.name} does not exist")
        self.write(ctx, args.name, args.mtu)

    def undo(self, ctx: Context, args: MtuArgs, before: State) -> None:
        # Undo also runs for a step that failed half-way and for one a killed run left in
        # doubt, whose apply may never have happened: change only what is still changed.
        now = self.read(ctx, args.name)
        if not before["exists"] or now is None or now == before["mtu"]:
            return
        self.write(ctx, args.name, before["mtu"])

    @staticmethod
    def argv(link: str, mtu: int) -> list[str]:
        return ["ip", "link", "set", "dev", link, "mtu", str(mtu)]

    def describe(self, args: MtuArgs, before: State | None = None) -> list[list[str]]:
        return [self.argv(args.name, args.mtu)]

    def describe_undo(self, args: MtuArgs, before: State | None = None) -> list[list[str]]:
        if before is None or not before["exists"]:
            return []
        return [self.argv(args.name, before["mtu"])]


class IpMtu(MtuSet):
    """CentOS 6: the `ip` command, run through the host (locally, in a namespace, over SSH)."""

    backend = "mylab-ip"
    targets = ("centos6",)

    def read(self, ctx: Context, link: str) -> int | None:
        done = ctx.run(["ip", "-o", "link", "show", "dev", link], check=False)
        if done.returncode != 0:
            return None
        words = done.stdout.split()
        return int(words[words.index("mtu") + 1])

    def write(self, ctx: Context, link: str, mtu: int) -> None:
        ctx.run(self.argv(link, mtu))

    def shell(self, host: Host, args: MtuArgs, var: Callable[[str], str]) -> ShellStep:
        """The same step in POSIX sh, for `runflow export`: every value through sh()."""
        path = sh(f"/sys/class/net/{args.name}/mtu")
        old = var("old")
        return ShellStep(
            check=f'[ "$(cat {path} 2>/dev/null)" = {sh(args.mtu)} ]',
            save=(f"{old}=$(cat {path})",), saved=(old,),
            apply=(sh(*self.argv(args.name, args.mtu)),),
            undo=(f'if [ -e {path} ] && [ "$(cat {path})" != "${old}" ]; then '
                  f'{sh("ip", "link", "set", "dev", args.name, "mtu")} "${old}"; fi',))


class Pyroute2Mtu(MtuSet):
    """Modern hosts: netlink through pyroute2, in the thread that entered the host."""

    backend = "mylab-pyroute2"
    targets = ("modern",)

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        if importlib.util.find_spec("pyroute2") is None:
            return "pyroute2 is not installed"
        if not (type(host) is Host or isinstance(host, NetnsHost)):
            return "pyroute2 reaches only this machine's kernel, not a remote host's"
        return None

    @staticmethod
    def ipr(ctx: Context) -> Any:
        from pyroute2 import IPRoute

        # One netlink socket per host and command, closed when the command ends.
        return ctx.resources.get("mylab.ipr", IPRoute)

    def read(self, ctx: Context, link: str) -> int | None:
        ipr = self.ipr(ctx)
        found = ipr.link_lookup(ifname=link)
        if not found:
            return None
        return int(ipr.get_links(found[0])[0].get_attr("IFLA_MTU"))

    def write(self, ctx: Context, link: str, mtu: int) -> None:
        ipr = self.ipr(ctx)
        ipr.link("set", index=ipr.link_lookup(ifname=link)[0], mtu=mtu)
        ctx.record(self.argv(link, mtu))  # no command ran: journal what it amounts to
        ctx.log(f"{link}: MTU {mtu} set over netlink")


@hookimpl
def runflow_register_actions(register: Callable[[type[Action]], None]) -> None:
    register(IpMtu)
    register(Pyroute2Mtu)
