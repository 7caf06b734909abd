"""Linux bridges with bridge-utils' `brctl` (backend `brctl`, target centos6): `brctl addbr`,
`delbr`, `addif`, `delif`, as CentOS 6 (bridge-utils 1.2, iproute 2.6.32) makes bridges.

The actions, the records they observe and the commands are iproute2.py's: this module binds
the bridge actions to the same CentOS 6 commands, so a bridge step and an `ip` step of one
workflow read and change links the same way.
"""

from __future__ import annotations

from typing import Any

from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .iproute2 import BRIDGE_ACTIONS, Centos6, backend_actions, tools_missing


def _unusable(host: Host) -> str | None:
    # `ip link set BR down` comes before `brctl delbr`
    return tools_missing("brctl", "ip")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "brctl", _unusable, BRIDGE_ACTIONS):
        register(action)
