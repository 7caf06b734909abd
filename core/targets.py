"""Targets: which backend serves each family of actions.

`centos6` uses the tools of a CentOS 6 host (ip, brctl, ovs-vsctl, iptables, docker's
sysconfig flags, service); `modern` uses APIs (netlink, OVSDB, the Docker Engine API, systemd);
`auto` probes the host and prefers the modern backend of each family when it is usable.
A step may pin a backend with `backend = "..."`; an action whose family a target does not name
(e.g. a third-party one) is served by its first usable implementation.
"""

from __future__ import annotations

from .actions import Registry
from .hosts import Host

TARGETS: dict[str, dict[str, str]] = {
    "centos6": {
        "link": "iproute2",
        "bridge": "brctl",
        "sysctl": "procfs",
        "firewall": "iptables",
        "ovs": "ovs-vsctl",
        "container": "pipework",
        "docker": "sysconfig",
        "service": "service",
    },
    "modern": {
        "link": "netlink",
        "bridge": "netlink",
        "sysctl": "procfs",
        "firewall": "iptables",
        "ovs": "ovsdb",
        "container": "docker",
        "docker": "daemon-json",
        "service": "systemd",
    },
}
TARGET_NAMES = ("auto", *TARGETS)


class BackendChoiceError(ValueError):
    """No implementation of an action fits the request; the message says why."""


def choose_backend(
    registry: Registry, action: str, target: str, host: Host | None, pinned: str | None = None
) -> str:
    """The backend that serves `action` for `target` on `host` (None: do not probe the host)."""
    impls = registry.implementations(action)
    family = next(iter(impls.values())).impl.family

    def usable(backend: str) -> bool:
        return host is None or impls[backend].impl.unusable(host) is None

    if pinned:
        if pinned not in impls:
            known = ", ".join(sorted(impls))
            raise BackendChoiceError(
                f"backend {pinned!r} does not implement {action} (implemented by: {known})"
            )
        if not usable(pinned):
            raise BackendChoiceError(
                f"backend {pinned!r} cannot run on {host.name}: {impls[pinned].impl.unusable(host)}"
            )
        return pinned
    preferences = (
        [TARGETS["modern"].get(family), TARGETS["centos6"].get(family)]
        if target == "auto"
        else [TARGETS[target].get(family)]
    )
    for backend in preferences:
        if backend in impls and usable(backend):
            return backend
    wanted = [b for b in preferences if b in impls]
    if wanted and target != "auto":
        raise BackendChoiceError(
            f"backend {wanted[0]!r} (target {target}) cannot run on {host.name}: "
            f"{impls[wanted[0]].impl.unusable(host)}"
        )
    for backend in impls:
        if usable(backend):
            return backend
    reasons = "; ".join(f"{b}: {r.impl.unusable(host)}" for b, r in impls.items())
    raise BackendChoiceError(f"no backend for {action} can run on {host.name} ({reasons})")
