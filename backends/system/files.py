"""Files a step writes on the host (docker.daemon's configuration, sysctl.set's persisted
settings): read exactly as they are, replaced in one step, and the directories made for them
removed again by undo.
"""

from __future__ import annotations

import os

from runflow.core.actions import Context
from runflow.core.errors import ActionError

# A fixed script with the data as arguments: what `plan` and `export` show for a file write.
WRITE = ["sh", "-c", 'printf "%s" "$1" > "$2"', "write"]


def read_text(path: str) -> str | None:
    """The file's text (None when there is none); surrogateescape: any byte survives the
    journal's JSON and comes back exactly."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ActionError(f"cannot read {path}: {exc.strerror}") from None


def missing_dirs(path: str) -> list[str]:
    """The directories above path that do not exist, outermost first: what a write makes."""
    missing = []
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        missing.insert(0, parent)
        parent = os.path.dirname(parent)
    return missing


def write_text(ctx: Context, path: str, text: str) -> None:
    """Replace the file in one step (a crash leaves the old or the new, never half), keeping
    its mode, and making the directories it needs."""
    ctx.commands.append(ctx.host.describe([*WRITE, text, path]))
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.runflow-tmp"
    with open(tmp, "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def remove_dirs(ctx: Context, made: list[str]) -> None:
    """Remove the directories apply made for a file, innermost first, while empty: one that
    holds something else now is not only runflow's any more."""
    for directory in reversed(made):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError:
            return
        ctx.commands.append(ctx.host.describe(["rmdir", directory]))
