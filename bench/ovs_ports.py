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

With --rollback, each variant's ports are also removed again, and that is timed too: the loop
runs one `ovs-vsctl del-port` a port, the chained variant one ovs-vsctl deleting them all, and
runflow `runflow rollback` of the run. Most of that time is ovs-vswitchd's: it deletes each
internal port's tap device, and the kernel waits for RCU for each.

With --baseline PYTHON, every runflow variant also runs with the runflow that PYTHON imports
(another checkout's virtualenv, e.g. the last release's), in the same rounds: a change is
compared under the same load, which on a shared machine matters more than anything measured.

Usage (root, Open vSwitch installed):
    python3 bench/ovs_ports.py [--ports N] [--repeat R] [--only "ovs-vsctl, 500"] [--rollback]
                               [--baseline OTHER/.venv/bin/python]
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
LOOP_LABEL = "plain loop, one ovs-vsctl a port"


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


def loop(ovs: OvsDaemons, n: int, command: str = "add") -> None:
    subprocess.run(["sh", str(LOOP), ovs.endpoint, str(n), command], check=True, env=ovs.env)


def chained(ovs: OvsDaemons, n: int) -> None:
    argv = ["ovs-vsctl", f"--db={ovs.endpoint}"]
    for i in range(n):
        argv += ["--", "add-port", "br0", f"p{i}", "--", "set", "Interface", f"p{i}",
                 "type=internal"]
    subprocess.run(argv, check=True, capture_output=True)


def chained_del(ovs: OvsDaemons, n: int) -> None:
    argv = ["ovs-vsctl", f"--db={ovs.endpoint}"]
    for i in range(n):
        argv += ["--", "del-port", "br0", f"p{i}"]
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


def runflow(ovs: OvsDaemons, target: str, wf: Path, home: Path, python: str = sys.executable
            ) -> Callable[[], None]:
    """A `runflow run` of workflow wf on the lab host, with its own journal in home."""
    inventory = home / "inventory.toml"
    inventory.write_text(f'[hosts.h1]\nnetns = "{ovs.namespace.name}"\n'
                         f'ovsdb = "{ovs.endpoint}"\n')
    return lambda: call_runflow(home, "run", "-q", "-i", str(inventory), "-t", target, str(wf),
                                python=python)


def call_runflow(home: Path, *args: str, python: str = sys.executable) -> None:
    done = subprocess.run([python, *RUNFLOW[1:], *args], capture_output=True, text=True,
                          env={**os.environ, "RUNFLOW_HOME": str(home / "journal")})
    if done.returncode != 0:
        raise SystemExit(f"runflow {args[0]} failed ({done.returncode}): {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the variants whose label contains TEXT (repeatable; "
                             "the plain loop always runs)")
    parser.add_argument("--rollback", action="store_true",
                        help="also time removing the ports again (the loop: one del-port a "
                             "port; runflow: `runflow rollback`)")
    parser.add_argument("--baseline", metavar="PYTHON",
                        help="also run every runflow variant with the runflow this Python "
                             "interpreter imports (another checkout's virtualenv)")
    options = parser.parse_args()
    n = options.ports
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, OVS daemons)")
    compile_runflow()
    with tempfile.TemporaryDirectory(prefix="rfbench-") as tmp:
        files = {batch: Path(tmp, f"{'batch' if batch else 'steps'}.toml") for batch in (1, 0)}
        for batch, path in files.items():
            path.write_text(workflow(n, bool(batch)))
        # label → (what makes the ports, what removes them), each given the host and a home
        Make = Callable[[OvsDaemons, Path], Callable[[], None]]
        pythons = {"": sys.executable}
        if options.baseline:
            pythons[" (baseline)"] = options.baseline
        variants: list[tuple[str, Make, Make]] = [
            (LOOP_LABEL, lambda o, h: lambda: loop(o, n), lambda o, h: lambda: loop(o, n, "del")),
            ("one chained ovs-vsctl (no runflow)", lambda o, h: lambda: chained(o, n),
             lambda o, h: lambda: chained_del(o, n)),
        ]
        for backend, target in (("ovs-vsctl", "centos6"), ("ovsdb", "modern")):
            for batch, label in ((1, "one for_each step"), (0, f"{n} separate steps")):
                for which, python in pythons.items():
                    variants.append((
                        f"runflow {backend}, {label}{which}",
                        lambda o, h, t=target, b=batch, p=python: runflow(o, t, files[b], h, p),
                        lambda o, h, p=python: lambda: call_runflow(h, "rollback", "-q", "last",
                                                                    python=p)))
        variants = [variant for variant in variants
                    if variant[0] == LOOP_LABEL or not options.only
                    or any(text in variant[0] for text in options.only)]
        times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        undo_times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for round_ in range(options.repeat):
            for i, (label, make, unmake) in enumerate(variants):
                home = Path(tmp, f"home-{round_}-{i}")
                home.mkdir()
                with lab_host() as ovs:
                    seconds = timed(make(ovs, home))
                    count = port_count(ovs)
                    assert count == n, f"{label}: {count} ports, not {n}"
                    line = f"round {round_ + 1}: {label:<53} {seconds:8.2f} s"
                    if options.rollback:
                        undo_times[label].append(timed(unmake(ovs, home)))
                        count = port_count(ovs)
                        assert count == 0, f"{label}: {count} ports left after removing them"
                        line += f", removing them {undo_times[label][-1]:7.2f} s"
                times[label].append(seconds)
                print(line, flush=True)
    report(f"{n} ports", times, options.repeat)
    if options.rollback:
        report(f"removing the {n} ports", undo_times, options.repeat)


def report(what: str, times: dict[str, list[float]], repeat: int) -> None:
    results = {label: statistics.median(values) for label, values in times.items()}
    base = results[LOOP_LABEL]
    print(f"\n{what}, medians of {repeat}; relative to the plain loop ({base:.2f} s), then the "
          "median of each round's ratio to that round's loop:")
    for label, seconds in results.items():
        ratio = (f"{base / seconds:5.1f}x faster" if seconds < base
                 else f"{seconds / base:5.2f}x the loop's time")
        per_round = statistics.median(t / loop_time
                                      for t, loop_time in zip(times[label], times[LOOP_LABEL]))
        print(f"  {label:<53} {seconds:7.2f} s   {ratio:<22} {per_round:5.2f}x")


if __name__ == "__main__":
    main()
