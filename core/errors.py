"""The errors runflow reports, and the exit code each one ends a command with.

Exit codes (a contract other tools rely on):
0 succeeded or nothing to change · 1 a step failed and everything was rolled back ·
2 invalid input, nothing was touched · 3 a step failed and rollback failed or was disabled ·
4 another run holds the host lock · 5 a host could not be reached before the run began (SSH:
no connection, a refused host key): nothing was touched anywhere · 128 + N: signal N
(SIGINT: 130) ended the command before it changed anything.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

EXIT_OK = 0
EXIT_ROLLED_BACK = 1
EXIT_INVALID = 2
EXIT_NEEDS_ATTENTION = 3
EXIT_LOCKED = 4
EXIT_UNREACHABLE = 5


class RunflowError(Exception):
    """Base of the errors the command line turns into a message and an exit code."""

    exit_code = EXIT_ROLLED_BACK


class InputError(RunflowError):
    """Invalid workflow, inventory, vars or arguments: found before anything was touched."""

    exit_code = EXIT_INVALID

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        step: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.step = step
        self.field = field

    @classmethod
    def from_toml(cls, exc: ValueError, file: str) -> InputError:
        """A tomllib.TOMLDecodeError, with the line and column its message carries."""
        match = re.search(r"^(.*) \(at line (\d+), column (\d+)\)$", str(exc))
        if not match:
            return cls(f"TOML syntax error: {exc}", file=file)
        return cls(f"TOML syntax error: {match.group(1)}", file=file, line=int(match.group(2)),
                   column=int(match.group(3)))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
                if self.column:
                    where += f":{self.column}"
            where += ": "
        if self.step is not None:
            where += f"step {self.step!r}: "
        if self.field:
            where += f"{self.field}: "
        return where + self.message


class LockHeld(RunflowError):
    """Another run holds the lock of a host."""

    exit_code = EXIT_LOCKED


class JournalError(RunflowError):
    """The journal cannot be read or written, or names no such run. Before a command changed
    anything, that ends it with nothing touched."""

    exit_code = EXIT_INVALID


class RunNotJournaled(RunflowError):
    """The journal failed while a run was changing hosts: the run stopped and undid what it had
    changed from its own memory, and the journal does not know. The hosts need a look."""

    exit_code = EXIT_NEEDS_ATTENTION


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM) ended a command before it changed anything.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` on its way (an event
    subscriber's guard, a backend's) takes it for a failure of its own; and not a
    KeyboardInterrupt, which click would turn into "Aborted!" and exit 1."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal} before anything was changed")


class ActionError(Exception):
    """A step could not reach its desired state. Backends raise it (or a subclass)."""


class CommandError(ActionError):
    """An external program exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, host: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        where = f" on {host}" if host else ""
        detail = f": {self.stderr}" if self.stderr else ""
        super().__init__(f"{shlex.join(self.argv)} exited {returncode}{where}{detail}")


# ---------------------------------------------------------------------------------------------
# Failures of plugin code: one line each, the traceback only with --debug
# ---------------------------------------------------------------------------------------------


def debugging() -> bool:
    """True under `runflow --debug` (or RUNFLOW_DEBUG=1): print tracebacks too."""
    import os

    return os.environ.get("RUNFLOW_DEBUG", "") not in ("", "0")


def one_line(text: str) -> str:
    """A message on one line: a command's stderr or a validation error may span several."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def failure_line(exc: BaseException, *, method: str, action: str | None = None,
                 backend: str | None = None, plugin: str | None = None) -> str:
    """What failed, where, and how, on one line — the one style of every failure of plugin
    or backend code (loading, registering, validating, planning, running, undoing):

        observe of ovs.port.present in backend ovsdb (plugin runflow.backends.ovsdb) raised
        ActionError: cannot reach OVSDB at unix:/var/run/openvswitch/db.sock
    """
    what = f"{method} of {action}" if action else method
    if backend:
        what += f" in backend {backend}"
    if plugin:
        what += f" (plugin {plugin})"
    message = one_line(str(exc))
    return f"{what} raised {type(exc).__name__}" + (f": {message}" if message else "")


class PluginError(InputError):
    """Plugin code failed while it was loaded, registered or asked to validate or plan:
    nothing was touched (exit 2). The original exception is the __cause__ (--debug shows its
    traceback)."""

    def __init__(self, message: str, *, plugin: str | None = None, **where: str | None) -> None:
        super().__init__(message, **where)  # type: ignore[arg-type]
        self.plugin = plugin

    @classmethod
    def raised(cls, exc: BaseException, *, method: str, action: str | None = None,
               backend: str | None = None, plugin: str | None = None) -> PluginError:
        error = cls(failure_line(exc, method=method, action=action, backend=backend,
                                 plugin=plugin), plugin=plugin)
        error.__cause__ = exc
        return error


def traceback_text(exc: BaseException) -> str:
    """The traceback of what caused exc (or of exc itself), for --debug."""
    import traceback

    cause = exc.__cause__ or exc
    return "".join(traceback.format_exception(cause))
