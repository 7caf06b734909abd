"""Backend `iproute2` (target centos6): links, addresses, veth pairs, namespaces and routes
with CentOS 6's `ip` (iproute 2.6.32), as centos6.py runs it. The actions are actions.py's."""

from __future__ import annotations

from typing import Any

from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host, tools_missing

from .actions import LINK_ACTIONS, backend_actions
from .centos6 import Centos6


def _unusable(host: Host) -> str | None:
    # grep and ls read the links' /sys files
    return tools_missing("ip", "grep", "ls")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "iproute2", ("centos6",), _unusable, LINK_ACTIONS):
        register(action)
