"""Plugin files: found relative to the workflow that names them (or to the current directory
for --plugin), journaled with their absolute path and hash so that resume and rollback work
from any directory, replaceable with --plugin when moved; loaded by validate, plan and export
only when asked; one plugin when found both installed and as a file. And what a plugin says
with ctx.log() reaches the progress output and the journal."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from runflow.core.journal import Journal
from tests.unit.conftest import FILES_PLUGIN

TOY_PLUGIN = FILES_PLUGIN.parent / "toy_family.py"


def project(tmp_path, *, extra_step: str = "", name: str = "proj"):
    """A directory with a workflow naming its plugin beside it (plugins = ["toy.py"])."""
    home = tmp_path / name
    home.mkdir()
    shutil.copy(TOY_PLUGIN, home / "toy.py")
    (home / "wf.toml").write_text(
        'plugins = ["toy.py"]\n[workflow]\nname = "toy"\n\n[[steps]]\nid = "out"\n'
        f'action = "toy.file"\npath = "{tmp_path / "out"}"\ntext = "hello"\n' + extra_step)
    return home


def test_paths_resolve_against_the_workflow_and_are_journaled(runflow, runflow_home, tmp_path):
    home = project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(TOY_PLUGIN, elsewhere / "extra.py")
    (elsewhere / "extra.py").write_text((elsewhere / "extra.py").read_text().replace(
        '"toy.file"', '"toy.other"'))
    done = runflow("run", "-q", "../proj/wf.toml", "--plugin", "extra.py", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_text() == "hello"
    record = Journal(runflow_home).find("last").record
    assert record["workflow"]["path"] == str(home / "wf.toml")
    assert record["plugins"] == [
        {"path": str(elsewhere / "extra.py"),
         "sha256": hashlib.sha256((elsewhere / "extra.py").read_bytes()).hexdigest()},
        {"path": str(home / "toy.py"),
         "sha256": hashlib.sha256((home / "toy.py").read_bytes()).hexdigest()}]
    # from another directory, relative paths and all
    back = runflow("rollback", "-q", "last", cwd="/")
    assert back.returncode == 0, back.stderr
    assert not (tmp_path / "out").exists()


def test_a_moved_plugin_is_named_with_plugin_on_rollback(runflow, tmp_path):
    home = project(tmp_path)
    assert runflow("run", "-q", home / "wf.toml").returncode == 0
    moved = tmp_path / "moved"
    home.rename(moved)
    refused = runflow("rollback", "-q", "last", cwd="/")
    assert refused.returncode == 2
    assert (f"plugin file {home / 'toy.py'}, which run" in refused.stderr
            and "does not exist any more: give its new place with --plugin FILE" in refused.stderr)
    (moved / "toy.py").write_text((moved / "toy.py").read_text() + "\n# edited\n")
    back = runflow("rollback", "-q", "last", "--plugin", moved / "toy.py", cwd="/")
    assert back.returncode == 0, back.stderr
    assert f"warning: plugin file {moved / 'toy.py'} stands for {home / 'toy.py'}" in back.stderr
    assert "but its content differs" in back.stderr
    assert not (tmp_path / "out").exists()


def test_resume_from_another_directory_with_a_moved_plugin(runflow, tmp_path):
    marker = tmp_path / "fixed"
    home = project(tmp_path, extra_step=f'\n[[steps]]\nid = "gate"\naction = "shell.run"\n'
                                        f'cmd = ["test", "-e", "{marker}"]\nundo = []\n')
    failed = runflow("run", "-q", "--no-rollback", home / "wf.toml")
    assert failed.returncode == 3, failed.stderr
    moved = tmp_path / "moved"
    home.rename(moved)
    marker.write_text("")
    resumed = runflow("resume", "-q", "last", "--use-current-file", "--plugin",
                      moved / "toy.py", cwd="/")
    assert resumed.returncode == 0, resumed.stderr
    assert "warning" not in resumed.stderr  # same content: it stands in silently
    assert (tmp_path / "out").read_text() == "hello"


def test_the_same_plugin_installed_and_as_a_file_is_one_plugin(runflow, tmp_path):
    site = tmp_path / "site"
    dist = site / "runflow_toy-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runflow-toy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[runflow]\ntoy = toy_family\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(TOY_PLUGIN.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    listed = runflow("backends", "--json", "--plugin", TOY_PLUGIN, env=env)
    assert listed.returncode == 0, listed.stderr
    assert (f"notice: plugin file {TOY_PLUGIN} replaces the installed plugin toy (entry point "
            "toy_family (runflow-toy 1.0))") in listed.stderr
    plugins = {r["plugin"] for r in json.loads(listed.stdout) if r["action"] == "toy.file"}
    assert plugins == {f"file:{TOY_PLUGIN}"}
    home = project(tmp_path)
    done = runflow("run", "-q", home / "wf.toml", env=env)
    assert done.returncode == 0, done.stderr
    assert runflow("rollback", "-q", "last", env=env).returncode == 0


SIDE_EFFECT = "open({marker!r}, 'w').close()\n"


@pytest.mark.parametrize("command", ["validate", "plan", "export"])
def test_commands_that_change_nothing_load_a_workflows_plugins_only_when_asked(
        runflow, tmp_path, command):
    home = project(tmp_path)
    marker = tmp_path / "imported"
    toy = home / "toy.py"
    toy.write_text(toy.read_text() + SIDE_EFFECT.format(marker=str(marker)))
    refused = runflow(command, home / "wf.toml")
    assert refused.returncode == 2
    assert ("plugins: the workflow names plugin files" in refused.stderr
            and "loads a workflow's plugins only with --load-plugins" in refused.stderr)
    assert not marker.exists()
    loaded = runflow(command, home / "wf.toml", "--load-plugins", "-t", "centos6")
    assert loaded.returncode == 0, loaded.stderr
    assert marker.exists()


def test_a_workflows_plugin_outside_its_directory_needs_a_flag(runflow, tmp_path):
    home = project(tmp_path)
    wf = home / "wf.toml"
    wf.write_text(wf.read_text().replace('plugins = ["toy.py"]',
                                         'plugins = ["../outside/toy.py"]'))
    (tmp_path / "outside").mkdir()
    shutil.move(home / "toy.py", tmp_path / "outside" / "toy.py")
    refused = runflow("run", wf)
    assert refused.returncode == 2
    assert (f"plugin file {tmp_path / 'outside' / 'toy.py'} is outside the workflow's directory"
            in refused.stderr and "--allow-outside-plugins" in refused.stderr)
    assert not (tmp_path / "out").exists()
    assert runflow("run", "-q", wf, "--allow-outside-plugins").returncode == 0


def test_a_plugins_log_lines_reach_the_progress_and_the_journal(runflow, tmp_path):
    home = project(tmp_path)
    done = runflow("run", home / "wf.toml", "-t", "modern")
    assert done.returncode == 0, done.stderr
    assert f"out: toy-py wrote {tmp_path / 'out'}" in done.stderr
    shown = json.loads(runflow("show", "--json", "last").stdout)
    assert [e["message"] for e in shown["events"] if e["kind"] == "log"] == [
        f"toy-py wrote {tmp_path / 'out'}"]
    (step,) = shown["steps"]
    assert step["backend"] == "toy-py" and step["commands"] == ["printf %s hello"]


def test_export_takes_the_backend_of_the_target(runflow, tmp_path):
    home = project(tmp_path)
    script = tmp_path / "toy.sh"
    exported = runflow("export", home / "wf.toml", "--load-plugins", "-t", "centos6",
                       "-o", script)
    assert exported.returncode == 0, exported.stderr
    env = {"PATH": os.environ["PATH"], "RUNFLOW_JOURNAL": str(tmp_path / "toy.journal")}
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert (tmp_path / "out").read_text() == "hello"
    undone = subprocess.run(["sh", str(script), "--rollback"], capture_output=True, text=True,
                            env=env)
    assert undone.returncode == 0 and not (tmp_path / "out").exists()
    modern = runflow("export", home / "wf.toml", "--load-plugins", "-t", "modern")
    assert modern.returncode == 2
    assert "toy.file (backend toy-py) has no shell form" in modern.stderr
