"""`--events FILE`: every event as one JSON line, flushed as it happens (tail -f friendly)."""

from __future__ import annotations

import json
from typing import TextIO

from .events import Event
from .hookspecs import hookimpl


class EventLog:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @hookimpl
    def runflow_event(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_json(), default=str) + "\n")
        self.stream.flush()
