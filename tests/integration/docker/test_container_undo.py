"""container.run and container.absent undo from whatever point apply reached — nothing, part
or all of it — given the "before" the journal recorded, as a rollback gives it for a step that
failed or was left in doubt; against a real dockerd. A daemon that is down makes a clear step
error (the next rollback finishes the job), and a container the run did not create is never
removed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from runflow.backends.docker.args import ContainerAbsentArgs, ContainerRunArgs
from runflow.backends.docker.engine import ContainerAbsent, ContainerRun
from runflow.core.actions import Context, Resources
from runflow.core.errors import ActionError
from runflow.core.hosts import Host
from runflow.core.lab.dockerd import BUSYBOX_IMAGE
from runflow.core.lab.processes import alive

from .conftest import DockerHost, need_docker, start_host

pytestmark = pytest.mark.root

RUN_ID = "20250101-000000-c0ffee"


@pytest.fixture(scope="module")
def host() -> Iterator[DockerHost]:
    need_docker()
    yield from start_host()


@pytest.fixture
def step(host: DockerHost) -> Iterator[Context]:
    """What one runflow command gives a step: its host, run and connections."""
    resources = Resources()
    yield Context(Host("h1", endpoints={"docker": host.dockerd.url}), RUN_ID, "web", resources)
    resources.close()


def later(ctx: Context) -> Context:
    """The same step in a later command (`runflow rollback`): new connections."""
    return Context(ctx.host, ctx.run_id, ctx.step, Resources())


def sleeper(name: str) -> ContainerRunArgs:
    return ContainerRunArgs(name=name, image=BUSYBOX_IMAGE, command=["sleep", "3600"],
                            init=True, network="none")


def unstartable(name: str) -> ContainerRunArgs:
    """Created, then refused at start (no init: it would start and exec the program)."""
    return ContainerRunArgs(name=name, image=BUSYBOX_IMAGE, command=["/no/such/program"],
                            network="none")


def status(host: DockerHost, name: str) -> str | None:
    try:
        return host.client.api.inspect_container(name)["State"]["Status"]
    except Exception:  # docker.errors.NotFound
        return None


def kill_dockerd(host: DockerHost) -> None:
    """SIGKILL the host's dockerd (our child), as a crash would; its containers stay."""
    pid = int((host.dockerd.dir / "dockerd.started").read_text())
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.02)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("reached", ["nothing", "created", "started"])
def test_undo_removes_what_apply_made_from_any_point(host: DockerHost, step: Context,
                                                     reached: str) -> None:
    name = f"undo-{reached}"
    impl = ContainerRun()
    before = impl.observe(step, sleeper(name))
    if reached == "created":  # the container is made, starting it fails
        with pytest.raises(ActionError, match="no/such/program"):
            impl.apply(step, unstartable(name), before)
        assert status(host, name) == "created"
    elif reached == "started":
        impl.apply(step, sleeper(name), before)
        assert status(host, name) == "running"
    impl.undo(later(step), sleeper(name), before)
    assert status(host, name) is None


def test_undo_keeps_a_container_of_that_name_the_run_did_not_make(host: DockerHost,
                                                                   step: Context) -> None:
    impl = ContainerRun()
    before = impl.observe(step, sleeper("someone-elses"))
    host.sleeper("someone-elses")  # made by hand after the step had looked
    impl.undo(later(step), sleeper("someone-elses"), before)
    assert status(host, "someone-elses") == "running"


def test_container_absent_undo_starts_what_apply_stopped_but_did_not_remove(
        host: DockerHost, step: Context) -> None:
    host.sleeper("stopped-only")
    impl = ContainerAbsent()
    args = ContainerAbsentArgs(name="stopped-only", timeout=0)
    before = impl.observe(step, args)
    host.client.containers.get("stopped-only").stop(timeout=0)  # apply's first half
    impl.undo(later(step), args, before)
    assert status(host, "stopped-only") == "running"


def test_a_dead_dockerd_fails_undo_clearly_and_the_next_undo_finishes(
        host: DockerHost, step: Context) -> None:
    """dockerd killed during the step: a `Created` container stays behind. The run's own
    rollback (same connections) fails to undo it, with the endpoint named, and once dockerd
    is back the next `runflow rollback` removes the container."""
    impl = ContainerRun()
    before = impl.observe(step, sleeper("orphan"))
    with pytest.raises(ActionError):
        impl.apply(step, unstartable("orphan"), before)
    kill_dockerd(host)
    try:
        with pytest.raises(ActionError, match=f"cannot reach dockerd at {host.dockerd.url}"):
            impl.undo(step, sleeper("orphan"), before)
    finally:
        host.dockerd.start()
    assert status(host, "orphan") == "created"
    impl.undo(later(step), sleeper("orphan"), before)
    assert status(host, "orphan") is None
