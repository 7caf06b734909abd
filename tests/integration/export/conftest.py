"""Exported scripts run inside the lab's hosts: one script per host, run at the same time (the
last step of multihost-gre pings the other host), compared with what `runflow run` builds."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_tools
from tests.integration.lab.conftest import LabUnderTest, lab  # noqa: F401 (the fixture)
from tests.support.snapshot import differences, without_macs

OVS_TAGS = ("runflow-run", "runflow-step")


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_tools("shellcheck", "dash", "bash")


def export(lab: LabUnderTest, workflow: Path, host: str, path: Path, *args: str) -> Path:
    done = lab.runflow("export", workflow, "--lab", "--host", host, "-o", path, *args)
    assert done.returncode == 0, done.stderr
    return path


def export_all(lab: LabUnderTest, workflow: Path, where: Path, *args: str) -> dict[str, Path]:
    """The workflow's script for every lab host."""
    where.mkdir(parents=True, exist_ok=True)
    return {h["name"]: export(lab, workflow, h["name"], where / f"{h['name']}.sh", *args)
            for h in lab.state()["hosts"]}


def run_scripts(lab: LabUnderTest, scripts: dict[str, Path], shell: str, *args: str,
                env: dict[str, str] | None = None, timeout: float = 120
                ) -> dict[str, subprocess.CompletedProcess]:
    """Every host's script inside its namespace at the same time; the journals lie beside
    the scripts."""
    netns = {h["name"]: h["netns"] for h in lab.state()["hosts"]}
    procs = {}
    for host, script in scripts.items():
        environ = {**os.environ, "RUNFLOW_JOURNAL": str(script.with_suffix(".journal")),
                   **(env or {})}
        procs[host] = subprocess.Popen(["ip", "netns", "exec", netns[host], shell, str(script),
                                        *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=environ)
    done = {}
    for host, proc in procs.items():
        out, err = proc.communicate(timeout=timeout)
        done[host] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A lab snapshot without what must differ between a run and a script:
    - the values of the OVS external_ids runflow tags what it creates with (the run's id or
      "export", the step);
    - MAC addresses: an OVS bridge's internal port gets a random one each time it is made,
      and docker0 takes its port's;
    - blanks inside sysconfig's other_args="..." (the script's sed leaves one before the
      first flag it adds; docker splits the value into words).
    """
    result = {}
    for host, parts in snapshot.items():
        result[host] = {**_untagged(parts), "netns": without_macs(parts["netns"]),
                        "sysconfig": re.sub(r'(other_args=)"\s*(.*?)\s*"',
                                            lambda m: f'{m[1]}"{" ".join(m[2].split())}"',
                                            parts["sysconfig"])}
    return result


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "*" if k in OVS_TAGS else _untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untagged(v) for v in value]
    return value


def assert_same(expected: dict[str, Any], got: dict[str, Any]) -> None:
    expected, got = comparable(expected), comparable(got)
    assert got == expected, "\n".join(differences(expected, got))


def assert_succeeded(done: dict[str, subprocess.CompletedProcess]) -> None:
    for host, result in done.items():
        assert result.returncode == 0, f"{host}: {result.stdout}{result.stderr}"
