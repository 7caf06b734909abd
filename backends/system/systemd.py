"""service.restart and service.present through systemctl (backend `systemd`, target modern);
the inventory's commands for a service win (see service.py)."""

from __future__ import annotations

from .service import SYSTEMD, ServicePresent, ServiceRestart


class SystemdRestart(ServiceRestart):
    backend, manager, targets = "systemd", SYSTEMD, ("modern",)


class SystemdPresent(ServicePresent):
    backend, manager, targets = "systemd", SYSTEMD, ("modern",)
