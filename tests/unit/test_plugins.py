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
