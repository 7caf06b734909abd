"""What a person sees while a run goes: one line per finished step with its state and time,
and a line for each change of the run's state. Colours on a terminal, plain lines otherwise.
A subscriber of `runflow_event` like any plugin.

Output that cannot be written (the reader of a pipe went away, the terminal was closed) is
dropped: a run's output may be lost, never its work. (Any other subscriber that raises stops
the run and rolls it back: see core/engine.py.)"""

from __future__ import annotations

import sys
from typing import TextIO

from .errors import debugging
from .events import Event
from .hookspecs import hookimpl

_SHOWN = {"skipped": "skip", "applied": "ok", "failed": "FAIL", "undone": "undone",
          "undo_failed": "UNDO FAILED"}
_STYLE = {"skipped": "dim", "applied": "green", "failed": "bold red", "undone": "yellow",
          "undo_failed": "bold red", "succeeded": "bold green", "rolled_back": "yellow",
          "failed_run": "bold red", "rollback_failed": "bold red"}


class Progress:
    def __init__(self, stream: TextIO | None = None, *, multi_host: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.multi_host = multi_host
        self._started: dict[tuple[str | None, str | None], float] = {}
        self._console = None
        self._lost = False  # the stream could not be written: nothing more is tried
        if self.stream.isatty():
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def _print(self, text: str, style: str | None) -> None:
        if self._lost:
            return
        try:
            if self._console is not None:
                self._console.print(text, style=style, markup=False)
            else:
                print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # EPIPE, EIO from a hung-up terminal, a closed stream
            self._lost = True

    @hookimpl
    def runflow_event(self, event: Event) -> None:
        if event.kind == "run":
            self._run_event(event)
            return
        key = (event.host, event.step)
        if event.dest in ("checking", "undoing"):
            self._started[key] = event.time
            return
        if event.dest not in _SHOWN:
            if event.message:  # drift, in doubt: worth a line of its own
                self._print(f"  {self._where(event)}{event.step}: {event.message}", "yellow")
            return
        elapsed = (event.time - self._started.pop(key, event.time)) * 1000
        reason = f"  ({event.message})" if event.message else ""
        line = (f"  {_SHOWN[event.dest]:<6} {self._where(event)}{event.step:<24} "
                f"{elapsed:7.1f} ms{reason}")
        self._print(line, _STYLE.get(event.dest))
        if event.detail.get("traceback") and debugging():
            self._print(event.detail["traceback"].rstrip(), None)

    def _where(self, event: Event) -> str:
        return f"[{event.host}] " if self.multi_host and event.host else ""

    def _run_event(self, event: Event) -> None:
        if event.source is None:
            detail = event.detail
            self._print(f"run {event.run_id}: {detail['workflow']['name']} on "
                        f"{', '.join(detail['hosts'])} (target {detail['target']})", "bold")
            return
        if event.dest == "running":
            if event.source != "pending":
                self._print(f"run {event.run_id}: resumed", "bold")
            return
        if event.dest == "rolling_back":
            self._print(f"run {event.run_id}: rolling back", "yellow")
            return
        style = _STYLE["failed_run"] if event.dest == "failed" else _STYLE.get(event.dest)
        text = f"run {event.run_id}: {event.dest.replace('_', ' ')}"
        if event.message:
            text += f": {event.message}"
        self._print(text, style)
