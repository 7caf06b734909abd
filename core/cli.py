"""The `runflow` command line. Heavy modules are imported inside the commands, so that
`runflow --version` and `--help` answer fast."""

from __future__ import annotations

import os
import signal
import sys

# When this module is the program (python -m, the `runflow` script), Ctrl-C while it loads ends
# the process as the signal does by default (exit 130, nothing changed yet), not with a
# traceback of the import it interrupted; main() then answers it with a message.
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "runflow":
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from . import __version__  # noqa: E402

EPILOG = """\b
Exit codes: 0 succeeded (or nothing to change) · 1 a step failed and everything was rolled
back · 2 invalid input, nothing was touched · 3 a step failed and rollback failed or was
disabled, or the SSH connection to a host was lost mid-run: the host needs attention
(runflow show RUN) · 4 another run holds the host lock · 5 a host could not be reached
before the run began: nothing was touched · 130 interrupted (Ctrl-C) before anything was
changed."""


class DefaultRunGroup(click.Group):
    """`runflow WORKFLOW.toml` means `runflow run WORKFLOW.toml`."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


def fail_with(exc: Exception) -> None:
    from .errors import RunflowError, debugging, traceback_text

    code = exc.exit_code if isinstance(exc, RunflowError) else 1
    if debugging() and exc.__cause__ is not None:
        _echo_err(traceback_text(exc).rstrip())
    _echo_err(f"runflow: error: {exc}" if code else f"runflow: {exc}")
    sys.exit(code)


def _echo_err(text: str) -> None:
    """A line on stderr; a closed one (`2>&1 | head -1`) must not change the exit code."""
    try:
        click.echo(text, err=True)
    except (OSError, ValueError):
        pass


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import RunflowError

        try:
            return func(*args, **kwargs)
        except RunflowError as exc:
            fail_with(exc)

    return wrapper


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that say which hosts, backends and vars a workflow runs with."""
    decorators = [
        click.option("--var", "cli_vars", multiple=True, metavar="KEY=VALUE",
                     help="Set a variable (repeatable); wins over the workflow and inventory."),
        click.option("-i", "--inventory", type=click.Path(dir_okay=False),
                     help="Inventory TOML naming the hosts (default: the local host)."),
        click.option("--host", "hosts", multiple=True, metavar="NAME",
                     help="Run on this inventory host only (repeatable; default: all)."),
        click.option("-t", "--target", default="auto", show_default=True,
                     type=click.Choice(["auto", "centos6", "modern"]),
                     help="Which backends serve the actions."),
        click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
                     help="Load a plugin from a Python file, relative to the current "
                          "directory (repeatable)."),
        click.option("--allow-outside-plugins", "plugins_outside", is_flag=True,
                     help="Let the workflow's plugins = [...] name files outside its "
                          "directory."),
        click.option("--lab", "use_lab", is_flag=True,
                     help="Use the inventory of the lab (runflow lab up)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def load_plugins_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Commands that change nothing run a workflow's plugin code only when asked."""
    return click.option(
        "--load-plugins", is_flag=True,
        help="Load the plugin files the workflow names (plugins = [...]): they are Python "
             "code and run when loaded. Without it, a workflow that names plugins is refused."
    )(func)


class PrivateFile(click.File):
    """click.File, but a file it creates is its owner's only: --events files hold the
    workflow, the inventory and the vars."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value != "-":
            try:
                os.close(os.open(value, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            except OSError:
                pass  # click.File says why it cannot open it
        return super().convert(value, param, ctx)


def change_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that change hosts."""
    decorators = [
        click.option("--events", "events_file", type=PrivateFile("a"),
                     help="Append every event to FILE as one JSON line."),
        click.option("--lock-timeout", default=0.0, show_default=True, metavar="SECONDS",
                     help="Wait this long for a host locked by another run, then exit 4."),
        click.option("-q", "--quiet", is_flag=True,
                     help="No progress lines; a failure still says why."),
        click.option("--forks", default=16, show_default=True, type=click.IntRange(1, 1024),
                     help="How many hosts work at once (the others of a step wait their "
                          "turn)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _options(cli_vars=(), inventory=None, hosts=(), target="auto", plugin_files=(),
             use_lab=False, **extra):
    from .errors import InputError
    from .plan import parse_vars
    from .session import Options

    if use_lab:
        from .lab.lab import Lab

        if inventory:
            raise InputError("--lab and --inventory exclude each other", field="--lab")
        lab = Lab(_lab_dir())
        if not lab.exists():
            raise InputError(f"no lab in {lab.root}: bring it up with `runflow lab up`",
                             field="--lab")
        inventory = str(lab.inventory_path)
    return Options(inventory=inventory, hosts=list(hosts), target=target,
                   cli_vars=parse_vars(list(cli_vars)), plugin_files=list(plugin_files), **extra)


def _plugins(options) -> Any:
    from .plugins import Plugins

    plugins = Plugins(options.plugin_files, workflow_plugins=options.load_plugins,
                      plugins_outside=options.plugins_outside)
    # What is loaded by now (modules, argument schemas) lives as long as the process: keep it
    # out of the collector's full passes from now on (main() held the collector off while it
    # loaded). pydantic-core's validators are slow to traverse: a full pass took 60-100 ms.
    gc.freeze()
    # What a command makes from here on (its plan, steps and events) is made by the thousand
    # and kept till the end: at the default threshold of 700 allocations the collector ran 36
    # times in a run of 200 veth pairs, for 5-7 ms, to free 170 objects.
    gc.set_threshold(50_000)
    gc.enable()
    return plugins


def _say_why(session, run_id: str, code: int, quiet: bool) -> None:
    """--quiet leaves out the progress lines, not the reason a command failed: say it on
    stderr, from the journal (without --quiet the progress lines have said it)."""
    if not (quiet and code):
        return
    run = session.journal.find(run_id)
    _echo_err(f"runflow: run {run.id}: {run.state.replace('_', ' ')}")
    for step in session.journal.steps(run_id):
        if step.state in ("failed", "undo_failed"):
            _echo_err(f"runflow: step {step.key} on {step.host}: "
                      f"{step.state.replace('_', ' ')}: {step.error}")


def _name_run(exc: BaseException, run_id: str | None) -> None:
    """A lost SSH connection says which run to resume (it is raised below the run)."""
    if run_id and hasattr(exc, "run_id") and exc.run_id is None:
        exc.run_id = run_id


def _home():
    from .journal import default_home

    return default_home()


def _lab_dir() -> str:
    return os.environ.get("RUNFLOW_LAB", "/tmp/rf-lab")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Aligned columns under a header, each as wide as its longest value (the last one
    unpadded). Nothing when there are no rows."""
    if not rows:
        return
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        click.echo("  ".join([*(f"{v:<{w}}" for v, w in zip(row, widths)), str(row[-1])]))


@click.group(cls=DefaultRunGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runflow")
@click.option("--debug", is_flag=True, envvar="RUNFLOW_DEBUG",
              help="Print the traceback of a failure in plugin or backend code (also "
                   "RUNFLOW_DEBUG=1).")
def cli(debug: bool) -> None:
    """Run network-plumbing workflows (Linux bridges, Open vSwitch, docker, iptables)
    step by step: journaled, rolled back on failure, resumable.

    \b
    runflow WORKFLOW.toml            run it (same as: runflow run WORKFLOW.toml)
    runflow plan WORKFLOW.toml       what would change, with the commands
    runflow actions [ACTION]         the actions, their backends and arguments
    runflow runs / show / resume / rollback
    """
    if debug:  # read where failures are reported, in threads as well (errors.debugging)
        os.environ["RUNFLOW_DEBUG"] = "1"


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@selection_options
@change_options
@click.option("--no-rollback", is_flag=True,
              help="On failure leave the applied steps in place (exit 3); resume later.")
@handles_errors
def run(workflow, events_file, lock_timeout, quiet, forks, no_rollback, **selection) -> None:
    """Run WORKFLOW: check each step, apply what is not yet so, roll back on failure."""
    from .session import Session, add_views, plan_workflow

    options = _options(**selection, rollback=not no_rollback, lock_timeout=lock_timeout,
                       forks=forks)
    plugins = _plugins(options)
    plan = plan_workflow(workflow, options, plugins)
    add_views(plugins, quiet=quiet, events_file=events_file, multi_host=len(plan.hosts) > 1)
    session = Session(plugins, _home())
    try:
        run_id, code = session.run(plan, options)
        _say_why(session, run_id, code, quiet)
    except BaseException as exc:
        _name_run(exc, session._engine.run.id if session._engine else None)
        raise
    finally:
        session.close(process_exits=True)
    sys.exit(code)


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@selection_options
@load_plugins_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@handles_errors
def plan(workflow, as_json, load_plugins, **selection) -> None:
    """Show, step by step, what a run would change and the commands it would run. A step
    that cannot be observed here (a daemon down, a socket missing) is shown as unknown, with
    the cause, and the others are still planned."""
    from .engine import Engine
    from .session import plan_workflow

    options = _options(**selection, load_plugins=load_plugins)
    plugins = _plugins(options)
    the_plan = plan_workflow(workflow, options, plugins)
    rows = Engine(plugins, "plan", the_plan.per_host()).preview()
    if as_json:
        _print_json(rows)
        return
    multi = len(the_plan.hosts) > 1
    for row in rows:
        where = f"[{row['host']}] " if multi else ""
        verdict = {"change": "would change", "skip": "would skip",
                   "unknown": "cannot tell"}[row["verdict"]]
        reason = f"  ({row['reason']})" if row.get("reason") else ""
        click.echo(f"{where}{row['step']:<24} {row['action']:<22} {row['backend'] or '-':<10} "
                   f"{verdict}{reason}")
        for command in row["commands"]:
            click.echo(f"    $ {command}")
        if row.get("traceback"):
            click.echo(row["traceback"].rstrip(), err=True)
    _say_ssh_fallbacks(plugins, the_plan, options.target)
    unknown = sum(row["verdict"] == "unknown" for row in rows)
    if unknown:
        click.echo(f"runflow: warning: {unknown} step(s) could not be observed here, so the plan "
                   "is incomplete (runflow --debug plan ... shows the tracebacks)", err=True)


def _say_ssh_fallbacks(plugins, the_plan, target: str) -> None:
    """Which steps of an SSH host are served by another target's backend, and why (a
    backend that works in this machine's kernel, such as netlink, cannot cross SSH)."""
    from .targets import choose

    for host in the_plan.hosts:
        if not host.remote:
            continue
        said = set()
        for inst in the_plan.instances[host.name]:
            if inst.action in said or inst.backend is None:
                continue
            said.add(inst.action)
            chosen, why = choose(plugins.registry, inst.action, target, host)
            if chosen == inst.backend and "on an SSH host" in why:
                _echo_err(f"runflow: note: [{host.name}] {inst.action} is served by "
                          f"{inst.backend}: {why}")


@cli.command()
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@selection_options
@load_plugins_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handles_errors
def validate(workflows, as_json, load_plugins, **selection) -> None:
    """Check workflow files (syntax, actions, arguments, vars) without touching anything.
    Plugin files a workflow names are code: they are loaded only with --load-plugins."""
    from .errors import InputError
    from .session import plan_workflow

    options = _options(**selection, load_plugins=load_plugins)
    results = []
    for path in workflows:
        try:
            the_plan = plan_workflow(path, options, _plugins(options), probe=False)
        except InputError as exc:
            results.append({"file": path, "valid": False, "error": str(exc), "line": exc.line,
                            "step": exc.step, "field": exc.field})
            continue
        count = sum(len(i) for i in the_plan.instances.values())
        results.append({"file": path, "valid": True, "steps": len(the_plan.workflow.steps),
                        "instances": count})
    if as_json:
        _print_json(results)
    else:
        for r in results:
            if r["valid"]:
                click.echo(f"{r['file']}: valid ({r['steps']} steps, {r['instances']} "
                           "step instances)")
            else:
                click.echo(f"runflow: error: {r['error']}", err=True)
    if not all(r["valid"] for r in results):
        sys.exit(2)


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=False))
@selection_options
@click.option("--format", "fmt", type=click.Choice(["sh"]), default="sh", show_default=True,
              help="The script language (POSIX sh).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the script here (mode 0755) instead of to standard output.")
