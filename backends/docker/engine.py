"""Containers through the Docker Engine API (`docker` backend): container.run and
container.absent. The same backend's container.attach / container.detach live in attach.py.

A container that container.run creates carries the label `runflow.run=RUN` (as ovs-docker
tags its ports): its undo removes a container of that name only when it is this run's, so a
rollback never takes away one that someone made after the step, whatever point apply had
reached when it failed or was killed (nothing, created, started).
"""

from __future__ import annotations

from typing import Any

from runflow.core.actions import Action, Context, State
from runflow.core.errors import ActionError
from runflow.core.hookspecs import hookimpl
from runflow.core.hosts import Host

from .args import ContainerAbsentArgs, ContainerRunArgs
from .attach import ContainerAttach, ContainerDetach
from .client import (api_errors, docker_argv, docker_client, endpoint_problem, inspect,
                     missing_modules)

RUN_LABEL = "runflow.run"  # the run that created a container

# -- containers ---------------------------------------------------------------------------------


def _env_dict(env: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env or [])


def observe_container(ctx: Context, name: str) -> State:
    """What container.run and container.absent compare and restore."""
    info = inspect(ctx, name)
    if info is None:
        return {"exists": False}
    config, host_config = info["Config"], info["HostConfig"]
    return {
        "exists": True,
        "id": info["Id"],
        "running": bool(info["State"]["Running"]),
        "image": config["Image"],
        "command": config.get("Cmd"),
        "network": host_config.get("NetworkMode") or "default",
        "init": bool(host_config.get("Init")),
        "labels": config.get("Labels") or {},
        "env": _env_dict(config.get("Env")),
    }


def _differences(args: ContainerRunArgs, seen: State) -> list[str]:
    """How an existing container differs from the one the step asks for."""
    wanted = {"image": args.image, "network": args.network, "init": args.init}
    diffs = [f"{key} is {seen[key]!r}, not {value!r}" for key, value in wanted.items()
             if seen[key] != value and not (key == "network" and value == "bridge"
                                             and seen[key] == "default")]
    if args.command is not None and seen["command"] != args.command:
        diffs.append(f"command is {seen['command']!r}, not {args.command!r}")
    for what in ("labels", "env"):
        mine: dict[str, str] = getattr(args, what)
        wrong = {k: v for k, v in mine.items() if seen[what].get(k) != v}
        if wrong:
            diffs.append(f"{what} lack {wrong}")
    return diffs


def _run_argv(ctx: Context | None, spec: dict[str, Any]) -> list[str]:
    argv = ["run", "-d", "--pull=never", "--name", spec["name"], "--network", spec["network"]]
    if spec["init"]:
        argv.append("--init")
    argv += [f"--label={k}={v}" for k, v in spec["labels"].items()]
    argv += [f"--env={k}={v}" for k, v in spec["env"].items()]
    return docker_argv(ctx, *argv, spec["image"], *(spec["command"] or []))


def _create(ctx: Context, spec: dict[str, Any], *, pull: bool = False) -> None:
    """Create and start a container from a spec (the step's arguments or an observation)."""
    import docker

    ctx.commands.append(ctx.host.describe(_run_argv(ctx, spec)))
    with api_errors(ctx, f"docker run {spec['name']}"):
        client = docker_client(ctx)
        try:
            client.images.get(spec["image"])
        except docker.errors.ImageNotFound:
            if not pull:
                raise ActionError(f"image {spec['image']} is not on this host and pull is "
                                  "false: load or build it first, or set pull = true") from None
            client.images.pull(spec["image"])
        network = spec["network"]
        where = ({"network_mode": network} if network in ("none", "bridge", "host", "default")
                 else {"network": network})
        client.containers.run(spec["image"], spec["command"], name=spec["name"], detach=True,
                              init=spec["init"] or None, labels=spec["labels"],
                              environment=spec["env"], **where)


def _container_call(ctx: Context, name: str, what: str, argv: list[str], **kwargs: Any) -> None:
    """Call a container method (start, stop, remove) that may find the container gone."""
    import docker

    ctx.commands.append(ctx.host.describe(docker_argv(ctx, *argv)))
    try:
        with api_errors(ctx, f"docker {what.replace('_container', '')} {name}"):
            getattr(docker_client(ctx).api, what)(name, **kwargs)
    except docker.errors.NotFound:
        pass


