"""The journal: every run, its plan and its events in SQLite (WAL) under $RUNFLOW_HOME.

It is written as a subscriber of the `runflow_event` hook, like any plugin: the run and its
plan are recorded from the event that creates the run, and every event after it is appended.
A step's intent (its "applying" event, with the observed "before" state) is committed before
the engine calls apply — the engine sends it durable — and its outcome with the next commit.
The journal only ever appends events: a step's record (state, before, error, commands, times)
is folded from them when read, which is what resume, rollback and `runflow show` do.

The journal is the only record of how to undo what runs changed, so it must not vanish
quietly. A command that wrote folds the write-ahead log back into the database when it ends
(a checkpoint), so that the database file alone holds everything between commands; and
`journal.mark` beside it holds the id of the last event written. A database that is missing,
emptied or shorter than its header says while the mark says it held events, or that holds
fewer events than the mark (its -wal file was lost after a kill), is refused with an error
naming the files: never read as "no runs", never laid out afresh.

A commit that fails (a full disk, the database locked by another process for longer than the
busy timeout) raises JournalError to the engine once; the journal then keeps the events in
memory and tries once more when the command ends.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from .errors import JournalError
from .events import Event
from .hookspecs import hookimpl
from .locks import run_is_driven

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
CREATE TABLE IF NOT EXISTS plans (
    run_id TEXT PRIMARY KEY REFERENCES runs(id),
    steps TEXT NOT NULL            -- JSON: {host: [[key, action, backend, args], ...]} in order
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
    message TEXT NOT NULL,
    detail TEXT                    -- JSON: a step event's "before", "commands", "traceback", if any
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
"""
# PRAGMA user_version of the layout above. Version 1 (no user_version) kept a row per step in a
# table `steps`, inserted with the run and updated on every change: for 1,000 instances 1,000
# INSERTs and 2,000 UPDATEs, 12% of such a run's instructions. `_upgrade` turns such a journal
# into this layout when it is opened.
VERSION = 2
FINISHED = ("skipped", "applied", "failed", "undone", "undo_failed")
FAILED = ("failed", "undo_failed")
LIVE = ("pending", "running", "rolling_back")  # run states a live process is in
BUSY_TIMEOUT_MS = 5000
MARK = "journal.mark"


