"""The plugin's tests, written with runflow's test kit (runflow.testing: the `netns_host`
fixture comes with runflow, as a pytest plugin). Run as root: `python3 -m pytest tests`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runflow.testing import roundtrip, run_on

PLUGIN = Path(__file__).resolve().parent.parent / "runflow_mtu" / "plugin.py"


@pytest.fixture
def veth_host(netns_host):
    """A throw-away host with a veth pair v0/v1 (MTU 1500)."""
    run_on(netns_host, ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
    return netns_host


@pytest.mark.parametrize("backend", ["mylab-ip", "mylab-pyroute2"])
def test_each_backend_keeps_the_contract(veth_host, backend):
    # Found by name, as runflow finds it: from the installed package or from this file.
    from runflow.core.plugins import Plugins

    trip = roundtrip("mylab.mtu", {"name": "v0", "mtu": 1400}, veth_host, backend=backend,
                     plugins=Plugins([PLUGIN]))
    assert trip.before == {"exists": True, "mtu": 1500}
    assert trip.after == {"exists": True, "mtu": 1400}
    assert trip.applied[-1].endswith("ip link set dev v0 mtu 1400")  # recorded, even over netlink
    if backend == "mylab-pyroute2":  # its ctx.log() lines: progress output and journal
        assert trip.logs[0] == "v0: MTU 1400 set over netlink"


def runflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runflow.core.cli", *args],
                          capture_output=True, text=True)


@pytest.mark.parametrize("target, backend", [("centos6", "mylab-ip"),
                                             ("modern", "mylab-pyroute2")])
def test_each_target_gets_its_backend(target, backend):
    listed = runflow("backends", "--plugin", str(PLUGIN), "--target", target, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["action"] == "mylab.mtu"]
    assert [r["backend"] for r in rows if r["chosen"]] == [backend]


def test_the_arguments_are_described():
    shown = runflow("actions", "mylab.mtu", "--plugin", str(PLUGIN), "--json")
    assert shown.returncode == 0, shown.stderr
    args = {a["name"]: a for a in json.loads(shown.stdout)["arguments"]}
    assert args["mtu"]["type"] == "integer (68-65535)" and args["mtu"]["description"]


def test_the_exported_script_does_and_undoes_it(veth_host, tmp_path):
    workflow = tmp_path / "mtu.toml"
    workflow.write_text('[workflow]\nname = "mtu"\n\n[[steps]]\nid = "v0-mtu"\n'
                        'action = "mylab.mtu"\nname = "v0"\nmtu = 1400\n')
    script = tmp_path / "mtu.sh"
    exported = runflow("export", str(workflow), "--plugin", str(PLUGIN), "--target", "centos6",
                       "-o", str(script))
    assert exported.returncode == 0, exported.stderr
    sh = ["env", f"RUNFLOW_JOURNAL={tmp_path / 'mtu.journal'}", "sh", str(script)]

    def mtu() -> str:
        return run_on(veth_host, ["cat", "/sys/class/net/v0/mtu"]).stdout.strip()

    run_on(veth_host, sh)
    assert mtu() == "1400"
    assert "already so" in run_on(veth_host, sh).stdout  # a second run changes nothing
    run_on(veth_host, [*sh, "--rollback"])
    assert mtu() == "1500"
