"""The workflows `runflow watch` follows: each with its [watch] table checked against its event
source (the source exists, knows the events named, accepts the match table, can watch every
host), before anything runs. Problems are InputErrors naming the file, the line and the field
(exit 2)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from .. import inventory as inventory_mod
from .. import workflow as workflow_mod
from ..actions import Args
from ..errors import InputError
from ..hosts import Host
from ..inventory import Inventory
from ..plan import build
from ..plugins import Plugins
from ..session import Options
from ..workflow import WatchSpec, Workflow, watch_error
from .sources import Source

EVENT_VAR = "event"


@dataclass
class Watch:
    """One workflow under watch, on the hosts it watches."""

    workflow: Workflow
    source: type[Source]
    match: Args  # the [watch] match table, as the source's Match schema read it
    inventory: Inventory
    hosts: list[Host]

    @property
    def name(self) -> str:
        """What the journal knows the watch's runs by (their cause's `watch`)."""
        return self.workflow.name

    @property
    def spec(self) -> WatchSpec:
        assert self.workflow.watch is not None
        return self.workflow.watch

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)


def load_watches(paths: list[str], options: Options, plugins: Plugins) -> list[Watch]:
    if EVENT_VAR in options.cli_vars:
        raise InputError(f"{EVENT_VAR} is the var the watch sets for each run (the event that "
                         "started it): it cannot be given", field="--var")
    inv = (inventory_mod.load(options.inventory) if options.inventory
           else inventory_mod.LOCAL)
    hosts = inv.select(options.hosts)
    watches = [_watch(path, inv, hosts, plugins, options) for path in paths]
    seen: dict[str, str] = {}
    for w in watches:
        if w.name in seen:
            raise InputError(f"two watched workflows are named {w.name!r} ({seen[w.name]} and "
                             f"{w.workflow.path}): the journal tells their runs apart by name",
                             file=w.workflow.path, field="workflow.name")
        seen[w.name] = w.workflow.path
    return watches


def _watch(path: str, inv: Inventory, hosts: list[Host], plugins: Plugins,
           options: Options) -> Watch:
    wf = workflow_mod.load(path)
    if wf.watch is None:
        raise InputError("the workflow has no [watch] table: runflow watch needs one (source, "
                         "start, stop, match); run it with `runflow run`", file=path,
                         field="watch")
    spec = wf.watch
    try:
        source = plugins.event_source(spec.source)
    except InputError as exc:
        raise watch_error(wf, exc.message, "watch.source") from None
    for key in ("start", "stop"):
        unknown = [name for name in getattr(spec, key) if name not in source.event_names]
        if unknown:
            raise watch_error(wf, f"the {spec.source} source has no event(s) "
                              f"{', '.join(map(repr, unknown))} (its events: "
                              f"{', '.join(source.event_names)})", f"watch.{key}")
    try:
        match = source.Match.model_validate(spec.match)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            message = ("unknown key (keys of this source's match: "
                       f"{', '.join(source.Match.model_fields) or 'none'})")
        else:
            message = err["msg"].removeprefix("Value error, ")
        raise watch_error(wf, message, f"watch.match.{where}" if where else "watch.match") \
            from None
    for host in hosts:
        why = source.unusable(host)
        if why:
            raise InputError(f"the {spec.source} source cannot watch host {host.name}: {why}",
                             file=path, field="watch.source")
    watch = Watch(wf, source, match, inv, hosts)
    _check_steps(watch, plugins, options)
    return watch


def _check_steps(watch: Watch, plugins: Plugins, options: Options) -> None:
    """Load the backends the steps need (before any run: workers then only read the
    registry), and when the workflow gives `event` a default in [vars] (an example event),
    validate every step with it, as `runflow validate` does."""
    plugins.load_workflow_plugins(watch.workflow)
    for step in watch.workflow.steps:
        plugins.registry.implementations(step.action)
    if EVENT_VAR in watch.workflow.vars:
        build(watch.workflow, plugins, watch.inventory, watch.hosts, target=options.target,
              cli_vars=options.cli_vars, probe=False)