def default_home() -> Path:
    if env := os.environ.get("RUNFLOW_HOME"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/runflow")
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "runflow"


def ensure_home(home: Path) -> Path:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:  # it holds workflows, inventories and vars
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
            data["cause"] = self.record.get("cause")  # what started it (runflow watch)
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
    traceback: str | None = None  # of its latest failure in backend code (runflow show --json)

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class Journal:
    """One SQLite file; safe to use from the engine's worker threads.

    create=False opens it for reading (`runflow runs`, `show`): a home without a journal
    reads as one without runs, and nothing is created."""

    def __init__(self, home: Path, *, create: bool = True) -> None:
        self.home = home
        self.path = home / "journal.sqlite"
        self._lock = threading.Lock()
        self._events: list[tuple[Any, ...]] = []  # inserted together at the next commit
        self._run_changes: list[Event] = []  # what those events change in `runs`
        self.failure: str | None = None  # why a commit failed; nothing is committed after it
        self._mark: int | None = None  # the file descriptor of journal.mark
        try:
            mark = _read_mark(home / MARK)
            _check_files(self.path, mark)
            if not create and not self.path.exists():
                self.db = _empty_database()
                return
            if create:
                ensure_home(home)
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self.db = _connect(self.path, create)
            held = self.db.execute("SELECT max(id) FROM events").fetchone()[0] or 0
            if mark is not None and held < mark:
                self.db.close()
                raise JournalError(
                    f"journal {self.path} ends at event {held}, but events up to {mark} were "
                    f"written to it ({home / MARK}): its write-ahead log ({self.path}-wal) or "
                    "the database was lost or replaced, and with them the record of what runs "
                    f"changed. Put the lost file back; to start an empty journal, move {home} "
                    "away")
            if create:
                self._mark = os.open(home / MARK, os.O_RDWR | os.O_CREAT, 0o600)
                self._write_mark(held)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} cannot be used: {exc}") from None
        except OSError as exc:
            raise JournalError(f"journal {self.path} cannot be used: "
                               f"{exc.strerror or exc}: {exc.filename or self.path}") from None

    def commit(self) -> None:
        """Write the events still pending (outcomes ride along with the next commit)."""
        with self._lock:
            self._commit()

    def finish(self) -> str | None:
        """At the end of a command: write what is pending (once more after a failure, briefly)
        and fold the write-ahead log into the database, so that the database file alone holds
        the journal until the next command. Returns what could not be written, if anything."""
        with self._lock:
            try:
                if self.failure is not None:
                    self.db.execute("PRAGMA busy_timeout=1000")
                    self.failure = None
                self._commit()
            except sqlite3.DatabaseError as exc:
                self.failure = f"the journal {self.path} cannot record the run: {exc}"
                return f"its last {len(self._events)} events could not be written ({exc})"
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass  # all of it is in the log still: the next command folds it in
            return None

    def close(self) -> None:
        try:
            if self.failure is None:
                self.finish()
        finally:
            self.db.close()
            if self._mark is not None:
                os.close(self._mark)
                self._mark = None

    def is_driven(self, run_id: str) -> bool:
        """Is a live process driving this run (run, resume or rollback)? See core/locks.py."""
        return run_is_driven(self.home, run_id)

    # -- writing (as an event subscriber) ----------------------------------------------------

    # First of the subscribers: an intent is on disk before anyone else hears of it.
    @hookimpl(tryfirst=True)
    def runflow_event(self, event: Event) -> None:
        with self._lock:
            try:
                self._record(event)
            except (sqlite3.DatabaseError, TypeError, ValueError) as exc:
                self.failure = f"the journal {self.path} cannot record the run: {exc}"
                raise JournalError(self.failure) from None

    def _record(self, e: Event) -> None:
        detail = None
        if e.kind == "step":  # what a step's record is folded from besides state and message
            kept = {"before": e.detail["before"]} if "before" in e.detail else {}
            for key in ("commands", "traceback"):
                if e.detail.get(key):
                    kept[key] = e.detail[key]
            detail = json.dumps(kept) if kept else None
        self._events.append((e.run_id, e.time, e.kind, e.host, e.step, e.source, e.dest,
                             e.message, detail))
        if e.kind == "run":
            self._run_changes.append(e)
        # Intents and run changes are committed before the engine goes on. An outcome rides
        # along with the next commit; if the process dies first, the step is "in doubt" and
        # resume settles it with `check`, as for a kill during apply. After a failed commit
        # nothing is tried again until the command ends: the engine has stopped the run, and
        # each try could wait the whole busy timeout for a lock another process holds.
        if (e.kind == "run" or e.durable) and self.failure is None:
            self._commit()

    def _commit(self) -> None:
        if not self._events or self.failure is not None:
            return
        try:
            self.db.execute("BEGIN")
            for run in self._run_changes:
                self._change_run(run)
            self.db.executemany(
                "INSERT INTO events (run_id, time, kind, host, step, source, dest, message, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._events)
            last = self.db.execute("SELECT last_insert_rowid()").fetchone()[0]
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self._events.clear()
        self._run_changes.clear()
        self._write_mark(last)

    def _write_mark(self, last_event: int) -> None:
        if self._mark is not None:
            try:
                os.pwrite(self._mark, b"%020d\n" % last_event, 0)
            except OSError:  # the mark only ever gets weaker for it, never wrong
                pass

    def _change_run(self, run: Event) -> None:
        if run.source is None:
            self._create_run(run)
            return
        attempts = "attempts + 1" if run.message == "resumed" else "attempts"
        self.db.execute(f"UPDATE runs SET state=?, updated=?, message=?, "
                        f"attempts={attempts} WHERE id=?",
                        (run.dest, run.time, run.message, run.run_id))

    def _create_run(self, e: Event) -> None:
        # The plan goes to a table of its own, not into the run's record: the record is
        # rewritten whole on every change of the run's state (180 KB at 1,000 instances).
        record = {key: value for key, value in e.detail.items() if key != "steps"}
        self.db.execute(
            "INSERT INTO runs (id, workflow, workflow_path, record, state, hosts, created, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (e.run_id, record["workflow"]["name"], record["workflow"]["path"],
             json.dumps(record), e.dest, json.dumps(record["hosts"]), e.time, e.time))
        plan = {host: [[s["key"], s["action"], s["backend"], s["args"]] for s in steps]
                for host, steps in e.detail["steps"].items()}
        self.db.execute("INSERT INTO plans (run_id, steps) VALUES (?, ?)",
                        (e.run_id, json.dumps(plan)))

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

    def caused_runs(self, watch: str, hosts: Sequence[str]) -> list[RunRecord]:
        """The runs `runflow watch` started for a watch (the `cause` in their record names the
        watch and the host) on these hosts that are not rolled back, oldest first: what a
        watcher finds in place when it starts."""
        marks = ", ".join("?" * len(hosts))
        rows = self._query("SELECT * FROM runs WHERE state != 'rolled_back' AND "
                           "json_extract(record, '$.cause.watch') = ? AND "
                           f"json_extract(record, '$.cause.host') IN ({marks}) "
                           "ORDER BY created, id", (watch, *hosts))
        return [self._run(r) for r in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        plan = self._query("SELECT steps FROM plans WHERE run_id=?", (run_id,))
        events = self._query("SELECT time, host, step, dest, message, detail FROM events "
                             "WHERE run_id=? AND kind='step' ORDER BY id", (run_id,))
        return _fold(json.loads(plan[0][0]) if plan else {}, events)

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


def _fold(plan: dict[str, list[list[Any]]], events: Iterable[Sequence[Any]]) -> list[StepRecord]:
    """Each step's record, in (host, seq) order, from the run's plan and its step events
    (time, host, step, dest, message, detail) in the order they happened. A step has the state
    of its latest event but "checking": a step only looked at is where it was, and the check's
    time becomes its start when it moves on. Its error is the message of its latest failure;
    its before and commands are the latest any event carried."""
    records = {(host, key): {"host": host, "seq": seq, "key": key, "action": action,
                             "backend": backend, "args": args, "state": "pending",
                             "before": None, "error": None, "commands": [], "started": None,
                             "finished": None, "traceback": None}
               for host, steps in plan.items()
               for seq, (key, action, backend, args) in enumerate(steps)}
    checked: dict[tuple[str, str], float] = {}
    for time, host, key, dest, message, detail in events:
        record = records.get((host, key))
        if record is None:
            continue
        if dest == "checking":
            checked[host, key] = time
            continue
        record["state"] = dest
        if (host, key) in checked:
            record["started"] = checked.pop((host, key))
        if dest in FINISHED:
            record["finished"] = time
        if dest in FAILED:
            record["error"] = message
        if detail:
            record.update(json.loads(detail))
    return [StepRecord(**r) for r in sorted(records.values(),
                                             key=lambda r: (r["host"], r["seq"]))]


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    """A connection to the journal, laid out in this version's layout. A reading command that
    may not write beside the database (a read-only directory or mount) reads it as it is."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if create:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process; a power cut may lose the last
            # commits, which resume then settles with `check` like any step in doubt.
            db.execute("PRAGMA synchronous=NORMAL")
        if db.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            _upgrade(db)
        return db
    except sqlite3.OperationalError:
        if create:
            raise
        db = sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True,
                             check_same_thread=False, isolation_level=None)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != VERSION:
            raise sqlite3.DatabaseError(f"it is of layout {version} and cannot be upgraded "
                                        "where it is (read-only)") from None
        return db


def _empty_database() -> sqlite3.Connection:
    """What a home without a journal reads as."""
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    _upgrade(db)
    return db


def _read_mark(path: Path) -> int | None:
    """The id of the last event written to the journal, as journal.mark says, if it does."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    return int(text) if text.strip().isdigit() else None


def _check_files(path: Path, mark: int | None) -> None:
    """Refuse a database that was deleted, emptied or cut short while the mark says it held
    events (SQLite would lay out a new one, or read what is left as if it were all)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    lost = {None: "is missing", 0: "is empty"}.get(size) if mark else None
    if lost is None and size and _wal_is_empty(path):
        with open(path, "rb") as f:
            header = f.read(100)
        # https://sqlite.org/fileformat.html: the page size at offset 16 (1 means 65536), the
        # page count at 28, valid when the change counter at 24 equals the one at 92. A
        # checkpoint writes the pages and then sets the size: a whole file is never shorter.
        if header.startswith(b"SQLite format 3\0") and header[24:28] == header[92:96]:
            page_size = int.from_bytes(header[16:18], "big")
            expected = (page_size if page_size != 1 else 65536) * int.from_bytes(
                header[28:32], "big")
            if size < expected:
                lost = f"is cut short ({size} of its {expected} bytes)"
    if lost:
        held = f"{path.parent / MARK} says it held {mark} events" if mark else "it was a journal"
        raise JournalError(
            f"journal {path} {lost}, but {held}: the record of what runs changed is lost. "
            f"Restore the file; to start an empty journal, move {path.parent} away")


def _wal_is_empty(path: Path) -> bool:
    try:
        return path.with_name(path.name + "-wal").stat().st_size == 0
    except FileNotFoundError:
        return True


def _upgrade(db: sqlite3.Connection) -> None:
    """Lay out a new journal, or turn a version 1 one into this layout, in one transaction
    (another process may be doing the same: the second finds nothing left to do)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise sqlite3.DatabaseError(f"it was written by a newer runflow (layout {version}; "
                                        f"this one knows layout {VERSION})")
        old = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='steps'"
                         ).fetchone()
        if old:
            db.execute("ALTER TABLE events ADD COLUMN detail TEXT")
        for statement in SCHEMA.split(";"):  # executescript would commit first
            if statement.strip():
                db.execute(statement)
        if old:
            _from_version_1(db)
        db.execute(f"PRAGMA user_version = {VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _from_version_1(db: sqlite3.Connection) -> None:
    """Version 1 kept a row per step in `steps`. The rows make the plans, and each step that
    had moved gets events after its run's own that fold into the record its row held: a
    "checking" at its start, then its state at its end (source NULL marks them). What is not
    kept is the error of an earlier failure of a step that was applied later."""
    plans: dict[str, dict[str, list[list[Any]]]] = {}
    events = []
    for (run_id, host, key, action, backend, args, state, before, error, commands, started,
         finished) in db.execute("SELECT run_id, host, key, action, backend, args, state, "
                                 "before, error, commands, started, finished FROM steps "
                                 "ORDER BY run_id, host, seq"):
        plans.setdefault(run_id, {}).setdefault(host, []).append(
            [key, action, backend, json.loads(args)])
        if state == "pending":
            continue
        if started is not None:
            events.append((run_id, started, "step", host, key, None, "checking", "", None))
        kept = {"before": json.loads(before)} if before else {}
        if commands := json.loads(commands or "[]"):
            kept["commands"] = commands
        events.append((run_id, finished if finished is not None else started, "step", host,
                       key, None, state, error or "", json.dumps(kept) if kept else None))
    db.executemany("INSERT INTO plans (run_id, steps) VALUES (?, ?)",
                   [(run_id, json.dumps(plan)) for run_id, plan in plans.items()])
    db.executemany("INSERT INTO events (run_id, time, kind, host, step, source, dest, message, "
                   "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
    db.execute("DROP TABLE steps")

