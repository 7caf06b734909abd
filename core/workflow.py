"""Workflow files (the v1 TOML contract): loading, validation, and expansion into the step
instances one host will run. Everything here happens before anything touches a system; every
problem is an InputError naming the file, the line, the step and the field."""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from .actions import Action, Args, Registry
from .errors import ActionError, InputError, failure_line
from .hosts import Host
from .limits import MAX_FOR_EACH_ITEMS
from .targets import TARGET_NAMES, BackendChoiceError, choose_backend
from .templating import TemplateProblem, evaluate, render

RESERVED_STEP_KEYS = ("id", "action", "backend", "when", "on", "for_each", "description",
                      "register")
TOP_LEVEL_KEYS = ("workflow", "vars", "targets", "steps", "plugins", "watch")
WATCH_KEYS = ("source", "start", "stop", "match")
_STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STEPS_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*steps[ \t]*\]\]", re.MULTILINE)


# StepSpec and Workflow are NamedTuples, not frozen dataclasses: those generate their methods
# with exec, ~1 ms of every command's start-up each.
class StepSpec(NamedTuple):
    """A `[[steps]]` entry as written (templates not yet rendered)."""

    index: int
    id: str
    action: str
    args: dict[str, Any]
    backend: str | None = None
    when: str | bool | None = None
    on: tuple[str, ...] | None = None
    for_each: list[Any] | str | None = None
    description: str = ""
    register: str | None = None  # the var this step publishes for the steps after it


class WatchSpec(NamedTuple):
    """A workflow's `[watch]` table (an extension of the v1 format, for `runflow watch`): which
    event source starts a run per object (`start` events), rolls it back (`stop` events), and
    which objects it considers (`match`, checked against the source's own schema when the
    watch starts)."""

    source: str
    start: tuple[str, ...]
    stop: tuple[str, ...]
    match: dict[str, Any]


class Workflow(NamedTuple):
    path: str
    text: str
    name: str
    description: str
    vars: dict[str, Any]
    targets: dict[str, dict[str, Any]]
    plugins: tuple[str, ...]
    steps: tuple[StepSpec, ...]
    host_vars: tuple[str, ...] = ()  # [workflow] host_vars: vars each host's inventory gives
    watch: WatchSpec | None = None  # [watch]: the events that start and roll back its runs

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def error(self, message: str, *, step: int | None = None, field: str | None = None,
              step_name: str | None = None) -> InputError:
        """An InputError pointing at a step (by index) and one of its fields."""
        name = step_name
        if name is None and step is not None:
            name = self.steps[step].id if step < len(self.steps) else f"#{step + 1}"
        line = _line_of(self.text, step, field)
        return InputError(message, file=self.path, line=line, step=name, field=field)


def _line_of(text: str, step: int | None, field: str | None) -> int | None:
    """The line of a step's header (or of one of its fields), found in the file's text."""
    if step is None:
        return None
    headers = [m.start() for m in _STEPS_HEADER.finditer(text)]
    if step >= len(headers):
        return None
    start = headers[step]
    end = headers[step + 1] if step + 1 < len(headers) else len(text)
    if field:
        key = field.split(".")[0].split("[")[0]
        m = re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE).search(text, start, end)
        if m:
            start = m.start() + len(m.group()) - len(m.group().lstrip())
    return text.count("\n", 0, start) + 1


def load(path: str | Path) -> Workflow:
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read workflow: {exc.strerror}", file=path) from None
    except UnicodeDecodeError:
        raise InputError("workflow is not UTF-8 text", file=path) from None
    return parse(text, path)


