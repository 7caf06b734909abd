"""A docker or OVSDB endpoint that cannot work is refused before anything runs (exit 2,
naming the inventory's host and key): a form the client would take apart only when a step
connects, and — when the plan probes the host — a docker socket path that is no socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import need_docker

WORKFLOW = """[workflow]
name = "endpoints"

[[steps]]
id = "first"
action = "shell.run"
cmd = ["touch", "{marker}"]
undo = []

[[steps]]
id = "web"
action = "container.run"
name = "web"
image = "busybox"
"""


def output(done) -> str:
    return done.stdout + done.stderr


@pytest.mark.parametrize(("key", "value"), [
    ("docker", "garbage"), ("docker", "/dev/null"), ("docker", "unix://relative.sock"),
    ("docker", "tcp://192.0.2.999:2375"), ("docker", "tcp://docker.lab:99999"),
    ("docker", "unix:///" + "d" * 120), ("ovsdb", "garbage"), ("ovsdb", "tcp:host name:6640"),
])
def test_an_endpoint_of_the_wrong_form_is_refused(runflow, tmp_path: Path, key: str,
                                                  value: str) -> None:
    (tmp_path / "wf.toml").write_text(WORKFLOW.format(marker=tmp_path / "ran"))
    (tmp_path / "inventory.toml").write_text(f'[hosts.h1]\n{key} = "{value}"\n')
    done = runflow("validate", tmp_path / "wf.toml", "--inventory", tmp_path / "inventory.toml")
    assert done.returncode == 2, output(done)
    assert f"hosts.h1.{key}" in output(done) and repr(value) in output(done)


@pytest.mark.parametrize("what", ["/dev/null", "a regular file"])
def test_a_docker_socket_that_is_no_socket_is_refused_before_anything_runs(
        runflow, tmp_path: Path, what: str) -> None:
    need_docker()
    path = Path(what) if what.startswith("/") else tmp_path / "docker.sock"
    if not path.exists():
        path.write_text("")
    marker = tmp_path / "ran"
    (tmp_path / "wf.toml").write_text(WORKFLOW.format(marker=marker))
    (tmp_path / "inventory.toml").write_text(f'[hosts.h1]\ndocker = "unix://{path}"\n')
    done = runflow("run", tmp_path / "wf.toml", "--inventory", tmp_path / "inventory.toml",
                   "--target", "modern")
    assert done.returncode == 2, output(done)
    assert "is not a socket" in output(done) and "hosts.h1.docker" in output(done)
    assert not marker.exists()
