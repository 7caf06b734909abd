"""The lab's inventory is written by a TOML writer: whatever the lab directory is called, what
runflow reads back names exactly the lab's sockets, files and commands."""

from __future__ import annotations

import pytest

from runflow.core import inventory
from runflow.core.lab.lab import Lab, LabHost

HOSTILE = ['/tmp/a"b', "/tmp/back\\slash", '/tmp/x"\\"y', "/tmp/new\nline", "/tmp/tab\there",
           "/tmp/ünï cödé", "/tmp/[hosts.h9]", "/tmp/a' = 1 #"]


@pytest.mark.parametrize("root", HOSTILE)
def test_the_inventory_reads_back_whatever_the_lab_directory_is_called(root):
    lab = Lab(root)
    hosts = [LabHost(f"h{i}", i, f"rf-h{i}", f"{root}/h{i}") for i in (1, 2)]

    read = inventory.parse(lab.inventory_text(hosts))

    assert [h.name for h in read.hosts] == ["h1", "h2"]
    for host, lab_host in zip(read.hosts, hosts):
        dockerd, ovs = lab_host.dockerd(), lab_host.ovs()
        assert host.netns == lab_host.netns
        assert host.endpoints == {"ovsdb": ovs.endpoint, "docker": dockerd.url}
        assert host.settings["docker_config"] == str(dockerd.config_path)
        assert host.settings["docker_sysconfig"] == str(dockerd.sysconfig_path)
        assert host.settings["services"]["docker"]["restart"] == dockerd.restart_command()
        assert host.vars["remote_ip"] == hosts[2 - lab_host.index].underlay_ip