def parse(text: str, path: str = "<workflow>") -> Workflow:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError.from_toml(exc, path) from None
    except RecursionError:
        raise InputError("arrays or tables are nested too deeply to read", file=path) from None
    draft = Workflow(path, text, "", "", {}, {}, (), ())

    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise draft.error(f"unknown top-level key(s) {', '.join(unknown)} "
                          f"(expected: {', '.join(TOP_LEVEL_KEYS)})", field=unknown[0])
    meta = _table(draft, data, "workflow")
    if not isinstance(meta.get("name"), str) or not meta["name"]:
        raise draft.error("[workflow] needs a name (a non-empty string)", field="workflow.name")
    variables = _table(draft, data, "vars")
    for name in variables:
        if not _VAR_NAME.fullmatch(name):
            raise draft.error(f"variable name {name!r} is not an identifier", field=f"vars.{name}")
    host_vars = _host_vars(draft, meta, variables)
    targets = _table(draft, data, "targets")
    for name, overrides in targets.items():
        if name not in TARGET_NAMES:
            raise draft.error(f"unknown target {name!r} (known: {', '.join(TARGET_NAMES)})",
                              field=f"targets.{name}")
        if not isinstance(overrides, dict):
            raise draft.error("must be a table of variable overrides", field=f"targets.{name}")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise draft.error("plugins must be a list of file paths", field="plugins")
    watch = _watch(draft, data["watch"]) if "watch" in data else None
    raw_steps = data.get("steps", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise draft.error("a workflow needs at least one [[steps]] entry", field="steps")
    steps = tuple(_step(draft, i, raw) for i, raw in enumerate(raw_steps))
    seen: dict[str, int] = {}
    for step in steps:
        if step.id in seen:
            raise draft.error(f"duplicate step id {step.id!r} (first used by step "
                              f"#{seen[step.id] + 1})", step=step.index, field="id",
                              step_name=step.id)
        seen[step.id] = step.index
    _check_registered(draft, steps, variables, host_vars)
    return Workflow(
        path=path,
        text=text,
        name=meta["name"],
        description=str(meta.get("description", "")),
        vars=variables,
        targets=targets,
        plugins=tuple(str((Path(path).parent / p)) for p in plugins),
        steps=steps,
        host_vars=host_vars,
        watch=watch,
    )


def _check_registered(draft: Workflow, steps: tuple[StepSpec, ...], defaults: dict[str, Any],
                      host_vars: tuple[str, ...]) -> None:
    """`register` names are vars of their own: one step publishes each, and no [vars] default
    or host var has the name (which value a template meant would be unclear)."""
    publisher: dict[str, str] = {}
    for step in steps:
        name = step.register
        if name is None:
            continue
        if name in defaults or name in host_vars:
            raise draft.error(f"register {name!r}: a var of that name exists already; choose "
                              "another name", step=step.index, field="register",
                              step_name=step.id)
        if name in publisher:
            raise draft.error(f"register {name!r}: step {publisher[name]!r} publishes it already",
                              step=step.index, field="register", step_name=step.id)
        publisher[name] = step.id


def _table(draft: Workflow, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise draft.error(f"[{key}] must be a table", field=key)
    return value


def _host_vars(draft: Workflow, meta: dict[str, Any], defaults: dict[str, Any]) -> tuple[str, ...]:
    """`host_vars = ["peer_address", ...]` in [workflow] (an extension of the v1 format): vars
    the workflow has no default for, which each host's inventory vars (or --var) must give."""
    names = meta.get("host_vars", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and _VAR_NAME.fullmatch(n)
                                               for n in names):
        raise draft.error("host_vars must be a list of variable names", field="workflow.host_vars")
    for name in names:
        if name in defaults:
            raise draft.error(f"{name!r} is in host_vars, which have no default, and in [vars]: "
                              "keep it in one of them", field="workflow.host_vars")
    return tuple(names)


_WATCH_HEADER = re.compile(r"^[ \t]*\[[ \t]*watch[ \t]*\]", re.MULTILINE)
_TABLE_HEADER = re.compile(r"^[ \t]*\[", re.MULTILINE)


def watch_error(workflow: Workflow, message: str, field: str) -> InputError:
    """An InputError about the [watch] table or one of its fields ("watch.KEY"), with the
    line of the key (or of the table's header)."""
    text, line = workflow.text, None
    header = _WATCH_HEADER.search(text)
    if header is not None:
        end = _TABLE_HEADER.search(text, header.end())
        key = field.split(".")[1] if "." in field else None
        found = key and re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE).search(
            text, header.end(), end.start() if end else len(text))
        line = text.count("\n", 0, (found or header).start()) + 1
    return InputError(message, file=workflow.path, line=line, field=field)


def _watch(draft: Workflow, table: Any) -> WatchSpec:
    """The [watch] table's shape. Its source, event names and match keys are checked against
    the source when `runflow watch` starts: sources are plugins."""

    def fail(message: str, key: str | None = None) -> InputError:
        return watch_error(draft, message, f"watch.{key}" if key else "watch")

    if not isinstance(table, dict):
        raise fail("[watch] must be a table")
    unknown = sorted(set(table) - set(WATCH_KEYS))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)} in [watch] (expected: "
                   f"{', '.join(WATCH_KEYS)})", unknown[0])
    source = table.get("source")
    if not isinstance(source, str) or not re.fullmatch(r"[a-z][a-z0-9_.-]{0,63}", source):
        raise fail('[watch] needs a source: the name of an event source, e.g. "docker"',
                   "source")
    names: dict[str, tuple[str, ...]] = {}
    for key in ("start", "stop"):
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{key} must be a list of event names", key)
        names[key] = tuple(value)
    if not names["start"]:
        raise fail('start must name at least one event, e.g. start = ["start"]', "start")
    both = sorted(set(names["start"]) & set(names["stop"]))
    if both:
        raise fail(f"event(s) {', '.join(both)} are in both start and stop", "stop")
    match = table.get("match", {})
    if not isinstance(match, dict):
        raise fail('match must be a table, e.g. match = { label = "runflow.net" }', "match")
    return WatchSpec(source, names["start"], names["stop"], match)


