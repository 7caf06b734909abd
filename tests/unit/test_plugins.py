"""Loading the built-in backends on demand: the declared action lists must match what the
modules register, and a command must see the same registry whether it loaded one backend or
all of them."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from runflow.core.plugins import BUILTIN_PLUGINS, Plugins
from tests.unit.conftest import FILES_PLUGIN


@pytest.mark.parametrize("name", BUILTIN_PLUGINS)
def test_declared_actions_are_the_registered_ones(name):
    registered: list[str] = []
    builtin = BUILTIN_PLUGINS[name]
    importlib.import_module(builtin.module).runflow_register_actions(
        register=lambda impl: registered.append(impl.name))
    assert set(builtin.actions) == set(registered)


def test_an_action_loads_only_the_backends_that_implement_it():
    plugins = Plugins(entry_points=False)
    assert set(plugins.registry.implementations("bridge.present")) == {"brctl", "netlink"}
    loaded = {name for name, _ in plugins.pm.list_name_plugin()}
    assert loaded == {"runflow.backends.brctl", "runflow.backends.netlink"}


def test_implementations_keep_one_order_whatever_loaded_first():
    everything = Plugins(entry_points=False).registry
    everything.names()
    piecemeal = Plugins(entry_points=False).registry
    for action in ("bridge.present", "container.attach", "link.set", "ovs.set"):
        piecemeal.implementations(action)
    for action in everything.names():
        assert list(piecemeal.implementations(action)) == list(everything.implementations(action))


def test_a_plugin_file_loaded_later_joins_the_registry():
    plugins = Plugins(entry_points=False)
    registry = plugins.registry
    assert not registry.implementations("file.present")
    plugins.load_file(FILES_PLUGIN)
    assert registry is plugins.registry
    assert registry.implementations("file.present")


def test_planning_linux_actions_imports_no_docker_or_ovs_backend(tmp_path):
    workflow = tmp_path / "wf.toml"
    workflow.write_text('[workflow]\nname = "w"\n\n[[steps]]\nid = "br"\n'
                        'action = "bridge.present"\nname = "br0"\n')
    # In a fresh interpreter: this one has imported every backend by now.
    probe = ("import sys\n"
             "from runflow.core.plugins import Plugins\n"
             "from runflow.core.session import Options, plan_workflow\n"
             f"plan_workflow({str(workflow)!r}, Options(target='modern'), Plugins(), "
             "probe=False)\n"
             "print(sorted(m for m in sys.modules if m.startswith('runflow.backends.')))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout
    assert "runflow.backends.linux.netlink" in loaded
    assert not [m for m in ast.literal_eval(loaded) if m.startswith(("runflow.backends.docker.",
                                                         "runflow.backends.ovs."))]


# ---------------------------------------------------------------------------------------------
# A plugin's failures: one line naming the plugin, the method and the exception
# ---------------------------------------------------------------------------------------------

TOY_PLUGIN = FILES_PLUGIN.parent / "toy_family.py"
HOOKIMPL = "from runflow.core.hookspecs import hookimpl\n\n"


def plugin_file(tmp_path, text: str, name: str = "broken.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("runflow: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize("text, fragments", [
    ("x = 1 / 0\n", ["plugin file:", "broken.py", "loading", "raised ZeroDivisionError: division "
                     "by zero"]),
    (HOOKIMPL + "@hookimpl\ndef runflow_register_actions(register):\n    raise RuntimeError("
     "'no way')\n", ["runflow_register_actions (plugin file:", "raised RuntimeError: no way"]),
    (HOOKIMPL + "@hookimpl\ndef runflow_register_actions(reg):\n    pass\n",
     ["@hookimpl runflow_register_actions(reg): reg is not an argument of the hook (it passes: "
      "register)"]),
    (HOOKIMPL + "@hookimpl\ndef runflow_register_action(register):\n    pass\n",
     ["@hookimpl runflow_register_action matches no hook of runflow; did you mean "
      "runflow_register_actions?"]),
    (HOOKIMPL + "class Mtu:\n    name = 'x.y'\n\n@hookimpl\ndef runflow_register_actions("
     "register):\n    register(Mtu)\n", ["raised TypeError: Mtu is not an Action subclass"]),
    (HOOKIMPL + "from runflow.core.actions import Action, Args\n\nclass A(Action):\n"
     "    name, backend, family, Args, targets = 'x.y', 'b', 'x', Args, ('centos7',)\n\n"
     "@hookimpl\ndef runflow_register_actions(register):\n    register(A)\n",
     ["in backend b", "names unknown target(s) 'centos7' (known: centos6, modern)"]),
    ("RUNFLOW_API_VERSION = (2, 0)\n", ["was written for runflow's plugin API 2.0; this runflow "
                                        "has 1."]),
])
def test_a_broken_plugin_is_one_line_naming_it(runflow, tmp_path, text, fragments):
    plugin = plugin_file(tmp_path, text)
    line = one_line_error(runflow("backends", "--plugin", plugin))
    for fragment in fragments:
        assert fragment in line


def test_debug_adds_the_traceback(runflow, tmp_path):
    plugin = plugin_file(tmp_path, "def helper():\n    return {}['key']\n\nhelper()\n")
    shown = runflow("--debug", "backends", "--plugin", plugin)
    assert shown.returncode == 2
    assert "Traceback" in shown.stderr and "in helper" in shown.stderr
    assert "loading (plugin file:" in shown.stderr and "raised KeyError: 'key'" in shown.stderr


def test_a_plugin_that_registers_nothing_is_warned_about(runflow, tmp_path):
    unmarked = plugin_file(tmp_path, "def runflow_register_actions(register):\n    pass\n",
                           "unmarked.py")
    empty = plugin_file(tmp_path, HOOKIMPL + "@hookimpl\ndef runflow_register_actions(register):"
                        "\n    pass\n", "empty.py")
    listed = runflow("backends", "--plugin", unmarked, "--plugin", empty)
    assert listed.returncode == 0, listed.stderr
    assert (f"warning: plugin file:{unmarked} registers nothing: it has no @hookimpl function "
            "(is @hookimpl missing on runflow_register_actions?)") in listed.stderr
    assert f"warning: plugin file:{empty}: runflow_register_actions registered no action" \
        in listed.stderr


def toy_workflow(tmp_path, name="wf.toml", plugins=None, text="hello"):
    """A workflow of one toy.file step, writing tmp_path/out."""
    head = f"plugins = {json.dumps(plugins)}\n" if plugins is not None else ""
    path = tmp_path / name
    path.write_text(head + '[workflow]\nname = "toy"\n\n[[steps]]\nid = "out"\n'
                    f'action = "toy.file"\npath = "{tmp_path / "out"}"\ntext = "{text}"\n')
    return path


BROKEN_TOYS = HOOKIMPL + """\
from pydantic import field_validator

