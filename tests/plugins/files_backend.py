"""A real backend plugin for the engine's tests: its actions change files in a directory.

`file.present` makes a file hold some content; undo restores what was there before (the old
content, or no file). Each apply and undo appends a line to `<dir>/.log`, so tests can count
side effects, and can hold still while a marker file exists, so tests can interrupt them
(before writing, or after: `after_hold_marker`, the file written but the step not yet done).
Faults are files too: apply fails while `<dir>/<fail_marker>` exists, undo fails while
`<dir>/<undo_fail_marker>` exists — "fixing the cause" is deleting the marker.

`file.restarted` is `file.present` for a file whose apply also has an effect observe cannot
see (as a daemon restarted after its config file changed): a step of it left in doubt by a
killed run is applied again on resume.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from runflow.core.actions import Action, Args, Context, State
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl


class FileArgs(Args):
    dir: str
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    content: str = ""
    hold_marker: str | None = None  # apply waits while this file exists (to kill it mid-step)
    undo_hold_marker: str | None = None  # undo waits while this file exists
    fail_marker: str | None = None
    undo_fail_marker: str | None = None
    break_marker: str | None = None  # apply writes the file, then fails, while this file exists
    after_hold_marker: str | None = None  # apply waits after writing while this file exists


def _log(args: FileArgs, line: str) -> None:
    with open(Path(args.dir) / ".log", "a") as log:
        log.write(line + "\n")


def _hold(args: FileArgs, marker: str | None) -> None:
    deadline = time.monotonic() + 60
    while marker and (Path(args.dir) / marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class FilePresent(Action):
    name = "file.present"
    backend = "files"
    family = "files"
    Args = FileArgs
    summary = "a file holds some content (test backend)"

    def observe(self, ctx: Context, args: FileArgs) -> State:
        path = Path(args.dir) / args.name
        return {"exists": path.exists(), "content": path.read_text() if path.exists() else None}

    def check(self, args: FileArgs, before: State) -> bool:
        return before["content"] == args.content

    def apply(self, ctx: Context, args: FileArgs, before: State) -> None:
        if args.fail_marker and (Path(args.dir) / args.fail_marker).exists():
            raise ActionError(f"{args.fail_marker} is in the way")
        _log(args, f"apply {args.name}")
        _hold(args, args.hold_marker)
        (Path(args.dir) / args.name).write_text(args.content)
        _hold(args, args.after_hold_marker)
        if args.break_marker and (Path(args.dir) / args.break_marker).exists():
            raise ActionError(f"{args.break_marker}: failed after writing")

    def undo(self, ctx: Context, args: FileArgs, before: State) -> None:
        if args.undo_fail_marker and (Path(args.dir) / args.undo_fail_marker).exists():
            raise ActionError(f"{args.undo_fail_marker} blocks the undo")
        _log(args, f"undo {args.name}")
        _hold(args, args.undo_hold_marker)
        path = Path(args.dir) / args.name
        if before.get("exists"):
            path.write_text(before["content"])
        else:
            path.unlink(missing_ok=True)

    def describe(self, args: FileArgs, before: State | None = None) -> list[list[str]]:
        return [["write", str(Path(args.dir) / args.name)]]


class FileRestarted(FilePresent):
    name = "file.restarted"
    summary = "a file holds some content, and something restarts after it changed (test)"
    reapply_in_doubt = True


class NoopArgs(Args):
    label: str = ""


class Noop(Action):
    """Always applies, changes nothing: measures the engine and journal alone."""

    name = "test.noop"
    backend = "files"
    family = "files"
    Args = NoopArgs

    def observe(self, ctx: Context, args: NoopArgs) -> State:
        return {}

    def check(self, args: NoopArgs, before: State) -> bool:
        return False

    def apply(self, ctx: Context, args: NoopArgs, before: State) -> None:
        pass

    def undo(self, ctx: Context, args: NoopArgs, before: State) -> None:
        pass


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(FilePresent)
    register(FileRestarted)
    register(Noop)
