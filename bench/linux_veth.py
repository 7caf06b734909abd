#!/usr/bin/env python3
"""N veth pairs, each with one end enslaved into a Linux bridge and up, the other end up with
an address — compared in one run, each variant in a fresh bench namespace:

- a plain shell script, one `ip` or `brctl` process per command (bench/linux_veth.sh): the
  baseline, what a hand-written recipe does;
- runflow --target centos6 (ip and brctl; a for_each step of `ip` commands goes through one
  `ip -batch -`, bridge ports are one `brctl addif` each);
- runflow --target modern (netlink through pyroute2: one socket, a for_each step's requests
  sent together).

The workflow has one step per phase (a bridge, then N veth pairs, N bridge ports, N links up,
N addresses, N peers up), and the script runs the same phases in the same order. A runflow
variant is timed from the start of the `runflow run` process to its exit (start-up, plan and
journal included); its steps are timed from their first to their last event. Each round also
times a process that only loads the libraries such a run of runflow needs (click, pluggy,
pydantic with one model validated, transitions; its templates need no Jinja2): the part of
runflow's start-up that is not runflow's own; and, in a namespace of its own, a process that
loads them and pyroute2 and then sends the workflow's requests over netlink with nothing else
(LEAST): the least any Python tool on these libraries could take, the bound under --target
modern.

Sizes: 200 pairs as is; 200 and 1,000 pairs with IPv6 disabled in the namespace (the
kernel's IPv6 work per bridge port grows faster than linearly), to see how cost grows.
Goals: modern at least 2x faster than the script and within 1.25x of LEAST; centos6 at most
1.3x the script step by step, and at least 3x faster on the steps that go through one
`ip -batch`.

With --rollback, each round also times undoing what each variant built: `runflow rollback`,
and for the script a teardown that deletes each pair, then the bridge.

Usage (root, iproute2 and bridge-utils installed):
    python3 bench/linux_veth.py [--sizes 200,200:noipv6,1000:noipv6] [--repeat 3] [--rollback]
                                [--base-python INTERPRETER | --python INTERPRETER]

runflow runs as a user installs it: the bench makes a venv of the interpreter running it (or
of --base-python, e.g. the distribution's /usr/bin/python3) and pip-installs this checkout
into it (bench/installed.py). --python runs runflow under an interpreter that has it installed
already instead, e.g. a developer's editable install: python3 bench/linux_veth.py --python
python3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from installed import install_runflow, interpreter  # noqa: E402
from precompile import compile_runflow  # noqa: E402
from runflow.core.lab.namespaces import Namespace, unique_name  # noqa: E402

SCRIPT = REPO / "bench" / "linux_veth.sh"
PHASES = ("bridge", "veths", "ports", "ports-up", "addresses", "peers-up")
BATCHED = ("veths", "ports-up", "addresses", "peers-up")  # through `ip -batch` on centos6
SETTLE = 0.5  # seconds between variants (and 1 s per 1,000 pairs), for the kernel to tidy up
# What any process built on runflow's libraries pays before doing anything: the floor under
# runflow's own start-up, timed alone in each round. pydantic does part of its loading only when
# a first model is defined and validated (field types, its plugin loader and with that
# importlib.metadata): 14% more instructions than importing it.
LIBRARIES = """\
import click, pluggy, pydantic, transitions
class Floor(pydantic.BaseModel):
    name: str
Floor(name="floor")
"""
# The least any Python tool on those libraries and pyroute2 could do for the workflow: load
# them, then send the same requests over netlink as pyroute2 messages, in batches acknowledged
# once each (the netlink backend's way: rtnl.py), with no plan, events, journal or observing,
# and leave as runflow does (os._exit). Run in the bench namespace: argv is its name and N.
LEAST = "import gc\ngc.disable()\n" + LIBRARIES + """\
import ctypes, os, sys
from socket import if_nametoindex
from runflow.backends.linux.rtnl import (CREATE, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, Rtnl,
                                         address_message, link_message, veth_peer)
