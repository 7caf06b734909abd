"""`runflow lab demo`: the main job on one machine — two lab hosts, the layered docker0 + OVS
+ GRE recipe on both, a container on each, and a ping between them across the tunnel."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from ..journal import default_home
from ..plugins import Plugins
from ..session import Options, Session, add_views, plan_workflow
from .lab import Lab

WORKFLOWS = ("multihost-gre.toml", "cross-host-ping.toml")


def workflow_path(name: str) -> str:
    return str(files("runflow.workflows") / name)


def run_workflow(path: str, inventory: Path, target: str) -> tuple[str, int]:
    options = Options(inventory=str(inventory), target=target)
    plugins = Plugins()
    plan = plan_workflow(path, options, plugins)
    add_views(plugins, multi_host=True)
    session = Session(plugins, default_home())
    try:
        return session.run(plan, options)
    finally:
        session.close()


def run_demo(lab_dir: str, target: str, echo: Callable[[str], None]) -> int:
    started = time.monotonic()
    lab = Lab(lab_dir)
    if not lab.exists():
        echo("lab: bringing up two hosts (namespaces, OVS userspace datapath, dockerd)")
        lab.up(2, progress=lambda text: echo(f"lab: {text}"))
    runs = []
    for name in WORKFLOWS:
        echo(f"\n$ runflow {name} --lab --target {target}")
        run_id, code = run_workflow(workflow_path(name), lab.inventory_path, target)
        runs.append(run_id)
        if code:
            echo(f"\ndemo: {name} failed (exit {code}); see `runflow show {run_id}`")
            return code
    hosts = lab.hosts()
    echo(f"\ndemo: done in {time.monotonic() - started:.1f} s — the container on h1 pinged "
         "the container on h2 across the GRE tunnel, and back.")
    echo("\nLook around:")
    echo("  runflow runs; runflow show last")
    for host in hosts[:2]:
        ovs, dockerd = host.ovs(), host.dockerd()
        echo(f"  ip netns exec {host.netns} ovs-vsctl --db={ovs.endpoint} show")
        echo(f"  ip netns exec {host.netns} brctl show")
        echo(f"  docker -H {dockerd.url} exec rf-demo ip addr")
    echo("Undo the runs, newest first, then remove the lab:")
    for run_id in reversed(runs):
        echo(f"  runflow rollback {run_id}")
    echo("  runflow lab down")
    return 0
