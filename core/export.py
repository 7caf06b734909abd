"""`runflow export`: one host's plan as a standalone POSIX sh script, for hosts that cannot run
runflow (CentOS 6 has Python 2.6).

The script keeps runflow's promises with shell alone:
- each step is checked first and skipped when its desired state holds;
- before a step changes anything, what its undo needs is saved and journaled (a file beside
  the script's name under /var/lib/runflow, or $RUNFLOW_JOURNAL), then the step is marked as
  ours; a step that is ours is undone on rollback;
- any failure or signal runs the undo of every step that is ours, newest first (exit 1; 3 if
  an undo failed), unless RUNFLOW_NO_ROLLBACK=1 (exit 3, the journal stays);
- run again, it continues: steps that hold are skipped (and stay ours), the rest applied;
- `--rollback` undoes a finished run; `--dry-run` prints what would run and changes nothing.

Every value comes from the backends through `sh()` quoting (or `command()`, for commands that
also use what the script reads when it runs: `value_of(variable)`), so nothing from a workflow,
a var, an inventory or the host can become shell syntax. An action without a shell form stops
the export with an error naming the step: never a silent gap.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from .actions import ShellStep, sh
from .errors import InputError, PluginError
from .plan import Plan
from .plugins import Plugins

PREAMBLE = r'''set -eu

journal=${RUNFLOW_JOURNAL:-/var/lib/runflow/%(journal)s}
mode=run
case "${1:-}" in
    --dry-run) mode=dry-run ;;
    --rollback) mode=rollback ;;
    "") ;;
    *) echo "usage: $0 [--dry-run | --rollback]" >&2; exit 2 ;;
esac

ours=" "
ours() { ours="$ours$1 "; }
is_ours() { case "$ours" in *" $1 "*) return 0 ;; esac; return 1; }
say() { printf '%%s\n' "$*"; }

# Keep what a step's undo needs, and that the step is ours, before it changes anything.
journal_step() {
    step=$1; shift
    mkdir -p "$(dirname "$journal")"
    for name in "$@"; do
        value=""
        eval "value=\${$name}"
        printf "%%s='%%s'\n" "$name" "$(printf '%%s' "$value" | sed "s/'/'\\\\''/g")" >>"$journal"
    done
    printf 'ours %%s\n' "$step" >>"$journal"
    ours "$step"
}

# Retry a command until it succeeds or $1 seconds have passed (verifications).
retry() {
    deadline=$(( $(date +%%s) + $1 )); shift
    until "$@"; do
        [ "$(date +%%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}

if [ -f "$journal" ]; then
    # shellcheck disable=SC1090
    . "$journal"
fi
'''

ROLLBACK = r'''
steps_newest_first="%(reversed)s"

# Called with set +e, never as a condition: an undo's subshell then stops at its first failing
# command (in a condition, sh would ignore set -e there).
rollback() {
    failed=0
    for step in $steps_newest_first; do
        if is_ours "$step"; then
            say "== undo $step"
            ( set -e; "${step}_undo" )
            undone=$?
            if [ "$undone" != 0 ]; then
                say "!! undo of $step failed"
                failed=1
            fi
        fi
    done
    if [ "$failed" = 0 ]; then
        rm -f "$journal"
        return 0
    fi
    return 1
}

on_exit() {
    status=$?
    trap - EXIT INT TERM
    if [ "$status" != 0 ] && [ "$mode" = run ]; then
        if [ "${RUNFLOW_NO_ROLLBACK:-0}" = 1 ]; then
            say "!! failed; the applied steps stay (journal: $journal)"
            exit 3
        fi
        say "!! failed; rolling back"
        set +e
        rollback
        rolled=$?
        if [ "$rolled" = 0 ]; then exit 1; fi
        say "!! rollback failed; see $journal"
        exit 3
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$mode" = rollback ]; then
    set +e
    rollback
    rolled=$?
    if [ "$rolled" != 0 ]; then exit 3; fi
    exit 0
fi
'''


_VALUE = re.compile(r"\x00([A-Za-z_][A-Za-z0-9_]*)\x00")


def value_of(variable: str) -> str:
    """A placeholder for the value of a shell variable, known only when the script runs (what
    a step saved, what it just read). It survives str() and f-strings, so a backend's own
    command rendering can carry it; `command()` turns it into "$variable"."""
    return f"\x00{variable}\x00"


def word(text: Any) -> str:
    """One shell word: literal parts quoted, `value_of()` placeholders as "${variable}"."""
    parts = _VALUE.split(str(text))
    out = [shlex.quote(part) if i % 2 == 0 else f'"${{{part}}}"'
           for i, part in enumerate(parts) if part or i % 2 or len(parts) == 1]
    return "".join(out)


def command(argv: Sequence[Any]) -> str:
    """One command line from argv, every word through `word()`."""
    return " ".join(word(a) for a in argv)


def indent(lines: Iterable[str]) -> list[str]:
    """Lines one level deeper (for a shell block a backend builds). A line that goes on with a
    quoted word (a value that holds a newline) or after a backslash is left as it is: spaces
    there would become part of the value. (Here-documents are not followed: shell forms must
    not use them.)"""
    out, open_contexts, joined = [], [], False
    for text in lines:
        shifted = []
        for line in text.split("\n"):
            quoted = joined or (open_contexts and open_contexts[-1] in "'\"")
            shifted.append(line if quoted else f"    {line}")
            joined = _follow_quotes(line, open_contexts)
        out.append("\n".join(shifted))
    return out


def _follow_quotes(line: str, contexts: list[str]) -> bool:
    """Follow sh's quoting through one line: `contexts` holds the contexts open at its start
    and is left with those open at its end, innermost last (' and " quotes, ( a $(...), which is
    unquoted even inside "..."). True if the line ends with an escaped newline."""
    at = 0
    while at < len(line):
        char, top = line[at], contexts[-1] if contexts else None
        if top == "'":
            if char == "'":
                contexts.pop()
        elif char == "\\":
            if at == len(line) - 1:
                return True
            at += 1  # the next character is literal
        elif top == '"' and char == '"':
            contexts.pop()
        elif line.startswith("$(", at):
            contexts.append("(")
            at += 1
        elif top == "(" and char == ")":
            contexts.pop()
        elif top != '"' and char in "'\"":
            contexts.append(char)
        elif top != '"' and char == "#" and (at == 0 or line[at - 1] in " \t;&|("):
            break  # a comment: quotes in it mean nothing
        at += 1
    return False


class StepVariables:
    """`var(name)` for one step's shell form: a variable name of the step's own. `step` is
    the workflow step's id, for what a backend marks as made by it (OVS external_ids)."""

    def __init__(self, prefix: str, step: str) -> None:
        self.prefix = prefix
        self.step = step

    def __call__(self, name: str) -> str:
        return f"{self.prefix}_{name}"


