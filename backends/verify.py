"""Verification steps: `verify.command` and `verify.ping`.

A verification is an action like any other: `observe` tries it once, `check` says whether it
passed (then the step is skipped: the desired state holds), `apply` retries until its timeout
and fails the step — and so the run, which rolls back — if it never passes. Undo has nothing
to restore.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import Field

from runflow.core.actions import Action, Args, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.fields import Argv, IPAddress, Name
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host


class Verification(Action):
    """observe = one attempt; apply = attempts until `timeout` seconds have passed."""

    family = "verify"
    backend = "builtin"
    holds_message = "verified"

    def attempt(self, ctx: Context, args: Any) -> tuple[bool, str]:
        raise NotImplementedError

    def observe(self, ctx: Context, args: Any) -> State:
        ok, output = self.attempt(ctx, args)
        return {"ok": ok, "output": output[-2000:]}

    def check(self, args: Any, before: State) -> bool:
        return bool(before.get("ok"))

    def apply(self, ctx: Context, args: Any, before: State) -> None:
        deadline = time.monotonic() + args.timeout
        output = before.get("output", "")
        while time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            ok, output = self.attempt(ctx, args)
            if ok:
                return
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise ActionError(f"verification failed after {args.timeout:g} s: {last}")

    def undo(self, ctx: Context, args: Any, before: State) -> None:
        """A verification changes nothing."""

    def shell(self, host: Host, args: Any, var: Callable[[str], str]) -> ShellStep:
        (argv,) = self.describe(args)
        return ShellStep(check=sh(*argv), apply=(sh("retry", int(args.timeout + 0.999), *argv),))


class VerifyCommandArgs(Args):
    cmd: Argv = Field(description="the command; exit 0 is a pass")
    timeout: float = Field(default=0, ge=0, description=(
        "seconds to keep trying before the step fails (0: one try)"))


class VerifyCommand(Verification):
    name = "verify.command"
    Args = VerifyCommandArgs
    summary = "holds when a command exits 0"

    def attempt(self, ctx: Context, args: VerifyCommandArgs) -> tuple[bool, str]:
        done = ctx.run(args.cmd, check=False)
        return done.returncode == 0, (done.stderr or done.stdout) + f" (exit {done.returncode})"

    def describe(self, args: VerifyCommandArgs, before: State | None = None) -> list[list[str]]:
        return [list(args.cmd)]


class VerifyPingArgs(Args):
    to: IPAddress = Field(description="the address to ping")
    container: Name | None = Field(
        default=None, description="ping from inside this container (default: from the host)")
    count: int = Field(default=1, ge=1, le=100, description="echo requests per try")
    timeout: float = Field(default=5, ge=0,
                           description="seconds to keep trying before the step fails")


class VerifyPing(Verification):
    name = "verify.ping"
    Args = VerifyPingArgs
    summary = "holds when an address answers ping (from the host or from inside a container)"

    @staticmethod
    def argv(args: VerifyPingArgs) -> list[str]:
        return ["ping", "-n", "-q", "-c", str(args.count), "-W", "1", args.to]

    def attempt(self, ctx: Context, args: VerifyPingArgs) -> tuple[bool, str]:
        if args.container:
            from runflow.backends.docker.client import exec_in_container

            code, output = exec_in_container(ctx, args.container, self.argv(args))
            return code == 0, output
        done = ctx.run(self.argv(args), check=False)
        return done.returncode == 0, done.stdout + done.stderr

    def describe(self, args: VerifyPingArgs, before: State | None = None) -> list[list[str]]:
        if args.container:
            return [["docker", "exec", args.container, *self.argv(args)]]
        return [self.argv(args)]


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(VerifyCommand)
    register(VerifyPing)
