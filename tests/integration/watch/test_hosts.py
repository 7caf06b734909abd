"""Which hosts a watch can watch: a source that cannot reach a host's events is refused before
anything connects (exit 2), naming the host and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.lab.conftest import WORKFLOWS


def test_a_docker_watch_refuses_an_ssh_host(runflow: Any, tmp_path: Path) -> None:
    """Its socket path is the remote's: read here, it would watch this machine's dockerd."""
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[hosts.far]\nssh = "root@192.0.2.10"\n'
                         'vars = { ovs_bridge = "br-int" }\n')
    done = runflow("watch", str(WORKFLOWS / "container-ovs-watch.toml"), "--inventory",
                   str(inventory), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "watch.source" in done.stderr and "the docker source cannot watch host far: it " \
        "watches the dockerd of this machine or of one of its network namespaces" in \
        done.stderr, done.stderr
