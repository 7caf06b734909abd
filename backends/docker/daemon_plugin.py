"""The built-in plugin `runflow.backends.docker_daemon`: one plugin name (what `runflow
backends` shows) for both docker.daemon backends, so this module registers the action of each
backend module. Backend modules never import each other; only this one imports both."""

from __future__ import annotations

from typing import Any

from runflow.core.hookspecs import hookimpl

from .daemon_json import DaemonJson
from .sysconfig import Sysconfig


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(DaemonJson)
    register(Sysconfig)
