#!/usr/bin/env python3
"""Engine overhead: what runflow itself costs, without any system work.

Measures, as medians of several runs:
- `runflow --version` (start-up: heavy backends must not be imported),
- a workflow of 1,000 separate no-op steps, with the journal on (every step journaled: intent
  before apply, outcome after, every event stored),
- one `for_each` step with 1,000 no-op instances,
- `runflow validate` of 5 `for_each` steps x 200 instances whose arguments are templates
  (`va{{ item }}`, `10.0.{{ item // 250 }}.{{ item % 250 + 1 }}/24`: 1,000 renders by Jinja2,
  whose import and compiling it also pays), and of the same steps without templates,
- 1,000 `/bin/true` commands from a plain shell script, for scale (the cost of the cheapest
  external command per step, which real steps pay on top of the engine).

Usage: python3 bench/engine_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from precompile import compile_runflow

REPO = Path(__file__).resolve().parent.parent
NOOP_PLUGIN = REPO / "tests" / "plugins" / "files_backend.py"
RUNFLOW = [sys.executable, "-m", "runflow.core.cli"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_of(repeat: int, argv: list[str], env: dict[str, str]) -> float:
    return statistics.median(timed(argv, env) for _ in range(repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    n = args.steps
    compile_runflow()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmpdir = Path(tmp)
        env = {**os.environ, "RUNFLOW_HOME": str(tmpdir / "home")}
        separate = tmpdir / "separate.toml"
        separate.write_text('[workflow]\nname = "noop"\n' + "".join(
            f'\n[[steps]]\nid = "s{i}"\naction = "test.noop"\n' for i in range(n)))
        batch = tmpdir / "for_each.toml"
        batch.write_text('[workflow]\nname = "noop"\n\n[[steps]]\nid = "s"\n'
                         f'action = "test.noop"\nfor_each = "range({n})"\n'
                         'label = "{{ item }}"\n')
        templated = tmpdir / "templates.toml"
        templated.write_text(templates_workflow(200, templated=True))
        plain = tmpdir / "plain.toml"
        plain.write_text(templates_workflow(200, templated=False))
        script = tmpdir / "true.sh"
        script.write_text("#!/bin/sh\n" + "/bin/true\n" * n)
        plugin = ["--plugin", str(NOOP_PLUGIN), "-q"]

        version = median_of(args.repeat * 2, [*RUNFLOW, "--version"], env)
        steps = median_of(args.repeat, [*RUNFLOW, "run", str(separate), *plugin], env)
        each = median_of(args.repeat, [*RUNFLOW, "run", str(batch), *plugin], env)
        loaded = plugin[:2]  # validate has no -q
        with_templates = median_of(args.repeat, [*RUNFLOW, "validate", str(templated), *loaded],
                                   env)
        without = median_of(args.repeat, [*RUNFLOW, "validate", str(plain), *loaded], env)
        shell = median_of(args.repeat, ["sh", str(script)], env)

    print(f"runflow --version:                      {version:6.3f} s   (goal < 0.3 s)")
    print(f"{n} no-op steps, journal on:          {steps:6.3f} s   "
          f"({steps / n * 1e3:.3f} ms per step)")
    print(f"1 step x {n} for_each no-ops, journal on: {each:6.3f} s")
    print(f"validate, 5 steps x 200, templates:     {with_templates:6.3f} s   "
          f"({(with_templates - without) * 1e3:.0f} ms more than without templates)")
    print(f"plain sh, {n} x /bin/true:            {shell:6.3f} s   "
          f"(runflow's whole overhead = {steps / shell:.2f}x the cost of one exec per step; "
          "goal <= 1.5x)")


def templates_workflow(count: int, templated: bool) -> str:
    """5 for_each steps of `count` no-op instances, their labels templates or plain text."""
    labels = ["va{{ item }}", "vb{{ item }}", "10.0.{{ item // 250 }}.{{ item % 250 + 1 }}/24",
              "va{{ item }}", "vb{{ item }}"]
    each = f'for_each = "range({count})"\n' if templated else \
        f"for_each = {list(range(count))}\n"
    return '[workflow]\nname = "templates"\n' + "".join(
        f'\n[[steps]]\nid = "s{i}"\naction = "test.noop"\n{each}'
        f'label = "{label if templated else "plain"}"\n' for i, label in enumerate(labels))


if __name__ == "__main__":
    main()
