"""The Docker Engine API as every docker-family backend reaches it: one SDK client per run and
host, `docker inspect`, `docker exec`, the docker command line equivalent to an API call
(for `plan`), and what goes wrong on the way (`api_errors`: a daemon that is down or dies
mid-call is a step error naming the endpoint, not a traceback)."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
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


def endpoint_problem(host: Host) -> str | None:
    """Why the host's docker endpoint cannot be dockerd's, found without talking to it: a
    unix socket path that names something other than a socket (/dev/null, a regular file).
    A path that does not exist yet is not refused: the daemon may be starting or down, and a
    rollback must still be able to run the steps that do not need it."""
    url = docker_endpoint(host)
    if host.remote:  # the socket is on the host: a step finds out when it connects
        return None
    if not url.startswith("unix://"):
        return None
    path = url.removeprefix("unix://")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the docker endpoint {url} cannot be read: {exc.strerror}"
    if not stat.S_ISSOCK(mode):
        where = (f"inventory: hosts.{host.name}.docker" if "docker" in host.endpoints
                 else f"the default; the inventory's hosts.{host.name}.docker names another")
        return (f"the docker endpoint {url} ({where}) is not a socket: name dockerd's API "
                "socket (dockerd -H unix://PATH)")
    return None


@contextmanager
def api_errors(ctx: Context, what: str) -> Iterator[None]:
    """Turn what the SDK raises into a step error saying what failed (`what`, e.g. "docker
    rm web"): an API error with docker's explanation, or a daemon that cannot be reached
    (down, killed mid-call) with its endpoint. docker.errors.NotFound passes through for the
    caller to handle."""
    import docker
    import requests

    try:
        yield
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        raise ActionError(f"{what}: {exc.explanation or exc}") from None
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise ActionError(f"{what}: cannot reach dockerd at {docker_endpoint(ctx.host)} "
                          f"({exc})") from None


def docker_client(ctx: Context) -> Any:
    """One Docker SDK client per run and host."""

    def connect() -> Any:
        import docker

        try:
            # an SSH host's socket is forwarded over its master connection
            return docker.DockerClient(base_url=ctx.host.service_address(
                docker_endpoint(ctx.host)), timeout=60)
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
        with api_errors(ctx, f"docker inspect {container}"):
            return docker_client(ctx).api.inspect_container(container)
    except docker.errors.NotFound:
        return None


def exec_in_container(ctx: Context, container: str, argv: list[str]) -> tuple[int, str]:
    """Run argv inside a running container; returns (exit code, stdout and stderr)."""
    import docker

    try:
        with api_errors(ctx, f"docker exec {container}"):
            api = docker_client(ctx).api
            exec_id = api.exec_create(container, argv)["Id"]
            output = api.exec_start(exec_id)
            code = api.exec_inspect(exec_id)["ExitCode"]
    except docker.errors.NotFound as exc:
        return 126, f"docker exec {container}: {exc.explanation or exc}"
    except ActionError as exc:  # not running, daemon down, ...: a failed attempt
        return 126, str(exc)
    return int(code if code is not None else 1), output.decode(errors="replace")
