"""Linux bridges (bridge.present, bridge.absent, bridge.port), and their backend `brctl`
(target centos6): `brctl addbr`, `delbr`, `addif`, `delif`, as CentOS 6 (bridge-utils 1.2,
iproute 2.6.32) makes bridges.

The actions are written over iproute2.py's model, like the link actions: the brctl backend
binds them to the same CentOS 6 commands as iproute2 (so a bridge step and an `ip` step of one
workflow read and change links the same way), and netlink.py binds them to netlink.
"""

from __future__ import annotations

from typing import Any

from runflow.core.actions import ShellStep, State
from runflow.core.export import value_of, word
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .iproute2 import (ALL_KEYS, Centos6, LinkAction, ShellLinux, ShellVar, View, backend_actions,
                       bridge_problem, link_record, master_changes, shell_exists, shell_is_port,
                       shell_master, sys_path, tools_missing)
from .args import AddBridge, BridgeArgs, BridgePortArgs, Change, DelLink, Enslave, Release


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

    def shell(self, host: Host, args: BridgeArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        exists = var("exists")
        return ShellStep(
            check=f"[ -d {sys_path(args.name, 'bridge')} ]",
            save=(f"if {shell_exists(args.name)}; then {exists}=1; else {exists}=0; fi",),
            saved=(exists,), apply=tuple(out.run(AddBridge(args.name))),
            undo=(f"if [ \"${exists}\" = 0 ] && {shell_exists(args.name)}; then "
                  f"{out.one_line(DelLink(args.name, 'bridge'))}; fi",))


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

    def shell(self, host: Host, args: BridgeArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        save, saved = out.save_link(args.name, var, ALL_KEYS)
        return ShellStep(
            check=f"! {shell_exists(args.name)}", save=tuple(save), saved=tuple(saved),
            apply=tuple(out.run(DelLink(args.name, "bridge"))),
            undo=tuple(out.restore_link(args.name, var, ALL_KEYS, kind="bridge")))


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

    def shell(self, host: Host, args: BridgePortArgs, var: ShellVar) -> ShellStep:
        out = ShellLinux(self.linux, host)
        now = var("now")
        release = f"if [ -n \"${now}\" ]; then " \
                  f"{out.one_line(Release(args.name, value_of(now)))}; fi"
        if args.present:
            holds = shell_is_port(args.bridge, args.name)
            change = (f"if [ \"${now}\" != {word(args.bridge)} ]; then {release}; "
                      f"{out.one_line(Enslave(args.name, args.bridge))}; fi")
        else:
            holds = f"! {shell_is_port(args.bridge, args.name)}"
            change = f"if [ \"${now}\" = {word(args.bridge)} ]; then {release}; fi"
        save, saved = out.save_link(args.name, var, ("master",))
        return ShellStep(check=holds, save=tuple(save), saved=tuple(saved),
                         apply=(shell_master(args.name, now), change),
                         undo=tuple(out.restore_link(args.name, var, ("master",))))


BRIDGE_ACTIONS = (BridgePresent, BridgeAbsent, BridgePort)


def _unusable(host: Host) -> str | None:
    # `ip link set BR down` comes before `brctl delbr`; sh starts a batch's brctl commands
    return tools_missing("brctl", "ip", "sh")


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in backend_actions(Centos6, "brctl", ("centos6",), _unusable, BRIDGE_ACTIONS):
        register(action)
