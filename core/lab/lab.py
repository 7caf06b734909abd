"""`runflow lab`: N simulated hosts on this machine, and the inventory that names them.

Each host is a network namespace with
- an underlay: a veth to the lab's switch namespace, as the port of a netdev OVS bridge
  `br-phy` holding the host's underlay address 10.99.0.<i>/24, MTU 1600 (userspace tunnels
  need the address on an OVS bridge; 1600 leaves room for the GRE/VXLAN headers),
- its own ovsdb-server and ovs-vswitchd (userspace datapath),
- IPv4 only (IPv6 disabled in the namespace),
- its own dockerd with a busybox image built offline. It starts with no bridge and leaves
  iptables and ip_forward alone, so that what the workflows change is all there is to see
  (`--no-docker` leaves it out: lighter hosts),
- with `--ssh`, an sshd (core/lab/sshd.py); the inventory then reaches the hosts only over
  SSH, through `runflow lab connect` from the switch namespace.

The switch is one more namespace with a Linux bridge, so the root namespace is never touched.
Everything lives under one directory (default /tmp/rf-lab; short, for unix socket paths):
lab.json says what was made; `down` removes it all — processes by pid, mounts, namespaces,
files — even when `up` stopped half-way.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..errors import InputError, RunflowError
from .dockerd import BUSYBOX_IMAGE, Dockerd, build_busybox_image
from .dockerd import load as load_dockerd
from .namespaces import Namespace, root_is_mount_point, wire
from .ovs import OvsDaemons, build_underlay
from .sshd import SWITCH_ADDRESS, UNDERLAY, LabKeys, Sshd, proxy_command

DEFAULT_DIR = Path("/tmp/rf-lab")
MAX_HOSTS = 32
# sun_path holds 107 bytes; the deepest socket is DIR/hN/docker/exec/containerd/containerd.sock
MAX_DIR_LENGTH = 107 - len("/h32/docker/exec/containerd/containerd.sock.ttrpc")
MTU = 1600
# A lab dockerd: no default bridge, no iptables or ip_forward changes of its own.
DOCKER_CONFIG = {"bridge": "none", "iptables": False, "ip-forward": False}


class LabError(InputError):
    """The lab is not there, is there already, or cannot be where asked (exit 2)."""


@dataclass
class LabHost:
    name: str  # "h1"
    index: int  # 1-based
    netns: str
    dir: str

    @property
    def namespace(self) -> Namespace:
        return Namespace(self.netns)

    @property
    def underlay_ip(self) -> str:
        return UNDERLAY.format(self.index)

    def ovs(self) -> OvsDaemons:
        return OvsDaemons(self.namespace, Path(self.dir) / "ovs")

    def dockerd(self) -> Dockerd:
        return Dockerd(self.namespace, Path(self.dir) / "docker", sysconfig=True)

    def sshd(self) -> Sshd:
        return Sshd(self.namespace, Path(self.dir) / "ssh", self.underlay_ip)


def _ipv4_only(ns: Namespace) -> Namespace:
    """The lab is IPv4: without IPv6, no link-local addresses appear (and routes change)
    seconds after a link comes up, so a host's state is the same before and after a run."""
    for scope in ("all", "default"):
        ns.run(["sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    return ns


class Lab:
    def __init__(self, root: str | Path = DEFAULT_DIR) -> None:
        self.root = Path(root)
        self.state_file = self.root / "lab.json"
        self.inventory_path = self.root / "inventory.toml"

    # -- state -------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.state_file.exists()

    def _load(self) -> dict[str, Any]:
        if not self.exists():
            raise LabError(f"no lab in {self.root} (runflow lab up)")
        return json.loads(self.state_file.read_text())

    def hosts(self) -> list[LabHost]:
        return [LabHost(**h) for h in self._load()["hosts"]]

    def features(self) -> dict[str, bool]:
        """What the hosts run besides OVS: {"docker": ..., "ssh": ...}."""
        state = self._load()
        return {"docker": state.get("docker", True), "ssh": state.get("ssh", False)}

    def _save(self, switch: str, hosts: list[LabHost], *, docker: bool, ssh: bool) -> None:
        self.state_file.write_text(json.dumps(
            {"switch": switch, "hosts": [asdict(h) for h in hosts], "docker": docker,
             "ssh": ssh}, indent=2) + "\n")

    # -- up ----------------------------------------------------------------------------------

    def up(self, count: int = 2, *, prefix: str = "rf", docker: bool = True, ssh: bool = False,
           progress: Callable[[str], None] = lambda _: None) -> Path:
        """Create the lab and write its inventory; returns the inventory's path."""
        if not 1 <= count <= MAX_HOSTS:
            raise LabError(f"--hosts must be 1 to {MAX_HOSTS}")
        if self.exists():
            raise LabError(f"a lab is already up in {self.root} (runflow lab down first)")
        if not root_is_mount_point():
            raise LabError("/ is not a mount point here (a chroot?): lab hosts are entered as "
                           "`ip netns exec` enters them, which remounts /. Bind-mount the "
                           "chroot's directory onto itself before entering it (mount --bind "
                           "DIR DIR), as container runtimes do")
        if len(str(self.root.resolve())) > MAX_DIR_LENGTH:
            raise LabError(f"lab directory {self.root} is too long: the unix sockets under it "
                           f"(e.g. containerd's) allow {MAX_DIR_LENGTH} bytes for it; set "
                           "RUNFLOW_LAB to a shorter one")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        switch = f"{prefix}-sw"
        hosts = [LabHost(f"h{i}", i, f"{prefix}-h{i}", str(self.root / f"h{i}"))
                 for i in range(1, count + 1)]
        # first, so that `down` can clean up a half-made lab
        self._save(switch, hosts, docker=docker, ssh=ssh)
        keys = LabKeys(self.root).create() if ssh else None
        try:
            started = time.monotonic()
            self._wire(switch, hosts, ssh=ssh)
            progress(f"namespaces and underlay ({time.monotonic() - started:.2f} s)")
            with ThreadPoolExecutor(min(len(hosts), 8)) as pool:
                list(pool.map(lambda h: self._start_host(h, docker=docker, keys=keys), hosts))
            daemons = " and ".join(["OVS", *(["dockerd"] if docker else []),
                                    *(["sshd"] if ssh else [])])
            progress(f"{daemons} on {count} host(s) ({time.monotonic() - started:.2f} s)")
            if keys is not None:
                keys.write_known_hosts([(h.underlay_ip, h.sshd().public_host_key)
                                        for h in hosts])
        except Exception as exc:
            self.down()
            raise RunflowError(f"lab up failed, nothing is left behind: {exc}") from exc
        except BaseException:
            self.down()
            raise
        self.inventory_path.write_text(self.inventory_text(hosts, docker=docker, ssh=ssh))
        return self.inventory_path

    def _wire(self, switch_name: str, hosts: list[LabHost], *, ssh: bool) -> None:
        switch = _ipv4_only(Namespace(switch_name).create())
        switch.run(["ip", "link", "add", "sw0", "type", "bridge"])
        switch.run(["ip", "link", "set", "sw0", "up"])
        if ssh:  # where `lab connect` reaches the hosts' sshd from
            switch.run(["ip", "addr", "add", SWITCH_ADDRESS, "dev", "sw0"])
            # The switch's own TCP must carry whole checksums: a host's userspace datapath
            # reads the veth with a packet socket and hands the segments to its br-phy tap
            # as they are, and the host's kernel drops a TCP segment whose checksum was left
            # for the hardware to fill in (ping, computed in software, passes regardless).
            switch.run(["ethtool", "-K", "sw0", "tx", "off"])
        for host in hosts:
            ns = _ipv4_only(host.namespace.create())
            wire(ns, switch, "underlay0", f"p-{host.name}", mtu=MTU)
            switch.run(["ip", "link", "set", f"p-{host.name}", "master", "sw0"])

    def _start_host(self, host: LabHost, *, docker: bool, keys: LabKeys | None) -> None:
        Path(host.dir).mkdir(parents=True, exist_ok=True)
        ovs = host.ovs().start(detached=True)
        build_underlay(ovs, "underlay0", f"{host.underlay_ip}/24", mtu=MTU)
        if keys is not None:
            sshd = host.sshd()
            sshd.configure(keys)
            sshd.start()
        if not docker:
            return
        dockerd = host.dockerd()
        dockerd.config_path.parent.mkdir(parents=True, exist_ok=True)
        dockerd.config_path.write_text(json.dumps(DOCKER_CONFIG, indent=2) + "\n")
        dockerd.start()
        import docker

        client = docker.DockerClient(base_url=dockerd.url, timeout=30)
        try:
            build_busybox_image(client)
        finally:
            client.close()

    def inventory_text(self, hosts: list[LabHost], *, docker: bool = True,
                       ssh: bool = False) -> str:
        """Hosts h1..hN with the vars the workflows in workflows/ expect. Hosts pair up
        (h1↔h2, h3↔h4, ...) for the point-to-point tunnels. Written by a TOML writer: the
        lab's directory, in every path here, may hold any character (a quote, a backslash).
        With ssh, a host is reached only over SSH: its endpoints are paths on the host."""
        inventory: dict[str, Any] = {}
        for host in hosts:
            partner = next((h for h in hosts if h.index == host.index + (1 if host.index % 2
                                                                          else -1)), None)
            host_vars = {
                "ovs_datapath": "netdev",
                "underlay_ip": host.underlay_ip,
                "bridge_address": f"172.16.42.{host.index}/24",
                "fixed_cidr": f"172.16.42.{32 * host.index}/27",
                # dockerd hands out its fixed_cidr from the first address on
                "container_address": f"172.16.42.{32 * host.index}",
            }
            if partner:
                host_vars.update(remote_ip=partner.underlay_ip,
                                 peer_address=f"172.16.42.{partner.index}",
                                 peer_container_address=f"172.16.42.{32 * partner.index}")
            entry: dict[str, Any] = (self._ssh_entry(host) if ssh else {"netns": host.netns})
            entry["ovsdb"] = host.ovs().endpoint
            if docker:
                dockerd = host.dockerd()
                entry.update({
                    "docker": dockerd.url,
                    "docker_config": str(dockerd.config_path),
                    "docker_sysconfig": str(dockerd.sysconfig_path),
                    "services": {"docker": {"restart": dockerd.restart_command()}},
                })
            entry["vars"] = host_vars
            inventory[host.name] = entry
        return ("# Written by `runflow lab up`; removed by `runflow lab down`.\n\n"
                + tomli_w.dumps({"hosts": inventory}))

    def _ssh_entry(self, host: LabHost) -> dict[str, Any]:
        keys = LabKeys(self.root)
        return {
            "ssh": f"root@{host.underlay_ip}",
            "ssh_identity": str(keys.identity),
            "ssh_options": [
                "-o", f"ProxyCommand={proxy_command(self.root, host.name)}",
                "-o", f"UserKnownHostsFile={keys.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", "IdentitiesOnly=yes",
            ],
        }

    # -- down and status ---------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything the lab made. Safe on a half-made lab and when run twice."""
        if not self.exists():
            return
        state = self._load()
        hosts = [LabHost(**h) for h in state["hosts"]]
        with ThreadPoolExecutor(max(1, len(hosts))) as pool:
            list(pool.map(self._stop_host, hosts))
        for host in hosts:
            host.namespace.delete()
        Namespace(state["switch"]).delete()
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _stop_host(host: LabHost) -> None:
        docker_dir = Path(host.dir) / "docker"
        if (docker_dir / "dockerd.json").exists():
            load_dockerd(docker_dir).remove()
        host.sshd().stop()
        host.ovs().stop_detached()

    def status(self) -> list[dict[str, Any]]:
        rows = []
        features = self.features()
        for host in self.hosts():
            rows.append({
                **({"sshd_running": host.sshd().pid() is not None} if features["ssh"] else {}),
                "host": host.name,
                "netns": host.netns,
                "netns_exists": host.namespace.exists(),
                "underlay_ip": host.underlay_ip,
                "ovs_running": host.ovs().running(),
                # the dockerd the lab tracks runs and answers (not merely: something answers)
                "dockerd_answers": host.dockerd().up() if features["docker"] else None,
                "image": BUSYBOX_IMAGE if features["docker"] else None,
            })
        return rows