from runflow.core.actions import Action, Args


class Picky(Args):
    text: str

    @field_validator("text")
    @classmethod
    def _picky(cls, value):
        return {}[value]


class Plain(Args):
    text: str


class Toy(Action):
    family, backend = "toy", "toy-sh"

    def observe(self, ctx, args):
        return {}

    def check(self, args, before):
        raise ValueError("cannot say")

    def shell(self, host, args, var):
        raise RuntimeError("no form today")


class PickyToy(Toy):
    name, Args = "toy.picky", Picky


class BrokenToy(Toy):
    name, Args = "toy.broken", Plain


@hookimpl
def runflow_register_actions(register):
    register(PickyToy)
    register(BrokenToy)
"""


def test_a_validator_or_check_that_raises_is_one_line(runflow, tmp_path):
    plugin = plugin_file(tmp_path, BROKEN_TOYS)
    wf = tmp_path / "wf.toml"
    wf.write_text('[workflow]\nname = "toys"\n\n[[steps]]\nid = "picky"\naction = "toy.picky"\n'
                  'text = "hello"\n')
    line = one_line_error(runflow("validate", wf, "--plugin", plugin))
    assert "step 'picky': validating the arguments of toy.picky (plugin file:" in line
    assert "raised KeyError: 'hello'" in line

    wf.write_text('[workflow]\nname = "toys"\n\n[[steps]]\nid = "broken"\naction = "toy.broken"'
                  '\ntext = "x"\n\n[[steps]]\nid = "after"\naction = "shell.run"\n'
                  'cmd = ["true"]\nundo = []\n')
    planned = runflow("plan", wf, "--plugin", plugin)
    assert planned.returncode == 0, planned.stderr
    broken, after = planned.stdout.splitlines()[:2]
    assert "cannot tell  (check of toy.broken in backend toy-sh (plugin file:" in broken
    assert "raised ValueError: cannot say" in broken
    assert after.startswith("after") and "would change" in after
    assert "1 step(s) could not be observed here" in planned.stderr
    assert "Traceback" not in planned.stdout + planned.stderr

    line = one_line_error(runflow("export", wf, "--plugin", plugin))
    assert "shell of toy.broken in backend toy-sh (plugin file:" in line
    assert "raised RuntimeError: no form today" in line
