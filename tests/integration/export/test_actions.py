"""The other centos6 actions' shell forms on one lab host (actions.toml, teardown.toml): the
script builds what `runflow run` builds, a second run changes nothing, the absent actions'
script takes it apart as runflow does, and rolling either back restores the host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.lab.conftest import LabUnderTest, run_id

from .conftest import assert_same, assert_succeeded, export, run_scripts

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
BUILD, TEARDOWN = HERE / "actions.toml", HERE / "teardown.toml"


def script(lab: LabUnderTest, workflow: Path, where: Path) -> dict[str, Path]:
    return {"h1": export(lab, workflow, "h1", where / f"{workflow.stem}.sh")}


def test_every_action_builds_tears_down_and_rolls_back_like_runflow(
        lab: LabUnderTest, tmp_path: Path) -> None:
    before = lab.snapshot()
    build = script(lab, BUILD, tmp_path)
    assert_succeeded(run_scripts(lab, build, "dash"))
    built = lab.snapshot()
    again = run_scripts(lab, build, "dash")
    assert_succeeded(again)
    assert len(re.findall(r"^   already so$", again["h1"].stdout, re.MULTILINE)) == \
        len(re.findall(r"^== ", again["h1"].stdout, re.MULTILINE)) - 1, again["h1"].stdout

    teardown = script(lab, TEARDOWN, tmp_path)
    assert_succeeded(run_scripts(lab, teardown, "bash"))
    torn = lab.snapshot()
    assert_succeeded(run_scripts(lab, teardown, "bash", "--rollback"))
    assert_same(built, lab.snapshot())
    assert_succeeded(run_scripts(lab, build, "dash", "--rollback"))
    assert_same(before, lab.snapshot())

    ran = lab.runflow(BUILD, "--lab", "--host", "h1", "--target", "centos6")
    assert ran.returncode == 0, ran.stderr
    assert_same(built, lab.snapshot())
    tore = lab.runflow(TEARDOWN, "--lab", "--host", "h1", "--target", "centos6")
    assert tore.returncode == 0, tore.stderr
    assert_same(torn, lab.snapshot())
    for done in (tore, ran):
        rolled = lab.runflow("rollback", run_id(done))
        assert rolled.returncode == 0, rolled.stderr
    assert_same(before, lab.snapshot())


def test_the_scripts_pass_shellcheck(lab: LabUnderTest, tmp_path: Path) -> None:
    import subprocess

    for workflow in (BUILD, TEARDOWN):
        path = script(lab, workflow, tmp_path)["h1"]
        checked = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True,
                                 text=True)
        assert checked.returncode == 0, checked.stdout