ctypes.CDLL(None).setns(os.open(f"/run/netns/{sys.argv[1]}", os.O_RDONLY), 0x40000000)
n, send = int(sys.argv[2]), Rtnl().send
send([(link_message(RTM_NEWLINK, CREATE, name="br0", info_kind="bridge"), "")])
send([(link_message(RTM_NEWLINK, name="br0", up=True), "")])
send([(link_message(RTM_NEWLINK, CREATE, name=f"va{i}", info_kind="veth",
                    peer=veth_peer(f"vb{i}")), "") for i in range(n)])
bridge = if_nametoindex("br0")
send([(request, "") for i in range(n)  # each read first, as the netlink backend does
      for request in (link_message(RTM_GETLINK, name=f"va{i}"),
                      link_message(RTM_NEWLINK, name=f"va{i}", master=bridge))])
send([(link_message(RTM_NEWLINK, name=f"va{i}", up=True), "") for i in range(n)])
send([(address_message(RTM_NEWADDR, CREATE, if_nametoindex(f"vb{i}"),
                       f"10.77.{i // 250}.{i % 250 + 1}/32", 0), "") for i in range(n)])
send([(link_message(RTM_NEWLINK, name=f"vb{i}", up=True), "") for i in range(n)])
os._exit(0)  # as runflow leaves: the interpreter's clean-up takes 0.3-0.5 s once pyroute2 is in
"""

WORKFLOW = """
[workflow]
name = "linux-veth-bench"

[vars]
count = 200

[[steps]]
id = "bridge"
action = "bridge.present"
name = "br0"

[[steps]]
id = "bridge-up"
action = "link.set"
name = "br0"
state = "up"

[[steps]]
id = "veths"
action = "veth.present"
for_each = "range(count | int)"
name = "va{{ item }}"
peer = "vb{{ item }}"

[[steps]]
id = "ports"
action = "bridge.port"
for_each = "range(count | int)"
bridge = "br0"
name = "va{{ item }}"

[[steps]]
id = "ports-up"
action = "link.set"
for_each = "range(count | int)"
name = "va{{ item }}"
state = "up"

[[steps]]
id = "addresses"
action = "addr.present"
for_each = "range(count | int)"
dev = "vb{{ item }}"
address = "10.77.{{ item // 250 }}.{{ item % 250 + 1 }}/32"

[[steps]]
id = "peers-up"
action = "link.set"
for_each = "range(count | int)"
name = "vb{{ item }}"
state = "up"
"""


@contextmanager
def bench_namespace(ipv6: bool, n: int) -> Iterator[Namespace]:
    ns = Namespace(unique_name("rfbench"))
    try:
        ns.create()
        if not ipv6:
            ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"])
        yield ns
    finally:
        ns.delete()
        # The kernel tears a deleted namespace down in the background, under the lock every
        # link change takes: left running, it would slow the next variant's first step.
        time.sleep(SETTLE + n / 1000)


def check_built(ns: Namespace, n: int) -> None:
    """Every pair made, enslaved, up and addressed, whatever made them."""
    links = ns.run(["ip", "-o", "link", "show", "master", "br0", "up"]).stdout.splitlines()
    addrs = ns.run(["ip", "-o", "-4", "addr", "show"]).stdout.count("10.77.")
    if len(links) != n or addrs != n:
        raise SystemExit(f"built {len(links)} ports and {addrs} addresses, not {n}")


def check_gone(ns: Namespace) -> None:
    """Nothing left but lo, whatever undid it."""
    links = ns.run(["ip", "-o", "link"]).stdout.splitlines()
    if len(links) != 1:
        raise SystemExit(f"{len(links) - 1} links left after undoing")


def plain(ns: Namespace, n: int) -> dict[str, float]:
    times = {}
    start = time.perf_counter()
    for phase in PHASES:
        t = time.perf_counter()
        ns.run(["sh", str(SCRIPT), phase, str(n)])
        times[phase] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start
    return times


def plain_undo(ns: Namespace, n: int) -> float:
    """The script's teardown: what a hand-written rollback does."""
    start = time.perf_counter()
    ns.run(["sh", str(SCRIPT), "teardown", str(n)])
    return time.perf_counter() - start


