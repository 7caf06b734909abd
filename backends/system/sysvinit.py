"""service.restart and service.present through sysvinit's `service NAME VERB` (backend
`service`, target centos6); the inventory's commands for a service win (see service.py)."""

from __future__ import annotations

from .service import SYSVINIT, ServicePresent, ServiceRestart


class SysVInitRestart(ServiceRestart):
    backend, manager, targets = "service", SYSVINIT, ("centos6",)


class SysVInitPresent(ServicePresent):
    backend, manager, targets = "service", SYSVINIT, ("centos6",)
