"""docker.daemon through CentOS 6's `/etc/sysconfig/docker` (backend `sysconfig`, target
centos6): the settings are flags in its `other_args="..."` line, which docker-io's init script
passes to `docker -d`; other lines and other flags are kept. Restarted with `service` unless
the inventory gives the service's commands. The shared semantics are in daemon.py; this
backend also has a shell form for `runflow export` (GNU sed, as CentOS 6 has)."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from runflow.core.actions import ShellStep, sh
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

from ..system.service import SYSVINIT, service_argv
from .args import DockerDaemonArgs
from .daemon import EXCLUSIVE, DaemonConfig, wanted


class Sysconfig(DaemonConfig):
    backend = "sysconfig"
    targets = ("centos6",)
    default_path = "/etc/sysconfig/docker"
    inventory_key = "docker_sysconfig"
    service_manager = SYSVINIT
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
        replace their old values, other flags stay; undo puts the saved copy back and
        removes the directories apply made."""
        path = self.path(host, args)
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
        restart = (sh(*service_argv(host, self.service_manager, "restart", args.restart)),) \
            if args.restart else ()
        backup, existed, made, d = var("backup"), var("existed"), var("made"), var("dir")
        parent = sh(os.path.dirname(path) or ".")
        return ShellStep(
            check=" && ".join(holds),
            save=(f'{backup}=$(mktemp "${{TMPDIR:-/tmp}}/runflow-docker.XXXXXX")',
                  f"if [ -e {sh(path)} ]; then cp -p {sh(path)} \"${backup}\"; {existed}=1; "
                  f"else {existed}=0; fi",
                  # the outermost directory mkdir -p will make, for undo to remove
                  f'{made}=; {d}={parent}; while [ ! -d "${d}" ]; do {made}=${d}; '
                  f'{d}=$(dirname "${d}"); done'),
            saved=(backup, existed, made),
            apply=(f"mkdir -p {parent}",
                   f"grep -q {sh(line)} {sh(path)} 2>/dev/null || "
                   f"printf 'other_args=\"\"\\n' >>{sh(path)}",
                   sh("sed", "-r", "-i", *[a for e in edits for a in ("-e", e)], path),
                   *restart),
            undo=(f'if [ "${existed}" = 1 ]; then cp -p "${backup}" {sh(path)}; '
                  f"else rm -f {sh(path)}; fi",
                  f'rm -f "${backup}"',
                  f'if [ -n "${made}" ]; then {d}={parent}; while rmdir "${d}" 2>/dev/null '
                  f'&& [ "${d}" != "${made}" ]; do {d}=$(dirname "${d}"); done; fi',
                  *restart))
