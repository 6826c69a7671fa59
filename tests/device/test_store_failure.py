"""A full disk under the durable history: the device says FAULT naming the file, keeps
answering, and loses nothing once there is room again (INTERFACE.md v2, issue 9)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from tests.device.conftest import StartDevice

pytestmark = pytest.mark.tango

QUICK = "def main():\n    print('x' * 2000)\n    return 'ok'\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def _fill(where: Path) -> None:
    """Take every free byte of the file system (big writes, then single bytes)."""
    for name, size in (("filler", 1 << 16), ("filler2", 1)):
        fd = os.open(where / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)


def test_a_full_disk_makes_the_device_fault_naming_the_file_and_loses_nothing(
    start_device: StartDevice, small_disk: Path
) -> None:
    oet = start_device(DataDirectory=str(small_disk / "data"))
    oet.events.wait_value("State", "ON")
    first = oet.prepare_source(QUICK)
    oet.start(first)
    oet.wait_state(first, "COMPLETE")

    _fill(small_disk)
    second = oet.prepare_source(QUICK)
    oet.start(second)
    oet.wait_state(second, "COMPLETE")
    oet.events.wait_value("State", "FAULT", timeout=15)
    status = oet.proxy.status()
    assert "history" in status and ".sqlite3" in status, status
    # The device keeps answering from memory.
    assert oet.describe(second)["state"] == "COMPLETE"
    assert [p["id"] for p in oet.procedures()] == [first, second]

    for name in ("filler", "filler2"):
        os.unlink(small_disk / name)
    oet.proxy.set_timeout_millis(30000)
    oet.proxy.Init()
    assert oet.proxy.state() in (tango.DevState.ON, tango.DevState.INIT)
    summaries = {p["id"]: p for p in oet.procedures()}
    assert set(summaries) == {first, second}
    assert summaries[second]["state"] == "COMPLETE"