def _step(draft: Workflow, index: int, raw: Any) -> StepSpec:
    name = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise draft.error("each step must be a table", step=index, step_name=name)
    for key in ("id", "action"):
        if key not in raw:
            raise draft.error(f"missing required key {key!r}", step=index, field=key,
                              step_name=str(raw.get("id", name)))
        if not isinstance(raw[key], str):
            raise draft.error(f"{key} must be a string", step=index, field=key, step_name=name)
    step_id = raw["id"]
    if not _STEP_ID.fullmatch(step_id):
        raise draft.error(f"step id {step_id!r} must be 1-64 letters, digits, '_', '.' or '-'",
                          step=index, field="id", step_name=name)

    def fail(message: str, field: str) -> InputError:
        return draft.error(message, step=index, field=field, step_name=step_id)

    backend = raw.get("backend")
    if backend is not None and not isinstance(backend, str):
        raise fail("backend must be a string", "backend")
    when = raw.get("when")
    if when is not None and not isinstance(when, (str, bool)):
        raise fail("when must be an expression (a string) or a boolean", "when")
    on = raw.get("on")
    if on is not None:
        if isinstance(on, str):
            on = [on]
        if not isinstance(on, list) or not all(isinstance(h, str) for h in on):
            raise fail("on must be a list of inventory host names", "on")
        on = tuple(on)
    for_each = raw.get("for_each")
    if for_each is not None and not isinstance(for_each, (list, str)):
        raise fail("for_each must be a list or an expression that yields one", "for_each")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description must be a string", "description")
    register = raw.get("register")
    if register is not None:
        if not isinstance(register, str) or not _VAR_NAME.fullmatch(register):
            raise fail("register must be a variable name (letters, digits and '_')", "register")
        if register in ("item", "index"):
            raise fail(f"register {register!r}: that name is for_each's own", "register")
        if for_each is not None:
            raise fail("a step with for_each cannot register a var (which instance's value "
                       "would it be?)", "register")
    args = {k: v for k, v in raw.items() if k not in RESERVED_STEP_KEYS}
    return StepSpec(index, step_id, raw["action"], args, backend, when, on, for_each, description,
                    register)


# ---------------------------------------------------------------------------------------------
# Expansion: what one host runs
# ---------------------------------------------------------------------------------------------


class Deferred(NamedTuple):
    """Arguments of an instance that use vars earlier steps publish (`register`): rendered
    and validated just before the instance runs (`resolve`), when those vars have values."""

    template: dict[str, Any]  # the step's arguments as written
    scope: dict[str, Any]  # the vars they are rendered with (item and index included)
    uses: dict[str, str]  # the published vars they use, and the step that publishes each


@dataclass
class Instance:
    """One execution of a step on one host: a step, or one item of a for_each step."""

    key: str  # "docker0", or "ports[3]" for the 4th item of step "ports"
    step_id: str
    step_index: int
    action: str
    backend: str | None
    # None when `when` is false (arguments are not rendered then), and until a deferred
    # instance is resolved
    args: Args | None
    skip_reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the rendered arguments
    register: str | None = None  # the var this instance publishes (the step's `register`)
    deferred: Deferred | None = None  # arguments that wait for published vars

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "step_id": self.step_id, "step_index": self.step_index,
                "action": self.action, "backend": self.backend, "args": self.data,
                "skip_reason": self.skip_reason}