def journal_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "RUNFLOW_HOME": str(tmp / "journal")}


def runflow(ns: Namespace, n: int, target: str, tmp: Path, python: str) -> dict[str, float]:
    inventory = tmp / "inventory.toml"
    inventory.write_text(f'[hosts.bench]\nnetns = "{ns.name}"\n')
    workflow = tmp / "linux-veth.toml"
    workflow.write_text(WORKFLOW)
    env = journal_env(tmp)
    command = [python, "-m", "runflow.core.cli"]
    argv = [*command, "run", "-q", "-i", str(inventory), "-t", target, "--var", f"count={n}",
            str(workflow)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    total = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"runflow --target {target} failed ({done.returncode}): {done.stderr}")
    # Step times come from the journal afterwards, so that measuring costs the run nothing:
    # a step runs from its first instance's start to its last instance's end.
    shown = subprocess.run([*command, "show", "last", "--json"], capture_output=True,
                           text=True, env=env, check=True)
    spans: dict[str, list[float]] = {}
    for step in json.loads(shown.stdout)["steps"]:
        phase = step["key"].split("[")[0]
        phase = "bridge" if phase == "bridge-up" else phase  # one phase in the script
        spans.setdefault(phase, []).extend((step["started"], step["finished"]))
    times = {phase: max(t) - min(t) for phase, t in spans.items()}
    times["total"] = total
    return times


def runflow_undo(tmp: Path, python: str) -> float:
    """`runflow rollback` of the run just made."""
    start = time.perf_counter()
    subprocess.run([python, "-m", "runflow.core.cli", "rollback", "-q", "last"], check=True,
                   env=journal_env(tmp))
    return time.perf_counter() - start


def least(ns: Namespace, n: int, python: str) -> dict[str, float]:
    start = time.perf_counter()
    subprocess.run([python, "-c", LEAST, ns.name, str(n)], check=True)
    return {"total": time.perf_counter() - start}


def libraries(python: str) -> dict[str, float]:
    start = time.perf_counter()
    subprocess.run([python, "-c", LIBRARIES], check=True)
    return {"total": time.perf_counter() - start}


