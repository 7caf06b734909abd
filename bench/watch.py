#!/usr/bin/env python3
"""`runflow watch workflows/container-ovs-watch.toml` on a lab host (a network namespace with
its own dockerd, ovsdb-server and ovs-vswitchd, and an OVS bridge with the userspace datapath):

- latency: containers labelled runflow.net / runflow.ip started one after another; from each
  docker `start` event (dockerd's own time stamp) to its attachment done (the run's "succeeded",
  journaled), p50 and p99, with --target modern and centos6, against bench/watch-loop.sh (a
  shell loop on `docker events` running the pipework sequence) in the same run. The first runs
  open the workers' connections (and import the backends' libraries): the first 4 are left out
  and reported apart.
- burst: 100 containers started at once (10 at a time by 10 threads): from the first start
  event to the last attachment, and the longest a container waited.
- cycles: 1,000 start/stop cycles (of 10 containers in parallel): the watcher's resident memory
  after the first 100 cycles and at the end, and what is left on the host afterwards (tagged
  OVS ports, veths, runs not rolled back).

Usage (root): python3 bench/watch.py [-n 100] [--burst 100] [--cycles 1000] [--only WHAT]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from precompile import compile_runflow
from runflow.core.journal import Journal
from runflow.core.lab.dockerd import BUSYBOX_IMAGE, Dockerd, build_busybox_image
from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.ovs import OvsDaemons

REPO = Path(__file__).resolve().parent.parent
RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]
WORKFLOW = REPO / "workflows" / "container-ovs-watch.toml"
WATCH = "container-ovs-watch"
BRIDGE = "br-w"
JOBS = 4  # the watch's default
_OUTCOME = re.compile(r"\] (?P<name>\S+): run \S+ (?P<what>succeeded|rolled back)")


class Host:
    """The lab host and its docker client."""

    def __init__(self, ns: Namespace, dockerd: Dockerd, ovs: OvsDaemons, client: Any,
                 state: Path) -> None:
        self.ns, self.dockerd, self.ovs, self.client, self.state = ns, dockerd, ovs, client, state
        self.inventory = state / "inventory.toml"
        self.inventory.write_text(f'[hosts.h1]\nnetns = "{ns.name}"\ndocker = "{dockerd.url}"\n'
                                  f'ovsdb = "{ovs.endpoint}"\n')

    def labelled(self, name: str, index: int) -> Any:
        address = f"10.70.{index // 250}.{index % 250 + 2}/16"
        return self.client.containers.run(
            BUSYBOX_IMAGE, ["sleep", "3600"], name=name, detach=True, init=True,
            network_mode="none", labels={"runflow.net": BRIDGE, "runflow.ip": address})

    def remove_all(self) -> None:
        for container in self.client.containers.list(all=True):
            container.remove(force=True)

    def leftovers(self) -> tuple[int, int]:
        """(OVS interfaces tagged for containers, veths runflow or the loop made)."""
        ports = self.ovs.vsctl("--bare", "--columns=external_ids", "list", "Interface")
        links = self.ns.run(["ip", "-o", "link", "show"]).stdout
        return (ports.count("container_id"),
                len(re.findall(r"^\d+: (?:rf|pl)[0-9a-f]+", links, re.MULTILINE)))


class Watch:
    """`runflow watch` in a process of its own; waits on its log lines."""

    def __init__(self, host: Host, target: str, home: Path) -> None:
        self.home = home
        self.proc = subprocess.Popen(
            [*RUNFLOW, "watch", str(WORKFLOW), "--inventory", str(host.inventory),
             "--target", target], stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RUNFLOW_HOME": str(home)})
        self.lines: list[str] = []
        self.counts: Counter[tuple[str, str]] = Counter()  # (container or "*", what) → lines
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda: self.counts["*", "connected"] > 0, 60)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                found = _OUTCOME.search(line)
                if found:
                    self.counts[found["name"], found["what"]] += 1
                    self.counts["*", found["what"]] += 1
                elif "connected" in line:
                    self.counts["*", "connected"] += 1
                self.cond.notify_all()

    def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(condition, timeout):
                raise SystemExit("the watch did not get there:\n" + "".join(self.lines[-20:]))

    def count(self, what: str, name: str = "*") -> int:
        """Runs that succeeded, or were rolled back, so far (of one container, or of all)."""
        return self.counts[name, what]

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)[1])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def done_times(self) -> dict[str, float]:
        """When each container's run succeeded (the journal's time of it), by container id."""
        journal = Journal(self.home)
        try:
            runs = journal.runs()
            return {r.record["cause"]["id"]: r.updated for r in runs
                    if r.record.get("cause") and r.state in ("succeeded", "rolled_back")
                    and r.record["cause"]["action"] != "reconcile"}
        finally:
            journal.close()


def start_events(host: Host) -> tuple[dict[str, float], Callable[[], None]]:
    """Record each container start event's time stamp (dockerd's clock, in seconds)."""
    events = host.client.api.events(filters={"type": "container", "event": "start"},
                                     decode=True)
    seen: dict[str, float] = {}

    def read() -> None:
        for event in events:
            seen[event["id"]] = event["timeNano"] / 1e9

    threading.Thread(target=read, daemon=True).start()
    return seen, events.close


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return (f"p50 {statistics.median(values) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  "
            f"max {values[-1] * 1000:6.1f} ms  (n={len(values)})")


# -- latency --------------------------------------------------------------------------------


def latency_runflow(host: Host, target: str, n: int) -> None:
    seen, close = start_events(host)
    watch = Watch(host, target, host.state / f"home-{target}")
    try:
        ids = []
        for i in range(n + JOBS):
            container = host.labelled(f"lat-{target}-{i}", i)
            ids.append(container.id)
            watch.wait(lambda: watch.count("succeeded") == i + 1, 30)
        done = watch.done_times()
        waits = [done[cid] - seen[cid] for cid in ids]
        print(f"runflow watch, --target {target:<8} {percentiles(waits[JOBS:])}")
        print(f"  {'':<31}the first {JOBS} (workers open their connections): "
              f"{', '.join(f'{w * 1000:.0f}' for w in waits[:JOBS])} ms")
        host.remove_all()
        watch.wait(lambda: watch.count("rolled back") == n + JOBS, 60)
    finally:
        watch.stop()
        close()


def latency_loop(host: Host, n: int) -> None:
    log = host.state / "loop.log"
    loop = subprocess.Popen(host.ns.popen_argv(
        ["sh", str(REPO / "bench" / "watch-loop.sh"), host.dockerd.url, host.ovs.endpoint,
         str(log)]), start_new_session=True)
    try:
        time.sleep(1)  # docker events is listening
        for i in range(n):
            host.labelled(f"loop-{i}", i)
            deadline = time.monotonic() + 30
            while not (log.exists() and len(log.read_text().splitlines()) == i + 1):
                if time.monotonic() > deadline:
                    raise SystemExit("the shell loop did not attach a container")
                time.sleep(0.005)
        waits = [float(done) - int(nanos) / 1e9
                 for _, nanos, done in (line.split() for line in log.read_text().splitlines())]
        print(f"{'shell loop on docker events':<33} {percentiles(waits)}")
    finally:
        os.killpg(loop.pid, signal.SIGTERM)  # the loop's own process group
        loop.wait()
        host.remove_all()
        for port in host.ovs.vsctl("list-ports", BRIDGE).split():
            host.ovs.vsctl("del-port", BRIDGE, port)


# -- a burst --------------------------------------------------------------------------------


def burst(host: Host, count: int) -> None:
    seen, close = start_events(host)
    watch = Watch(host, "modern", host.state / "home-burst")
    try:
        with ThreadPoolExecutor(10) as pool:
            containers = list(pool.map(lambda i: host.labelled(f"burst-{i}", i), range(count)))
        watch.wait(lambda: watch.count("succeeded") == count, 120)
        done = watch.done_times()
        starts = [seen[c.id] for c in containers]
        waits = [done[c.id] - seen[c.id] for c in containers]
        last = max(done.values())
        print(f"{count} containers started at once (dockerd started them within "
              f"{max(starts) - min(starts):.2f} s): all attached {last - min(starts):.2f} s after "
              f"the first start, {last - max(starts):.2f} s after the last; each waited at most "
              f"{max(waits):.2f} s (median {statistics.median(waits):.2f} s)")
        host.remove_all()
        watch.wait(lambda: watch.count("rolled back") == count, 120)
    finally:
        watch.stop()
        close()


# -- start/stop cycles ----------------------------------------------------------------------


def cycles(host: Host, total: int, parallel: int = 10) -> None:
    watch = Watch(host, "modern", host.state / "home-cycles")
    containers = [host.labelled(f"cycle-{i}", i) for i in range(parallel)]
    watch.wait(lambda: watch.count("succeeded") == parallel, 60)
    done = [0]
    lock = threading.Lock()
    samples: list[tuple[int, int]] = []

    def cycle(container: Any) -> None:
        name = container.name
        for round_ in range(total // parallel):
            container.stop(timeout=0)
            watch.wait(lambda: watch.count("rolled back", name) == round_ + 1, 60)
            container.start()
            watch.wait(lambda: watch.count("succeeded", name) == round_ + 2, 60)
            with lock:
                done[0] += 1
                if done[0] % 100 == 0:
                    samples.append((done[0], watch.rss_kib()))

    try:
        start = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(cycle, containers))
        elapsed = time.monotonic() - start
        growth = (samples[-1][1] - samples[0][1]) / 1024
        print(f"{done[0]} start/stop cycles in {elapsed:.0f} s: the watcher's memory "
              f"{samples[0][1] / 1024:.1f} MiB after {samples[0][0]} cycles, "
              f"{samples[-1][1] / 1024:.1f} MiB at the end (+{growth:.1f} MiB)")
        print("  by 100 cycles (MiB): " + " ".join(f"{kib / 1024:.1f}" for _, kib in samples))
        host.remove_all()
        watch.wait(lambda: watch.count("rolled back") == done[0] + parallel, 120)
        journal = Journal(watch.home)
        in_place = len(journal.caused_runs(WATCH, ["h1"]))
        journal.close()
        ports, veths = host.leftovers()
        print(f"  left behind: {ports} tagged OVS ports, {veths} veths, {in_place} runs in place")
    finally:
        watch.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--containers", type=int, default=100,
                        help="containers per latency measurement")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--only", choices=["latency", "burst", "cycles"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (namespaces, dockerd, OVS)", file=sys.stderr)
        return 2
    compile_runflow()

    import docker

    ns = Namespace(unique_name("rfbw")).create()
    state = Path(tempfile.mkdtemp(prefix="rfw", dir="/tmp"))
    dockerd = Dockerd(ns, state / "d")
    ovs = OvsDaemons(ns, state / "o")
    client = None
    try:
        ovs.start()
        dockerd.start()
        client = docker.DockerClient(base_url=dockerd.url)
        build_busybox_image(client)
        ovs.vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")
        host = Host(ns, dockerd, ovs, client, state)
        if args.only in (None, "latency"):
            print(f"docker start event → attachment done, {args.containers} containers one "
                  "after another:")
            latency_loop(host, args.containers)
            for target in ("modern", "centos6"):
                latency_runflow(host, target, args.containers)
        if args.only in (None, "burst"):
            burst(host, args.burst)
        if args.only in (None, "cycles"):
            cycles(host, args.cycles)
    finally:
        if client is not None:
            host_containers = client.containers.list(all=True)
            for container in host_containers:
                container.remove(force=True)
            client.close()
        dockerd.remove()
        ovs.stop()
        ns.delete()
        subprocess.run(["rm", "-rf", "--one-file-system", str(state)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