def merge_vars(workflow: Workflow, target: str, host_vars: Mapping[str, Any],
               cli_vars: Mapping[str, Any]) -> dict[str, Any]:
    """Workflow defaults < [targets.NAME] overrides < inventory host vars < --var."""
    return {**workflow.vars, **workflow.targets.get(target, {}), **host_vars, **cli_vars}


def expand(workflow: Workflow, registry: Registry, *, target: str, host: Host,
           variables: Mapping[str, Any], probe: bool = True) -> list[Instance]:
    """Render and validate every step for one host. probe=False skips asking the host which
    backends it can run (used by `validate`)."""
    if target not in TARGET_NAMES:
        raise InputError(f"unknown target {target!r} (known: {', '.join(TARGET_NAMES)})",
                         field="--target")
    instances: list[Instance] = []
    published: dict[str, str] = {}  # vars the steps so far publish on this host, by step id
    for step in workflow.steps:
        if step.on is not None and host.name not in step.on:
            continue
        instances.extend(_expand_step(workflow, registry, step, target, host, variables, probe,
                                      published))
        if step.register:
            published[step.register] = step.id
    return instances


def _expand_step(workflow: Workflow, registry: Registry, step: StepSpec, target: str,
                 host: Host, variables: Mapping[str, Any], probe: bool,
                 published: Mapping[str, str]) -> list[Instance]:
    def fail(message: str, field: str | None = None) -> InputError:
        return workflow.error(message, step=step.index, field=field)

    def cannot(problem: TemplateProblem, field: str | None) -> InputError:
        return fail(_explained(problem, step, workflow, published), field)

    if not registry.implementations(step.action):
        close = registry.close_names(step.action)
        hint = f"; did you mean {' or '.join(close)}?" if close else " (see `runflow backends`)"
        raise fail(f"unknown action {step.action!r}{hint}", "action")
    try:
        backend = choose_backend(registry, step.action, target, host if probe else None,
                                 step.backend)
    except BackendChoiceError as exc:
        raise fail(str(exc), "backend" if step.backend else "action") from None
    if step.register and not _has_result(registry, step.action, backend):
        raise fail(f"{step.action} publishes no value: only an action that reads one (such as "
                   "ovs.get) can register a var", "register")

    items: list[Any] = [None]
    if step.for_each is not None:
        try:
            items = _items(step.for_each, variables)
        except TemplateProblem as exc:
            raise cannot(exc, "for_each") from None
        except ValueError as exc:
            raise fail(str(exc), "for_each") from None
    schema = registry.args_schema(step.action)
    instances = []
    for index, item in enumerate(items):
        scope = dict(variables)
        key = step.id
        if step.for_each is not None:
            scope.update(item=item, index=index)
            key = f"{step.id}[{index}]"
        try:
            reason = _when_false(step, scope)
        except TemplateProblem as exc:
            raise cannot(exc, "when") from None
        if reason:
            instances.append(Instance(key, step.id, step.index, step.action, backend, None,
                                      reason, register=step.register))
            continue
        data, uses = {}, {}
        for name, value in step.args.items():
            try:
                data[name] = render(value, scope)
            except TemplateProblem as exc:
                # A published var has no value before the run gets to its step: the arguments
                # are rendered then (resolve); their templates' syntax is checked here.
                if not exc.undefined or not set(exc.undefined) <= set(published):
                    raise cannot(exc, name) from None
                uses.update((var, published[var]) for var in exc.undefined)
        if uses:
            instances.append(Instance(key, step.id, step.index, step.action, backend, None,
                                      data=dict(step.args), register=step.register,
                                      deferred=Deferred(dict(step.args), scope, uses)))
            continue
        try:
            # validators may read the host (e.g. what a network namespace host cannot set) and
            # the backend (what a target's tools cannot do)
            args = schema.model_validate(data, context={"host": host, "backend": backend})
        except ValidationError as exc:
            raise _schema_error(fail, exc, schema, key) from None
        except Exception as exc:  # a plugin's schema or validator broke: one line, exit 2
            raise fail(failure_line(exc, method="validating the arguments", action=step.action,
                                    plugin=registry.owner(step.action, backend))) from exc
        instances.append(Instance(key, step.id, step.index, step.action, backend, args,
                                  data=data, register=step.register))
    return instances


def _has_result(registry: Registry, action: str, backend: str) -> bool:
    impl = registry.implementations(action)[backend].impl
    return impl.result is not Action.result


