"""`--events FILE`: every event as one JSON line, flushed as it happens (tail -f friendly)."""

from __future__ import annotations

import json
from typing import TextIO

from .events import Event
from .hookspecs import hookimpl

# One encoder for every line: json.dumps with `default` builds a new one per call, a sixth of
# the cost of a line. What it holds is only its settings, so threads can share it.
_encode = json.JSONEncoder(default=str).encode


class EventLog:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @hookimpl
    def runflow_event(self, event: Event) -> None:
        self.stream.write(_encode(event.to_json()) + "\n")
        self.stream.flush()
