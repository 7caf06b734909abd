"""Discovering actions and backends: `runflow actions [ACTION]` (the arguments with their types,
defaults and meaning, from the schemas) and `runflow backends --target T` (which backend a step
gets here, and why) — for the built-ins and for a third-party family that says which of its
backends serves which target (tests/plugins/toy_family.py)."""

from __future__ import annotations

import json

import pytest

from runflow.core.plugins import Plugins
from tests.unit.conftest import FILES_PLUGIN

TOY_PLUGIN = FILES_PLUGIN.parent / "toy_family.py"


def test_every_argument_of_a_builtin_action_is_described():
    registry = Plugins(entry_points=False).registry
    missing = [f"{action}.{name}" for action in registry.names()
               for name, field in registry.args_schema(action).model_fields.items()
               if not field.description]
    assert missing == []


def test_actions_lists_every_action_with_its_backends(runflow):
    listed = runflow("actions")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ACTION", "FAMILY", "BACKENDS", "SUMMARY"]
    link_set = next(r for r in rows if r.startswith("link.set "))
    assert "iproute2 (centos6), netlink (modern)" in link_set
    assert "set a link's state, MTU or master" in link_set
    assert len(rows) == len(Plugins(entry_points=False).registry.names())


def test_one_action_shows_its_arguments(runflow):
    shown = runflow("actions", "link.set")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "link.set: set a link's state, MTU or master"
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["ARGUMENT", "TYPE", "DEFAULT", "MEANING"]
    mtu = next(line for line in table if line.startswith("mtu "))
    assert "integer (68-65535)" in mtu and "its MTU in bytes" in mtu
    as_json = json.loads(runflow("actions", "firewall.rule.present", "--json").stdout)
    args = {a["name"]: a for a in as_json["arguments"]}
    assert args["table"]["default"] == "filter" and not args["table"]["required"]
    assert args["chain"]["required"] and args["rule"]["type"] == "argv list"
    assert as_json["backends"] == [{"backend": "iptables", "targets": [],
                                    "plugin": "runflow.backends.iptables"}]


def test_an_unknown_action_is_refused_with_suggestions(runflow):
    shown = runflow("actions", "link.sett")
    assert shown.returncode == 2
    assert "unknown action 'link.sett'; did you mean link.set" in shown.stderr


def test_a_plugins_action_is_listed_like_a_builtin(runflow):
    shown = runflow("actions", "toy.file", "--plugin", TOY_PLUGIN, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["backends"] == [
        {"backend": "toy-sh", "targets": ["centos6"], "plugin": f"file:{TOY_PLUGIN}"},
        {"backend": "toy-py", "targets": ["modern"], "plugin": f"file:{TOY_PLUGIN}"}]
    assert [a["description"] for a in info["arguments"]] == ["an absolute file path",
                                                            "the line it holds"]


def chosen(runflow, target, **env):
    listed = runflow("backends", "--plugin", TOY_PLUGIN, "--target", target, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    return [(r["backend"], r["why_chosen"], r["refused"]) for r in json.loads(listed.stdout)
            if r["action"] == "toy.file" and (r["chosen"] or r["refused"])]


@pytest.mark.parametrize("target, backend, why", [
    ("centos6", "toy-sh", "serves target centos6"),
    ("modern", "toy-py", "serves target modern"),
    ("auto", "toy-py", "auto: serves modern"),
])
def test_a_plugin_family_says_which_backend_serves_each_target(runflow, target, backend, why):
    assert chosen(runflow, target) == [(backend, why, None)]


def test_an_unusable_preferred_backend_is_refused_not_switched(runflow, tmp_path):
    broken = {"TOY_PY_BROKEN": "the toy API is down"}
    ((_, _, refused),) = chosen(runflow, "modern", **broken)
    assert refused == ("the backend of target modern cannot run on local (toy-py: the toy API "
                       "is down); pick another --target, or pin a backend in the step")
    # auto falls back, as documented, and says why
    assert chosen(runflow, "auto", **broken) == [
        ("toy-sh", "auto: serves centos6 (toy-py cannot run here: the toy API is down)", None)]
    wf = tmp_path / "wf.toml"
    wf.write_text(f'[workflow]\nname = "toy"\n\n[[steps]]\nid = "out"\naction = "toy.file"\n'
                  f'path = "{tmp_path / "out"}"\ntext = "x"\n')
    run = runflow("run", wf, "--plugin", TOY_PLUGIN, "--target", "modern", env=broken)
    assert run.returncode == 2 and "toy-py: the toy API is down" in run.stderr
    assert not (tmp_path / "out").exists()


def test_backends_marks_the_builtin_choice_and_why(runflow):
    listed = runflow("backends", "--target", "centos6")
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.startswith("ovs.set ")]
    assert "* serves target centos6" in next(r for r in rows if " ovs-vsctl " in r)
    assert "*" not in next(r for r in rows if " ovsdb " in r)