@load_plugins_option
@handles_errors
def export(workflow, fmt, output, load_plugins, **selection) -> None:
    """Write WORKFLOW as a standalone POSIX sh script for one host (default target centos6):
    checks, the commands, a journal, and a trap that undoes the applied steps on failure.
    For hosts without Python 3. The script takes --dry-run and --rollback. Each step's
    backend is chosen as `runflow backends --target` shows, without probing this host."""
    from .export import script
    from .session import plan_workflow

    if selection["target"] == "auto":  # API backends have no shell form
        selection["target"] = "centos6"
    options = _options(**selection, load_plugins=load_plugins)
    plugins = _plugins(options)
    text = script(plugins, plan_workflow(workflow, options, plugins, probe=False))
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w") as f:
        f.write(text)
    os.chmod(output, 0o755)
    click.echo(f"runflow: wrote {output}", err=True)


@cli.command(short_help="Backends: targets served, usable here, the one chosen.")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@handles_errors
def backends(as_json, **selection) -> None:
    """List the plugins, the actions they implement, the targets each backend serves, whether
    each can run here, and which one a step of each action gets with --target (default auto)
    on this host (or --host of --inventory), and why."""
    from .inventory import LOCAL
    from .inventory import load as load_inventory
    from .targets import BackendChoiceError, choose, unusable

    options = _options(**selection)
    plugins = _plugins(options)
    inv = load_inventory(options.inventory) if options.inventory else LOCAL
    host = inv.select(options.hosts)[0]
    rows = []
    for action in plugins.registry.names():
        impls = plugins.registry.implementations(action)
        chosen = why = refused = None
        try:
            chosen, why = choose(plugins.registry, action, options.target, host)
        except BackendChoiceError as exc:
            refused = str(exc)
        for number, (backend, reg) in enumerate(sorted(impls.items())):
            reason = unusable(reg, host)
            rows.append({"action": action, "backend": backend, "family": reg.impl.family,
                         "plugin": reg.plugin, "usable": reason is None, "why_not": reason,
                         "targets": list(reg.impl.targets), "summary": reg.impl.summary,
                         "chosen": backend == chosen, "why_chosen": why,
                         "refused": refused if number == 0 else None})
    if as_json:
        _print_json(rows)
        return
    _print_table(("ACTION", "BACKEND", "FAMILY", "TARGETS", "PLUGIN", "STATUS"),
                 [(r["action"], r["backend"], r["family"], ",".join(r["targets"]) or "all",
                   r["plugin"], _backend_status(r)) for r in rows])
    click.echo(f"(* the backend a step gets with --target {options.target} on {host.name})",
               err=True)


