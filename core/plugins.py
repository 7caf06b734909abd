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

import pluggy

from . import hookspecs
from .actions import Registry
from .errors import InputError

# Built-in backends, registered exactly like third-party plugins.
DEFAULT_PLUGINS = (
    "runflow.backends.shell",
    "runflow.backends.verify",
    "runflow.backends.iproute2",
    "runflow.backends.brctl",
    "runflow.backends.netlink",
    "runflow.backends.procfs",
    "runflow.backends.iptables",
    "runflow.backends.docker",
    "runflow.backends.pipework",
    "runflow.backends.docker_daemon",
    "runflow.backends.service",
    "runflow.backends.ovs_vsctl",
    "runflow.backends.ovsdb",
)

ENTRY_POINT_GROUP = "runflow"


class Plugins:
    """The plugin manager of one command, and the registry its plugins filled."""

    def __init__(self, files: Iterable[str | Path] = (), *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("RUNFLOW_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        for name in DEFAULT_PLUGINS:
            self.pm.register(importlib.import_module(name), name=name)
        if entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for path in files:
            self.load_file(path)
        self._registry: Registry | None = None

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
        self.pm.register(module, name=name)
        self._registry = None
        self.check()

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
            registry = Registry()
            # Called per plugin so the registry knows which plugin brought which action.
            for impl in self.pm.hook.runflow_register_actions.get_hookimpls():
                try:
                    impl.function(register=partial(registry.register, plugin=impl.plugin_name))
                except TypeError as exc:
                    raise InputError(f"plugin {impl.plugin_name!r}: {exc}", field="plugins")
            self._registry = registry
        return self._registry

    def emit(self, event: object) -> None:
        self.pm.hook.runflow_event(event=event)
