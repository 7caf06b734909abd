"""The shell forms of the Linux actions (`runflow export`) keep the same promises as the
backends: on a namespace set up by hand (a bridge with options, ports with theirs, routes of
several tables and types, rules, a sysctl file), the script of undo-whole.toml builds what
`runflow run` builds, a second run changes nothing, and `--rollback` puts back everything the
steps removed or changed, as `runflow rollback` does. On both targets' commands."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need_tools
from tests.support.snapshot import without_macs

from .conftest import TARGETS, Lab, assert_same
from .test_actions import BACKGROUND, BRIDGE_OPTIONS, port

pytestmark = pytest.mark.root

WORKFLOW = Path(__file__).with_name("undo-whole.toml")

SETUP = [
    *BACKGROUND,
    ["ip", "link", "add", "br0", "type", "bridge", *BRIDGE_OPTIONS],
    ["ip", "link", "add", "br1", "type", "bridge", "priority", "9"],
    *(["ip", "link", "add", f"v{a}", "type", "veth", "peer", "name", f"v{b}"]
      for a, b in ("ab", "cd", "pq", "kl")),
    ["ip", "link", "set", "va", "master", "br0"],
    ["ip", "link", "set", "vc", "master", "br0"],
    port("va", "cost", "55", "hairpin", "on"),
    port("vc", "priority", "40", "learning", "off"),
    *([["ip", "link", "set", name, "up"] for name in ("va", "vb", "vc", "vd", "vp", "vq", "vk",
                                                       "vl", "br0")]),
    ["ip", "addr", "add", "10.1.0.1/24", "dev", "br0"],
    ["ip", "addr", "add", "10.4.0.1/24", "dev", "vb"],
    ["ip", "addr", "add", "10.2.0.5/24", "dev", "vp"],
    ["ip", "addr", "add", "10.6.0.1/24", "dev", "vk"],
    ["ip", "addr", "add", "10.5.0.1/24", "dev", "vl"],
    ["ip", "route", "add", "10.10.0.0/16", "via", "10.1.0.254", "metric", "5"],
    ["ip", "route", "add", "10.11.0.0/16", "dev", "br0", "table", "100"],
    ["ip", "route", "add", "10.40.0.0/16", "via", "10.4.0.254", "table", "100"],
    ["ip", "route", "add", "10.20.0.0/16", "via", "10.2.0.254", "table", "100"],
    ["ip", "route", "add", "10.30.0.0/16", "via", "10.6.0.254", "metric", "9"],
    ["ip", "route", "add", "blackhole", "10.55.0.0/16", "table", "100", "metric", "3"],
    ["ip", "route", "add", "unreachable", "10.55.0.0/16", "table", "100"],
    ["ip", "rule", "add", "from", "10.8.0.0/16", "table", "100", "priority", "60"],
    ["ip", "rule", "add", "from", "10.8.0.0/16", "fwmark", "1", "table", "101"],
]
SYSCTL_FILE = ("sysctl.d/90-runflow.conf", "# by hand\nnet.ipv4.ip_forward = 0\n")


def run_script(lab: Lab, script: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", "netns", "exec", lab.ns.name, "dash", str(script), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RUNFLOW_JOURNAL": str(script.with_suffix(".j"))})
    assert done.returncode == 0, done.stderr + done.stdout
    return done


@pytest.mark.parametrize("target", TARGETS)
def test_the_script_builds_and_rolls_back_like_runflow(lab: Lab, target: str) -> None:
    need_tools("dash")
    lab.sh(*SETUP)
    lab.ns_file(*SYSCTL_FILE)
    before = lab.snapshot()

    script = lab.tmp / f"{target}.sh"
    lab.call("export", "-i", str(lab.inventory), "--host", "h1", "-t", target, "-o", str(script),
             str(WORKFLOW))
    run_script(lab, script)
    built = lab.snapshot()
    again = run_script(lab, script)
    steps = len(re.findall(r"^== ", again.stdout, re.MULTILINE)) - 1  # and "== done"
    assert len(re.findall(r"^   already so$", again.stdout, re.MULTILINE)) == steps, again.stdout
    run_script(lab, script, "--rollback")
    assert_same(before, lab.snapshot())

    run_id, _ = lab.run(WORKFLOW, target)
    assert_same(without_macs(built), without_macs(lab.snapshot()))
    lab.call("rollback", "-q", run_id)
    assert_same(before, lab.snapshot())


def test_the_scripts_pass_shellcheck(lab: Lab) -> None:
    need_tools("shellcheck")
    for target in TARGETS:
        script = lab.tmp / f"{target}.sh"
        lab.call("export", "-i", str(lab.inventory), "--host", "h1", "-t", target, "-o",
                 str(script), str(WORKFLOW))
        checked = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True,
                                 text=True)
        assert checked.returncode == 0, checked.stdout