def script(plugins: Plugins, plan: Plan) -> str:
    """The script for the plan's only host."""
    if len(plan.hosts) != 1:
        raise InputError("export writes one host's script: choose it with --host",
                         field="--host")
    host = plan.hosts[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{plan.workflow.name}-{host.name}")
    parts = [
        "#!/bin/sh",
        _comment(f"{plan.workflow.name}: {plan.workflow.description}".rstrip(": ")),
        _comment(f"Exported by runflow from {plan.workflow.path} "
                 f"(sha256 {plan.workflow.sha256[:12]}),"),
        f"# target {plan.target}, host {host.name}. Usage: sh THIS [--dry-run | --rollback]",
        PREAMBLE % {"journal": f"{name}.journal"},
    ]
    registry = plugins.registry
    names = []
    for number, inst in enumerate(plan.instances[host.name], 1):
        step = f"s{number}"
        if inst.skip_reason:
            parts.append(_comment(f"{inst.key}: skipped ({inst.skip_reason})"))
            continue
        registered = registry.implementations(inst.action)[inst.backend]
        try:
            form = registered.impl().shell(host, inst.args,
                                           StepVariables(step, inst.key.split("[")[0]))
        except Exception as exc:  # plugin code: one line naming it (--debug: the traceback)
            raise PluginError.raised(exc, method="shell", action=inst.action,
                                     backend=inst.backend, plugin=registered.plugin) from exc
        if form is None:
            raise plan.workflow.error(
                f"{inst.action} (backend {inst.backend}) has no shell form, so this workflow "
                "cannot be exported; run it with runflow, or pick a backend that has one",
                step=inst.step_index, field="action")
        names.append(step)
        parts.append(_step(step, inst.key, inst.action, form))
    parts.append(ROLLBACK % {"reversed": " ".join(reversed(names))})
    parts.append("\n".join(f"{step}_run" for step in names) or ":")
    parts.append('say "== done"\n')
    return "\n".join(parts)


def _comment(text: str) -> str:
    """A comment line: the text's own line breaks would end it, and what follows would run."""
    return "# " + re.sub(r"[\r\n]+", " ", text)


def _lines(lines: Iterable[str]) -> str:
    return "\n".join(indent(lines)) or "    :"


def _step(step: str, key: str, action: str, form: ShellStep) -> str:
    title = sh(f"== {key} ({action})")
    check = form.check or "false"
    listing = "\n".join(form.apply) or ":"
    # The listing's end marker: a line of a value (one that holds newlines) must not end the
    # here-document early, or the rest of the value would run as commands under --dry-run.
    marker = f"RUNFLOW_{step.upper()}"
    while marker in listing.split("\n"):
        marker += "_"
    saved = " ".join(form.saved)
    return f'''
# --- {key} ({action})
{step}_check() {{
    {check}
}}
{step}_save() {{
{_lines(form.save)}
}}
{step}_apply() {{
{_lines(form.apply)}
}}
{step}_undo() {{
{_lines(form.undo)}
}}
{step}_run() {{
    say {title}
    if {step}_check >/dev/null 2>&1; then
        say "   already so"
        return 0
    fi
    if [ "$mode" = dry-run ]; then
        say "   would run:"
        cat <<'{marker}'
{listing}
{marker}
        return 0
    fi
    if ! is_ours {step}; then
        {step}_save
        journal_step {step} {saved}
    fi
    {step}_apply
}}'''
