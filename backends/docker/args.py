"""Argument schemas of the container and docker daemon actions, shared by every backend that
implements them (docker, pipework, daemon-json, sysconfig)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from runflow.core.actions import Args
from runflow.core.fields import Argv, IfName, IPAddress, IPInterface, IPNetwork, Name


def _image(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}", value):
        raise ValueError(f"{value!r} is not an image reference (e.g. busybox:1.36 or "
                         "registry.example:5000/team/app@sha256:...)")
    return value


def _mac(value: str) -> str:
    value = value.lower()
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", value):
        raise ValueError(f"{value!r} is not a MAC address (six hex pairs, e.g. 02:42:ac:11:00:02)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value!r} is a multicast address: an interface needs a unicast one "
                         "(even first byte, e.g. 02:...)")
    return value


def _path(value: str) -> str:
    if not value.startswith("/") or "\x00" in value:
        raise ValueError(f"{value!r} must be an absolute file path")
    return value


ImageRef = Annotated[str, AfterValidator(_image)]
MacAddress = Annotated[str, AfterValidator(_mac)]
FilePath = Annotated[str, AfterValidator(_path)]
Mtu = Annotated[int, Field(ge=68, le=65535)]


# -- containers ---------------------------------------------------------------------------------


class ContainerRunArgs(Args):
    """A running container. An existing container of that name is started if stopped, and
    refused if it was made from other settings (runflow does not replace containers)."""

    name: Name = Field(description="the container")
    image: ImageRef = Field(description="the image it runs, e.g. busybox:1.36")
    command: Argv | None = Field(default=None,
                                 description="the command (default: the image's own)")
    network: Name = Field(default="bridge",
                          description='"none", "bridge", "host" or a docker network')
    init: bool = Field(default=False, description="run an init as PID 1 (docker run --init)")
    labels: dict[str, str] = Field(default_factory=dict, description="the container's labels")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables")
    pull: bool = Field(default=False, description=(
        "pull a missing image (default: never pull: a missing image fails the step)"))


class ContainerAbsentArgs(Args):
    name: Name = Field(description="the container")
    timeout: int = Field(default=10, ge=0,
                         description="seconds docker waits for it to stop before killing it")


class ContainerAttachArgs(Args):
    """A veth from a bridge (Linux or Open vSwitch, detected) into a container."""

    container: Name = Field(description="the running container")
    bridge: IfName = Field(description="the Linux or Open vSwitch bridge the host end joins")
    address: IPInterface | None = Field(
        default=None, description="the address (with prefix length) inside the container")
    gateway: IPAddress | None = Field(
        default=None, description="the container's default route via this address")
    ifname: IfName = Field(default="eth0", description="the interface's name inside the container")
    mtu: Mtu | None = Field(default=None, description="the MTU of both ends")
    mac: MacAddress | None = Field(default=None, description="the MAC address inside")
    # By default "rf" + a digest of container and ifname, so that detach, rollback and a
    # second attach find it again without asking anyone.
    host_ifname: IfName | None = Field(
        default=None, description='the host end\'s name (default: "rf" and a digest of '
                                  "container and ifname)")

    @model_validator(mode="after")
    def _gateway_needs_address(self) -> ContainerAttachArgs:
        if self.gateway and not self.address:
            raise ValueError("gateway needs an address on the interface (address = \"CIDR\")")
        if self.gateway and self.address and (":" in self.gateway) != (":" in self.address):
            raise ValueError(f"gateway {self.gateway} and address {self.address} are not of "
                             "the same IP version")
        return self


class ContainerDetachArgs(Args):
    """Remove what container.attach made: the veth pair (both ends) and its OVS port."""

    container: Name = Field(description="the container")
    ifname: IfName = Field(default="eth0", description="the interface inside it, as attached")
    host_ifname: IfName | None = Field(
        default=None, description="the host end's name, if the attach gave one")


# -- the docker daemon --------------------------------------------------------------------------


class DockerDaemonArgs(Args):
    """The daemon's bridge settings. Only the settings given are written; others are kept."""

    bridge: IfName | None = Field(
        default=None, description="-b: an existing Linux bridge docker attaches containers to")
    bip: IPInterface | None = Field(
        default=None, description="--bip: the address of the bridge docker creates")
    fixed_cidr: IPNetwork | None = Field(
        default=None, description="--fixed-cidr: the network container addresses come from")
    mtu: Mtu | None = Field(default=None, description="--mtu: the containers' MTU")
    iptables: bool | None = Field(default=None,
                                  description="--iptables: may docker manage iptables rules")
    config: FilePath | None = Field(default=None, description=(
        "the file to edit (default: the inventory's docker_config or docker_sysconfig, then "
        "the backend's own: /etc/docker/daemon.json, /etc/sysconfig/docker)"))
    restart: Name | None = Field(default=None, description=(
        "a service to restart after the file changed and again after undo, e.g. docker"))

    @model_validator(mode="after")
    def _one_bridge_setting(self) -> DockerDaemonArgs:
        if self.bridge and self.bip:
            raise ValueError(
                "bridge (-b) and bip (--bip) cannot be used together: dockerd refuses both. "
                "Either let docker create its bridge and give bip, or create the bridge "
                "yourself (bridge.present, addr.present) and give its name in bridge"
            )
        if all(getattr(self, key) is None
               for key in ("bridge", "bip", "fixed_cidr", "mtu", "iptables")):
            raise ValueError("give at least one of bridge, bip, fixed_cidr, mtu, iptables")
        return self
