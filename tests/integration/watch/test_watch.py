"""`runflow watch workflows/container-ovs-watch.toml` on a lab host, both targets: containers
labelled runflow.net / runflow.ip are plugged into that OVS bridge with that address while they
run, and nothing of an attachment outlives its container — across restarts of the containers,
of the watcher (killed while things change) and of dockerd."""

from __future__ import annotations

import signal

import pytest

from .conftest import WatchHost, runs_in_place, wait_for

pytestmark = pytest.mark.root


def attached(host: WatchHost, containers: list) -> bool:
    """Each container has exactly one OVS port, in service, and the veth behind it."""
    ports, veths = host.ports(), host.veths()
    return all(len(ports.get(c.id, [])) == 1 and ports[c.id][0]["ofport"] > 0
               and ports[c.id][0]["name"] in veths for c in containers)


def detached(host: WatchHost, containers: list) -> bool:
    """None of the containers has an OVS port left."""
    ports = host.ports()
    return not any(c.id in ports for c in containers)


def test_labelled_containers_are_attached_while_they_run(watch_host, watcher):
    host = watch_host
    watcher.start()
    web = [host.labelled(f"w1-{i}", f"10.61.0.{10 + i}/24") for i in range(5)]
    plain = host.sleeper("w1-plain")
    wait_for(lambda: attached(host, web), why=watcher.log)
    assert [host.address(c) for c in web] == [f"10.61.0.{10 + i}/24" for i in range(5)]
    veths = host.veths()
    assert len(veths) == 5

    old_port = host.ports()[web[0].id][0]["name"]
    web[0].restart(timeout=0)
    wait_for(lambda: attached(host, web) and host.ports()[web[0].id][0]["name"] != old_port,
             why=watcher.log)
    assert host.address(web[0]) == "10.61.0.10/24"
    assert old_port not in host.veths()

    web[1].stop(timeout=0)
    wait_for(lambda: detached(host, web[1:2]), why=watcher.log)
    assert attached(host, [web[0], *web[2:]])
    assert len(host.veths()) == 4

    assert plain.id not in host.ports()
    assert host.address(plain) is None
    assert watcher.stop() == 0
    assert attached(host, [web[0], *web[2:]])  # a stopped watch leaves its attachments


def test_a_watch_that_was_killed_catches_up_without_duplicates(watch_host, watcher, tmp_path):
    host = watch_host
    watcher.start()
    a, b, c = (host.labelled(f"w2-{n}", f"10.62.0.{i + 10}/24") for i, n in enumerate("abc"))
    wait_for(lambda: attached(host, [a, b, c]), why=watcher.log)
    assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL

    a.stop(timeout=0)
    b.restart(timeout=0)
    d = host.labelled("w2-d", "10.62.0.13/24")
    watcher.start()
    wait_for(lambda: attached(host, [b, c, d]) and detached(host, [a]), why=watcher.log)
    assert {x.id: host.address(x) for x in (b, c, d)} == {
        b.id: "10.62.0.11/24", c.id: "10.62.0.12/24", d.id: "10.62.0.13/24"}
    assert len(host.veths()) == 3
    # one succeeded run in place per running container, none for the stopped one
    assert runs_in_place(tmp_path / "home") == {
        b.id: ["succeeded"], c.id: ["succeeded"], d.id: ["succeeded"]}
    assert watcher.stop() == 0


def test_a_restarted_dockerd_is_reconnected_and_reconciled(watch_host, watcher, tmp_path):
    host = watch_host
    watcher.start()
    stays = host.labelled("w3-stays", "10.63.0.10/24", restart_policy={"Name": "always"})
    goes = host.labelled("w3-goes", "10.63.0.11/24")
    wait_for(lambda: attached(host, [stays, goes]), why=watcher.log)

    host.dockerd.restart()  # dockerd starts `stays` again, not `goes`
    wait_for(lambda: attached(host, [stays]) and detached(host, [goes])
             and host.address(stays) == "10.63.0.10/24", timeout=30, why=watcher.log)
    goes.start()  # the event stream works again
    wait_for(lambda: attached(host, [stays, goes]), why=watcher.log)
    assert runs_in_place(tmp_path / "home") == {stays.id: ["succeeded"], goes.id: ["succeeded"]}
    assert watcher.stop() == 0


def test_a_container_that_exits_at_once_leaves_nothing_behind(watch_host, watcher, tmp_path):
    host = watch_host
    watcher.start()
    commands = [["sh", "-c", "exit 0"], ["sleep", "0.05"], ["sleep", "0.2"]]
    brief = [host.client.containers.run(
        host.image, command, name=f"w4-{i}", detach=True, network_mode="none",
        labels={"runflow.net": "br-w", "runflow.ip": f"10.64.0.{10 + i}/24"})
        for i, command in enumerate(commands)]
    for container in brief:
        container.wait(timeout=10)
    wait_for(lambda: sum(" docker die w4-" in line for line in watcher.lines) == len(brief),
             why=watcher.log)
    # every run those events started has ended, and nothing of them is in place
    wait_for(lambda: not runs_in_place(tmp_path / "home") and detached(host, brief),
             why=watcher.log)
    assert host.veths() == set()
    assert watcher.stop() == 0
