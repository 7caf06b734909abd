"""SSH for lab hosts (`runflow lab up --ssh`): an sshd in each host's namespace, keys under the
lab directory, and the relay that is the inventory's ProxyCommand.

Each host runs Debian's /usr/sbin/sshd as a child started inside its network namespace
(`ip netns exec`), with a configuration, host key and pid file of its own and the lab's key
pair as the only way in (UsePAM no: no system login stack; StrictModes no: the lab directory
is not a home directory). The lab writes a known_hosts file with every host key, so that the
inventory checks host keys strictly (StrictHostKeyChecking=yes), as a real one would.

The control side reaches an sshd without touching the root network namespace and without
entering a host's namespace: `runflow lab connect HOST PORT` (relay.py), the ProxyCommand, is
a small process that moves itself into the switch namespace (which holds the underlay's .254)
and relays its standard input and output to HOST:PORT there.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from . import relay
from .namespaces import Namespace
from .processes import alive, command_line, read_pid, run_tool, stop_pid

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by its absolute path
PORT = 22
UNDERLAY = relay.UNDERLAY  # host N's underlay address
SWITCH_ADDRESS = "10.99.0.254/24"  # where `lab connect` connects from


class LabKeys:
    """The lab's client key pair and known_hosts file, in DIR/ssh."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "ssh"
        self.identity = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"

    def create(self) -> LabKeys:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.identity.exists():
            keygen(self.identity, "runflow-lab")
        return self

    @property
    def public_key(self) -> str:
        return self.identity.with_suffix(".pub").read_text().strip()

    def write_known_hosts(self, entries: list[tuple[str, str]]) -> None:
        """One line per (address, host public key)."""
        self.known_hosts.write_text("".join(f"{address} {' '.join(key.split()[:2])}\n"
                                            for address, key in entries))


def keygen(path: Path, comment: str) -> None:
    run_tool(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


class Sshd:
    """The sshd of one lab host, its files in state_dir."""

    def __init__(self, namespace: Namespace, state_dir: Path, address: str) -> None:
        self.namespace = namespace
        self.dir = state_dir
        self.address = address
        self.config = state_dir / "sshd_config"
        self.host_key = state_dir / "host_ed25519_key"
        self.pidfile = state_dir / "sshd.pid"
        self.log = state_dir / "sshd.log"

    def configure(self, keys: LabKeys) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key, f"runflow-lab-{self.namespace.name}")
        authorized = self.dir / "authorized_keys"
        authorized.write_text(keys.public_key + "\n")
        self.config.write_text("\n".join([
            f"Port {PORT}",
            "AddressFamily inet",
            f"ListenAddress {self.address}",
            f'HostKey "{self.host_key}"',
            f'PidFile "{self.pidfile}"',
            f'AuthorizedKeysFile "{authorized}"',
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowStreamLocalForwarding yes",
            "StreamLocalBindUnlink yes",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "UseDNS no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            # The hosts share this machine's /run: each keeps its run lock in its own place.
            # SHLVL=1: bash, root's login shell here, then skips ~/.bashrc, which it sources
            # for a command over SSH (this machine's runs `pyenv init`: 0.1-0.3 s a session).
            f'SetEnv RUNFLOW_LOCK_DIR="{self.dir / "locks"}" SHLVL=1',
            "",
        ]))

    @property
    def public_host_key(self) -> str:
        return self.host_key.with_suffix(".pub").read_text().strip()

    def start(self, timeout: float = 10) -> None:
        """Start sshd in the namespace, detached from this process (it outlives `lab up`),
        and return once it listens."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation root
        with self.log.open("w") as out:
            proc = subprocess.Popen(self.namespace.popen_argv([SSHD, "-D", "-e", "-f",
                                                               str(self.config)]),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        while "Server listening" not in self.log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"sshd did not start in {self.namespace.name}: "
                                   f"{self.log.read_text(errors='replace').strip()}")
            time.sleep(0.01)

    def pid(self) -> int | None:
        """The listening sshd's pid, while it is this host's: its config is on its command
        line, which sshd rewrites into one title ("sshd: /usr/sbin/sshd -D -e -f CONFIG
        [listener] ...")."""
        pid = read_pid(self.pidfile)
        if pid is None or not alive(pid):
            return None
        return pid if f"-f {self.config}" in " ".join(command_line(pid)) else None

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_pid(pid)


def proxy_command(lab_dir: Path, host: str) -> str:
    """The inventory's ProxyCommand for a lab host: what `runflow lab connect HOST PORT`
    does, with the relay's module run as a script by an isolated interpreter (-I -S: no
    site-packages, no runflow package to import): it starts for every SSH connection, in
    15 ms rather than the command line's 150 (32 hosts connect at once). ssh expands %p; a
    literal % is %%."""
    argv = [sys.executable, "-I", "-S", relay.__file__, str(lab_dir), host, "%p"]
    return " ".join(shlex.quote(a).replace("%", "%%") if a != "%p" else a for a in argv)
