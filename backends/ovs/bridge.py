"""ovs.bridge.present and ovs.bridge.absent: a bridge (or a fake bridge, a VLAN of another
bridge), its settings, and its removal with everything that goes with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runflow.core.actions import Context, ShellStep, State
from runflow.core.errors import ActionError
from runflow.core.export import indent, word
from runflow.core.hosts import Host

from .actions import (OvsAction, Removal, change, created_by, holds, non_empty, put_back, setting,
                      where)
from .args import (BRIDGE_COLUMNS, RUN_TAG, STEP_TAG, AddBridge, DelBridge, Op,
                   OvsBridgeAbsentArgs, OvsBridgeArgs, View)
from .commands import (EXPORT_RUN, shell_holds, shell_read_back, shell_save_values, shell_tagged,
                       vsctl, vsctl_ops)
from .removal import removal_shell
from .rows import bridges_removal


class BridgePresent(OvsAction):
    name = "ovs.bridge.present"
    Args = OvsBridgeArgs
    summary = ("an Open vSwitch bridge (or fake bridge) exists, with a datapath type, fail mode, "
               "spanning tree and settings")

    @staticmethod
    def wanted(args: OvsBridgeArgs) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
        """The whole columns and the map keys the bridge's row must have (a fake bridge's:
        its Port's)."""
        if args.parent is not None:
            return {}, {"external_ids": args.external_ids}
        columns = {column: value for column, value in (
            ("datapath_type", args.datapath_type),
            ("fail_mode", [] if args.fail_mode == "" else args.fail_mode),
            ("stp_enable", args.stp), ("rstp_enable", args.rstp),
            ("mcast_snooping_enable", args.mcast_snooping)) if value is not None}
        return columns, {"other_config": args.other_config, "external_ids": args.external_ids}

    def scope(self, args: OvsBridgeArgs) -> list[str]:
        return [args.name]  # a fake bridge is a port of this name

    def state(self, view: View, args: OvsBridgeArgs) -> State:
        bridge = view.bridges.get(args.name)
        if bridge is not None:
            return {"exists": True, **{c: bridge.get(c, []) for c in BRIDGE_COLUMNS}}
        port = view.ports.get(args.name)
        if port is not None and port.get("fake_bridge") is True and port["bridge"]:
            return {"exists": True, "parent": port["bridge"], "vlan": port.get("tag"),
                    "external_ids": port.get("external_ids") or {}}
        return {"exists": False}

    @staticmethod
    def table(args: OvsBridgeArgs) -> str:
        """The table of the row that carries the settings: a fake bridge has no Bridge row."""
        return "Port" if args.parent is not None else "Bridge"

    def check(self, args: OvsBridgeArgs, before: State) -> bool:
        return (before["exists"] and _same_kind(args, before) is None
                and holds(before, *self.wanted(args)))

    def changes(self, args: OvsBridgeArgs, before: State, tags: dict[str, str]) -> list[Op]:
        columns, keys = self.wanted(args)
        if not before["exists"]:
            made = non_empty({**columns, **keys, "external_ids": {**args.external_ids, **tags}})
            return [AddBridge(args.name, made, args.parent, args.vlan)]
        problem = _same_kind(args, before)
        if problem:
            raise ActionError(problem)
        return change(self.table(args), args.name, before, columns, keys)

    def restore(self, args: OvsBridgeArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not before["exists"]:
            made = now["exists"] and created_by(now.get("external_ids"), run_id)
            return [DelBridge(args.name)] if made else []
        if not now["exists"] or _same_kind(args, now):
            return []
        return put_back(self.table(args), args.name, before, *self.wanted(args))

    def vanished(self, args: OvsBridgeArgs, before: State, now: State) -> list[str]:
        return [args.name] if not before["exists"] and not now["exists"] else []

    def after(self, args: OvsBridgeArgs) -> State:
        fake = {"parent": args.parent, "vlan": args.vlan} if args.parent else {}
        return {"exists": True, **fake, "external_ids": {RUN_TAG: "RUN"}}

    def shell(self, host: Host, args: OvsBridgeArgs, var: Callable[[str], str]) -> ShellStep:
        """A bridge is checked with `find` on its Bridge row; a fake bridge with br-to-parent
        and br-to-vlan, and `find` on its Port row."""
        db = host.endpoints.get("ovsdb")
        columns, keys = self.wanted(args)
        table = self.table(args)
        existed = var("existed")
        exists = vsctl(db, "br-exists", args.name)
        if args.parent is None:
            kind = shell_holds(db, "Bridge", args.name, {}, {})
        else:
            kind = " && ".join(f"[ \"$({vsctl(db, how, args.name)})\" = {word(value)} ]"
                               for how, value in (("br-to-parent", args.parent),
                                                  ("br-to-vlan", args.vlan)))
        save, names, undo = shell_save_values(db, table, args.name, list(columns),
                                              {c: list(k) for c, k in keys.items()}, var, "old")
        tags = {RUN_TAG: EXPORT_RUN, STEP_TAG: getattr(var, "step", EXPORT_RUN)}
        create = self.changes(args, {"exists": False}, tags)
        update = setting(table, args.name, columns, keys)
        mismatch = (f"bridge {args.name} exists and is not "
                    + (f"a fake bridge of {args.parent} with VLAN {args.vlan}" if args.parent
                       else "a bridge of its own (it is a fake bridge)")
                    + ": remove it first (ovs.bridge.absent)")
        return ShellStep(
            check=f"{exists} && {kind} && {shell_holds(db, table, args.name, columns, keys)}",
            save=(f"if {exists}; then {existed}=1", *indent(save),
                  f"else {existed}=0; {'; '.join(f'{n}=' for n in names) or ':'}; fi"),
            saved=(existed, *names),
            apply=(f"if ! {exists}; then {vsctl_ops(db, create, may_exist=True)}",
                   f"elif ! {{ {kind}; }}; then echo {word(mismatch)} >&2; false",
                   f"else {vsctl_ops(db, update) if update else ':'}; fi",
                   *shell_read_back(db, args.name, var)),
            undo=(f"if [ \"${existed}\" = 0 ]; then",
                  f"    if {shell_tagged(db, table, args.name)}; then "
                  f"{vsctl_ops(db, [DelBridge(args.name)])}; fi",
                  f"elif {exists}; then", *indent(undo or [":"]), "fi"))


def _same_kind(args: OvsBridgeArgs, state: State) -> str | None:
    """Why the existing bridge is not the kind asked for (a bridge, or a fake bridge of that
    parent and VLAN), or None."""
    parent, vlan = state.get("parent"), state.get("vlan")
    if args.parent is None and parent is not None:
        return (f"{args.name} is a fake bridge (VLAN {vlan} of {parent}), not a bridge of its "
                "own: remove it first (ovs.bridge.absent)")
    if args.parent is not None and parent is None:
        return (f"bridge {args.name} exists and is not a fake bridge: remove it first "
                "(ovs.bridge.absent)")
    if args.parent is not None and (parent, vlan) != (args.parent, args.vlan):
        return (f"fake bridge {args.name} is VLAN {vlan} of {parent}, not VLAN {args.vlan} of "
                f"{args.parent}: remove it first (ovs.bridge.absent)")
    return None


class BridgeAbsent(Removal):
    name = "ovs.bridge.absent"
    Args = OvsBridgeAbsentArgs
    summary = ("no Open vSwitch bridge (or fake bridge) of this name (undo recreates it whole: "
               "its ports, settings, mirrors, NetFlow...)")

    def observe_many(self, ctx: Context, args: Sequence[OvsBridgeAbsentArgs]) -> list[State]:
        client = self.client(ctx)
        return [{**state, **where(client)}
                for state in bridges_removal(client, ctx, [a.name for a in args])]

    def check(self, args: OvsBridgeAbsentArgs, before: State) -> bool:
        return not before["exists"]

    def changes(self, args: OvsBridgeAbsentArgs, before: State, tags: dict[str, str]
                ) -> list[Op]:
        return [DelBridge(args.name)]

    def unobserved(self, args: OvsBridgeAbsentArgs) -> State:
        own = {"name": args.name, "interfaces": [{"name": args.name, "type": "internal"}]}
        return {"exists": True, "bridge": {"name": args.name, "ports": [own]}}

    def shell(self, host: Host, args: OvsBridgeAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        return removal_shell(host.endpoints.get("ovsdb"), "bridge", args.name, None, var)
