"""multihost-gre exported for both lab hosts and run with dash and with bash: the same hosts as
`runflow run --target centos6`, nothing changed by a second run, rollback (on a failure at
step k, or with --rollback) back to the hosts as they were."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.lab.conftest import WORKFLOWS, LabUnderTest, run_id

from .conftest import assert_same, assert_succeeded, export, export_all, run_scripts

pytestmark = pytest.mark.root

GRE = WORKFLOWS / "multihost-gre.toml"


def test_scripts_build_what_runflow_builds(lab: LabUnderTest, tmp_path: Path) -> None:
    before = lab.snapshot()
    built = {}
    for shell in ("dash", "bash"):
        scripts = export_all(lab, GRE, tmp_path / shell)
        assert_succeeded(run_scripts(lab, scripts, shell))
        built[shell] = lab.snapshot()

        again = run_scripts(lab, scripts, shell)
        assert_succeeded(again)
        for host, done in again.items():
            steps = re.findall(r"^== ", done.stdout, re.MULTILINE)
            held = re.findall(r"^   already so$", done.stdout, re.MULTILINE)
            assert len(held) == len(steps) - 1, f"{host}: a second run changed something:\n" \
                                                f"{done.stdout}"  # - 1: the "== done" line

        assert_succeeded(run_scripts(lab, scripts, shell, "--rollback"))
        assert_same(before, lab.snapshot())

    ran = lab.runflow(GRE, "--lab", "--target", "centos6")
    assert ran.returncode == 0, ran.stderr
    assert_same(lab.snapshot(), built["dash"])
    assert_same(built["dash"], built["bash"])
    rolled = lab.runflow("rollback", run_id(ran))
    assert rolled.returncode == 0, rolled.stderr
    assert_same(before, lab.snapshot())


def failing_at(k: int, path: Path) -> Path:
    """multihost-gre with a failing step inserted before its k-th step (k = 12: at the end)."""
    text = GRE.read_text()
    headers = [m.start() for m in re.finditer(r"^\[\[steps\]\]", text, re.MULTILINE)]
    fault = '[[steps]]\nid = "fault"\naction = "verify.command"\ncmd = ["false"]\n\n'
    at = headers[k] if k < len(headers) else len(text)
    path.write_text(text[:at] + fault + text[at:])
    return path


@pytest.mark.parametrize("k", [0, 1, 5, 10, 11, 12])
def test_a_failure_at_step_k_rolls_back_both_hosts(lab: LabUnderTest, tmp_path: Path,
                                                   k: int) -> None:
    before = lab.snapshot()
    scripts = export_all(lab, failing_at(k, tmp_path / "failing.toml"), tmp_path)
    done = run_scripts(lab, scripts, "dash")
    for host, result in done.items():
        assert result.returncode == 1, f"{host}: {result.stdout}{result.stderr}"
        assert "== fault (verify.command)" in result.stdout
        assert "!! failed; rolling back" in result.stdout
        assert not scripts[host].with_suffix(".journal").exists()
    assert_same(before, lab.snapshot())


def test_without_rollback_a_failed_script_stays_and_resumes(lab: LabUnderTest,
                                                            tmp_path: Path) -> None:
    before = lab.snapshot()
    failing = failing_at(6, tmp_path / "failing.toml")
    scripts = export_all(lab, failing, tmp_path)
    stopped = run_scripts(lab, scripts, "dash", env={"RUNFLOW_NO_ROLLBACK": "1"})
    assert {r.returncode for r in stopped.values()} == {3}, stopped
    assert lab.snapshot() != before

    # Continued by the full workflow's script with the same journal: the applied steps are
    # "already so" and stay its own, so --rollback still undoes them.
    fixed = {h: export(lab, GRE, h, s) for h, s in scripts.items()}
    assert_succeeded(run_scripts(lab, fixed, "dash"))
    assert_succeeded(run_scripts(lab, fixed, "dash", "--rollback"))
    assert_same(before, lab.snapshot())


def test_dry_run_changes_nothing(lab: LabUnderTest, tmp_path: Path) -> None:
    before = lab.snapshot()
    scripts = export_all(lab, GRE, tmp_path)
    done = run_scripts(lab, scripts, "sh", "--dry-run")
    assert_succeeded(done)
    assert "would run:" in done["h1"].stdout
    assert "brctl addbr docker0" in done["h1"].stdout
    assert_same(before, lab.snapshot())


def test_exported_scripts_pass_shellcheck(lab: LabUnderTest, tmp_path: Path) -> None:
    for workflow in ("multihost-gre", "multihost-vxlan", "docker-bridge"):
        for host, script in export_all(lab, WORKFLOWS / f"{workflow}.toml",
                                       tmp_path / workflow).items():
            checked = subprocess.run(["shellcheck", "-s", "sh", str(script)],
                                     capture_output=True, text=True)
            assert checked.returncode == 0, f"{workflow} on {host}:\n{checked.stdout}"


def test_a_workflow_with_an_action_without_shell_form_is_refused(lab: LabUnderTest,
                                                                 tmp_path: Path) -> None:
    # (the lab's container_address var is multihost-gre's, without a prefix length)
    done = lab.runflow("export", WORKFLOWS / "ovs-container.toml", "--lab", "--host", "h1",
                       "--var", "container_address=10.20.0.10/24", "-o", tmp_path / "x.sh")
    assert done.returncode == 2
    assert "step 'container'" in done.stderr
    assert "container.run" in done.stderr and "no shell form" in done.stderr
    assert not (tmp_path / "x.sh").exists()
