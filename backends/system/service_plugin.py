"""The built-in plugin `runflow.backends.service`: one plugin name (what `runflow backends`
shows) for the three service backends, so this module registers the actions of each backend
module. Backend modules never import each other; only this one imports them all."""

from __future__ import annotations

from typing import Any

from runflow.core.hookspecs import hookimpl

from .service_command import CommandPresent, CommandRestart
from .systemd import SystemdPresent, SystemdRestart
from .sysvinit import SysVInitPresent, SysVInitRestart


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in (SystemdRestart, SystemdPresent, SysVInitRestart, SysVInitPresent,
                   CommandRestart, CommandPresent):
        register(action)