def _backend_status(row: dict[str, Any]) -> str:
    status = "usable" if row["usable"] else f"not usable: {row['why_not']}"
    if row["chosen"]:
        return f"{status} * {row['why_chosen']}"
    if row["refused"]:  # on the action's first backend
        return f"{status} (steps refused: {row['refused']})"
    return status


@cli.command(short_help="Every action, its backends; an action's arguments.")
@click.argument("action", required=False)
@click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
              help="Also load a plugin from a Python file, relative to the current directory "
                   "(repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@handles_errors
def actions(action, plugin_files, as_json) -> None:
    """List every action with its family, backends (and the targets each serves) and summary;
    with ACTION, its arguments: type, default and meaning."""
    from . import catalog
    from .plugins import Plugins

    registry = Plugins(plugin_files).registry
    if action is None:
        rows = catalog.listing(registry)
        if as_json:
            _print_json(rows)
            return
        _print_table(("ACTION", "FAMILY", "BACKENDS", "SUMMARY"),
                     [(r["action"], r["family"], catalog.backends_text(r["backends"]),
                       r["summary"]) for r in rows])
        return
    info = catalog.detail(registry, action)
    if as_json:
        _print_json(info)
        return
    click.echo(f"{info['action']}: {info['summary']}" if info["summary"] else info["action"])
    click.echo(f"  family {info['family']}; backends {catalog.backends_text(info['backends'])}")
    if info["description"]:
        click.echo(f"  {info['description']}")
    click.echo()
    _print_table(("ARGUMENT", "TYPE", "DEFAULT", "MEANING"),
                 [(a["name"], a["type"], a["default_text"], a["description"])
                  for a in info["arguments"]])


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs to list.")
@handles_errors
def runs(as_json, limit) -> None:
    """List the journaled runs, newest first."""
    import datetime

    from .journal import Journal

    journal = Journal(_home(), create=False)
    records = journal.runs(limit)
    interrupted = _interrupted(journal, records)
    if as_json:
        _print_json([{**r.to_json(), "interrupted": r.id in interrupted} for r in records])
        return
    if not records:
        click.echo(f"runflow: no runs in the journal ({journal.path})", err=True)
    _print_table(("RUN", "STATE", "STARTED", "WORKFLOW", "HOSTS"),
                 [(r.id, _state(r, interrupted),
                   datetime.datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M:%S"),
                   r.workflow, ",".join(r.hosts)) for r in records])


