"""docker.daemon through `/etc/docker/daemon.json` (backend `daemon-json`, target modern):
the settings are the file's keys; other keys are kept. Restarted with systemctl unless the
inventory gives the service's commands. The shared semantics are in daemon.py."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from runflow.core.errors import ActionError

from ..system.service import SYSTEMD
from .daemon import EXCLUSIVE, DaemonConfig


class DaemonJson(DaemonConfig):
    backend = "daemon-json"
    targets = ("modern",)
    default_path = "/etc/docker/daemon.json"
    inventory_key = "docker_config"
    service_manager = SYSTEMD
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
