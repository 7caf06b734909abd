"""`runflow export` without root: values that hold blanks, quotes and shell syntax reach the
commands as they were written, the script keeps its journal and rollback promises, and a step
without a shell form stops the export, naming the step."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runflow.core.export import command, indent, value_of, word
from tests.conftest import need_tools

NASTY = "a b  'c' \"d\" $(touch x) `touch y` ; * \\ $HOME\ttab"


def write_workflow(path: Path, steps: str) -> Path:
    path.write_text('[workflow]\nname = "quoting"\ndescription = "values that need quoting"\n'
                    + steps)
    return path


def shell_run(step: str, cmd: list[str], undo: list[str]) -> str:
    return (f'\n[[steps]]\nid = "{step}"\naction = "shell.run"\ncmd = {json.dumps(cmd)}\n'
            f"undo = {json.dumps(undo)}\n")


def run(script: Path, *args: str, shell: str = "sh", **env: str) -> subprocess.CompletedProcess:
    journal = script.with_suffix(".journal")
    return subprocess.run([shell, str(script), *args], capture_output=True, text=True,
                          cwd=script.parent, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                  "RUNFLOW_JOURNAL": str(journal), **env})


def test_word_quotes_literals_and_fills_in_values_when_the_script_runs() -> None:
    line = command(["printf", "%s|", NASTY, f"before-{value_of('v')}-after", value_of("v")])
    done = subprocess.run(["sh", "-c", f"v='x y'; {line}"], capture_output=True, text=True)
    assert done.stdout == f"{NASTY}|before-x y-after|x y|"
    assert word("") == "''"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_value_with_blanks_and_quotes_survives(runflow: Any, tmp_path: Path,
                                                 shell: str) -> None:
    need_tools(shell)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "wf.toml", shell_run(
        "write", ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", NASTY, str(out)],
        ["rm", "-f", str(out)]))
    exported = runflow("export", wf, "-o", tmp_path / "wf.sh")
    assert exported.returncode == 0, exported.stderr

    done = run(tmp_path / "wf.sh", shell=shell)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == NASTY
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

    assert run(tmp_path / "wf.sh", "--rollback", shell=shell).returncode == 0
    assert not out.exists()


def test_a_failure_undoes_the_applied_steps_newest_first(runflow: Any, tmp_path: Path) -> None:
    log = tmp_path / "log"
    steps = "".join(shell_run(f"s{i}", ["sh", "-c", f"echo do {i} >> {log}"],
                              ["sh", "-c", f"echo undo {i} >> {log}"]) for i in (1, 2))
    steps += shell_run("broken", ["false"], [])
    wf = write_workflow(tmp_path / "wf.toml", steps)
    assert runflow("export", wf, "-o", tmp_path / "wf.sh").returncode == 0

    done = run(tmp_path / "wf.sh")
    assert done.returncode == 1, done.stdout
    assert log.read_text().split("\n") == ["do 1", "do 2", "undo 2", "undo 1", ""]
    assert not (tmp_path / "wf.journal").exists()

    kept = run(tmp_path / "wf.sh", RUNFLOW_NO_ROLLBACK="1")
    assert kept.returncode == 3
    assert (tmp_path / "wf.journal").exists()


def test_an_undo_that_fails_half_way_says_so(runflow: Any, tmp_path: Path) -> None:
    steps = shell_run("s1", ["true"], ["false"]) + shell_run("broken", ["false"], [])
    wf = write_workflow(tmp_path / "wf.toml", steps)
    assert runflow("export", wf, "-o", tmp_path / "wf.sh").returncode == 0
    done = run(tmp_path / "wf.sh")
    assert done.returncode == 3
    assert "!! undo of s1 failed" in done.stdout


def test_a_step_without_a_shell_form_stops_the_export_naming_it(runflow: Any,
                                                                tmp_path: Path) -> None:
    wf = write_workflow(tmp_path / "wf.toml", shell_run("first", ["true"], []) + (
        '\n[[steps]]\nid = "web"\naction = "container.run"\nname = "web"\n'
        'image = "busybox"\n'))
    done = runflow("export", wf, "-o", tmp_path / "wf.sh")
    assert done.returncode == 2
    assert "step 'web'" in done.stderr and "container.run" in done.stderr
    assert "no shell form" in done.stderr
    assert not (tmp_path / "wf.sh").exists()


MULTILINE = ("first\n    indented 'q' \"d\" $(touch x)\n\ttab \\\n\nRUNFLOW_S1\ntouch pwned\n"
             "'\nlast\n")


def test_a_value_with_newlines_arrives_byte_for_byte(runflow: Any, tmp_path: Path) -> None:
    need_tools("dash")
    out = tmp_path / "out"
    wf = tmp_path / "wf.toml"
    wf.write_text(
        '[workflow]\nname = "lines"\ndescription = "two\\ntouch pwned"\n'
        f"[vars]\ntext = {json.dumps(MULTILINE)}\n"
        + shell_run("write", ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", "{{ text }}",
                              str(out)], ["rm", "-f", str(out)])
        + '\n[[steps]]\nid = "skipped"\naction = "shell.run"\ncmd = ["true"]\nundo = []\n'
          'when = "text == \'x\\ntouch pwned\'"\n')
    assert runflow("export", wf, "-o", tmp_path / "wf.sh").returncode == 0

    listed = run(tmp_path / "wf.sh", "--dry-run", shell="dash")
    assert listed.returncode == 0, listed.stderr
    assert "\nRUNFLOW_S1\ntouch pwned\n" in listed.stdout  # listed, not run
    assert not out.exists() and not (tmp_path / "pwned").exists()

    done = run(tmp_path / "wf.sh", shell="dash")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == MULTILINE.encode()
    assert not (tmp_path / "x").exists() and not (tmp_path / "pwned").exists()


def test_indent_leaves_the_lines_of_a_quoted_value_alone() -> None:
    block = [command(["echo", "a\n  b"]) + " && " + command(["echo", "c\nd"]),
             'x="$(printf \'%s\' "1\n2")"', "echo 'it''s' # don't", "y=1 \\", "  z", "done"]
    assert indent(block) == [
        "    echo 'a\n  b' && echo 'c\nd'", '    x="$(printf \'%s\' "1\n2")"',
        "    echo 'it''s' # don't", "    y=1 \\", "  z", "    done"]
