"""The engine, through the real command line and a real (file-changing) backend plugin."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.conftest import REPO, runflow_argv
from tests.unit.conftest import FILES_PLUGIN, read_events


def applied_keys(events):
    return [e["step"] for e in events if e["kind"] == "step" and e["dest"] == "applied"]


def undone_keys(events):
    return [e["step"] for e in events if e["kind"] == "step" and e["dest"] == "undone"]


def test_run_applies_in_order_then_a_second_run_skips_everything(rf, fw, tmp_path):
    wf = fw.write([fw.step("a"), fw.step("b"), fw.step("c")])
    events = tmp_path / "events.jsonl"
    first = rf("run", wf, "--events", events)
    assert first.returncode == 0, first.stderr
    assert fw.files() == {"a": "a content", "b": "b content", "c": "c content"}
    assert applied_keys(read_events(events)) == ["a", "b", "c"]

    events.unlink()
    second = rf("run", wf, "--events", events)
    assert second.returncode == 0
    skipped = [e["step"] for e in read_events(events) if e["dest"] == "skipped"]
    assert skipped == ["a", "b", "c"]
    assert fw.log() == ["apply a", "apply b", "apply c"]


def test_failure_undoes_exactly_the_applied_steps_in_reverse(rf, fw, tmp_path):
    (fw.dir / "b").write_text("b content")  # already so: skipped, so never undone
    fw.fault("boom")
    wf = fw.write([fw.step("a"), fw.step("b"), fw.step("c"),
                   fw.step("d", fail_marker="boom"), fw.step("e")])
    events = tmp_path / "events.jsonl"
    result = rf("run", wf, "--events", events)
    assert result.returncode == 1, result.stderr
    assert "boom is in the way" in result.stderr
    got = read_events(events)
    assert applied_keys(got) == ["a", "c"]
    assert undone_keys(got) == ["c", "a"]
    assert fw.files() == {"b": "b content", "boom": ""}


def test_undo_failure_exits_3_and_the_other_undos_still_run(rf, fw, tmp_path):
    fw.fault("boom")
    fw.fault("stuck")
    wf = fw.write([fw.step("a"), fw.step("b", undo_fail_marker="stuck"), fw.step("c"),
                   fw.step("d", fail_marker="boom")])
    events = tmp_path / "events.jsonl"
    result = rf("run", wf, "--events", events)
    assert result.returncode == 3
    got = read_events(events)
    assert undone_keys(got) == ["c", "a"]
    assert [e["step"] for e in got if e["dest"] == "undo_failed"] == ["b"]
    assert got[-1]["dest"] == "rollback_failed"
    assert set(fw.files()) == {"b", "boom", "stuck"}


def test_quiet_leaves_out_the_progress_but_not_why_it_failed(rf, fw):
    fw.fault("boom")
    wf = fw.write([fw.step("a"), fw.step("b", fail_marker="boom")])
    result = rf("run", "-q", wf)
    assert result.returncode == 1 and result.stdout == ""
    run, step = result.stderr.splitlines()
    assert run.startswith("runflow: run ") and run.endswith(": rolled back")
    assert step == ("runflow: step b on local: failed: apply of file.present in backend files "
                    f"(plugin file:{FILES_PLUGIN}) raised ActionError: boom is in the way")
    assert rf("run", "-q", fw.write([fw.step("c")])).stderr == ""


def test_a_step_that_fails_half_way_leaves_nothing_half_done(rf, fw):
    (fw.dir / "b").write_text("old b")
    fw.fault("broken")
    wf = fw.write([fw.step("a"), fw.step("b", break_marker="broken")])
    result = rf("run", wf)
    assert result.returncode == 1
    assert "failed after writing (its partial changes were undone)" in result.stderr
    assert fw.files() == {"b": "old b", "broken": ""}


def test_no_rollback_leaves_the_applied_steps_and_exits_3(rf, fw):
    fw.fault("boom")
    wf = fw.write([fw.step("a"), fw.step("b", fail_marker="boom")])
    result = rf("run", wf, "--no-rollback")
    assert result.returncode == 3
    assert fw.files() == {"a": "a content", "boom": ""}


def test_shell_steps_fourth_fails_leaves_no_trace(runflow, fw):
    steps = [{"id": f"s{i}", "action": "shell.run", "cmd": ["touch", str(fw.dir / f"s{i}")],
              "undo": ["rm", str(fw.dir / f"s{i}")]} for i in range(1, 4)]
    steps.append({"id": "s4", "action": "shell.run", "cmd": ["ls", str(fw.dir / "missing")],
                  "undo": []})
    result = runflow("run", fw.write(steps))
    assert result.returncode == 1
    assert "missing" in result.stderr  # the failing command's stderr is shown
    assert fw.files() == {}


def test_sigterm_mid_run_finishes_the_step_then_rolls_back(runflow_home, fw, tmp_path):
    hold = fw.fault("hold")
    wf = fw.write([fw.step("a"), fw.step("slow", hold_marker="hold"), fw.step("c")])
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([*runflow_argv(), "run", str(wf), "--plugin", str(FILES_PLUGIN),
                             "--events", str(events)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUNFLOW_HOME": str(runflow_home)})
    deadline = time.monotonic() + 20
    while "apply slow" not in fw.log():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # the signal arrives while the step is still applying
    hold.unlink()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    assert "interrupted by SIGTERM" in stderr
    got = read_events(events)
    assert applied_keys(got) == ["a", "slow"]
    assert undone_keys(got) == ["slow", "a"]
    assert fw.files() == {}


def test_event_order_of_a_run_and_its_steps(rf, fw, tmp_path):
    (fw.dir / "b").write_text("b content")
    wf = fw.write([fw.step("a"), fw.step("b")])
    events = tmp_path / "events.jsonl"
    assert rf("run", wf, "--events", events).returncode == 0
    got = [(e["kind"], e["step"], e["source"], e["dest"]) for e in read_events(events)]
    assert got == [
        ("run", None, None, "pending"),
        ("run", None, "pending", "running"),
        ("step", "a", "pending", "checking"),
        ("step", "a", "checking", "applying"),
        ("step", "a", "applying", "applied"),
        ("step", "b", "pending", "checking"),
        ("step", "b", "checking", "skipped"),
        ("run", None, "running", "succeeded"),
    ]
    applying = next(e for e in read_events(events) if e["dest"] == "applying")
    assert applying["detail"]["before"] == {"exists": False, "content": None}


def test_for_each_over_a_list_and_an_expression(rf, fw):
    wf = fw.write([
        {**fw.step("x"), "name": "x{{ index }}", "content": "{{ item }}",
         "for_each": ["red", "green"]},
        {**fw.step("n"), "name": "n{{ item }}", "content": "{{ item * 10 }}",
         "for_each": "range(1, 4)"},
    ])
    result = rf("run", wf)
    assert result.returncode == 0, result.stderr
    assert fw.files() == {"x0": "red", "x1": "green", "n1": "10", "n2": "20", "n3": "30"}
    listing = rf("plan", wf).stdout
    assert "x[0]" in listing and "n[2]" in listing


def test_when_false_skips_with_the_reason(rf, fw, tmp_path):
    wf = fw.write([fw.step("a", when="mode == 'netdev'"), fw.step("b", when="mode != 'netdev'")],
                  variables={"mode": "netdev"})
    events = tmp_path / "events.jsonl"
    assert rf("run", wf, "--events", events).returncode == 0
    assert fw.files() == {"a": "a content"}
    skip = next(e for e in read_events(events) if e["dest"] == "skipped")
    assert skip["step"] == "b" and "mode != 'netdev'" in skip["message"]


def test_var_precedence_workflow_then_inventory_then_command_line(rf, fw, tmp_path):
    wf = fw.write([{**fw.step("v"), "content": "{{ a }} {{ b }} {{ c }}"}],
                  variables={"a": "wf", "b": "wf", "c": "wf"})
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[hosts.here]\nvars = { b = "inv", c = "inv" }\n')
    result = rf("run", wf, "--inventory", inventory, "--var", "c=cli")
    assert result.returncode == 0, result.stderr
    assert fw.files() == {"v": "wf inv cli"}


def test_plugin_found_by_entry_point(runflow, tmp_path):
    dist = tmp_path / "site" / "runflow_files_test-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runflow-files-test\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text("[runflow]\nfiles = files_backend\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(FILES_PLUGIN.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    result = runflow("backends", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert '"plugin": "files"' in result.stdout and "file.present" in result.stdout


def test_plugin_from_a_file_and_from_the_workflow(runflow, fw, tmp_path):
    listed = runflow("backends", "--plugin", FILES_PLUGIN)
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ACTION", "BACKEND", "FAMILY", "TARGETS", "PLUGIN", "STATUS"]
    (row,) = [r for r in rows if r.startswith("file.present ")]
    # the plugin's path is longer than any built-in's name: the status column still lines up
    assert str(FILES_PLUGIN) in row and row.index("usable") == header.index("STATUS")
    wf = fw.write([fw.step("a")])
    wf.write_text(f"plugins = [{str(FILES_PLUGIN)!r}]\n" + wf.read_text())
    result = runflow("run", wf, "--allow-outside-plugins")  # the plugin is not beside it
    assert result.returncode == 0, result.stderr
    assert fw.files() == {"a": "a content"}


def test_a_hook_without_a_spec_is_refused(runflow, tmp_path):
    plugin = tmp_path / "typo.py"
    plugin.write_text("from runflow.core.hookspecs import hookimpl\n\n"
                      "@hookimpl\ndef runflow_register_action(register):\n    pass\n")
    result = runflow("backends", "--plugin", plugin)
    assert result.returncode == 2
    assert "runflow_register_action" in result.stderr


def test_version_and_help(runflow):
    assert runflow("--version").stdout.startswith("runflow, version")
    help_text = runflow("--help").stdout
    for command in ("run", "plan", "validate", "backends", "resume", "rollback", "runs", "show"):
        assert command in help_text


def test_the_example_plugin_package_registers_its_action(runflow, tmp_path):
    plugin = REPO / "contrib" / "example-plugin" / "runflow_mtu" / "plugin.py"
    listed = runflow("backends", "--plugin", plugin, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"action": "mylab.mtu"' in listed.stdout
    wf = tmp_path / "mtu.toml"
    wf.write_text('[workflow]\nname = "mtu"\n[[steps]]\nid = "m"\naction = "mylab.mtu"\n'
                  'name = "lo"\nmtu = 10\n')
    refused = runflow("validate", wf, "--plugin", plugin)
    assert refused.returncode == 2 and "greater than or equal to 68" in refused.stderr
