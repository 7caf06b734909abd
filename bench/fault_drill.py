#!/usr/bin/env python3
"""The fault drill at random: N faults at random points of multihost-gre on the two-host lab,
each followed by resume or rollback and checked as tests/faults checks its chosen points (same
stories: tests/faults/scenarios.py); then a table of the outcomes.

The faults:
  group     runflow and its process group SIGKILLed during a run (at a step's checking,
            applying or applied event: "applied" is journaled only with the next commit, so a
            kill there leaves a change made and in doubt), then resumed or rolled back; or
            during a rollback (at undoing or undone), then rolled back again
  daemon    ovs-vswitchd or dockerd SIGKILLed while a run or a rollback stands at a step's
            applying or undoing event; ovs-vswitchd is started again a second later,
            dockerd once runflow is done; then a rollback

A trial that leaves the lab otherwise than it promised is rebuilt before the next one.

Usage (root): python3 bench/fault_drill.py [--trials 40] [--seed 1] [--faults group,daemon]
              [--targets centos6,modern]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faults.drill import CHANGING, STEPS, TARGETS, Drill  # noqa: E402
from tests.faults.scenarios import (DAEMONS, DEAD_FOR, daemon_dies, kill_rollback,  # noqa: E402
                                    kill_run)
from tests.integration.lab.conftest import lab_up  # noqa: E402


def random_trial(rng: random.Random, faults: list[str], targets: list[str]) -> dict:
    target = rng.choice(targets)
    host = rng.choice(["", "@h1", "@h2"])
    fault = rng.choice(faults)
    if fault == "group":
        if rng.random() < 0.7:
            step = rng.choice(STEPS)
            event = rng.choice(["checking", "applying", "applied"] if step in CHANGING
                               else ["checking"])
            return {"fault": "group kill (run)", "target": target,
                    "point": f"{step}:{event}{host}", "then": rng.choice(["resume", "rollback"])}
        return {"fault": "group kill (rollback)", "target": target,
                "point": f"{rng.choice(CHANGING)}:{rng.choice(['undoing', 'undone'])}{host}",
                "then": "rollback"}
    # The daemon of the host that stopped at the point: the other host's may be in the middle
    # of a restart by a command of runflow's, with its old pid already gone.
    command = rng.choice(["run", "rollback"])
    event = "applying" if command == "run" else "undoing"
    daemon_host = rng.choice(["h1", "h2"])
    return {"fault": f"{rng.choice(DAEMONS)} kill ({command})", "target": target,
            "point": f"{rng.choice(CHANGING)}:{event}@{daemon_host}", "then": "rollback",
            "host": daemon_host}


def play(drill: Drill, trial: dict, scratch: Path) -> None:
    fault, target, point = trial["fault"], trial["target"], trial["point"]
    if fault == "group kill (run)":
        kill_run(drill, target, point, trial["then"], scratch / "resume.jsonl")
    elif fault == "group kill (rollback)":
        kill_rollback(drill, target, point)
    else:
        daemon, command = fault.split(" kill (")
        command = command.rstrip(")")
        daemon_dies(drill, target, command, point, daemon, trial["host"],
                    DEAD_FOR if daemon == "ovs-vswitchd" else None)


def summary(exc: BaseException) -> str:
    """The broken promise in one line: run ids and paths shortened."""
    text = " ".join(str(exc).split("\n")[:3])
    text = re.sub(r'time="[^"]*" ', "", text)  # dockerd's log lines
    text = re.sub(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b", "RUN", text)
    text = re.sub(r"/\S*/([^/\s]+)", r"\1", text)
    text = re.sub(r"\s+", " ", text)
    return text[:150]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--faults", default="group,daemon")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    faults, targets = args.faults.split(","), args.targets.split(",")
    print(f"fault drill: {args.trials} trials, seed {seed}, faults {faults}, targets {targets}")

    rows = []
    started = time.monotonic()
    with lab_up() as lab, tempfile.TemporaryDirectory(prefix="rfdrill") as tmp:
        drill = Drill(lab, Path(tmp))
        for i in range(args.trials):
            trial = random_trial(rng, faults, targets)
            scratch = Path(tmp) / f"trial{i}"
            scratch.mkdir()
            if drill.dirty:
                drill.rebuild()
            drill.dirty = True
            t0 = time.monotonic()
            try:
                play(drill, trial, scratch)
                outcome = "ok"
            except AssertionError as exc:
                outcome = summary(exc)
            drill.stop_leftovers()
            trial.update(outcome=outcome, seconds=time.monotonic() - t0)
            rows.append(trial)
            print(f"{i + 1:3} {trial['fault']:<28} {trial['target']:<8} {trial['point']:<34} "
                  f"{trial['then']:<9} {trial['seconds']:5.1f} s  {outcome}", flush=True)

    print(f"\n{len(rows)} trials in {time.monotonic() - started:.0f} s\n")
    print(f"{'fault':<28} {'target':<8} {'trials':>6} {'ok':>4} {'broken':>6}")
    by_kind: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_kind[row["fault"], row["target"]].append(row)
    for (fault, target), group in sorted(by_kind.items()):
        ok = sum(r["outcome"] == "ok" for r in group)
        print(f"{fault:<28} {target:<8} {len(group):>6} {ok:>4} {len(group) - ok:>6}")
    broken = Counter(r["outcome"] for r in rows if r["outcome"] != "ok")
    if broken:
        print("\nbroken promises (count, first lines):")
        for outcome, count in broken.most_common():
            print(f"{count:4}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
