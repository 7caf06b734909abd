"""Linux bridges (bridge.present, bridge.absent, bridge.port), and their backend `brctl`
(target centos6): `brctl addbr`, `delbr`, `addif`, `delif`, as CentOS 6 (bridge-utils 1.2,
iproute 2.6.32) makes bridges.

The actions are written over iproute2.py's model, like the link actions: the brctl backend
binds them to the same CentOS 6 commands as iproute2 (so a bridge step and an `ip` step of one
workflow read and change links the same way), and netlink.py binds them to netlink.
"""

from __future__ import annotations

from typing import Any

from runflow.core.actions import State
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .iproute2 import (Centos6, LinkAction, View, backend_actions, bridge_problem, link_record,
                       master_changes, tools_missing)
from .linux_args import AddBridge, BridgeArgs, BridgePortArgs, Change, DelLink, Release


class BridgePresent(LinkAction):
    name = "bridge.present"
    family = "bridge"
    Args = BridgeArgs
    summary = "a Linux bridge exists"

    def look(self, view: View, args: BridgeArgs) -> State:
        return {"links": {args.name: view.link(args.name)}}

    def check(self, args: BridgeArgs, before: State) -> bool:
        return bridge_problem(before, args.name) is None

    def refuse(self, args: BridgeArgs, before: State) -> str | None:
        rec = link_record(before, args.name)
        return bridge_problem(before, args.name) if rec["exists"] else None

    def changes(self, args: BridgeArgs, before: State) -> list[Change]:
        return [] if link_record(before, args.name)["exists"] else [AddBridge(args.name)]


class BridgeAbsent(LinkAction):
    name = "bridge.absent"
    family = "bridge"
    Args = BridgeArgs
    summary = "a Linux bridge does not exist (undo recreates it with its ports and addresses)"

    def look(self, view: View, args: BridgeArgs) -> State:
        return {"links": {args.name: view.link(args.name, full=True)}}

    def check(self, args: BridgeArgs, before: State) -> bool:
        return not link_record(before, args.name)["exists"]

    def refuse(self, args: BridgeArgs, before: State) -> str | None:
        return bridge_problem(before, args.name)

    def changes(self, args: BridgeArgs, before: State) -> list[Change]:
        return [DelLink(args.name, "bridge")] if link_record(before, args.name)["exists"] else []


class BridgePort(LinkAction):
    name = "bridge.port"
    family = "bridge"
    Args = BridgePortArgs
    summary = "a link is (or is not) a port of a Linux bridge"

    def look(self, view: View, args: BridgePortArgs) -> State:
        return {"links": {args.name: view.link(args.name), args.bridge: view.link(args.bridge)}}

    def check(self, args: BridgePortArgs, before: State) -> bool:
        rec = link_record(before, args.name)
        if not rec["exists"]:
            return not args.present
        return (rec["master"] == args.bridge) == args.present

    def refuse(self, args: BridgePortArgs, before: State) -> str | None:
        if not link_record(before, args.name)["exists"]:
            return f"link {args.name} does not exist"
        return bridge_problem(before, args.bridge) if args.present else None

    def changes(self, args: BridgePortArgs, before: State) -> list[Change]:
        current = link_record(before, args.name).get("master")
        if args.present:
            return master_changes(args.name, current, args.bridge)
        return [Release(args.name, args.bridge)] if current == args.bridge else []

    def restore(self, args: BridgePortArgs, before: State, now: State) -> list[Change]:
        was, seen = link_record(before, args.name), link_record(now, args.name)
        if not (was["exists"] and seen["exists"]):
            return []
        return master_changes(args.name, seen["master"], was["master"])


BRIDGE_ACTIONS = (BridgePresent, BridgeAbsent, BridgePort)


def _unusable(host: Host) -> str | None:
    # `ip link set BR down` comes before `brctl delbr`; xargs starts a batch's brctl commands
    return tools_missing("brctl", "ip", "xargs")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "brctl", _unusable, BRIDGE_ACTIONS):
        register(action)