def _interrupted(journal, records) -> set[str]:
    """The runs the journal says are in progress while no live process drives them: killed
    (or their machine went down). A run that ended as it was looked at is not one of them."""
    from .journal import LIVE

    suspects = [r.id for r in records if r.state in LIVE and not journal.is_driven(r.id)]
    return {run_id for run_id in suspects if journal.find(run_id).state in LIVE}


def _state(run, interrupted: set[str]) -> str:
    state = run.state.replace("_", " ") if run.id in interrupted else run.state
    return f"interrupted ({state})" if run.id in interrupted else state


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@handles_errors
def show(run_ref, as_json) -> None:
    """Show a run's steps (state, backend, time, error) and its events. RUN: id, prefix, last."""
    from .journal import Journal

    journal = Journal(_home(), create=False)
    run_rec = journal.find(run_ref)
    steps = journal.steps(run_rec.id)
    events = journal.events(run_rec.id)
    interrupted = _interrupted(journal, [run_rec])
    if as_json:
        _print_json({"run": {**run_rec.to_json(full=True),
                             "interrupted": run_rec.id in interrupted},
                     "steps": [s.to_json() for s in steps], "events": events})
        return
    click.echo(f"run {run_rec.id}: {run_rec.workflow} ({run_rec.workflow_path})")
    click.echo(f"  state {_state(run_rec, interrupted)}, attempts {run_rec.attempts}, target "
               f"{run_rec.record.get('target')}, hosts {', '.join(run_rec.hosts)}")
    if interrupted:
        click.echo(f"  no runflow process drives it (killed?): `runflow resume {run_rec.id}` "
                   f"goes on, `runflow rollback {run_rec.id}` undoes it")
    if run_rec.message:
        click.echo(f"  {run_rec.message}")
    if cause := run_rec.record.get("cause"):  # a run `runflow watch` started
        click.echo(f"  caused by {cause['source']} {cause['action']} of {cause['name']} "
                   f"({cause['id'][:12]}) on {cause['host']}, watch {cause['watch']}")
    for s in steps:
        took = (f"{(s.finished - s.started) * 1000:.1f} ms" if s.started and s.finished else "")
        click.echo(f"  [{s.host}] {s.key:<24} {s.action:<22} {s.backend or '-':<10} "
                   f"{s.state:<12} {took}")
        if s.error:
            click.echo(f"      error: {s.error}")
    click.echo(f"  {len(events)} events (--json to see them)")


