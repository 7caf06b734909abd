"""The journal: every run, its steps and its events in SQLite (WAL) under $RUNFLOW_HOME.

It is written as a subscriber of the `runflow_event` hook, like any plugin: the run is
recorded from the event that creates it, a step's intent (with its observed "before" state)
is committed on its "applying" event — which the engine sends before it calls apply — and
its outcome on the next. Resume and rollback read it back with `load`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, NamedTuple

from .errors import JournalError
from .events import Event
from .hookspecs import hookimpl

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_path TEXT NOT NULL,
    record TEXT NOT NULL,          -- JSON: workflow text and hash, vars, target, inventory
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    hosts TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    backend TEXT,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    before TEXT,
    error TEXT,
    commands TEXT,
    started REAL,
    finished REAL,
    PRIMARY KEY (run_id, host, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,        -- in insertion order: events are never deleted
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    step TEXT,
    source TEXT,
    dest TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
"""


def default_home() -> Path:
    if env := os.environ.get("RUNFLOW_HOME"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/runflow")
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "runflow"


def ensure_home(home: Path) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return home


# Records read back are NamedTuples, not dataclasses: those generate their methods with exec,
# ~1 ms of every command's start-up each.
class RunRecord(NamedTuple):
    id: str
    workflow: str
    workflow_path: str
    record: dict[str, Any]
    state: str
    attempts: int
    hosts: list[str]
    created: float
    updated: float
    message: str

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        data = {"id": self.id, "workflow": self.workflow, "workflow_path": self.workflow_path,
                "state": self.state, "attempts": self.attempts, "hosts": self.hosts,
                "created": self.created, "updated": self.updated, "message": self.message}
        if full:
            data["target"] = self.record.get("target")
            data["vars"] = self.record.get("vars")
        return data


class StepRecord(NamedTuple):
    host: str
    seq: int
    key: str
    action: str
    backend: str | None
    args: dict[str, Any]
    state: str
    before: dict[str, Any] | None
    error: str | None
    commands: list[str]
    started: float | None
    finished: float | None

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class Journal:
    """One SQLite file; safe to use from the engine's worker threads."""

    def __init__(self, home: Path) -> None:
        self.home = ensure_home(home)
        self.path = home / "journal.sqlite"
        self._lock = threading.Lock()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; a power cut may lose the last
            # commits, which resume then settles with `check` like any step in doubt.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} cannot be used: {exc}") from None
        self._in_tx = False
        self._events: list[tuple[Any, ...]] = []  # inserted together at the next commit
        self._started: dict[tuple[str, str | None, str | None], float] = {}

    def commit(self) -> None:
        """Write the events still pending (outcomes ride along with the next commit)."""
        with self._lock:
            self._commit()

    def close(self) -> None:
        with self._lock:
            self._commit()
            self.db.close()

    # -- writing (as an event subscriber) ----------------------------------------------------

    @hookimpl
    def runflow_event(self, event: Event) -> None:
        with self._lock:
            try:
                self._record(event)
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"journal {self.path}: cannot record an event: {exc}")

    def _record(self, e: Event) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        if e.kind == "run" and e.source is None:
            self._create_run(e)
        elif e.kind == "run":
            attempts = "attempts + 1" if e.message == "resumed" else "attempts"
            self.db.execute(f"UPDATE runs SET state=?, updated=?, message=?, attempts={attempts} "
                            "WHERE id=?", (e.dest, e.time, e.message, e.run_id))
        else:
            self._update_step(e)
        self._events.append((e.run_id, e.time, e.kind, e.host, e.step, e.source, e.dest,
                             e.message))
        # Intents (and run changes) are committed before the engine goes on. An outcome rides
        # along with the next commit; if the process dies first, the step is "in doubt" and
        # resume settles it with `check`, as for a kill during apply.
        if e.kind == "run" or e.durable:
            self._commit()

    def _commit(self) -> None:
        if self._in_tx:
            self.db.executemany(
                "INSERT INTO events (run_id, time, kind, host, step, source, dest, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._events)
            self._events.clear()
            self.db.execute("COMMIT")
            self._in_tx = False

    def _create_run(self, e: Event) -> None:
        # The plan's steps go to the steps table, not into the run's record as well: the record
        # is rewritten whole on every change of the run's state (180 KB at 1,000 instances).
        record = {key: value for key, value in e.detail.items() if key != "steps"}
        self.db.execute(
            "INSERT INTO runs (id, workflow, workflow_path, record, state, hosts, created, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (e.run_id, record["workflow"]["name"], record["workflow"]["path"],
             json.dumps(record), e.dest, json.dumps(record["hosts"]), e.time, e.time))
        self.db.executemany(
            "INSERT INTO steps (run_id, host, seq, key, action, backend, args, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.run_id, host, seq, s["key"], s["action"], s["backend"], json.dumps(s["args"]),
              "pending")
             for host, steps in e.detail["steps"].items() for seq, s in enumerate(steps)])

    def _update_step(self, e: Event) -> None:
        key = (e.run_id, e.host, e.step)
        if e.dest == "checking":  # written with the step's next change: one statement less
            self._started[key] = e.time
            return
        sets = ["state=?"]
        values: list[Any] = [e.dest]
        if key in self._started:
            sets.append("started=?")
            values.append(self._started.pop(key))
        if e.dest in ("skipped", "applied", "failed", "undone", "undo_failed"):
            sets.append("finished=?")
            values.append(e.time)
        if "before" in e.detail:
            sets.append("before=?")
            values.append(json.dumps(e.detail["before"]))
        if e.dest in ("failed", "undo_failed"):
            sets.append("error=?")
            values.append(e.message)
        if e.detail.get("commands"):
            sets.append("commands=?")
            values.append(json.dumps(e.detail["commands"]))
        values += [e.run_id, e.host, e.step]
        self.db.execute(f"UPDATE steps SET {', '.join(sets)} WHERE run_id=? AND host=? AND key=?",
                        values)

    # -- reading ------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._commit()
            try:
                cur = self.db.execute(sql, params)
                return cur.fetchall()
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"journal {self.path} cannot be read: {exc}") from None

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        rows = self._query("SELECT * FROM runs ORDER BY created DESC, id DESC"
                           + (f" LIMIT {int(limit)}" if limit else ""))
        return [self._run(r) for r in rows]

    def find(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix, or "last"."""
        if ref == "last":
            rows = self._query("SELECT * FROM runs ORDER BY created DESC, id DESC LIMIT 1")
            if not rows:
                raise JournalError(f"no runs in the journal ({self.path})")
        else:
            rows = self._query("SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id",
                               (len(ref), ref))
            if not rows:
                raise JournalError(f"no run {ref!r} in the journal ({self.path}); see `runflow runs`")
            if len(rows) > 1:
                ids = ", ".join(r[0] for r in rows[:5])
                raise JournalError(f"{ref!r} matches several runs ({ids}): give more of the id")
        return self._run(rows[0])

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._query("SELECT host, seq, key, action, backend, args, state, before, error, "
                           "commands, started, finished FROM steps WHERE run_id=? "
                           "ORDER BY host, seq", (run_id,))
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6],
                           json.loads(r[7]) if r[7] else None, r[8],
                           json.loads(r[9]) if r[9] else [], r[10], r[11]) for r in rows]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT time, kind, host, step, source, dest, message FROM events "
                           "WHERE run_id=? ORDER BY id", (run_id,))
        keys = ("time", "kind", "host", "step", "source", "dest", "message")
        return [dict(zip(keys, r)) for r in rows]

    @staticmethod
    def _run(r: tuple[Any, ...]) -> RunRecord:
        try:
            return RunRecord(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], json.loads(r[6]),
                             r[7], r[8], r[9])
        except (ValueError, TypeError) as exc:
            raise JournalError(f"run {r[0]} has a damaged record in the journal: {exc}") from None
