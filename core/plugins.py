"""Loading plugins: the built-in backends, entry points, and plugin files, all through the same
hooks (core/hookspecs.py), then building the action registry from them."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pluggy

from . import hookspecs
from .actions import Registry
from .errors import InputError

# The built-in backends: each plugin's name (what `runflow backends` shows), the module that
# implements it (backends/FAMILY/BACKEND.py) and the actions it registers. They register exactly
# like third-party plugins, through the same hook, but each is imported only when a command
# first needs one of its actions: a workflow of Linux actions then never loads the docker and
# OVS backends and their argument schemas (25-30 ms of start-up).
# tests/unit/test_plugins.py checks these lists against what the modules register.
class Builtin(NamedTuple):
    module: str
    actions: tuple[str, ...]


_LINK_ACTIONS = ("link.set", "addr.present", "addr.absent", "veth.present", "veth.absent",
                 "netns.move", "route.present", "route.absent")
_BRIDGE_ACTIONS = ("bridge.present", "bridge.absent", "bridge.port")
_OVS_ACTIONS = ("ovs.bridge.present", "ovs.bridge.absent", "ovs.port.present", "ovs.port.absent",
                "ovs.set")
_ATTACH_ACTIONS = ("container.attach", "container.detach")

BUILTIN_PLUGINS: dict[str, Builtin] = {
    "runflow.backends.shell": Builtin("runflow.backends.shell", ("shell.run",)),
    "runflow.backends.verify": Builtin("runflow.backends.verify",
                                       ("verify.command", "verify.ping")),
    "runflow.backends.iproute2": Builtin("runflow.backends.linux.iproute2", _LINK_ACTIONS),
    "runflow.backends.brctl": Builtin("runflow.backends.linux.brctl", _BRIDGE_ACTIONS),
    "runflow.backends.netlink": Builtin("runflow.backends.linux.netlink",
                                        _LINK_ACTIONS + _BRIDGE_ACTIONS),
    "runflow.backends.procfs": Builtin("runflow.backends.system.procfs", ("sysctl.set",)),
    "runflow.backends.iptables": Builtin("runflow.backends.system.iptables",
                                         ("firewall.rule.present", "firewall.rule.absent",
                                          "firewall.policy")),
    "runflow.backends.docker": Builtin("runflow.backends.docker.engine",
                                       ("container.run", "container.absent", *_ATTACH_ACTIONS)),
    "runflow.backends.pipework": Builtin("runflow.backends.docker.pipework", _ATTACH_ACTIONS),
    # One plugin name for several backend modules (daemon-json and sysconfig; systemd,
    # service and command): the name is what `runflow backends` has always shown, so it
    # stays, and a small *_plugin module registers the actions of each of its backends.
    "runflow.backends.docker_daemon": Builtin("runflow.backends.docker.daemon_plugin",
                                              ("docker.daemon",)),
    "runflow.backends.service": Builtin("runflow.backends.system.service_plugin",
                                        ("service.restart", "service.present")),
    "runflow.backends.ovs_vsctl": Builtin("runflow.backends.ovs.vsctl", _OVS_ACTIONS),
    "runflow.backends.ovsdb": Builtin("runflow.backends.ovs.ovsdb", _OVS_ACTIONS),
}

ENTRY_POINT_GROUP = "runflow"


class Plugins:
    """The plugin manager of one command, and the registry its plugins filled."""

    def __init__(self, files: Iterable[str | Path] = (), *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("RUNFLOW_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        self._registry: Registry | None = None
        if entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for path in files:
            self.load_file(path)

    def load_file(self, path: str | Path) -> None:
        """Load a plugin from a Python file (--plugin, or a workflow's `plugins`)."""
        path = Path(path).resolve()
        name = f"file:{path}"
        if self.pm.has_plugin(name):
            return
        if not path.is_file():
            raise InputError(f"plugin file {str(path)!r} does not exist", field="plugins")
        spec = importlib.util.spec_from_file_location(f"runflow_plugin_{abs(hash(path))}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        # In sys.modules first, as imports do: pydantic resolves a model's annotations there.
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[spec.name]
            raise InputError(f"plugin file {str(path)!r} failed to load: {exc}", field="plugins")
        self._add(module, name)

    def _add(self, plugin: object, name: str) -> None:
        """Register a plugin; once the registry is built, add the plugin's actions to it."""
        self.pm.register(plugin, name=name)
        self.check()
        if self._registry is not None:
            for impl in self.pm.hook.runflow_register_actions.get_hookimpls():
                if impl.plugin_name == name:
                    self._register_actions(self._registry, impl)

    def check(self) -> None:
        """Refuse hook implementations that match no spec (a typo would otherwise be ignored)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise InputError(f"plugin {exc.plugin!r}: {exc}", field="plugins") from None

    def add_subscriber(self, obj: object, name: str | None = None) -> None:
        """Register an object with hook implementations (e.g. an event sink) for this command."""
        self.pm.register(obj, name=name)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self.check()
            registry = Registry(load=self._load_builtins, rank=self._rank)
            for impl in self.pm.hook.runflow_register_actions.get_hookimpls():
                self._register_actions(registry, impl)
            self._registry = registry
        return self._registry

    @staticmethod
    def _register_actions(registry: Registry, impl: pluggy.HookImpl) -> None:
        # Called per plugin so the registry knows which plugin brought which action.
        try:
            impl.function(register=partial(registry.register, plugin=impl.plugin_name))
        except TypeError as exc:
            raise InputError(f"plugin {impl.plugin_name!r}: {exc}", field="plugins")

    def _load_builtins(self, action: str | None) -> None:
        """Import the built-in backends that implement `action` (None: all of them) and add
        their actions to the registry, if not done yet."""
        for name, builtin in BUILTIN_PLUGINS.items():
            if (action is None or action in builtin.actions) and not self.pm.has_plugin(name):
                self._add(importlib.import_module(builtin.module), name)

    def _rank(self, plugin: str) -> tuple[int, int]:
        """Built-in backends first, in BUILTIN_PLUGINS' order, then the others as loaded."""
        if plugin in BUILTIN_PLUGINS:
            return 0, list(BUILTIN_PLUGINS).index(plugin)
        return 1, [name for name, _ in self.pm.list_name_plugin()].index(plugin)

    def emit(self, event: object) -> None:
        self.pm.hook.runflow_event(event=event)