class ContainerRun(Action):
    name = "container.run"
    backend = "docker"
    family = "container"
    Args = ContainerRunArgs
    summary = "a running container (created and started if missing; never pulled unless asked)"

    @classmethod
    def unusable(cls, host: Host) -> str | None:
        return missing_modules("docker") or endpoint_problem(host)

    def observe(self, ctx: Context, args: ContainerRunArgs) -> State:
        return observe_container(ctx, args.name)

    def check(self, args: ContainerRunArgs, before: State) -> bool:
        return bool(before["exists"] and before["running"] and not _differences(args, before))

    def apply(self, ctx: Context, args: ContainerRunArgs, before: State) -> None:
        if not before["exists"]:
            _create(ctx, self._spec(args, ctx.run_id), pull=args.pull)
            return
        diffs = _differences(args, before)
        if diffs:
            raise ActionError(f"container {args.name} exists with other settings ("
                              f"{'; '.join(diffs)}): remove it first (container.absent)")
        _container_call(ctx, args.name, "start", ["start", args.name])

    def undo(self, ctx: Context, args: ContainerRunArgs, before: State) -> None:
        """Back to `before` from any point apply reached: the container this run created
        goes (created or running), one the step started is stopped."""
        now = inspect(ctx, args.name)
        if now is None:
            return
        if not before["exists"]:
            if (now["Config"].get("Labels") or {}).get(RUN_LABEL) == ctx.run_id:
                _container_call(ctx, args.name, "remove_container", ["rm", "-f", args.name],
                                force=True)
        elif not before["running"] and now["State"]["Running"]:
            _container_call(ctx, args.name, "stop", ["stop", args.name])

    @staticmethod
    def _spec(args: ContainerRunArgs, run_id: str | None = None) -> dict[str, Any]:
        spec = args.model_dump(exclude={"pull"})
        if run_id:
            spec["labels"] = {**spec["labels"], RUN_LABEL: run_id}
        return spec

    def describe(self, args: ContainerRunArgs, before: State | None = None) -> list[list[str]]:
        if before and before["exists"]:
            return [docker_argv(None, "start", args.name)]
        return [_run_argv(None, self._spec(args))]

    def describe_undo(self, args: ContainerRunArgs, before: State | None = None
                      ) -> list[list[str]]:
        if before and before["exists"]:
            return [] if before["running"] else [docker_argv(None, "stop", args.name)]
        return [docker_argv(None, "rm", "-f", args.name)]


class ContainerAbsent(Action):
    name = "container.absent"
    backend = "docker"
    family = "container"
    Args = ContainerAbsentArgs
    summary = "no container of that name (undo recreates it with its settings)"

    unusable = ContainerRun.unusable

    def observe(self, ctx: Context, args: ContainerAbsentArgs) -> State:
        return observe_container(ctx, args.name)

    def check(self, args: ContainerAbsentArgs, before: State) -> bool:
        return not before["exists"]

    def apply(self, ctx: Context, args: ContainerAbsentArgs, before: State) -> None:
        if before["running"]:
            _container_call(ctx, args.name, "stop", ["stop", "-t", str(args.timeout),
                                                     args.name], timeout=args.timeout)
        _container_call(ctx, args.name, "remove_container", ["rm", "-f", args.name], force=True)

    def undo(self, ctx: Context, args: ContainerAbsentArgs, before: State) -> None:
        """Back to `before` from any point apply reached: stopped but not removed (the
        daemon died between the two), or removed."""
        if not before.get("exists"):
            return
        now = inspect(ctx, args.name)
        if now is None:
            _create(ctx, {"name": args.name, **{k: before[k] for k in (
                "image", "command", "network", "init", "labels", "env")}})
            if not before["running"]:
                _container_call(ctx, args.name, "stop", ["stop", args.name])
        elif before["running"] and not now["State"]["Running"]:
            _container_call(ctx, args.name, "start", ["start", args.name])

    def describe(self, args: ContainerAbsentArgs, before: State | None = None
                 ) -> list[list[str]]:
        return [docker_argv(None, "rm", "-f", args.name)]


@hookimpl
def runflow_register_actions(register: Any) -> None:
    for action in (ContainerRun, ContainerAbsent, ContainerAttach, ContainerDetach):
        register(action)
