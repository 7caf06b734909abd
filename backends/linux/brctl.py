"""Backend `brctl` (target centos6): Linux bridges with `brctl addbr`, `delbr`, `addif`,
`delif`, as CentOS 6 (bridge-utils 1.2, iproute 2.6.32) makes them, through centos6.py like
the iproute2 backend, so that a bridge step and an `ip` step of one workflow read and change
links the same way. The actions are actions.py's."""

from __future__ import annotations

from typing import Any

from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, tools_missing

from .actions import BRIDGE_ACTIONS, backend_actions
from .centos6 import Centos6


def _unusable(host: Host) -> str | None:
    # `ip link set BR down` comes before `brctl delbr`; sh starts a batch's brctl commands;
    # grep and ls read the links' /sys files
    return tools_missing("brctl", "ip", "sh", "grep", "ls")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "brctl", ("centos6",), _unusable, BRIDGE_ACTIONS):
        register(action)
