"""docker.daemon: the docker daemon's bridge settings, written where the host's docker reads
them — `/etc/docker/daemon.json` (backend `daemon-json`, target modern) or the other_args line
of `/etc/sysconfig/docker` (backend `sysconfig`, CentOS 6's docker-io init script). The file
may be named by the step (`config`) or the inventory (`docker_config = "/path"` for
daemon.json, `docker_sysconfig = "/path"` for the sysconfig file, in the host's table). Undo puts the file back byte for byte, or removes it if it did not exist.

Only the settings a step gives are written. `bridge` and `bip` exclude each other (dockerd
refuses both), so setting one drops the other from the file. A `bridge` that is an Open vSwitch
bridge fails the step before anything changes: dockerd cannot attach containers to it.

With `restart = "docker"` the step restarts that service right after the file changed, and
again after undo restored it (see backends/system/service.py for why service.restart's undo cannot).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from typing import Any, ClassVar

from runflow.core.actions import Action, Context, ShellStep, State, sh
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .attachment import linux_bridge, vsctl_argv
from .args import DockerDaemonArgs
from ..system.service import service_argv

SETTINGS = ("bridge", "bip", "fixed_cidr", "mtu", "iptables")
EXCLUSIVE = {"bridge": "bip", "bip": "bridge"}

OVS_BRIDGE_HELP = (
    "{bridge} is an Open vSwitch bridge: dockerd cannot attach containers to it (container "
    "start fails with 'operation not supported'). Give docker a Linux bridge (e.g. docker0, "
    "bridge.present + addr.present) and enslave the OVS bridge into it (brctl addif docker0 "
    "{bridge}: its internal port is an ordinary device), or start containers with network = "
    "\"none\" and attach them to {bridge} with container.attach"
)

# A fixed script with the data as arguments: what `plan` and `export` show for a file write.
_WRITE = ["sh", "-c", 'printf "%s" "$1" > "$2"', "write"]


def wanted(args: DockerDaemonArgs) -> dict[str, Any]:
    """The settings the step gives, normalised."""
    values = {key: getattr(args, key) for key in SETTINGS if getattr(args, key) is not None}
    if "bip" in values:
        values["bip"] = str(ipaddress.ip_interface(values["bip"]))
    return values


class DaemonConfig(Action):
    """What both backends share: everything but reading and writing the file's format."""

    name = "docker.daemon"
    family = "docker"
    Args = DockerDaemonArgs
    summary = "the docker daemon's bridge settings (-b, --bip, --fixed-cidr, --mtu, --iptables)"
    default_path: ClassVar[str]
    inventory_key: ClassVar[str]
    # Killed between writing the file and restarting, the file holds but the daemon runs
    # the old settings: in doubt, write (a no-op) and restart again.
    reapply_in_doubt = True  # the host setting that names the file instead
    service_backend: ClassVar[str]  # how to restart when the inventory gives no command

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return None

    def parse(self, text: str) -> dict[str, Any]:
        """The settings in the file's text (normalised like `wanted`)."""
        raise NotImplementedError

    def render(self, text: str, settings: dict[str, Any]) -> str:
        """The file's text with settings written and the excluded ones dropped."""
        raise NotImplementedError

    def path(self, ctx: Context, args: DockerDaemonArgs) -> str:
        return args.config or ctx.host.settings.get(self.inventory_key) or self.default_path

    def observe(self, ctx: Context, args: DockerDaemonArgs) -> State:
        path = self.path(ctx, args)
        try:
            with open(path, "rb") as f:
                # surrogateescape: any byte survives the journal's JSON and comes back exactly
                text: str | None = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise ActionError(f"cannot read {path}: {exc.strerror}") from None
        return {
            "path": path,
            "text": text,
            "settings": self.parse(text or ""),
            "ovs_bridge": bool(args.bridge) and self._ovs_bridge(ctx, args.bridge),
            "restart": service_argv(ctx.host, self.service_backend, "restart", args.restart)
            if args.restart else None,
        }

    def check(self, args: DockerDaemonArgs, before: State) -> bool:
        if before["ovs_bridge"]:
            return False
        settings = before["settings"]
        return all(settings.get(k) == v for k, v in wanted(args).items()) and not any(
            EXCLUSIVE.get(k) in settings for k in wanted(args))

    def apply(self, ctx: Context, args: DockerDaemonArgs, before: State) -> None:
        if before["ovs_bridge"]:
            raise ActionError(OVS_BRIDGE_HELP.format(bridge=args.bridge))
        self._write(ctx, before["path"], self.render(before["text"] or "", wanted(args)))
        if before["restart"]:
            ctx.run(before["restart"])

    def undo(self, ctx: Context, args: DockerDaemonArgs, before: State) -> None:
        path, text = before["path"], before["text"]
        try:
            with open(path, "rb") as f:
                now: str | None = f.read().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            now = None
        if now == text:
            return
        if text is None:
            ctx.commands.append(ctx.host.describe(["rm", "-f", path]))
            os.unlink(path)
        else:
            self._write(ctx, path, text)
        if before["restart"]:
            ctx.run(before["restart"])

    def describe(self, args: DockerDaemonArgs, before: State | None = None) -> list[list[str]]:
        if before is None:
            return [[*_WRITE, "...", self.default_path]]
        text = self.render(before["text"] or "", wanted(args))
        return [[*_WRITE, text, before["path"]], *([before["restart"]] if before["restart"]
                                                  else [])]

    def describe_undo(self, args: DockerDaemonArgs, before: State | None = None
                      ) -> list[list[str]]:
        if before is None:
            return []
        restore = (["rm", "-f", before["path"]] if before["text"] is None
                   else [*_WRITE, before["text"], before["path"]])
        return [restore, *([before["restart"]] if before["restart"] else [])]

    @staticmethod
    def _write(ctx: Context, path: str, text: str) -> None:
        """Replace the file in one step (a crash leaves the old or the new, never half),
        keeping its mode."""
        ctx.commands.append(ctx.host.describe([*_WRITE, text, path]))
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.runflow-tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    @staticmethod
    def _ovs_bridge(ctx: Context, name: str) -> bool:
        if linux_bridge(name) or shutil.which("ovs-vsctl") is None:
            return False
        return ctx.run([*vsctl_argv(ctx.host), "--timeout=5", "br-exists", name],
                       check=False).returncode == 0


