"""The plugin template in contrib/example-plugin passes its own tests, written with the test
kit, as its author would run them (pytest in its directory, runflow.testing found through
runflow's pytest11 entry point)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, need_tools

pytestmark = pytest.mark.root


def test_the_template_passes_its_tests():
    need_tools("ip")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests"], cwd=REPO / "contrib" / "example-plugin",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped" not in done.stdout, done.stdout