@cli.command()
@click.argument("run_ref", metavar="RUN")
@change_options
@click.option("--no-rollback", is_flag=True, help="On failure leave the applied steps (exit 3).")
@click.option("--use-current-file", is_flag=True,
              help="Run the workflow file as it is now, even if it changed since the run began.")
@click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
              help="Load a plugin from a Python file (repeatable).")
@handles_errors
def resume(run_ref, events_file, lock_timeout, quiet, forks, no_rollback, use_current_file,
           plugin_files) -> None:
    """Continue a failed or interrupted run: re-check what was applied (drift is reported and
    repaired), settle steps in doubt, retry the failed step, go on."""
    from .session import Session, add_views

    options = _options(plugin_files=plugin_files, rollback=not no_rollback,
                       lock_timeout=lock_timeout, forks=forks)
    plugins = _plugins(options)
    session = Session(plugins, _home())
    run_rec = None
    try:
        run_rec = session.load(run_ref)
        add_views(plugins, quiet=quiet, events_file=events_file,
                  multi_host=len(run_rec.hosts) > 1)
        code = session.resume(run_rec, options, use_current_file=use_current_file)
        _say_why(session, run_rec.id, code, quiet)
    except BaseException as exc:
        _name_run(exc, run_rec.id if run_rec else None)
        raise
    finally:
        session.close(process_exits=True)
    sys.exit(code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@change_options
@click.option("--plugin", "plugin_files", multiple=True, type=click.Path(dir_okay=False),
              help="Load a plugin from a Python file (repeatable).")
@handles_errors
def rollback(run_ref, events_file, lock_timeout, quiet, forks, plugin_files) -> None:
    """Undo the applied steps of a run in reverse, restoring the journaled "before" states.
    Exit 0 when everything was undone, 3 if an undo failed (run it again after fixing)."""
    from .session import Session, add_views

    options = _options(plugin_files=plugin_files, lock_timeout=lock_timeout, forks=forks)
    plugins = _plugins(options)
    session = Session(plugins, _home())
    run_rec = None
    try:
        run_rec = session.load(run_ref)
        add_views(plugins, quiet=quiet, events_file=events_file,
                  multi_host=len(run_rec.hosts) > 1)
        code = session.rollback(run_rec, options)
        _say_why(session, run_rec.id, code, quiet)
    except BaseException as exc:
        _name_run(exc, run_rec.id if run_rec else None)
        raise
    finally:
        session.close(process_exits=True)
    sys.exit(code)


WATCH_EPILOG = """\b
Exit codes: 0 stopped by SIGTERM or SIGINT; with --once: every active
object has its run and nothing else is in place · 1 with --once: a run
failed and was rolled back, an event's values were refused, or a source
could not be reached · 2 invalid input, nothing was touched · 3 a rollback
failed (runflow show RUN) · 4 with --once: a host stayed locked past
--lock-timeout."""


@cli.command(epilog=WATCH_EPILOG,
             short_help="Run workflows on events; roll each run back when its object goes.")
@click.argument("workflows", nargs=-1, required=True, type=click.Path(dir_okay=False))
@selection_options
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Settle up to N objects at once (runs for one object never overlap).")
@click.option("--once", is_flag=True,
              help="Reconcile what exists now, wait for those runs and rollbacks, and exit "
                   "(for tests and cron).")
@click.option("--lock-timeout", type=float, metavar="SECONDS",
              help="With --once: wait this long for a host another run holds, then exit 4. "
                   "Without --once the watch waits as long as it takes.")
@click.option("-q", "--quiet", is_flag=True, help="Log only what failed.")
@handles_errors
def watch(workflows, jobs, once, lock_timeout, quiet, **selection) -> None:
    """Run each WORKFLOW once per matching object of its [watch] source (e.g. every running
    container with a label), with the event as its `event` var (event.id, event.name,
    event.labels, event.pid, event.host, event.action, ...), and roll that run back when
    the object goes (the container dies). Runs in the foreground, logs one line per event
    and per run, and journals every run as `runflow run` does, with the event that caused
    it (runflow runs, runflow show).

    Level-triggered: on start, and again after each reconnect, every active matching object
    without a succeeded run gets one, and every run whose object is gone (or restarted
    since) is rolled back: a watch that was down catches up without duplicates. A run that
    fails is rolled back and tried again later (after 1 s, 2 s, 4 s, ... at most 5 min).
    While any of its runs is in flight on a host, the watch holds the host's lock: another
    runflow command there waits or exits 4. SIGTERM or SIGINT: the runs in flight finish,
    what they made stays.

    \b
    runflow watch workflows/container-ovs-watch.toml --inventory hosts.toml
    """
    from .watch.watcher import Log, Watcher
    from .watch.watches import load_watches

    options = _options(**selection)
    plugins = _plugins(options)
    watches = load_watches(list(workflows), options, plugins)
    watcher = Watcher(watches, options, plugins, _home(), jobs=jobs, once=once,
                      lock_timeout=lock_timeout if once else None, log=Log(quiet=quiet))
    sys.exit(watcher.run())


@cli.group()
def lab() -> None:
    """Simulated hosts on this machine: network namespaces with their own Open vSwitch
    (userspace datapath) and dockerd, joined by an underlay. Never touches the root network
    namespace. Lives in $RUNFLOW_LAB (default /tmp/rf-lab)."""


@lab.command("up")
@click.option("--hosts", "count", default=2, show_default=True, help="How many hosts (1-32).")
@click.option("--prefix", default="rf", show_default=True,
              help="Namespace name prefix (PREFIX-h1, PREFIX-h2, PREFIX-sw).")
@click.option("--ssh", is_flag=True,
              help="Give each host an sshd and write an inventory that reaches the hosts "
                   "only over SSH (through `runflow lab connect`).")
@click.option("--no-docker", is_flag=True, help="No dockerd on the hosts (lighter hosts).")
@handles_errors
def lab_up(count, prefix, ssh, no_docker) -> None:
    """Create the lab hosts and write their inventory."""
    from .lab.lab import Lab

    the_lab = Lab(_lab_dir())
    inventory = the_lab.up(count, prefix=prefix, docker=not no_docker, ssh=ssh,
                           progress=lambda text: click.echo(f"lab: {text}", err=True))
    click.echo(f"lab: up; inventory {inventory}", err=True)
    click.echo("lab: try: runflow workflows/multihost-gre.toml --lab", err=True)


@lab.command("down")
@handles_errors
def lab_down() -> None:
    """Remove the lab: processes, mounts, namespaces, files."""
    from .lab.lab import Lab

    Lab(_lab_dir()).down()
    click.echo("lab: down", err=True)


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@handles_errors
def lab_status(as_json) -> None:
    """Show each lab host: namespace, OVS daemons, dockerd, sshd."""
    from .lab.lab import Lab

    rows = Lab(_lab_dir()).status()
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        ok = lambda flag: "-" if flag is None else "ok" if flag else "DOWN"  # noqa: E731
        sshd = f"  sshd {ok(r['sshd_running'])}" if "sshd_running" in r else ""
        click.echo(f"{r['host']}  netns {r['netns']} {ok(r['netns_exists'])}  underlay "
                   f"{r['underlay_ip']}  ovs {ok(r['ovs_running'])}  dockerd "
                   f"{ok(r['dockerd_answers'])}{sshd}")


@lab.command("connect")
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("--dir", "lab_dir", type=click.Path(file_okay=False),
              help="The lab's directory (default $RUNFLOW_LAB or /tmp/rf-lab).")
@handles_errors
def lab_connect(host, port, lab_dir) -> None:
    """Relay standard input and output to HOST:PORT from inside the lab's switch namespace:
    the ProxyCommand of an SSH lab's inventory. Touches neither the root network namespace
    nor the host's."""
    from .lab import relay

    sys.exit(relay.main([lab_dir or _lab_dir(), host, str(port)]))


@lab.command("demo")
@click.option("-t", "--target", default="modern", show_default=True,
              type=click.Choice(["auto", "centos6", "modern"]), help="Which backends to use.")
@handles_errors
def lab_demo(target) -> None:
    """Bring the lab up (if needed), run workflows/multihost-gre.toml on two hosts, start a
    container on each, and ping from one to the other across the GRE tunnel."""
    from .lab.demo import run_demo

    sys.exit(run_demo(_lab_dir(), target, echo=lambda text: click.echo(text, err=True)))


def main() -> None:
    # Loading the modules and argument schemas makes objects by the hundred thousand, and the
    # collector's passes over them cost 15-60 ms of start-up for nothing: none is garbage.
    # _plugins() turns it back on once they are loaded.
    gc.disable()
    # Ctrl-C before a command changes anything ends it with a message, not a traceback (click
    # would take a KeyboardInterrupt for "Aborted!", exit 1). A command that changes hosts
    # answers signals itself from when it opens its journal (core/session.py). The handler's
    # exception is imported first: imported in the handler, a signal that came while something
    # else was importing core/errors.py would meet the module half made.
    from .errors import Interrupted

    signal.signal(signal.SIGINT, functools.partial(_interrupt, Interrupted))
    try:
        cli()  # standalone click: always ends in SystemExit
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        from .ssh import ConnectionLost

        if isinstance(exc, ConnectionLost):
            _echo_err(f"runflow: error: {exc}")
        elif isinstance(exc, Interrupted):
            _echo_err(f"runflow: {exc}")
        else:
            raise
        code = exc.exit_code
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    ssh = sys.modules.get("runflow.core.ssh")
    if ssh is not None:  # connections begun for a command that failed before using them
        ssh.end_all()
    # Leave without the interpreter's teardown, which frees every module, schema and step one
    # by one (0.2-0.7 s after a for_each of 1,000): the command has closed its journal, lock
    # and files by now, and only standard output and error may still hold buffered text.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away (`runflow runs | head`)
            pass
    os._exit(code or 0)


def _interrupt(interrupted: type[BaseException], signum: int, _frame: object) -> None:
    raise interrupted(signum)


if __name__ == "__main__":
    main()
