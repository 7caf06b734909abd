"""Files a step writes on the host (docker.daemon's configuration, sysctl.set's persisted
settings): read exactly as they are, replaced in one step, and the directories made for them
removed again by undo. On an SSH host by commands there (`cat`, `ls`, `rm`, `rmdir` and a
fixed `sh -c` script that writes a temporary file and renames it); here by this process.
"""

from __future__ import annotations

import os

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

# A fixed script with the data as arguments: what `plan` and `export` show for a file write.
WRITE = ["sh", "-c", 'printf "%s" "$1" > "$2"', "write"]
# How a file is replaced on an SSH host: its text on standard input, its path as $1; in one
# step (rename), keeping the file's mode, making the directories above it.
REMOTE_WRITE = ["sh", "-c", 'set -e; t="$1.runflow-tmp"; mkdir -p "$(dirname "$1")"; '
                'cat >"$t"; if [ -e "$1" ]; then chmod --reference="$1" "$t"; '
                'else chmod 644 "$t"; fi; mv -f "$t" "$1"', "write"]


def read_text(path: str, host: Host | None = None) -> str | None:
    """The file's text (None when there is none); surrogateescape: any byte survives the
    journal's JSON and comes back exactly. On an SSH host, read by `cat` there."""
    if host is not None and host.remote:
        done = host.run(["cat", "--", path], check=False)
        if done.returncode == 0:
            return done.stdout
        if "No such file" in done.stderr:
            return None
        raise ActionError(f"cannot read {path} on {host.name}: {done.stderr.strip()}")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ActionError(f"cannot read {path}: {exc.strerror}") from None


def missing_dirs(ctx: Context, path: str) -> list[str]:
    """The directories above path that do not exist, outermost first: what a write makes."""
    if ctx.host.remote:
        parents = []
        parent = os.path.dirname(path)
        while parent and parent not in parents:
            parents.append(parent)
            parent = os.path.dirname(parent)
        listed = ctx.host.run(["ls", "-d", "--", *parents], check=False).stdout
        existing = set(listed.splitlines())
        missing_remote: list[str] = []
        for parent in parents:
            if parent in existing:
                break
            missing_remote.insert(0, parent)
        return missing_remote
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
    if ctx.host.remote:
        ctx.host.run([*REMOTE_WRITE, path], input=text)
        return
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.runflow-tmp"
    with open(tmp, "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape"))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def remove_file(ctx: Context, path: str) -> None:
    ctx.commands.append(ctx.host.describe(["rm", "-f", path]))
    if ctx.host.remote:
        ctx.host.run(["rm", "-f", "--", path])
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def remove_dirs(ctx: Context, made: list[str]) -> None:
    """Remove the directories apply made for a file, innermost first, while empty: one that
    holds something else now is not only runflow's any more."""
    for directory in reversed(made):
        if ctx.host.remote:
            done = ctx.host.run(["rmdir", "--", directory], check=False)
            if done.returncode and "No such file" not in done.stderr:
                return
            if done.returncode == 0:
                ctx.commands.append(ctx.host.describe(["rmdir", directory]))
            continue
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError:
            return
        ctx.commands.append(ctx.host.describe(["rmdir", directory]))