def resolve(inst: Instance, registry: Registry, host: Host, published: Mapping[str, Any]
            ) -> None:
    """Render and validate a deferred instance's arguments with the values its step's published
    vars have now (just before it runs, or before rollback undoes it). Raises ActionError
    saying what is wrong: the step fails, as it would for a value the host refused."""
    assert inst.deferred is not None
    template, scope, uses = inst.deferred
    missing = [var for var in uses if var not in published]
    if missing:
        raise ActionError(f"{', '.join(missing)} has no value: step "
                          f"{uses[missing[0]]!r} did not publish it (skipped, or failed)")
    scope = {**scope, **{var: published[var] for var in uses}}
    try:
        data = render(template, scope)
    except TemplateProblem as exc:
        raise ActionError(str(exc)) from None
    schema = registry.args_schema(inst.action)
    try:
        inst.args = schema.model_validate(data, context={"host": host, "backend": inst.backend})
    except ValidationError as exc:
        raise _schema_error(lambda message, field: ActionError(
            f"{field}: {message}" if field else message), exc, schema, inst.key) from None
    except Exception as exc:  # a plugin's schema or validator broke: the step fails
        raise ActionError(failure_line(exc, method="validating the arguments",
                                       action=inst.action)) from exc
    inst.data = data


def _items(for_each: list[Any] | str, variables: Mapping[str, Any]) -> list[Any]:
    value = for_each
    if isinstance(for_each, str):
        value = evaluate(for_each.strip().removeprefix("{{").removesuffix("}}"), dict(variables))
    elif isinstance(for_each, list):
        value = render(for_each, dict(variables))
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ValueError(f"for_each must yield a list, not {type(value).__name__}")
    items = list(islice(value, MAX_FOR_EACH_ITEMS + 1))
    if len(items) > MAX_FOR_EACH_ITEMS:
        count = f"{len(value):,}" if hasattr(value, "__len__") else "more than that"
        raise ValueError(f"for_each yields {count} items; a step may have at most "
                         f"{MAX_FOR_EACH_ITEMS:,} instances (split it into several steps)")
    return items


def _when_false(step: StepSpec, scope: dict[str, Any]) -> str | None:
    if step.when is None or step.when is True:
        return None
    if step.when is False:
        return "when: false"
    value = evaluate(step.when.strip().removeprefix("{{").removesuffix("}}"), scope)
    return None if value else f"when: {step.when} is false"


def _explained(problem: TemplateProblem, step: StepSpec, workflow: Workflow,
               published: Mapping[str, str]) -> str:
    """The problem, and for a variable that is not set, where it could come from."""
    missing = problem.undefined
    if not missing:
        return str(problem)
    if step.for_each is None and {"item", "index"} & set(missing):
        return f"{problem}; `item` and `index` are set only in a step with for_each"
    unknown = [name for name in missing if name not in published]
    if not unknown:
        return (f"{problem}: {missing[0]} is published by step {published[missing[0]]!r} when "
                "the run gets there, so only the step's arguments can use it")
    later = {s.register: s.id for s in workflow.steps if s.register}
    if unknown[0] in later:
        return (f"{problem}: {unknown[0]} is published by step {later[unknown[0]]!r}, which "
                "does not run before this one on this host")
    return (f"{problem}; vars come from the workflow's [vars] or [targets.NAME] (with --target "
            f"NAME), the inventory's host vars (--inventory FILE, --lab) or --var "
            f"{unknown[0]}=VALUE")


def _schema_error(fail, exc: ValidationError, schema: type[Args], key: str) -> Exception:
    """One error for all the problems pydantic found. The error names the first field (and
    points at its line); the problems after it name their own fields."""
    errors = exc.errors()
    problems = []
    first_field = None
    for err in errors:
        where = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "missing":
            msg = "missing required argument"
        elif err["type"] == "extra_forbidden":
            known = ", ".join(schema.model_fields)
            msg = f"unknown argument (arguments of this action: {known})"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            field, sep, rest = msg.partition(": ")
            if where is None and sep and field in schema.model_fields:
                where, msg = field, rest  # a check across fields named the one it blames
        if not problems:
            first_field = where  # the error says it before the message
        elif where:
            msg = f"{where}: {msg}"
        problems.append(msg)
    message = "; ".join(problems)
    if key.endswith("]"):
        message = f"{key}: {message}"
    return fail(message, first_field)
