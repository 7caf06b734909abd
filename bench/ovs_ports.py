#!/usr/bin/env python3
"""Adding N internal ports (500 by default) to an Open vSwitch bridge, compared in one run:

- a plain shell loop of N `ovs-vsctl add-port` commands (bench/ovs_ports_loop.sh): the baseline,
  what a hand-written recipe does;
- runflow with the ovs-vsctl backend (--target centos6) and with the ovsdb backend
  (--target modern), each as one `for_each` step (one chained ovs-vsctl invocation, one OVSDB
  transaction) and as N separate steps;
- for scale, the same N ports as one chained ovs-vsctl invocation without runflow.

Every variant gets a fresh lab host (a network namespace with its own ovsdb-server and
ovs-vswitchd, core/lab/ovs.py) holding an empty netdev bridge br0. A runflow variant is timed
from the start of the `runflow run` process to its exit (start-up, plan, journal included).
Goals: each backend's for_each at least 10x faster than the loop; step by step no slower than
1.3x the loop. The variants run in turn, --repeat times, and each one's median is reported, with
the median of its ratios to the loop of the same round: on a shared machine the load changes
between runs by more than the differences measured. --only keeps some variants (and the loop).

Usage (root, Open vSwitch installed):
    python3 bench/ovs_ports.py [--ports N] [--repeat R] [--only "ovs-vsctl, 500"]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from precompile import compile_runflow  # noqa: E402
from runflow.core.lab.namespaces import Namespace, unique_name  # noqa: E402
from runflow.core.lab.ovs import OvsDaemons  # noqa: E402

RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]
LOOP = REPO / "bench" / "ovs_ports_loop.sh"
LOOP_LABEL = "plain loop of ovs-vsctl add-port"


@contextmanager
def lab_host() -> Iterator[OvsDaemons]:
    """A fresh host with an empty netdev bridge br0; removed afterwards."""
    ns = Namespace(unique_name("rfbench"))
    ovs = OvsDaemons(ns, tempfile.mkdtemp(prefix="rfb-", dir="/tmp"), timeout=60)
    try:
        ns.create()
        ovs.start()
        ovs.vsctl("add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
        yield ovs
    finally:
        ovs.stop()
        ns.delete()
        shutil.rmtree(ovs.state_dir, ignore_errors=True)


def port_count(ovs: OvsDaemons) -> int:
    return len(ovs.vsctl("list-ports", "br0").split())


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def loop(ovs: OvsDaemons, n: int) -> None:
    subprocess.run(["sh", str(LOOP), ovs.endpoint, str(n)], check=True, env=ovs.env)


def chained(ovs: OvsDaemons, n: int) -> None:
    argv = ["ovs-vsctl", f"--db={ovs.endpoint}"]
    for i in range(n):
        argv += ["--", "add-port", "br0", f"p{i}", "--", "set", "Interface", f"p{i}",
                 "type=internal"]
    subprocess.run(argv, check=True, capture_output=True)


PORT_STEP = '''
[[steps]]
id = "{id}"
action = "ovs.port.present"
bridge = "br0"
name = "{name}"
type = "internal"
{extra}'''


def workflow(n: int, batch: bool) -> str:
    head = '[workflow]\nname = "ovs-ports"\n'
    if batch:
        return head + PORT_STEP.format(id="ports", name="p{{ item }}",
                                       extra=f'for_each = "range({n})"\n')
    return head + "".join(PORT_STEP.format(id=f"p{i}", name=f"p{i}", extra="")
                          for i in range(n))


def runflow(ovs: OvsDaemons, target: str, wf: Path, home: Path) -> Callable[[], None]:
    """A `runflow run` of workflow wf on the lab host, with its own journal in home."""
    inventory = home / "inventory.toml"
    inventory.write_text(f'[hosts.h1]\nnetns = "{ovs.namespace.name}"\n'
                         f'ovsdb = "{ovs.endpoint}"\n')
    argv = [*RUNFLOW, "run", "-q", "-i", str(inventory), "-t", target, str(wf)]

    def run() -> None:
        done = subprocess.run(argv, capture_output=True, text=True,
                              env={**os.environ, "RUNFLOW_HOME": str(home / "journal")})
        if done.returncode != 0:
            raise SystemExit(f"runflow failed ({done.returncode}): {done.stderr}")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the variants whose label contains TEXT (repeatable; "
                             "the plain loop always runs)")
    options = parser.parse_args()
    n = options.ports
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, OVS daemons)")
    compile_runflow()
    with tempfile.TemporaryDirectory(prefix="rfbench-") as tmp:
        files = {batch: Path(tmp, f"{'batch' if batch else 'steps'}.toml") for batch in (1, 0)}
        for batch, path in files.items():
            path.write_text(workflow(n, bool(batch)))
        variants: list[tuple[str, Callable[[OvsDaemons, Path], Callable[[], None]]]] = [
            (LOOP_LABEL, lambda o, h: lambda: loop(o, n)),
            ("one chained ovs-vsctl (no runflow)", lambda o, h: lambda: chained(o, n)),
        ]
        for backend, target in (("ovs-vsctl", "centos6"), ("ovsdb", "modern")):
            for batch, label in ((1, "one for_each step"), (0, f"{n} separate steps")):
                variants.append((f"runflow {backend}, {label}",
                                 lambda o, h, t=target, b=batch: runflow(o, t, files[b], h)))
        variants = [(label, make) for label, make in variants
                    if label == LOOP_LABEL or not options.only
                    or any(text in label for text in options.only)]
        times: dict[str, list[float]] = {label: [] for label, _ in variants}
        for round_ in range(options.repeat):
            for i, (label, make) in enumerate(variants):
                home = Path(tmp, f"home-{round_}-{i}")
                home.mkdir()
                with lab_host() as ovs:
                    seconds = timed(make(ovs, home))
                    count = port_count(ovs)
                    assert count == n, f"{label}: {count} ports, not {n}"
                times[label].append(seconds)
                print(f"round {round_ + 1}: {label:<42} {seconds:8.2f} s", flush=True)
    results = {label: statistics.median(values) for label, values in times.items()}
    base = results[LOOP_LABEL]
    print(f"\n{n} ports, medians of {options.repeat}; relative to the plain loop ({base:.2f} s), "
          "then the median of each round's ratio to that round's loop:")
    for label, seconds in results.items():
        ratio = (f"{base / seconds:5.1f}x faster" if seconds < base
                 else f"{seconds / base:5.2f}x the loop's time")
        per_round = statistics.median(t / loop_time
                                      for t, loop_time in zip(times[label], times[LOOP_LABEL]))
        print(f"  {label:<42} {seconds:7.2f} s   {ratio:<22} {per_round:5.2f}x")


if __name__ == "__main__":
    main()
