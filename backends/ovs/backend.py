"""The ovs.* actions of a backend: each action with the backend's name, the targets it serves
and its client (backends/ovs/vsctl.py and ovsdb.py register theirs)."""

from __future__ import annotations

from .actions import OvsAction, OvsClient
from .bridge import BridgeAbsent, BridgePresent
from .port import BondAbsent, BondPresent, PortAbsent, PortPresent
from .record import OvsGet, OvsSet, OvsUnset

ACTIONS = (BridgePresent, BridgeAbsent, PortPresent, PortAbsent, BondPresent, BondAbsent, OvsSet,
           OvsUnset, OvsGet)


def backend_actions(backend: str, client: type[OvsClient],
                    targets: tuple[str, ...]) -> tuple[type[OvsAction], ...]:
    """The ovs.* actions of a backend: each action class with the backend's name, the targets
    it serves and its client."""
    return tuple(type(action.__name__, (action,), {"backend": backend, "targets": targets,
                                                   "Client": client,
                                                   "__module__": client.__module__})
                 for action in ACTIONS)
