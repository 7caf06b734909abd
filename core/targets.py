"""Targets: which backend serves an action on a kind of host.

A target names a generation of hosts: `centos6` (the tools of a CentOS 6 host: ip, brctl,
ovs-vsctl, iptables, docker's sysconfig flags, service) or `modern` (APIs: netlink, OVSDB, the
Docker Engine API, systemd). Which backend serves which target is data on the backends
themselves — an implementation's `targets` class attribute — so a plugin's own family says
which of its backends serves `centos6` and which `modern`, exactly as the built-ins do.

How a step's backend is chosen (`runflow backends --target T` shows the outcome and why):

- `backend = "..."` in the step pins one; it must implement the action and be usable here.
- `--target centos6|modern`: the implementations that name the target, in registry order, the
  first one usable on the host. If the action has none that names it, the implementations
  that name no target at all (they serve every target, like `shell.run`). If that choice
  cannot run on the host, the step is refused with the reason: never a silent switch to a
  backend of another target.
- `--target auto` (the default): the backends of `modern`, then of `centos6`, then those that
  name no target; the first one usable on the host. Falling back is what `auto` means, and the
  reason (why the preferred one cannot run) is part of the choice `plan` and `backends` show.

Without a host (`validate`, `export`) the host is not probed: the first candidate is chosen.

An SSH host is reached only by commands, so an implementation that works in this process's
kernel or files (`local_only`: netlink, pyroute2 on a container's namespace) cannot serve it.
With `--target T`, when every backend of T is ruled out for that reason alone, the step is
served by a backend of another target that runs commands (netlink → iproute2), and the choice's
reason says so: `plan` and `backends --host` show it. Never silent, never for another reason.
"""

from __future__ import annotations

from typing import NamedTuple

from .actions import Registered, Registry
from .errors import failure_line
from .hosts import Host

TARGETS = ("centos6", "modern")
TARGET_NAMES = ("auto", *TARGETS)
AUTO_ORDER = ("modern", "centos6")  # what `auto` prefers, in order


class BackendChoiceError(ValueError):
    """No implementation of an action fits the request; the message says why."""


class Choice(NamedTuple):
    backend: str
    why: str  # e.g. "serves target modern", "pinned by the step"


def unusable(reg: Registered, host: Host | None) -> str | None:
    """Why this implementation cannot run on host, or None (always None without a host). A
    check that raises makes its backend unusable, with the failure as the reason."""
    if host is None:
        return None
    if host.remote and reg.impl.local_only:
        return f"cannot reach {host.where()}: {reg.impl.local_only}"
    try:
        return reg.impl.unusable(host)
    except Exception as exc:  # plugin code: its failure is the reason, on one line
        return failure_line(exc, method="unusable", action=reg.impl.name,
                            backend=reg.impl.backend, plugin=reg.plugin)


def choose(registry: Registry, action: str, target: str, host: Host | None,
           pinned: str | None = None) -> Choice:
    """The backend that serves `action` for `target` on `host` (None: do not probe the host),
    and why it is the one."""
    impls = registry.implementations(action)
    if not impls:
        raise BackendChoiceError(f"no backend implements {action}")
    where = host.name if host is not None else "this host"
    if pinned:
        if pinned not in impls:
            raise BackendChoiceError(f"backend {pinned!r} does not implement {action} "
                                     f"(implemented by: {', '.join(sorted(impls))})")
        reason = unusable(impls[pinned], host)
        if reason:
            raise BackendChoiceError(f"backend {pinned!r} cannot run on {where}: {reason}")
        return Choice(pinned, "pinned by the step")
    if target not in TARGET_NAMES:
        raise BackendChoiceError(f"unknown target {target!r} (known: {', '.join(TARGET_NAMES)})")

    neutral = [b for b, reg in impls.items() if not reg.impl.targets]
    if target != "auto":
        serving = [b for b, reg in impls.items() if target in reg.impl.targets]
        candidates = serving or neutral
        if not candidates:
            others = "; ".join(f"{b} serves {', '.join(reg.impl.targets)}"
                               for b, reg in impls.items())
            raise BackendChoiceError(f"no backend of {action} serves target {target} ({others})")
        why = f"serves target {target}" if serving else "serves every target"
        refusals = []
        for backend in candidates:
            reason = unusable(impls[backend], host)
            if reason is None:
                return Choice(backend, why)
            refusals.append(f"{backend}: {reason}")
        if host is not None and host.remote and all(impls[b].impl.local_only
                                                    for b in candidates):
            for other_target in [*AUTO_ORDER, None]:
                others = neutral if other_target is None else [
                    b for b, reg in impls.items() if other_target in reg.impl.targets]
                for backend in others:
                    if backend not in candidates and unusable(impls[backend], host) is None:
                        return Choice(backend, f"target {target} on an SSH host: "
                                      f"{'; '.join(refusals)}; {backend} serves it with "
                                      "commands on the host")
        raise BackendChoiceError(f"the backend of target {target} cannot run on {where} "
                                 f"({'; '.join(refusals)}); pick another --target, or pin a "
                                 "backend in the step")

    passed_over = []
    for preferred in [*AUTO_ORDER, None]:
        candidates = neutral if preferred is None else [
            b for b, reg in impls.items() if preferred in reg.impl.targets]
        for backend in candidates:
            reason = unusable(impls[backend], host)
            if reason is None:
                why = "auto: " + (f"serves {preferred}" if preferred else "serves every target")
                if passed_over:
                    why += f" ({'; '.join(passed_over)})"
                return Choice(backend, why)
            passed_over.append(f"{backend} cannot run here: {reason}")
    raise BackendChoiceError(f"no backend of {action} can run on {where} "
                             f"({'; '.join(passed_over)})")


def choose_backend(registry: Registry, action: str, target: str, host: Host | None,
                   pinned: str | None = None) -> str:
    """The backend that serves `action` (see `choose`)."""
    return choose(registry, action, target, host, pinned).backend
