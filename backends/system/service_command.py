"""service.restart and service.present only through the commands the inventory gives for a
service (`[hosts.NAME.services.SERVICE]`, backend `command`): for hosts with neither systemd
nor sysvinit's `service`, such as the lab's."""

from __future__ import annotations

from .service import INVENTORY_COMMANDS, ServicePresent, ServiceRestart


class CommandRestart(ServiceRestart):
    backend, manager = "command", INVENTORY_COMMANDS


class CommandPresent(ServicePresent):
    backend, manager = "command", INVENTORY_COMMANDS
