"""The fault drill shares one two-host lab (tests/integration/lab/conftest.py) across its
modules: bringing one up, and the undisturbed runs each target is compared with, cost more than
most cases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.drill import Drill, kill_strays
from tests.integration.lab.conftest import lab_up


@pytest.fixture(scope="package")
def drill(tmp_path_factory) -> Iterator[Drill]:
    with lab_up() as lab:
        try:
            yield Drill(lab, tmp_path_factory.mktemp("drill"))
        finally:
            # A daemon the lab lost track of survives `lab down`: stop it too (by its pid).
            lab.runflow("lab", "down")
            kill_strays(lab.dir)


@pytest.fixture
def clean_lab(drill: Drill) -> Iterator[Drill]:
    """The drill, with the hosts as the lab came up. A case that does not bring them back
    (drill.assert_before) leaves the lab dirty, and the next case rebuilds it."""
    if drill.dirty:
        drill.rebuild()
    drill.dirty = True
    yield drill
    drill.stop_leftovers()
