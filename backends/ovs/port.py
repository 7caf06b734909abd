"""ovs.port.present / ovs.port.absent and ovs.bond.present / ovs.bond.absent: a port of one
interface, a bond (a port of several), their settings, and their removal with everything that
goes with them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runflow.core.actions import Context, ShellStep, State
from runflow.core.errors import ActionError
from runflow.core.export import indent, value_of, word
from runflow.core.hosts import Host

from .actions import (OvsAction, Removal, change, created_by, holds, non_empty, put_back, setting,
                      where)
from .args import (RUN_TAG, STEP_TAG, AddBond, AddPort, DelPort, Op, OvsBondAbsentArgs,
                   OvsBondArgs, OvsPortAbsentArgs, OvsPortArgs, View)
from .commands import (EXPORT_RUN, shell_holds, shell_read_back, shell_save_values, shell_tagged,
                       vsctl, vsctl_ops)
from .removal import removal_shell
from .rows import ports_removal, upgraded


class PortPresent(OvsAction):
    name = "ovs.port.present"
    Args = OvsPortArgs
    summary = "a port on an Open vSwitch bridge (system, internal, gre, vxlan, patch...)"

    @staticmethod
    def wanted(args: OvsPortArgs) -> tuple[dict[str, Any], dict[str, dict], dict[str, Any],
                                           dict[str, dict]]:
        """Columns, and keys of map columns, of the Port; the same of its Interface."""
        port = {c: v for c, v in (("tag", args.tag), ("vlan_mode", args.vlan_mode),
                                  ("trunks", args.trunks)) if v is not None}
        iface = {"type": args.type} if args.type is not None else {}
        return (port, {"external_ids": args.port_external_ids}, iface,
                {"options": args.options, "external_ids": args.external_ids})

    def scope(self, args: OvsPortArgs) -> list[str]:
        return [args.name]

    def state(self, view: View, args: OvsPortArgs) -> State:
        record = view.port_record(args.name)
        return {"exists": False} if record is None else {"exists": True, **record}

    def check(self, args: OvsPortArgs, before: State) -> bool:
        if not before["exists"] or before["bridge"] != args.bridge or "bond" in before:
            return False
        port, port_keys, iface, iface_keys = self.wanted(args)
        return holds(before["port"], port, port_keys) and \
            holds(before["interface"], iface, iface_keys)

    def changes(self, args: OvsPortArgs, before: State, tags: dict[str, str]) -> list[Op]:
        port, port_keys, iface, iface_keys = self.wanted(args)
        if not before["exists"]:
            if iface.get("type") == "system":
                del iface["type"]  # what add-port makes anyway
            return [AddPort(args.bridge, args.name,
                            {**port, "external_ids": {**args.port_external_ids, **tags}},
                            non_empty({**iface, **iface_keys}))]
        if before["bridge"] != args.bridge:
            raise ActionError(f"port {args.name} is on bridge {before['bridge']}, not "
                              f"{args.bridge}: remove it from there first (ovs.port.absent)")
        if "bond" in before:
            raise ActionError(f"port {args.name} is a bond ({', '.join(before['bond'])}): "
                              "manage it with ovs.bond.present")
        return (change("Port", args.name, before["port"], port, port_keys)
                + change("Interface", args.name, before["interface"], iface, iface_keys))

    def restore(self, args: OvsPortArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not before["exists"]:
            made = now["exists"] and created_by(now["port"].get("external_ids"), run_id)
            return [DelPort(now["bridge"], args.name)] if made else []
        if not now["exists"]:
            return []
        port, port_keys, iface, iface_keys = self.wanted(args)
        return (put_back("Port", args.name, before["port"], port, port_keys)
                + put_back("Interface", args.name, before["interface"], iface, iface_keys))

    def vanished(self, args: OvsPortArgs, before: State, now: State) -> list[str]:
        made = not before["exists"] and args.type == "internal"
        return [args.name] if made and not now["exists"] else []

    def after(self, args: OvsPortArgs) -> State:
        return {"exists": True, "bridge": args.bridge, "port": {"external_ids": {RUN_TAG: "RUN"}},
                "interface": {}}

    def shell(self, host: Host, args: OvsPortArgs, var: Callable[[str], str]) -> ShellStep:
        db = host.endpoints.get("ovsdb")
        port, port_keys, iface, iface_keys = self.wanted(args)
        existed, bridge = var("existed"), var("bridge")
        on_bridge = (f"[ \"$({vsctl(db, 'port-to-br', args.name)} 2>/dev/null)\" = "
                     f"{word(args.bridge)} ]")
        checks = [on_bridge, shell_holds(db, "Port", args.name, port, port_keys),
                  shell_holds(db, "Interface", args.name, iface, iface_keys)]
        save_port, port_names, undo_port = shell_save_values(
            db, "Port", args.name, list(port), {c: list(k) for c, k in port_keys.items()}, var,
            "port")
        save_iface, iface_names, undo_iface = shell_save_values(
            db, "Interface", args.name, list(iface), {c: list(k) for c, k in iface_keys.items()},
            var, "iface")
        names = [*port_names, *iface_names]
        tags = {RUN_TAG: EXPORT_RUN, STEP_TAG: getattr(var, "step", EXPORT_RUN)}
        create = self.changes(args, {"exists": False}, tags)
        update = (setting("Port", args.name, port, port_keys)
                  + setting("Interface", args.name, iface, iface_keys))
        elsewhere = (f"port {args.name} is on bridge ${bridge}, not {args.bridge}: remove it "
                     "from there first (ovs.port.absent)")
        return ShellStep(
            check=" && ".join(checks),
            save=(f"if {vsctl(db, 'port-to-br', args.name)} >/dev/null 2>&1; then {existed}=1",
                  *indent([*save_port, *save_iface]),
                  f"else {existed}=0; {'; '.join(f'{n}=' for n in names) or ':'}; fi"),
            saved=(existed, *names),
            apply=(f"{bridge}=$({vsctl(db, 'port-to-br', args.name)} 2>/dev/null || true)",
                   f"if [ -z \"${bridge}\" ]; then {vsctl_ops(db, create, may_exist=True)}",
                   f"elif [ \"${bridge}\" != {word(args.bridge)} ]; then "
                   f"echo \"{elsewhere}\" >&2; false",
                   f"else {vsctl_ops(db, update) if update else ':'}; fi",
                   *shell_read_back(db, args.name, var)),
            undo=(f"if [ \"${existed}\" = 0 ]; then",
                  f"    if {shell_tagged(db, 'Port', args.name)}; then "
                  f"{vsctl_ops(db, [DelPort(None, args.name)])}; fi",
                  f"elif {vsctl(db, 'port-to-br', args.name)} >/dev/null 2>&1; then",
                  *indent([*undo_port, *undo_iface] or [":"]), "fi"))


class BondPresent(OvsAction):
    name = "ovs.bond.present"
    Args = OvsBondArgs
    summary = "a bond (a port of several interfaces, with LACP) on an Open vSwitch bridge"

    @staticmethod
    def wanted(args: OvsBondArgs) -> tuple[dict[str, Any], dict[str, dict]]:
        columns = {c: v for c, v in (("bond_mode", args.bond_mode), ("lacp", args.lacp))
                   if v is not None}
        return columns, {"other_config": args.other_config, "external_ids": args.external_ids}

    def scope(self, args: OvsBondArgs) -> list[str]:
        return [args.name, *args.interfaces]  # so that its interfaces are known by name

    def state(self, view: View, args: OvsBondArgs) -> State:
        record = view.port_record(args.name)
        if record is None:
            return {"exists": False}
        return {"exists": True, "bridge": record["bridge"], "port": record["port"],
                "interfaces": record["interfaces"]}

    def check(self, args: OvsBondArgs, before: State) -> bool:
        return (before["exists"] and _bond_problem(args, before) is None
                and holds(before["port"], *self.wanted(args)))

    def changes(self, args: OvsBondArgs, before: State, tags: dict[str, str]) -> list[Op]:
        columns, keys = self.wanted(args)
        if not before["exists"]:
            made = non_empty({**columns, **keys, "external_ids": {**args.external_ids, **tags}})
            return [AddBond(args.bridge, args.name, tuple(args.interfaces), made)]
        problem = _bond_problem(args, before)
        if problem:
            raise ActionError(problem)
        return change("Port", args.name, before["port"], columns, keys)

    def restore(self, args: OvsBondArgs, before: State, now: State, run_id: str) -> list[Op]:
        if not before["exists"]:
            made = now["exists"] and created_by(now["port"].get("external_ids"), run_id)
            return [DelPort(now["bridge"], args.name)] if made else []
        if not now["exists"]:
            return []
        return put_back("Port", args.name, before["port"], *self.wanted(args))

    def after(self, args: OvsBondArgs) -> State:
        return {"exists": True, "bridge": args.bridge, "interfaces": sorted(args.interfaces),
                "port": {"external_ids": {RUN_TAG: "RUN"}}}

    def shell(self, host: Host, args: OvsBondArgs, var: Callable[[str], str]) -> ShellStep:
        """The interfaces are checked by name, in the order `get` lists them (by UUID)."""
        db = host.endpoints.get("ovsdb")
        columns, keys = self.wanted(args)
        existed, bridge, members = var("existed"), var("bridge"), var("members")
        on = f"{vsctl(db, 'port-to-br', args.name)} 2>/dev/null"
        iface = var("iface")
        names = (f"$(for {iface} in $({vsctl(db, 'get', 'Port', args.name, 'interfaces')} | "
                 f"tr -d '[],'); do {vsctl(db, 'get', 'Interface', value_of(iface), 'name')}; "
                 "done | sort)")
        wanted = word("\n".join(sorted(args.interfaces)))
        save, saved, undo = shell_save_values(db, "Port", args.name, list(columns),
                                              {c: list(k) for c, k in keys.items()}, var, "old")
        tags = {RUN_TAG: EXPORT_RUN, STEP_TAG: getattr(var, "step", EXPORT_RUN)}
        create = self.changes(args, {"exists": False}, tags)
        update = setting("Port", args.name, columns, keys)
        other = (f"bond {args.name} is not on bridge {args.bridge} with interfaces "
                 f"{', '.join(args.interfaces)}: remove it first (ovs.bond.absent)")
        return ShellStep(
            check=(f"[ \"$({on})\" = {word(args.bridge)} ] && [ \"{names}\" = {wanted} ] && "
                   f"{shell_holds(db, 'Port', args.name, columns, keys)}"),
            save=(f"if {on} >/dev/null; then {existed}=1", *indent(save),
                  f"else {existed}=0; {'; '.join(f'{n}=' for n in saved) or ':'}; fi"),
            saved=(existed, *saved),
            apply=(f"{bridge}=$({on} || true)",
                   f"if [ -z \"${bridge}\" ]; then {vsctl_ops(db, create, may_exist=True)}",
                   f"elif {members}=\"{names}\"; [ \"${bridge}\" != {word(args.bridge)} ] || "
                   f"[ \"${members}\" != {wanted} ]; then echo {word(other)} >&2; false",
                   f"else {vsctl_ops(db, update) if update else ':'}; fi",
                   *(line for i in args.interfaces for line in shell_read_back(db, i, var))),
            undo=(f"if [ \"${existed}\" = 0 ]; then",
                  f"    if {shell_tagged(db, 'Port', args.name)}; then "
                  f"{vsctl_ops(db, [DelPort(None, args.name)])}; fi",
                  f"elif {on} >/dev/null; then", *indent(undo or [":"]), "fi"))


def _bond_problem(args: OvsBondArgs, state: State) -> str | None:
    """Why the existing port is not the bond asked for (another bridge, other interfaces)."""
    if state["bridge"] != args.bridge:
        return (f"port {args.name} is on bridge {state['bridge']}, not {args.bridge}: remove "
                "it from there first (ovs.bond.absent)")
    if sorted(state["interfaces"]) != sorted(args.interfaces):
        return (f"port {args.name} has the interfaces {', '.join(state['interfaces'])}, not "
                f"{', '.join(sorted(args.interfaces))}: a bond gets its interfaces when it is "
                "made, so remove it first (ovs.bond.absent)")
    return None


class PortAbsent(Removal):
    name = "ovs.port.absent"
    Args = OvsPortAbsentArgs
    summary = ("no Open vSwitch port of this name (undo recreates it whole: its interfaces, "
               "settings, QoS and mirror selections)")

    def observe_many(self, ctx: Context, args: Sequence[OvsPortAbsentArgs]) -> list[State]:
        client = self.client(ctx)
        return [{**state, **where(client)}
                for state in ports_removal(client, ctx, [a.name for a in args])]

    def check(self, args: OvsPortAbsentArgs, before: State) -> bool:
        return not before["exists"] or (args.bridge is not None
                                        and before["bridge"] != args.bridge)

    def changes(self, args: OvsPortAbsentArgs, before: State, tags: dict[str, str]
                ) -> list[Op]:
        return [DelPort(before.get("bridge") or args.bridge, args.name)]

    def unobserved(self, args: OvsPortAbsentArgs) -> State:
        port = {"name": args.name, "interfaces": [{"name": args.name}]}
        return {"exists": True, "bridge": args.bridge or "BRIDGE", "ports": [port],
                "mirrors": {}}

    def shell(self, host: Host, args: OvsPortAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        return removal_shell(host.endpoints.get("ovsdb"), "port", args.name, args.bridge, var)


class BondAbsent(PortAbsent):
    name = "ovs.bond.absent"
    Args = OvsBondAbsentArgs
    summary = ("no Open vSwitch bond of this name (undo recreates it whole: its interfaces and "
               "settings)")

    def changes(self, args: OvsBondAbsentArgs, before: State, tags: dict[str, str]
                ) -> list[Op]:
        interfaces = upgraded(before, args.name)["ports"][0].get("interfaces", [])
        if len(interfaces) < 2:
            raise ActionError(f"port {args.name} is not a bond (it has one interface): remove "
                              "it with ovs.port.absent")
        return super().changes(args, before, tags)

    def unobserved(self, args: OvsBondAbsentArgs) -> State:
        state = super().unobserved(args)
        state["ports"][0]["interfaces"] = [{"name": "IFACE1"}, {"name": "IFACE2"}]
        return state

    def shell(self, host: Host, args: OvsBondAbsentArgs, var: Callable[[str], str]
              ) -> ShellStep:
        return removal_shell(host.endpoints.get("ovsdb"), "bond", args.name, args.bridge, var)
