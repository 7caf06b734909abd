"""The pytest plugin of runflow.testing (entry point group `pytest11`): throw-away hosts.

Loaded by pytest wherever runflow is installed, so it imports nothing heavy until a fixture
is used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from runflow.core.hosts import NetnsHost


@pytest.fixture
def make_netns_host() -> Iterator[Callable[..., NetnsHost]]:
    """make(name="h1") → a host that is a network namespace of its own (loopback up, no IPv6
    duplicate address detection); every one is deleted after the test, however it ends."""
    from runflow.core.lab.namespaces import Namespace, unique_name

    if os.geteuid() != 0:
        pytest.skip("a network namespace host needs root")
    if shutil.which("ip") is None:
        pytest.skip("a network namespace host needs iproute2 (ip)")
    made: list[Namespace] = []

    def make(name: str = "h1") -> NetnsHost:
        ns = Namespace(unique_name("rft"))
        made.append(ns)
        ns.create()
        for scope in ("all", "default"):  # addresses usable at once, not a second later
            ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.accept_dad=0"], check=False)
        return NetnsHost(name, netns=ns.name)

    try:
        yield make
    finally:
        for ns in made:
            ns.delete()


@pytest.fixture
def netns_host(make_netns_host: Callable[..., NetnsHost]) -> NetnsHost:
    """A throw-away host: a network namespace of its own, deleted after the test."""
    return make_netns_host()
