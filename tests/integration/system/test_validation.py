"""Values that would only fail when a step runs are refused before anything runs (exit 2,
naming the file, the step, the field and why): sysctls a network namespace host cannot set,
and firewall rule values that are not what their option takes."""

from __future__ import annotations

import subprocess

import pytest

from runflow.backends.system.args import MACHINE_NET_SYSCTLS
from tests.integration.linux.conftest import Lab


def output(done) -> str:
    return done.stdout + done.stderr


@pytest.mark.root
@pytest.mark.parametrize(("name", "why"), [
    ("kernel.pid_max", "the whole machine's setting"),
    ("vm.swappiness", "the whole machine's setting"),
    ("net.core.netdev_max_backlog", "not per network namespace"),
])
def test_a_sysctl_a_namespace_cannot_set_is_refused_before_anything_runs(
        lab: Lab, name: str, why: str) -> None:
    marker = lab.tmp / "step-1-ran"
    workflow = lab.workflow(
        f'[[steps]]\nid = "first"\naction = "shell.run"\ncmd = ["touch", "{marker}"]\n'
        'undo = []\n\n'
        f'[[steps]]\nid = "tune"\naction = "sysctl.set"\nname = "{name}"\nvalue = "1"\n')
    done = lab.call("run", "-i", str(lab.inventory), str(workflow), expect=2)
    assert why in output(done) and "tune" in output(done)
    assert "Host h1 is network namespace" in output(done)
    assert not marker.exists()


@pytest.mark.root
def test_a_namespace_lacks_exactly_the_net_sysctls_refused_as_the_machines(namespaces) -> None:
    """MACHINE_NET_SYSCTLS against this kernel: what /proc/sys/net has outside namespaces and
    not inside one, per-device entries aside. On another kernel, update the list from this."""
    def entries(argv_prefix: list[str]) -> set[str]:
        out = subprocess.run([*argv_prefix, "find", "/proc/sys/net", "-type", "f"],
                             capture_output=True, text=True, check=True).stdout
        return {line.removeprefix("/proc/sys/").replace("/", ".") for line in out.splitlines()
                if "/conf/" not in line and "/neigh/" not in line}

    ns = namespaces()
    here, inside = entries([]), entries(["ip", "netns", "exec", ns.name])
    if here == inside:  # the tests run in a network namespace themselves (a container,
        # tests/fresh-machine.sh): the list can only be checked to be absent from one
        assert not here & MACHINE_NET_SYSCTLS
    else:
        assert here - inside == MACHINE_NET_SYSCTLS


RULE_WORKFLOW = """[workflow]
name = "nat"

[vars]
subnet = "172.16.42.0/24"

[[steps]]
id = "nat"
action = "firewall.rule.present"
table = "nat"
chain = "POSTROUTING"
rule = ["-s", "{{ subnet }}", "!", "-d", "{{ subnet }}", "-j", "MASQUERADE"]
"""


@pytest.mark.parametrize("subnet", ["192.0.2.999/24", "$(touch /tmp/x)", "172.16.42.0/24 -j"])
def test_a_free_form_subnet_reaching_a_firewall_rule_is_refused(runflow, tmp_path,
                                                                 subnet: str) -> None:
    (tmp_path / "wf.toml").write_text(RULE_WORKFLOW)
    done = runflow("validate", tmp_path / "wf.toml", "--var", f"subnet={subnet}")
    assert done.returncode == 2, output(done)
    assert "nat" in output(done) and "rule" in output(done)
    assert "is not an IPv4 address or network" in output(done)
