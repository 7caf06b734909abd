"""Fixtures for the docker tests: a network namespace with its own dockerd (and, for the OVS
tests, its own ovsdb-server and ovs-vswitchd), a busybox image built offline, and an inventory
naming that host. Everything is torn down even when a test fails."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runflow.core.lab.dockerd import BUSYBOX_IMAGE, Dockerd, build_busybox_image
from runflow.core.lab.namespaces import Namespace, unique_name
from runflow.core.lab.ovs import OvsDaemons
from tests.conftest import missing_prerequisite, need_tools

TARGETS = ("modern", "centos6")


@dataclass
class DockerHost:
    """One lab host: a namespace, its dockerd, and optionally its OVS daemons."""

    ns: Namespace
    dockerd: Dockerd
    client: Any  # docker.DockerClient
    ovs: OvsDaemons | None = None
    image: str = BUSYBOX_IMAGE

    def inventory(self, path: Path, *, extra: str = "") -> Path:
        """Write an inventory naming this host as h1."""
        lines = ["[hosts.h1]", f'netns = "{self.ns.name}"', f'docker = "{self.dockerd.url}"']
        if self.ovs is not None:
            lines.append(f'ovsdb = "{self.ovs.endpoint}"')
        path.write_text("\n".join(lines) + "\n" + extra)
        return path

    def sleeper(self, name: str, **kwargs: Any) -> Any:
        """A container that only sleeps, with no network: the one tests attach."""
        return self.client.containers.run(self.image, ["sleep", "3600"], name=name, detach=True,
                                          init=True, network_mode="none", **kwargs)

    def links(self) -> list[str]:
        """The links of the host namespace, by name."""
        out = self.ns.run(["ip", "-o", "link", "show"]).stdout
        return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def need_docker() -> None:
    need_tools("dockerd", "nsenter", "ip", "busybox")
    try:
        import docker  # noqa: F401
    except ImportError:
        missing_prerequisite("the docker Python package is not installed")


def start_host(*, ovs: bool = False, sysconfig: bool = False) -> Iterator[DockerHost]:
    """Bring a lab host up; tear it down (daemons by pid, mounts, files, namespace) after."""
    import docker

    ns = Namespace(unique_name("rfdk")).create()
    state = tempfile.mkdtemp(prefix="rfdk", dir="/tmp")
    daemon = Dockerd(ns, Path(state) / "d", sysconfig=sysconfig)
    switch = OvsDaemons(ns, Path(state) / "o") if ovs else None
    client = None
    try:
        if switch is not None:
            switch.start()
        daemon.start()
        client = docker.DockerClient(base_url=daemon.url)
        build_busybox_image(client)
        yield DockerHost(ns, daemon, client, switch)
    finally:
        if client is not None:
            for container in client.containers.list(all=True):
                container.remove(force=True)
            client.close()
        daemon.remove()
        if switch is not None:
            switch.stop()
        ns.delete()
        subprocess.run(["rm", "-rf", "--one-file-system", state], check=False)


@pytest.fixture(scope="module")
def docker_host() -> Iterator[DockerHost]:
    """A host with dockerd and OVS, shared by a module's tests (each uses its own names)."""
    need_docker()
    need_tools("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "brctl")
    yield from start_host(ovs=True)


@pytest.fixture
def fresh_docker_host(request: pytest.FixtureRequest) -> Iterator[DockerHost]:
    """A host of its own, for tests that reconfigure and restart its dockerd; the
    parameter "sysconfig" gives it a CentOS 6 style /etc/sysconfig/docker."""
    need_docker()
    yield from start_host(sysconfig=getattr(request, "param", "") == "sysconfig")
