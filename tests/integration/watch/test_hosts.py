"""Which hosts a watch can watch: a source that cannot reach a host's events is refused before
anything connects (exit 2), naming the host and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LINKS = """\
[workflow]
name = "links-watch"

[watch]
source = "netlink"
start = ["up"]
stop = ["down", "del"]
match = { kind = "veth" }

[vars.event]
name = "veth0"

[[steps]]
id = "up"
action = "link.set"
name = "{{ event.name }}"
state = "up"
"""


def test_a_netlink_watch_refuses_an_ssh_host(runflow: Any, tmp_path: Path) -> None:
    """rtnetlink does not cross SSH: the links it would read are this machine's."""
    workflow, inventory = tmp_path / "links.toml", tmp_path / "hosts.toml"
    workflow.write_text(LINKS)
    inventory.write_text('[hosts.far]\nssh = "root@192.0.2.10"\n')
    done = runflow("watch", str(workflow), "--inventory", str(inventory), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "watch.source" in done.stderr and "the netlink source cannot watch host far: it " \
        "reads the links of this machine or of one of its network namespaces" in \
        done.stderr, done.stderr
