"""A plan: a workflow resolved for the hosts it runs on — vars merged, templates rendered,
arguments validated, a backend chosen for every step instance. Built before anything runs;
rebuilt from the journal for resume and rollback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .hosts import Host
from .inventory import Inventory
from .plugins import PluginFile, Plugins
from .workflow import Instance, Workflow, expand, merge_vars


@dataclass
class Plan:
    workflow: Workflow
    target: str
    inventory: Inventory
    hosts: list[Host]
    cli_vars: dict[str, str]
    plugin_files: list[PluginFile]  # every plugin file loaded: journaled with its hash
    variables: dict[str, dict[str, Any]]  # per host name
    instances: dict[str, list[Instance]]  # per host name

    def per_host(self) -> list[tuple[Host, list[Instance]]]:
        return [(h, self.instances[h.name]) for h in self.hosts]

    def record(self) -> dict[str, Any]:
        """Everything a run is made of, for the journal (resume rebuilds the plan from it)."""
        return {
            # Absolute paths, so that resume and rollback work from any directory (a
            # workflow's plugins are found relative to it).
            "workflow": {"name": self.workflow.name,
                         "path": os.path.abspath(self.workflow.path),
                         "text": self.workflow.text, "sha256": self.workflow.sha256},
            "target": self.target,
            "inventory": {"path": self.inventory.path, "text": self.inventory.text},
            "hosts": [h.name for h in self.hosts],
            "host_keys": {h.name: h.key for h in self.hosts},
            "cli_vars": self.cli_vars,
            "plugins": [f.to_json() for f in self.plugin_files],
            "vars": self.variables,
            "steps": {h: [i.to_json() for i in insts] for h, insts in self.instances.items()},
        }


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """--var KEY=VALUE (repeatable); values are strings."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--var {pair!r}: expected KEY=VALUE with KEY an identifier",
                             field="--var")
        result[key] = value
    return result


def build(workflow: Workflow, plugins: Plugins, inventory: Inventory, hosts: list[Host], *,
          target: str, cli_vars: dict[str, str], probe: bool = True) -> Plan:
    plugins.load_workflow_plugins(workflow)
    hosts_by_name = {h.name for h in inventory.hosts}
    for step in workflow.steps:
        for name in step.on or ():
            if name not in hosts_by_name:
                raise workflow.error(
                    f"host {name!r} is not in the inventory (hosts: {', '.join(sorted(hosts_by_name))})",
                    step=step.index, field="on")
    if probe:
        for host in hosts:
            try:
                host.check_reachable()
            except InputError as exc:
                exc.file = exc.file or inventory.path
                raise
    variables = {h.name: merge_vars(workflow, target, h.vars, cli_vars) for h in hosts}
    instances = {
        h.name: expand(workflow, plugins.registry, target=target, host=h,
                       variables=variables[h.name], probe=probe)
        for h in hosts
    }
    return Plan(workflow, target, inventory, hosts, cli_vars, plugins.files(), variables,
                instances)
