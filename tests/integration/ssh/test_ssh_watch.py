"""`runflow watch` of an SSH lab host: the docker source follows the host's dockerd through its
socket forwarded over the watch's master connection, and the runs take the host's lock on the
host (flock there) over the same master. A labelled container started there is attached, and
its run rolled back when it is removed. When the master is killed, the event stream ends; the
watch logs in again, reconciles, and a container started meanwhile is attached."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import docker
import pytest

from runflow.core.lab.dockerd import BUSYBOX_IMAGE
from tests.integration.watch.conftest import Watcher, runs_in_place, wait_for
from tests.support.snapshot import differences

pytestmark = pytest.mark.root

BRIDGE = "br-sw"


def test_a_watch_over_ssh_attaches_rolls_back_and_reconnects(ssh_lab, tmp_path: Path) -> None:
    h1 = next(h for h in ssh_lab.state()["hosts"] if h["name"] == "h1")
    host_dir = Path(h1["dir"])
    # The test reads and prepares h1 from this machine; the watch reaches it only over SSH.
    client = docker.DockerClient(base_url=f"unix://{host_dir / 'docker' / 'docker.sock'}")

    def vsctl(*args: str) -> str:
        return subprocess.run(["ovs-vsctl", f"--db=unix:{host_dir / 'ovs' / 'db.sock'}", *args],
                              check=True, capture_output=True, text=True).stdout

    def attached(container) -> bool:
        found = vsctl("--bare", "--columns=ofport", "find", "Interface",
                      f"external_ids:container_id={container.id}").split()
        return bool(found) and all(int(ofport) > 0 for ofport in found)

    def create(name: str, address: str):
        return client.containers.create(
            BUSYBOX_IMAGE, ["sleep", "600"], name=name, init=True, network_mode="none",
            labels={"runflow.net": BRIDGE, "runflow.ip": address})

    before = ssh_lab.snapshot()
    vsctl("add-br", BRIDGE, "--", "set", "Bridge", BRIDGE, "datapath_type=netdev")
    home = tmp_path / "home"
    watcher = Watcher(home, ssh_lab.inventory, "centos6")
    watcher.argv += ["--host", "h1"]
    made = []
    try:
        watcher.start()
        first = create("rf-sw-a", "10.71.0.2/24")
        made.append(first)
        first.start()
        wait_for(lambda: attached(first), 30, watcher.log)
        code, out = first.exec_run(["ip", "-o", "-4", "addr", "show", "dev", "eth1"])
        assert code == 0 and "10.71.0.2/24" in out.decode(), out
        first.remove(force=True)
        wait_for(lambda: not attached(first) and first.id not in runs_in_place(home), 30,
                 watcher.log)

        assert watcher.proc is not None
        masters = ssh_lab.ssh_processes(watcher.proc.pid)
        assert list(masters) == [ssh_lab.host_table("h1")["ssh"]], masters
        second = create("rf-sw-b", "10.71.0.3/24")
        made.append(second)
        os.kill(next(iter(masters.values())), signal.SIGKILL)
        second.start()  # while the watch logs in again: its reconcile finds it
        wait_for(lambda: attached(second), 30, watcher.log)
        assert runs_in_place(home) == {second.id: ["succeeded"]}
        # The stream went through the master: the lab's remote socket path is also a path of
        # this machine, so a watch that opened it here would have kept its stream.
        log = watcher.log()
        assert "its event stream ended" in log and log.count("connected, ") == 2, log
        assert watcher.stop() == 0, watcher.log()
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        if watcher.proc is not None:
            watcher.proc.kill()
            watcher.proc.wait()
        once = watcher.once()  # rolls back what the containers still had
        vsctl("--if-exists", "del-br", BRIDGE)
        client.close()
    assert once.returncode == 0, once.stderr
    after = ssh_lab.snapshot()
    assert after == before, "\n".join(differences(before, after))
