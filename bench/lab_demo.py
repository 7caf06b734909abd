#!/usr/bin/env python3
"""The main job, timed: `runflow lab up`, one multihost-gre run per target on two lab hosts
(against the same recipe as a plain shell script in the same run), the cross-host ping, and
`runflow lab down`; then the whole README demo (`lab demo` + `lab down`).

Where the time goes is shown per phase, and inside a run per step (from its events): the
docker restart is most of it, for runflow and for the shell script alike.

Usage (root): python3 bench/lab_demo.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from precompile import compile_runflow

REPO = Path(__file__).resolve().parent.parent
RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]
GRE = REPO / "workflows" / "multihost-gre.toml"
PING = REPO / "workflows" / "cross-host-ping.toml"


def timed(argv: list, env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([str(a) for a in argv], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{done.stderr}")
    return time.perf_counter() - start, done


def run_id(done: subprocess.CompletedProcess) -> str:
    return done.stderr.split()[1].rstrip(":")


def slowest_steps(events_file: Path, count: int = 3) -> str:
    started, took = {}, defaultdict(float)
    for line in events_file.read_text().splitlines():
        e = json.loads(line)
        if e["kind"] != "step":
            continue
        if e["dest"] == "checking":
            started[(e["host"], e["step"])] = e["time"]
        elif e["dest"] in ("applied", "skipped", "failed"):
            took[e["step"]] = max(took[e["step"]], e["time"] - started[(e["host"], e["step"])])
    total = sum(took.values())
    top = sorted(took.items(), key=lambda kv: -kv[1])[:count]
    return f"steps {total:.2f} s, slowest: " + ", ".join(f"{k} {v:.2f}" for k, v in top)


def shell_recipe(lab_dir: Path, mode: str, env: dict) -> float:
    """The plain script on both hosts at once (as two people would run it)."""
    hosts = json.loads((lab_dir / "lab.json").read_text())["hosts"]

    def one(host: dict) -> None:
        i = host["index"]
        d = Path(host["dir"])
        restart = [sys.executable, "-m", "runflow.core.lab.dockerd", "restart", str(d / "docker")]
        subprocess.run(["sh", str(REPO / "bench" / "multihost-gre.sh"), mode, host["netns"],
                        f"unix:{d / 'ovs' / 'db.sock'}", f"172.16.42.{i}/24",
                        f"10.99.0.{3 - i}", f"172.16.42.{32 * i}/27",
                        str(d / "docker" / "daemon.json"), *restart], check=True, env=env,
                       capture_output=True, text=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))
    return time.perf_counter() - start


def main() -> None:
    compile_runflow()
    root = Path(tempfile.mkdtemp(prefix="rfb", dir="/tmp"))
    env = {**os.environ, "RUNFLOW_LAB": str(root / "lab"), "RUNFLOW_HOME": str(root / "home")}
    rows = []
    try:
        startup, _ = timed([*RUNFLOW, "--version"], env)
        rows.append(("python start-up (runflow --version)", startup, ""))
        t, _ = timed([*RUNFLOW, "lab", "up", "--prefix", "rfb"], env)
        rows.append(("lab up (2 hosts)", t, ""))
        up = shell_recipe(root / "lab", "up", env)
        rows.append(("plain shell script, both hosts", up, "incl. docker restart"))
        shell_recipe(root / "lab", "down", env)
        for target in ("modern", "centos6"):
            log = root / f"{target}.jsonl"
            t, done = timed([*RUNFLOW, GRE, "--lab", "--target", target, "--events", log], env)
            rows.append((f"multihost-gre --target {target}", t, slowest_steps(log)))
            t, ping = timed([*RUNFLOW, PING, "--lab", "--target", target], env)
            rows.append(("  cross-host-ping (container start + ping)", t, ""))
            t, _ = timed([*RUNFLOW, "rollback", run_id(ping)], env)
            t2, _ = timed([*RUNFLOW, "rollback", run_id(done)], env)
            rows.append(("  rollback of both runs", t + t2, ""))
        t, _ = timed([*RUNFLOW, "lab", "down"], env)
        rows.append(("lab down", t, ""))
        demo, _ = timed([*RUNFLOW, "lab", "demo"], env)
        down, _ = timed([*RUNFLOW, "lab", "down"], env)
        rows.append(("README demo: lab demo + lab down", demo + down,
                     f"demo {demo:.2f} s + down {down:.2f} s (goal < 15 s)"))
    finally:
        subprocess.run([*RUNFLOW, "lab", "down"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)])
    for name, seconds, note in rows:
        print(f"{name:<44} {seconds:6.2f} s  {note}")


if __name__ == "__main__":
    main()
