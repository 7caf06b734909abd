"""service.restart and service.present: what the service backends share — how each kind of
host runs its services (a `Manager`: systemctl, sysvinit's `service`, or the inventory's own
commands), and the two actions given a manager. Each backend is a module beside this one that
binds the actions to its manager (systemd.py, sysvinit.py, service_command.py); docker.daemon
restarts the docker service through the same managers.

A host may say how its services are run, and then those commands win over systemctl and
service, whatever the target — the lab restarts its own dockerd this way:

    [hosts.h1.services.docker]
    restart = ["python3", "-m", "runflow.core.lab.dockerd", "restart", "/tmp/rf-lab/h1/docker"]
    start = [...]
    stop = [...]
    status = [...]        # exit 0: running

service.restart always applies (nothing says a restart is "already done"), so its undo does
nothing: restarting again during a rollback would happen before the configuration it was
meant to pick up is restored (rollback runs in reverse). A step that changes a daemon's
configuration restarts the daemon itself, only when the file changed, and again after its
undo restored the file (docker.daemon's `restart` argument).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any, ClassVar

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from .args import ServicePresentArgs, ServiceRestartArgs

VERBS = ("restart", "start", "stop", "status")


def inventory_commands(host: Host, service: str) -> dict[str, list[str]] | None:
    """The commands [hosts.NAME.services.SERVICE] gives, or None."""
    table = (host.settings.get("services") or {}).get(service)
    if table is None:
        return None
    where = f"inventory: hosts.{host.name}.services.{service}"
    if not isinstance(table, dict):
        raise ActionError(f"{where} must be a table of commands ({', '.join(VERBS)})")
    for verb, argv in table.items():
        if verb not in VERBS:
            raise ActionError(f"{where}.{verb}: unknown key (known: {', '.join(VERBS)})")
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ActionError(f"{where}.{verb} must be a command as a list of strings")
    return table


# -- how a kind of host runs its services -------------------------------------------------------


class Manager:
    """How one kind of host runs its services: the argv for each verb."""

    backend: ClassVar[str]
    tool: ClassVar[str]

    def argv(self, verb: str, service: str) -> list[str]:
        raise NotImplementedError

    def unusable(self, host: Host) -> str | None:
        if host.settings.get("services"):  # the inventory's commands may serve instead
            return None
        return None if shutil.which(self.tool) else f"{self.tool} is not installed"


class Systemd(Manager):
    backend, tool = "systemd", "systemctl"

    def argv(self, verb: str, service: str) -> list[str]:
        if verb == "status":
            return ["systemctl", "is-active", "--quiet", service]
        return ["systemctl", verb, service]

    def unusable(self, host: Host) -> str | None:
        reason = super().unusable(host)
        if reason is None and not host.settings.get("services") and not os.path.isdir(
                "/run/systemd/system"):
            return "systemd is not running on this host"
        return reason


class SysVInit(Manager):
    backend, tool = "service", "service"

    def argv(self, verb: str, service: str) -> list[str]:
        return ["service", service, verb]


class InventoryCommands(Manager):
    backend, tool = "command", ""

    def argv(self, verb: str, service: str) -> list[str]:
        raise ActionError(f"the inventory gives no {verb!r} command for service {service} "
                          f"(add {verb} = [...] to [hosts.HOST.services.{service}])")

    def unusable(self, host: Host) -> str | None:
        if host.settings.get("services"):
            return None
        return "the inventory gives no commands for this host's services ([hosts.HOST.services.NAME])"


SYSTEMD, SYSVINIT, INVENTORY_COMMANDS = Systemd(), SysVInit(), InventoryCommands()


def service_argv(host: Host, manager: Manager, verb: str, service: str) -> list[str]:
    """The command that does verb to service on host: the inventory's if it gives one, else
    the manager's."""
    commands = inventory_commands(host, service)
    if commands and verb in commands:
        return list(commands[verb])
    return manager.argv(verb, service)


# -- the actions, given a manager ---------------------------------------------------------------


class ServiceAction(Action):
    family = "service"
    manager: ClassVar[Manager]

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return cls.manager.unusable(host)

    def commands(self, ctx: Context, verbs: tuple[str, ...], service: str) -> dict[str, Any]:
        """The argv of each verb on this host, recorded in the observation for describe."""
        return {verb: service_argv(ctx.host, self.manager, verb, service) for verb in verbs}


class ServiceRestart(ServiceAction):
    name = "service.restart"
    Args = ServiceRestartArgs
    summary = "restart a service (always applies; undo does nothing, see docker.daemon restart)"

    def observe(self, ctx: Context, args: ServiceRestartArgs) -> State:
        return {"argv": self.commands(ctx, ("restart",), args.name)}

    def check(self, args: ServiceRestartArgs, before: State) -> bool:
        return False

    def apply(self, ctx: Context, args: ServiceRestartArgs, before: State) -> None:
        ctx.run(before["argv"]["restart"])

    def undo(self, ctx: Context, args: ServiceRestartArgs, before: State) -> None:
        """Nothing: see the module's docstring."""

    def describe(self, args: ServiceRestartArgs, before: State | None = None
                 ) -> list[list[str]]:
        if before:
            return [before["argv"]["restart"]]
        return [self.manager.argv("restart", args.name)]

    def shell(self, host: Host, args: ServiceRestartArgs, var: Callable[[str], str]
              ) -> ShellStep:
        return ShellStep(apply=(sh(*service_argv(host, self.manager, "restart", args.name)),))


class ServicePresent(ServiceAction):
    name = "service.present"
    Args = ServicePresentArgs
    summary = "a service running or stopped (undo puts it back as it was)"

    def observe(self, ctx: Context, args: ServicePresentArgs) -> State:
        argv = self.commands(ctx, ("status",), args.name)["status"]
        running = ctx.run(argv, check=False).returncode == 0
        return {"running": running,
                "argv": self.commands(ctx, ("start", "stop"), args.name)}

    def check(self, args: ServicePresentArgs, before: State) -> bool:
        return before["running"] == (args.state == "running")

    def apply(self, ctx: Context, args: ServicePresentArgs, before: State) -> None:
        ctx.run(before["argv"]["start" if args.state == "running" else "stop"])

    def undo(self, ctx: Context, args: ServicePresentArgs, before: State) -> None:
        ctx.run(before["argv"]["start" if before["running"] else "stop"])

    def describe(self, args: ServicePresentArgs, before: State | None = None
                 ) -> list[list[str]]:
        verb = "start" if args.state == "running" else "stop"
        return [before["argv"][verb] if before else self.manager.argv(verb, args.name)]

    def shell(self, host: Host, args: ServicePresentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        def argv(verb: str) -> str:
            return sh(*service_argv(host, self.manager, verb, args.name))

        running = var("running")
        holds = argv("status") if args.state == "running" else f"! {argv('status')}"
        return ShellStep(
            check=holds,
            save=(f"if {argv('status')} >/dev/null 2>&1; then {running}=1; "
                  f"else {running}=0; fi",),
            saved=(running,),
            apply=(argv("start" if args.state == "running" else "stop"),),
            undo=(f'if [ "${running}" = 1 ]; then {argv("start")}; else {argv("stop")}; fi',))

