#!/usr/bin/env python3
"""Attaching containers: runflow's container.attach against the pipework-style shell sequence.

A lab host (a network namespace with its own dockerd, ovsdb-server and ovs-vswitchd) runs N
containers with no network. Each way attaches all N, then everything is removed again:

- runflow, target modern (Docker API + netlink), to a Linux bridge and to an OVS bridge
  (userspace datapath, through OVSDB);
- runflow, target centos6 (ip, ip netns exec, brctl, ovs-vsctl), to the same two bridges;
- bench/pipework-attach.sh: docker inspect, ip, brctl, nsenter, one container after another.

Reported per container: the whole `runflow run` divided by N (start-up, planning, journal and
the containers' two docker inspects included), and the attach step alone (from the run's
events: first "checking" to last "applied" of its instances, divided by N).

Usage (root): python3 bench/attach_containers.py [-n 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from precompile import compile_runflow
from runflow.core.lab.dockerd import BUSYBOX_IMAGE, Dockerd, build_busybox_image
from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.ovs import OvsDaemons

REPO = Path(__file__).resolve().parent.parent

RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]

WORKFLOW = """
[workflow]
name = "bench-attach"

[vars]
bridge = "br0"
count = 50

[[steps]]
id = "attach"
action = "container.attach"
for_each = "range(count | int)"
container = "bench-{{ item }}"
bridge = "{{ bridge }}"
address = "10.80.{{ (item + 2) // 256 }}.{{ (item + 2) % 256 }}/16"
"""


def runflow_attach(tmp: Path, inventory: Path, target: str, bridge: str, n: int,
                   env: dict[str, str]) -> tuple[float, float]:
    """Attach all containers with runflow, then roll back; returns (whole run, attach step)
    per container in seconds."""
    events = tmp / f"events-{target}-{bridge}.jsonl"
    events.unlink(missing_ok=True)
    argv = [*RUNFLOW, "run", str(tmp / "attach.toml"), "--inventory", str(inventory),
            "--target", target, "--events", str(events), "--var", f"bridge={bridge}",
            "--var", f"count={n}", "--quiet"]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    whole = time.perf_counter() - start
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    steps = [e for e in rows if e["kind"] == "step"]
    first = min(e["time"] for e in steps if e["dest"] == "checking")
    last = max(e["time"] for e in steps if e["dest"] == "applied")
    assert sum(e["dest"] == "applied" for e in steps) == n, "not every container was attached"
    subprocess.run([*RUNFLOW, "rollback", rows[0]["run_id"], "--quiet"], check=True, env=env)
    return whole / n, (last - first) / n


def pipework_attach(ns: Namespace, dockerd: Dockerd, bridge: str, n: int) -> float:
    """The shell sequence, all containers in one script run; then its veths are deleted."""
    names = [f"bench-{i}" for i in range(n)]
    argv = ns.popen_argv(["sh", str(REPO / "bench" / "pipework-attach.sh"), dockerd.url,
                          bridge, "10.81", *names])
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    elapsed = time.perf_counter() - start
    for link in ns.run(["ip", "-o", "link", "show", "master", bridge]).stdout.splitlines():
        ns.run(["ip", "link", "del", link.split(": ")[1].split("@")[0]])
    return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--containers", type=int, default=50)
    n = parser.parse_args().containers
    if os.geteuid() != 0:
        print("needs root (namespaces, dockerd, OVS)", file=sys.stderr)
        return 2
    compile_runflow()

    import docker

    ns = Namespace(unique_name("rfbench")).create()
    state = Path(tempfile.mkdtemp(prefix="rfb", dir="/tmp"))
    dockerd = Dockerd(ns, state / "d")
    ovs = OvsDaemons(ns, state / "o")
    client = None
    try:
        ovs.start()
        dockerd.start()
        client = docker.DockerClient(base_url=dockerd.url)
        build_busybox_image(client)
        for i in range(n):
            client.containers.run(BUSYBOX_IMAGE, ["sleep", "3600"], name=f"bench-{i}",
                                  detach=True, init=True, network_mode="none")
        ns.run(["ip", "link", "add", "br-lin", "type", "bridge"])
        ns.run(["ip", "link", "set", "br-lin", "up"])
        ovs.vsctl("add-br", "br-ovs", "--", "set", "Bridge", "br-ovs", "datapath_type=netdev")
        inventory = state / "inventory.toml"
        inventory.write_text(f'[hosts.h1]\nnetns = "{ns.name}"\ndocker = "{dockerd.url}"\n'
                             f'ovsdb = "{ovs.endpoint}"\n')
        (state / "attach.toml").write_text(WORKFLOW)
        env = {**os.environ, "RUNFLOW_HOME": str(state / "home")}

        print(f"{n} containers, per container (ms):")
        print(f"{'how':<34}{'whole run':>10}{'attach step':>13}")
        shell = pipework_attach(ns, dockerd, "br-lin", n)
        print(f"{'pipework-style shell sequence':<34}{'':>10}{shell * 1000:>13.1f}")
        for target in ("modern", "centos6"):
            for label, bridge in (("Linux bridge", "br-lin"), ("OVS bridge", "br-ovs")):
                whole, step = runflow_attach(state, inventory, target, bridge, n, env)
                print(f"{f'runflow {target}, {label}':<34}{whole * 1000:>10.1f}"
                      f"{step * 1000:>13.1f}")
    finally:
        if client is not None:
            for container in client.containers.list(all=True):
                container.remove(force=True)
            client.close()
        dockerd.remove()
        ovs.stop()
        ns.delete()
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
