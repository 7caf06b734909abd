"""The journal's disk fills up: $RUNFLOW_HOME on a small tmpfs of the test's own (mounted
under its tmp directory, unmounted after), filled while runflow is stopped at a chosen event
or before it starts. runflow must never leave a host half-configured behind an exit code that
says otherwise: it refuses to start when it cannot journal (exit 2, nothing touched), and when
the journal fails mid-run it undoes what it applied from what it holds in memory and exits 3,
naming what it could not journal. Once there is room again, `runflow rollback` finishes the
job and the journal agrees with the hosts.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.drill import (INVALID, NEEDS_ATTENTION, OK, ROLLED_BACK_STEPS, Drill,
                                assert_journal_settled, expect)

pytestmark = pytest.mark.root

SIZE = "4m"  # a few runs' journal


@contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(disk: Path) -> None:
    """Write to the disk until it has no room left."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                f.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def make_room(disk: Path) -> None:
    (disk / "filler").unlink()


def test_a_full_journal_disk_refuses_the_run_and_touches_nothing(clean_lab: Drill, tmp_path):
    drill = clean_lab
    with small_disk(tmp_path / "disk") as home:
        fill(home)
        expect(drill.run_gre("modern", home=home), INVALID)
        drill.assert_before("a run refused for a full journal disk")


def test_the_journal_disk_fills_during_the_run(clean_lab: Drill, tmp_path):
    drill = clean_lab
    with small_disk(tmp_path / "disk") as home:
        paused = drill.start_gre("centos6", "nat:applying@h1", home=home)
        fill(home)
        paused.go_on()
        done = expect(paused.wait(), NEEDS_ATTENTION)
        assert "journal" in done.stderr, str(done)
        drill.assert_before("a run whose journal disk filled at nat applying (exit 3: undone "
                            "from memory)")
        make_room(home)
        expect(drill.runflow("rollback", paused.run_id, home=home), OK)
        drill.assert_before("the rollback once there was room")
        assert_journal_settled(drill.show(paused.run_id, home=home), "rolled_back",
                               ROLLED_BACK_STEPS)


def test_a_rollback_on_a_full_journal_disk(clean_lab: Drill, tmp_path):
    drill = clean_lab
    with small_disk(tmp_path / "disk") as home:
        paused = drill.start_gre("modern", "docker0-up:applying", home=home)
        paused.kill_group()
        left = drill.snapshot()
        fill(home)
        refused = expect(drill.runflow("rollback", paused.run_id, home=home), INVALID,
                         NEEDS_ATTENTION)
        if refused.code == INVALID:
            assert drill.snapshot() == left, "a rollback refused (exit 2) changed the hosts"
        make_room(home)
        expect(drill.runflow("rollback", paused.run_id, home=home), OK)
        drill.assert_before("a rollback on a full journal disk, then one with room")
        assert_journal_settled(drill.show(paused.run_id, home=home), "rolled_back",
                               ROLLED_BACK_STEPS)