def measure(n: int, ipv6: bool, repeat: int, tmp: Path, python: str,
            undo: bool) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Median times of each variant, and how much faster modern was than the script in each
    round; the variants take turns, so that a busy moment of the machine does not fall on one
    of them only. undo: also time undoing what each variant built."""
    variants = (("plain sh", lambda ns: plain(ns, n), lambda ns: plain_undo(ns, n)),
                ("centos6", lambda ns: runflow(ns, n, "centos6", tmp, python),
                 lambda ns: runflow_undo(tmp, python)),
                ("modern", lambda ns: runflow(ns, n, "modern", tmp, python),
                 lambda ns: runflow_undo(tmp, python)))
    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(repeat):
        for label, build, unbuild in variants:
            with bench_namespace(ipv6, n) as ns:
                times = build(ns)
                check_built(ns, n)
                if undo:
                    times["rollback"] = unbuild(ns)
                    check_gone(ns)
                samples.setdefault(label, []).append(times)
        samples.setdefault("libraries", []).append(libraries(python))
        with bench_namespace(ipv6, n) as ns:
            samples.setdefault("least", []).append(least(ns, n, python))
            check_built(ns, n)
    medians = {label: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
               for label, runs in samples.items()}
    return medians, [p["total"] / m["total"] for p, m in zip(samples["plain sh"],
                                                              samples["modern"])]


def report(n: int, ipv6: bool, results: dict[str, dict[str, float]],
           rounds: list[float]) -> None:
    base, c6, modern = results["plain sh"], results["centos6"], results["modern"]
    print(f"\n{n} veth pairs, IPv6 {'on' if ipv6 else 'off'}: median seconds (and ratio to the "
          "script)")
    print(f"  {'phase':<12} {'plain sh':>9} {'centos6':>16} {'modern':>16}")
    for phase in (*PHASES, "total"):
        row = f"  {phase:<12} {base[phase]:9.3f}"
        for times in (c6, modern):
            row += f" {times[phase]:8.3f} ({times[phase] / base[phase]:4.2f}x)"
        mark = "  ip -batch on centos6" if phase in BATCHED else ""
        print(row + mark)
    outside = {label: results[label]["total"] - sum(results[label][p] for p in PHASES)
               for label in ("centos6", "modern")}
    print(f"  runflow outside the steps (start-up, plan, journal set-up): centos6 "
          f"{outside['centos6']:.3f} s, modern {outside['modern']:.3f} s; of that, Python "
          f"starting and loading runflow's libraries: {results['libraries']['total']:.3f} s")
    batched_c6 = sum(c6[p] for p in BATCHED)
    batched_base = sum(base[p] for p in BATCHED)
    print(f"  modern vs script, whole run: {base['total'] / modern['total']:.2f}x faster "
          f"(rounds {min(rounds):.2f}-{max(rounds):.2f}x; goal >= 2x)")
    least_total = results["least"]["total"]
    print(f"  the least a Python tool on these libraries could do (load them and pyroute2, send "
          f"the requests over netlink; no plan, events, journal or observing): "
          f"{least_total:.3f} s, {base['total'] / least_total:.2f}x faster than the script; "
          f"modern takes {modern['total'] / least_total:.2f}x that (goal <= 1.25x)")
    print(f"  centos6 vs script, worst step: "
          f"{max(c6[p] / base[p] for p in PHASES if p != 'bridge'):.2f}x (goal <= 1.3x); "
          f"ip -batch steps together: {batched_base / batched_c6:.2f}x faster (goal >= 3x)")
    print(f"  per pair: script {base['total'] / n * 1000:.2f} ms, centos6 "
          f"{c6['total'] / n * 1000:.2f} ms, modern {modern['total'] / n * 1000:.2f} ms")
    if "rollback" in base:
        print(f"  undoing it (the script: `ip link del` each pair, then the bridge; runflow "
              f"rollback): script {base['rollback']:.3f} s, centos6 {c6['rollback']:.3f} s "
              f"({c6['rollback'] / base['rollback']:.2f}x), modern {modern['rollback']:.3f} s "
              f"({modern['rollback'] / base['rollback']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,200:noipv6,1000:noipv6",
                        help="comma-separated N or N:noipv6 (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant")
    parser.add_argument("--rollback", action="store_true",
                        help="also time undoing each build: `runflow rollback` against the "
                        "script's teardown (about 10 s more a round at 200 pairs)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--base-python", default=sys.executable,
                       help="make the venv runflow is installed into of this interpreter "
                       "(default: this one)")
    which.add_argument("--python", help="run runflow under this interpreter, which has it "
                       "installed (default: a venv made for the bench)")
    options = parser.parse_args()
    sizes = [(int(s.split(":")[0]), not s.endswith(":noipv6")) for s in options.sizes.split(",")]
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="rfbench-") as tmp:
        if options.python:
            python = options.python
            compile_runflow(python)
        else:
            python = install_runflow(Path(tmp) / "venv", options.base_python)
        print(f"runflow runs under {python}: {interpreter(python)}")
        for n, ipv6 in sizes:
            report(n, ipv6, *measure(n, ipv6, options.repeat, Path(tmp), python,
                                     options.rollback))


if __name__ == "__main__":
    main()
