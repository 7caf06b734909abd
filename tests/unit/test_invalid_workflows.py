"""Every file in tests/invalid/ is refused with exit 2 and a message naming what is wrong, and
nothing is touched: its first (valid) step never runs and no run is journaled.

Each file starts with `# exit: N` and `# error: FRAGMENT` (a part of the expected message).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

CORPUS = sorted((REPO / "tests" / "invalid").glob("*.toml"))


def expectation(path: Path) -> tuple[int, str]:
    header = dict(line[2:].split(": ", 1) for line in path.read_text().splitlines()[:2])
    return int(header["exit"]), header["error"]


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_invalid_workflow_is_refused_and_touches_nothing(rf, path, tmp_path, runflow_home):
    code, fragment = expectation(path)
    state = tmp_path / "state"
    state.mkdir()
    result = rf("run", path, "--var", f"dir={state}")
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert str(path) in result.stderr or "plugin" in result.stderr  # names the file
    assert list(state.iterdir()) == []
    assert not (runflow_home / "journal.sqlite").exists()
    validated = rf("validate", path, "--var", f"dir={state}")
    assert validated.returncode == code and fragment in validated.stderr


def test_errors_name_the_line_and_the_step(rf, tmp_path):
    result = rf("validate", next((REPO / "tests" / "invalid").glob("*-missing-argument.toml")),
                "--var", f"dir={tmp_path}")
    assert ".toml:12: step 'second': name: missing required argument" in result.stderr


def test_a_check_across_fields_points_at_the_field_it_blames(rf, tmp_path):
    path = tmp_path / "wf.toml"
    path.write_text('[workflow]\nname = "t"\n\n[[steps]]\nid = "ids"\naction = "ovs.set"\n'
                    'table = "Bridge"\nrecord = "br0"\ncolumn = "external_ids"\nvalue = true\n')
    result = rf("validate", path)
    assert result.returncode == 2
    assert "wf.toml:10: step 'ids': value: external_ids is a map column" in result.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--var", "novalue"], "expected KEY=VALUE"),
    (["--var", "bad-name=1"], "expected KEY=VALUE"),
    (["--target", "centos5"], "Invalid value for '-t' / '--target'"),
    (["--inventory", "/nonexistent/inventory.toml"], "cannot read inventory"),
])
def test_bad_command_line_input_exits_2(rf, tmp_path, args, fragment):
    wf = REPO / "tests" / "invalid" / "01-bad-cidr-prefix.toml"
    result = rf("run", wf, *args)
    assert result.returncode == 2
    assert fragment in result.stderr


@pytest.mark.parametrize("text, fragment", [
    ("[hosts.h1]\nnetns = 'bad name'\n", "hosts.h1.netns"),
    ("[hosts.h1]\nvars = 3\n", "hosts.h1.vars: vars must be a table"),
    ("[hosts]\n", "at least one [hosts.NAME]"),
    ("[hosts.h1]\nssh = '-oProxyCommand=x'\n", "is not a destination"),
    ("[hosts.h1]\nssh = 'root@x'\nssh_options = [\"a\\nb\"]\n", "holds a control character"),
    ("[hosts.h1]\nssh = 'root@x'\nnetns = 'n'\n", "give ssh or netns, not both"),
    ("[host.h1]\n", "unknown top-level key(s) host"),
    ("[hosts.h1\n", "TOML syntax error"),
    ("[hosts.h1]\nnetns = 'rf-no-such-namespace'\n", "does not exist"),
])
def test_bad_inventory_exits_2(rf, tmp_path, text, fragment):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(text)
    state = tmp_path / "state"
    state.mkdir()
    wf = tmp_path / "wf.toml"
    wf.write_text('[workflow]\nname = "x"\n[[steps]]\nid = "a"\naction = "file.present"\n'
                  f'dir = "{state}"\nname = "a"\n')
    result = rf("run", wf, "--inventory", inventory)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert str(inventory) in result.stderr
    assert list(state.iterdir()) == []


LARGE = "x" * 70_000  # more than a var may hold (64 KiB of text)


@pytest.mark.parametrize("where", ["vars", "targets", "inventory", "--var", "list"])
def test_a_var_too_large_is_refused_naming_it(rf, tmp_path, where):
    state = tmp_path / "state"
    state.mkdir()
    wf, inventory = tmp_path / "wf.toml", tmp_path / "inventory.toml"
    value = '"big"'
    if where in ("vars", "targets"):
        value = f'"{LARGE}"'
    elif where == "list":
        value = "[" + ", ".join(['"abcdefgh"'] * 7000) + "]"
    table = "[targets.centos6]" if where == "targets" else "[vars]"
    wf.write_text(f'[workflow]\nname = "x"\n{table}\nv = {value}\n[[steps]]\nid = "a"\n'
                  f'action = "file.present"\ndir = "{state}"\nname = "a"\n')
    inventory.write_text(f'[hosts.h1]\nvars = {{ v = "{LARGE if where == "inventory" else 1}" }}\n')
    args = ["--inventory", inventory, "--target", "centos6"]
    if where == "--var":
        args += ["--var", f"v={LARGE}"]
    result = rf("run", wf, *args)
    assert result.returncode == 2, result.stderr
    assert "more than 65,536 characters, the most a var may hold" in result.stderr
    named = {"vars": "vars.v", "list": "vars.v", "targets": "targets.centos6.v",
             "inventory": "hosts.h1.vars.v", "--var": "--var v"}[where]
    assert named in result.stderr
    assert list(state.iterdir()) == []


def test_every_shipped_workflow_validates_or_says_what_it_expects(runflow):
    result = runflow("validate", *sorted((REPO / "workflows").glob("*.toml")))
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert [e for e in errors if "cross-host-ping.toml" not in e] == []
    assert errors == [e for e in errors if "expects 'peer_container_address' from each host's "
                      "vars in the inventory, and there is no inventory: give one (--inventory "
                      "FILE, or --lab for the lab's), or give --var peer_container_address=VALUE"
                      in e]
    with_var = runflow("validate", REPO / "workflows" / "cross-host-ping.toml",
                       "--var", "peer_container_address=172.16.42.64")
    assert with_var.returncode == 0, with_var.stderr


def test_a_host_that_does_not_give_a_host_var_is_named(rf, tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[hosts.h1]\nvars = { peer = "a" }\n[hosts.h2]\nvars = {}\n')
    result = rf("validate", REPO / "tests" / "invalid" / "43-host-var-not-given.toml",
                "--inventory", inventory, "--var", f"dir={tmp_path}")
    assert result.returncode == 2
    assert (f"host 'h2' of {inventory} does not give 'peer': add it to [hosts.h2.vars], or "
            "give --var peer=VALUE") in result.stderr