class DaemonJson(DaemonConfig):
    backend = "daemon-json"
    targets = ("modern",)
    default_path = "/etc/docker/daemon.json"
    inventory_key = "docker_config"
    service_backend = "systemd"
    KEYS = {"bridge": "bridge", "bip": "bip", "fixed_cidr": "fixed-cidr", "mtu": "mtu",
            "iptables": "iptables"}

    def _load(self, text: str) -> dict[str, Any]:
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ActionError(f"the docker daemon's configuration is not valid JSON: {exc}")
        if not isinstance(data, dict):
            raise ActionError("the docker daemon's configuration must be a JSON object")
        return data

    def parse(self, text: str) -> dict[str, Any]:
        data = self._load(text)
        settings = {key: data[name] for key, name in self.KEYS.items() if name in data}
        if "bip" in settings:
            settings["bip"] = str(ipaddress.ip_interface(settings["bip"]))
        return settings

    def render(self, text: str, settings: dict[str, Any]) -> str:
        data = self._load(text)
        for key, value in settings.items():
            data.pop(self.KEYS.get(EXCLUSIVE.get(key, ""), ""), None)
            data[self.KEYS[key]] = value
        return json.dumps(data, indent=2) + "\n"


class Sysconfig(DaemonConfig):
    """CentOS 6: /etc/sysconfig/docker's `other_args="..."`, passed to `docker -d` by the init
    script. Other lines and other flags are kept."""

    backend = "sysconfig"
    targets = ("centos6",)
    default_path = "/etc/sysconfig/docker"
    inventory_key = "docker_sysconfig"
    service_backend = "service"
    FLAGS = {"bridge": ("-b", "--bridge"), "bip": ("--bip",), "fixed_cidr": ("--fixed-cidr",),
             "mtu": ("--mtu",), "iptables": ("--iptables",)}
    LINE = re.compile(r"^\s*other_args=(.*)$", re.MULTILINE)

    def _args(self, text: str) -> list[str]:
        found = self.LINE.search(text)
        if not found:
            return []
        try:
            value = shlex.split(found.group(1))
            return shlex.split(value[0]) if value else []
        except ValueError as exc:
            raise ActionError(f"cannot read other_args: {exc}") from None

    def _walk(self, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The managed settings in argv, and argv without them."""
        by_flag = {flag: key for key, flags in self.FLAGS.items() for flag in flags}
        settings: dict[str, Any] = {}
        rest: list[str] = []
        i = 0
        while i < len(argv):
            flag, eq, value = argv[i].partition("=")
            key = by_flag.get(flag)
            if key is None:
                rest.append(argv[i])
            elif key == "iptables":  # a boolean flag: --iptables or --iptables=false
                settings[key] = (value or "true").lower() not in ("false", "0")
            else:
                if not eq and i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                settings[key] = int(value) if key == "mtu" and value.isdigit() else value
            i += 1
        if "bip" in settings:
            settings["bip"] = str(ipaddress.ip_interface(settings["bip"]))
        return settings, rest

    def parse(self, text: str) -> dict[str, Any]:
        return self._walk(self._args(text))[0]

    def render(self, text: str, settings: dict[str, Any]) -> str:
        current, rest = self._walk(self._args(text))
        for key in settings:  # set flags go last, in order, as the exported sed script does
            current.pop(EXCLUSIVE.get(key, ""), None)
            current.pop(key, None)
        current.update(settings)
        flags = []
        for key, value in current.items():
            flag = self.FLAGS[key][-1]
            flags.append(f"{flag}={str(value).lower() if key == 'iptables' else value}")
        line = f'other_args="{" ".join([*rest, *flags])}"'
        if self.LINE.search(text):
            return self.LINE.sub(lambda _: line, text, count=1)
        return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


    def shell(self, host: Host, args: DockerDaemonArgs, var: Callable[[str], str]
              ) -> ShellStep:
        """The other_args line edited with GNU sed (CentOS 6 has 4.2): the given flags
        replace their old values, other flags stay; undo puts the saved copy back."""
        path = args.config or host.settings.get(self.inventory_key) or self.default_path
        settings = wanted(args)
        line = r"^[[:space:]]*other_args="
        edits, holds = [], []
        for key, value in settings.items():
            flag = self.FLAGS[key][-1]
            word = f"{flag}={str(value).lower() if key == 'iptables' else value}"
            for old in (key, EXCLUSIVE.get(key)):
                if old:
                    alternatives = "|".join(self.FLAGS[old])
                    edits.append(rf'/{line}/ s#[[:space:]]*({alternatives})[= ][^[:space:]"]*##g')
            edits.append(rf'/{line}/ s#"[[:space:]]*$# {word}"#')
            holds.append(sh("grep", "-Eq", rf'{line}.*[" ]{word}([" ]|$)', path))
            if EXCLUSIVE.get(key):
                other = "|".join(self.FLAGS[EXCLUSIVE[key]])
                holds.append("! " + sh("grep", "-Eq", rf'{line}.*[" ]({other})[= ]', path))
        restart = (sh(*service_argv(host, self.service_backend, "restart", args.restart)),) \
            if args.restart else ()
        backup, existed = var("backup"), var("existed")
        return ShellStep(
            check=" && ".join(holds),
            save=(f'{backup}=$(mktemp "${{TMPDIR:-/tmp}}/runflow-docker.XXXXXX")',
                  f"if [ -e {sh(path)} ]; then cp -p {sh(path)} \"${backup}\"; {existed}=1; "
                  f"else {existed}=0; fi"),
            saved=(backup, existed),
            apply=(f"mkdir -p {sh(os.path.dirname(path) or '.')}",
                   f"grep -q {sh(line)} {sh(path)} 2>/dev/null || "
                   f"printf 'other_args=\"\"\\n' >>{sh(path)}",
                   sh("sed", "-r", "-i", *[a for e in edits for a in ("-e", e)], path),
                   *restart),
            undo=(f'if [ "${existed}" = 1 ]; then cp -p "${backup}" {sh(path)}; '
                  f"else rm -f {sh(path)}; fi",
                  f'rm -f "${backup}"', *restart))


@hookimpl
def runflow_register_actions(register: Any) -> None:
    register(DaemonJson)
    register(Sysconfig)
