"""The fault drill shares one two-host lab per module (the `lab` fixture of the lab tests)."""

from __future__ import annotations

from collections.abc import Iterator
import pytest

from tests.faults.drill import Drill, kill_strays
from tests.integration.lab.conftest import lab  # noqa: F401  (the shared fixture)


@pytest.fixture(scope="module")
def drill(lab, tmp_path_factory) -> Iterator[Drill]:  # noqa: F811
    the_drill = Drill(lab, tmp_path_factory.mktemp("drill"))
    yield the_drill
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
