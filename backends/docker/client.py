"""The Docker Engine API as every docker-family backend reaches it: one SDK client per run and
host, `docker inspect`, `docker exec`, and the docker command line equivalent to an API call
(for `plan`)."""

from __future__ import annotations

import importlib.util
from typing import Any

from runflow.core.actions import Context
from runflow.core.errors import ActionError
from runflow.core.hosts import Host

DEFAULT_DOCKER = "unix:///var/run/docker.sock"


def missing_modules(*names: str) -> str | None:
    """Why a backend cannot run: the first Python module that is not installed, or None."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            return f"the Python module {name!r} is not installed (pip install {name})"
    return None


def docker_endpoint(host: Host) -> str:
    """The host's docker socket as the SDK wants it (inventories may write unix:/path)."""
    url = host.endpoints.get("docker", DEFAULT_DOCKER)
    if url.startswith("unix:") and not url.startswith("unix://"):
        url = "unix://" + url.removeprefix("unix:")
    return url


def docker_client(ctx: Context) -> Any:
    """One Docker SDK client per run and host."""

    def connect() -> Any:
        import docker

        try:
            return docker.DockerClient(base_url=docker_endpoint(ctx.host), timeout=60)
        except docker.errors.DockerException as exc:
            raise ActionError(f"cannot reach dockerd at {docker_endpoint(ctx.host)}: {exc}")

    return ctx.resources.get(f"docker:{docker_endpoint(ctx.host)}", connect)


def docker_argv(ctx: Context | None, *argv: str) -> list[str]:
    """The docker command line equivalent to an API call (for describe)."""
    prefix = ["docker"]
    if ctx is not None and "docker" in ctx.host.endpoints:
        prefix += ["-H", docker_endpoint(ctx.host)]
    return [*prefix, *argv]


def inspect(ctx: Context, container: str) -> dict[str, Any] | None:
    """`docker inspect` of a container, or None when there is no such container."""
    import docker

    try:
        return docker_client(ctx).api.inspect_container(container)
    except docker.errors.NotFound:
        return None
    except docker.errors.APIError as exc:
        raise ActionError(f"docker inspect {container}: {exc.explanation or exc}") from None


def exec_in_container(ctx: Context, container: str, argv: list[str]) -> tuple[int, str]:
    """Run argv inside a running container; returns (exit code, stdout and stderr)."""
    import docker

    api = docker_client(ctx).api
    try:
        exec_id = api.exec_create(container, argv)["Id"]
        output = api.exec_start(exec_id)
        code = api.exec_inspect(exec_id)["ExitCode"]
    except docker.errors.APIError as exc:  # no such container, not running, ...
        return 126, f"docker exec {container}: {exc.explanation or exc}"
    return int(code if code is not None else 1), output.decode(errors="replace")
