"""Loading plugins: the built-in backends, entry points, and plugin files, all through the same
hooks (core/hookspecs.py), then building the action registry from them.

Whatever goes wrong in a plugin while it is loaded or registers its actions is one line naming
the plugin, the method, the exception's type and message (`runflow --debug` adds the
traceback): see `errors.failure_line`. A plugin found both as an installed package (entry
point) and as a file is one plugin: the file wins, with a notice.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pluggy

from . import hookspecs
from .actions import Action, Registry
from .errors import InputError, PluginError, failure_line

if TYPE_CHECKING:
    from .watch.sources import Source
    from .workflow import Workflow

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
                 "netns.move", "route.present", "route.absent", "rule.present", "rule.absent")
_BRIDGE_ACTIONS = ("bridge.present", "bridge.absent", "bridge.port")
_OVS_ACTIONS = ("ovs.bridge.present", "ovs.bridge.absent", "ovs.port.present", "ovs.port.absent",
                "ovs.bond.present", "ovs.bond.absent", "ovs.set", "ovs.unset", "ovs.get")
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

# The built-in event sources of `runflow watch` (core/watch/), imported when a watch names them.
class BuiltinSource(NamedTuple):
    module: str
    sources: tuple[str, ...]


BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    "runflow.backends.docker_events": BuiltinSource("runflow.backends.docker.events",
                                                    ("docker",)),
    "runflow.backends.netlink_events": BuiltinSource("runflow.backends.linux.events",
                                                     ("netlink",)),
}

ENTRY_POINT_GROUP = "runflow"


def _stderr(text: str) -> None:
    print(f"runflow: {text}", file=sys.stderr, flush=True)


def _sha256(data: bytes) -> str:
    import hashlib  # for plugin files only: 1-3 ms of start-up otherwise

    return hashlib.sha256(data).hexdigest()


class PluginFile(NamedTuple):
    """A plugin loaded from a file: what the journal keeps of it."""

    path: str  # absolute
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}


class Plugins:
    """The plugin manager of one command, and the registry its plugins filled.

    files: plugin files given on the command line (relative to the current directory).
    workflow_plugins: whether a workflow's own `plugins = [...]` may be loaded (`validate`,
      `plan` and `export` load them only when asked: they are code that runs).
    plugins_outside: whether those may lie outside the workflow's directory.
    notify: where notices and warnings go (default: standard error).
    """

    def __init__(self, files: Iterable[str | Path] = (), *, entry_points: bool = True,
                 workflow_plugins: bool = True, plugins_outside: bool = False,
                 notify: Callable[[str], None] = _stderr) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        if os.environ.get("RUNFLOW_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()
        self.workflow_plugins = workflow_plugins
        self.plugins_outside = plugins_outside
        self.notify = notify
        self._registry: Registry | None = None
        self.sources: dict[str, str] = {}  # plugin name → where it came from, for listings
        self._files: dict[str, PluginFile] = {}  # plugin name → its file
        self._given: list[str] = []  # plugin names of the command line's files
        self._replaced: dict[str, str] = {}  # a journaled file → the file that stands for it
        self._trusted: set[str] = set()  # journaled files: checked when their run began
        if entry_points:
            self._load_entry_points()
        for path in files:
            self._given.append(self.load_file(path))

    # -- loading ------------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        import importlib.metadata

        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.pm.has_plugin(ep.name):
                    continue
                source = f"entry point {ep.value} ({dist.name} {dist.version})"
                try:
                    plugin = ep.load()
                except Exception as exc:  # plugin code
                    raise PluginError.raised(exc, method="loading",
                                             plugin=f"{ep.name} ({source})") from exc
                self._add(plugin, ep.name, source)

    def load_file(self, path: str | Path) -> str:
        """Load a plugin from a Python file (--plugin, or a workflow's `plugins`); returns
        its plugin name. Loading the same file twice loads it once."""
        key = str(Path(path).resolve())
        key = self._replaced.get(key, key)
        name = f"file:{key}"
        if self.pm.has_plugin(name):
            return name
        if not os.path.isfile(key):
            raise InputError(f"plugin file {key!r} does not exist", field="plugins")
        stem = re.sub(r"\W", "_", Path(key).stem)
        module_name = f"runflow_plugin_{stem}_{_sha256(key.encode())[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, key)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        # In sys.modules first, as imports do: pydantic resolves a model's annotations there.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # plugin code
            del sys.modules[module_name]
            raise PluginError.raised(exc, method="loading", plugin=name) from exc
        self._files[name] = PluginFile(key, _sha256(Path(key).read_bytes()))
        self._add(module, name, f"file {key}")
        return name

    def _add(self, plugin: object, name: str, source: str) -> None:
        """Register a plugin; once the registry is built, add the plugin's actions to it."""
        _check_api_version(plugin, name)
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(_hook_mismatch(plugin, name, exc), plugin=name) from exc
        self.sources[name] = source
        self._check_hook_names(name)
        if not self.pm.get_hookcallers(plugin):
            self.notify(f"warning: plugin {name} registers nothing: it has no @hookimpl "
                        "function" + _forgotten_marker(plugin))
        if self._registry is not None:
            self._fill(self._registry, name)

    def _check_hook_names(self, name: str) -> None:
        """Refuse hook implementations that match no spec (a typo would otherwise be ignored),
        suggesting the nearest hook."""
        for hook_name, caller in vars(self.pm.hook).items():
            if hook_name.startswith("_") or caller.has_spec():
                continue
            if any(impl.plugin_name == name and not impl.optionalhook
                   for impl in caller.get_hookimpls()):
                raise PluginError(f"plugin {name}: @hookimpl {hook_name} matches no hook of "
                                  f"runflow{_nearest_hook(hook_name)}", plugin=name)

    def add_subscriber(self, obj: object, name: str | None = None) -> None:
        """Register an object with hook implementations (e.g. an event sink) for this command."""
        self.pm.register(obj, name=name)

    # -- a workflow's plugins, and a journaled run's ------------------------------------------

    def load_workflow_plugins(self, workflow: Workflow) -> None:
        """Load the plugin files a workflow names (relative to the workflow's file)."""
        if not workflow.plugins:
            return
        if not self.workflow_plugins:
            raise InputError(
                f"the workflow names plugin files ({', '.join(workflow.plugins)}): a plugin "
                "file is Python code that runs when it is loaded, so this command loads a "
                "workflow's plugins only with --load-plugins", file=workflow.path,
                field="plugins")
        home = os.path.dirname(os.path.abspath(workflow.path))
        for path in workflow.plugins:
            full = os.path.normpath(os.path.join(home, path))
            if not (self.plugins_outside or full in self._trusted
                    or full.startswith(home.rstrip("/") + "/")):
                raise InputError(
                    f"plugin file {full} is outside the workflow's directory ({home}); load it "
                    "with --plugin, or allow this with --allow-outside-plugins",
                    file=workflow.path, field="plugins")
            try:
                self.load_file(full)
            except InputError as exc:
                exc.file = exc.file or workflow.path
                raise

    def files(self) -> list[PluginFile]:
        """The plugin files loaded, for the journal."""
        return list(self._files.values())

    def load_journaled(self, entries: Iterable[Mapping[str, str] | str], run_id: str) -> None:
        """Load the plugin files a journaled run used, from wherever the command runs. A file
        given with --plugin stands for the journaled file with the same content or, failing
        that, the same name (a moved file): with a warning when its content differs."""
        for entry in entries:
            journaled = entry if isinstance(entry, Mapping) else {"path": entry, "sha256": ""}
            path, sha = str(Path(journaled["path"]).resolve()), journaled.get("sha256", "")
            self._trusted.add(path)
            stand_in = self._stand_in(path, sha)
            if stand_in is not None and stand_in.path != path:
                self._replaced[path] = stand_in.path
                if sha and stand_in.sha256 != sha:
                    self.notify(f"warning: plugin file {stand_in.path} stands for {path}, which "
                                f"run {run_id} used, but its content differs (sha256 "
                                f"{stand_in.sha256[:12]}, journaled {sha[:12]})")
                continue
            if not os.path.isfile(path):
                raise InputError(f"plugin file {path}, which run {run_id} used, does not exist "
                                 "any more: give its new place with --plugin FILE",
                                 field="plugins")
            self.load_file(path)
            now = self._files[f"file:{path}"].sha256
            if sha and now != sha:
                self.notify(f"warning: plugin file {path} changed since run {run_id} used it "
                            f"(sha256 {now[:12]}, journaled {sha[:12]})")

    def _stand_in(self, path: str, sha: str) -> PluginFile | None:
        given = [self._files[name] for name in self._given]
        return (next((f for f in given if sha and f.sha256 == sha), None)
                or next((f for f in given if Path(f.path).name == Path(path).name), None))

    # -- the registry -------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            registry = Registry(load=self._load_builtins, rank=self._rank)
            for name, _ in self.pm.list_name_plugin():
                self._fill(registry, name)
            self._registry = registry
        return self._registry

    def _fill(self, registry: Registry, name: str) -> None:
        """Call a plugin's runflow_register_actions and add what it registers."""
        impls = [impl for impl in self.pm.hook.runflow_register_actions.get_hookimpls()
                 if impl.plugin_name == name]
        if not impls:
            return
        classes: list[Any] = []
        try:
            for impl in impls:
                impl.function(register=classes.append)
        except Exception as exc:  # plugin code
            raise PluginError.raised(exc, method="runflow_register_actions", plugin=name) from exc
        if not classes:
            self.notify(f"warning: plugin {name}: runflow_register_actions registered no action")
        for impl in classes:
            self._register(registry, impl, name)

    def _register(self, registry: Registry, impl: Any, plugin: str) -> None:
        from .targets import TARGETS

        backend = getattr(impl, "backend", None)
        targets = getattr(impl, "targets", ())
        try:
            unknown = [] if isinstance(targets, str) else [t for t in targets if t not in TARGETS]
            if unknown:
                raise TypeError(f"{impl.__qualname__}.targets names unknown target(s) "
                                f"{', '.join(map(repr, unknown))} (known: {', '.join(TARGETS)})")
            owner = (registry.owner(impl.name, impl.backend)
                     if isinstance(impl, type) and issubclass(impl, Action)
                     and hasattr(impl, "name") and hasattr(impl, "backend") else None)
            if owner and owner in self.sources and self._file_wins(owner, plugin):
                self.notify(f"notice: plugin file {self._files[plugin].path} replaces the "
                            f"installed plugin {owner} ({self.sources[owner]}): both implement "
                            f"{impl.name} with backend {impl.backend}; the file is used")
                registry.remove_plugin(owner)
                self.pm.unregister(name=owner)
                del self.sources[owner]
            registry.register(impl, plugin)
        except TypeError as exc:
            raise PluginError.raised(exc, method="runflow_register_actions", backend=backend,
                                     plugin=plugin) from exc

    def _file_wins(self, owner: str, plugin: str) -> bool:
        return plugin in self._files and self.sources[owner].startswith("entry point")

    def _load_builtins(self, action: str | None) -> None:
        """Import the built-in backends that implement `action` (None: all of them) and add
        their actions to the registry, if not done yet."""
        for name, builtin in BUILTIN_PLUGINS.items():
            if (action is None or action in builtin.actions) and not self.pm.has_plugin(name):
                try:
                    module = importlib.import_module(builtin.module)
                except Exception as exc:
                    raise PluginError.raised(exc, method="loading", plugin=name) from exc
                self._add(module, name, "built-in")

    def _rank(self, plugin: str) -> tuple[int, int]:
        """Built-in backends first, in BUILTIN_PLUGINS' order, then the others as loaded."""
        if plugin in BUILTIN_PLUGINS:
            return 0, list(BUILTIN_PLUGINS).index(plugin)
        return 1, [name for name, _ in self.pm.list_name_plugin()].index(plugin)

    # -- event sources (runflow watch) ------------------------------------------------------

    def event_source(self, name: str) -> type[Source]:
        """The event source a workflow's [watch] names, importing the built-in one that
        provides it; InputError if there is none."""
        for plugin, builtin in BUILTIN_SOURCES.items():
            if name in builtin.sources and not self.pm.has_plugin(plugin):
                try:
                    module = importlib.import_module(builtin.module)
                except Exception as exc:
                    raise PluginError.raised(exc, method="loading", plugin=plugin) from exc
                self._add(module, plugin, "built-in")
        sources = self._event_sources()
        if name not in sources:
            known = sorted({*sources, *(n for b in BUILTIN_SOURCES.values() for n in b.sources)})
            raise InputError(f"unknown event source {name!r} (known: {', '.join(known)})",
                             field="watch.source")
        return sources[name]

    def _event_sources(self) -> dict[str, type[Source]]:
        """What every loaded plugin registers through runflow_register_sources."""
        from .watch.sources import Source

        found: dict[str, type[Source]] = {}
        owners: dict[str, str] = {}
        for impl in self.pm.hook.runflow_register_sources.get_hookimpls():
            classes: list[Any] = []
            try:
                impl.function(register=classes.append)
                for cls in classes:
                    if not (isinstance(cls, type) and issubclass(cls, Source)
                            and isinstance(getattr(cls, "name", None), str)):
                        raise TypeError(f"{cls!r} is not a Source subclass with a name")
                    if cls.name in owners:
                        raise TypeError(f"source {cls.name!r} is registered by "
                                        f"{owners[cls.name]} already")
                    found[cls.name], owners[cls.name] = cls, impl.plugin_name
            except Exception as exc:  # plugin code
                raise PluginError.raised(exc, method="runflow_register_sources",
                                         plugin=impl.plugin_name) from exc
        return found

    def emit(self, event: object) -> None:
        self.pm.hook.runflow_event(event=event)


# ---------------------------------------------------------------------------------------------
# Messages about a plugin's hooks
# ---------------------------------------------------------------------------------------------


def _spec_names() -> list[str]:
    return [n for n, f in vars(hookspecs).items()
            if callable(f) and hasattr(f, f"{hookspecs.PROJECT}_spec")]


def _nearest_hook(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, _spec_names(), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else f" (hooks: {', '.join(_spec_names())})"


def _forgotten_marker(plugin: object) -> str:
    """A hint when a function looks like a hook but lacks @hookimpl."""
    import difflib

    for attr in dir(plugin):
        if callable(getattr(plugin, attr, None)) and difflib.get_close_matches(
                attr, _spec_names(), n=1, cutoff=0.8):
            return f" (is @hookimpl missing on {attr}?)"
    return ""


def _hook_mismatch(plugin: object, name: str, exc: pluggy.PluginValidationError) -> str:
    """pluggy's multi-line complaint about a hook implementation's arguments, as one line."""
    import inspect
    for attr in dir(plugin):
        spec = getattr(hookspecs, attr, None)
        func = getattr(plugin, attr, None)
        if spec is None or not callable(func) or attr not in _spec_names():
            continue
        wanted = [p for p in inspect.signature(spec).parameters]
        given = [p for p in inspect.signature(func).parameters if p != "self"]
        extra = [p for p in given if p not in wanted]
        if extra:
            return (f"plugin {name}: @hookimpl {attr}({', '.join(given)}): "
                    f"{', '.join(extra)} is not an argument of the hook (it passes: "
                    f"{', '.join(wanted)})")
    return failure_line(exc, method="registering", plugin=name)


def _check_api_version(plugin: object, name: str) -> None:
    """A plugin may say which plugin API it was written for: RUNFLOW_API_VERSION = (1, 0)."""
    wanted = getattr(plugin, "RUNFLOW_API_VERSION", None)
    if wanted is None:
        return
    have = hookspecs.API_VERSION
    if tuple(wanted)[:1] != have[:1] or tuple(wanted) > have:
        raise PluginError(f"plugin {name} was written for runflow's plugin API "
                          f"{'.'.join(map(str, wanted))}; this runflow has "
                          f"{'.'.join(map(str, have))}", plugin=name)
