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
from .limits import MAX_VALUE_SIZE, too_large
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
            raise InputError(f"--var {pair[:40]!r}: expected KEY=VALUE with KEY an identifier",
                             field="--var")
        if too_large(value):
            raise InputError(f"--var {key}: {_TOO_LARGE}", field="--var")
        result[key] = value
    return result


_TOO_LARGE = (f"the value holds more than {MAX_VALUE_SIZE:,} characters, the most a var may hold "
              "(a list or table counts the text of its items)")


def _check_var_sizes(workflow: Workflow, inventory: Inventory, hosts: list[Host]) -> None:
    """Every var of the workflow and of the hosts' inventory entries within the limit: each is
    journaled, and may be copied into every step's arguments."""
    tables = [("vars", workflow.vars)]
    tables += [(f"targets.{name}", table) for name, table in workflow.targets.items()]
    for where, table in tables:
        for name, value in table.items():
            if too_large(value):
                raise workflow.error(_TOO_LARGE, field=f"{where}.{name}")
    for host in hosts:
        for name, value in host.vars.items():
            if too_large(value):
                raise InputError(_TOO_LARGE, file=inventory.path,
                                 field=f"hosts.{host.name}.vars.{name}")


def _check_host_vars(workflow: Workflow, inventory: Inventory,
                     variables: dict[str, dict[str, Any]]) -> None:
    """Every host has the vars the workflow expects from the inventory ([workflow] host_vars)."""
    for host, merged in variables.items():
        missing = [name for name in workflow.host_vars if name not in merged]
        if not missing:
            continue
        if inventory.path is None:
            where = "there is no inventory: give one (--inventory FILE, or --lab for the lab's)"
        else:
            where = (f"host {host!r} of {inventory.path} does not give {missing[0]!r}: add it to "
                     f"[hosts.{host}.vars]")
        raise workflow.error(
            f"the workflow expects {', '.join(map(repr, missing))} from each host's vars in the "
            f"inventory, and {where}, or give --var {missing[0]}=VALUE",
            field="workflow.host_vars")


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
    _check_var_sizes(workflow, inventory, hosts)
    variables = {h.name: merge_vars(workflow, target, h.vars, cli_vars) for h in hosts}
    _check_host_vars(workflow, inventory, variables)
    if probe:
        for host in hosts:
            try:
                host.check_reachable()
            except InputError as exc:
                exc.file = exc.file or inventory.path
                raise
    instances = {
        h.name: expand(workflow, plugins.registry, target=target, host=h,
                       variables=variables[h.name], probe=probe)
        for h in hosts
    }
    return Plan(workflow, target, inventory, hosts, cli_vars, plugins.files(), variables,
                instances)
