"""Loop devices on this machine, standing in for instance-store NVMe disks.

These tests make real file systems (XFS, btrfs) and mount them, so they need root, as CI
has; they fail rather than skip on a machine that cannot run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TOOLS = ("losetup", "mkfs.xfs", "mkfs.btrfs", "blkid", "mount", "umount")


@pytest.fixture
def loop_disks(tmp_path: Path) -> Iterator[Callable[[int, int], list[str]]]:
    """make(count, mebibytes): that many sparse disks on loop devices; all gone afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the disk tests make and mount file systems: run them as root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the disk tests need {', '.join(missing)}: run `make deps`")
    devices: list[str] = []

    def make(count: int, mebibytes: int) -> list[str]:
        made = []
        for _attempt in range(count):
            image = tmp_path / f"disk{len(devices)}.img"
            with image.open("wb"):
                os.truncate(image, mebibytes * 1024**2)
            device = subprocess.run(
                ["losetup", "--find", "--show", str(image)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            devices.append(device)
            made.append(device)
        return made

    yield make
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in mounts:
        if point.startswith(str(tmp_path)):
            subprocess.run(["umount", point], check=False)
    for device in devices:
        subprocess.run(["losetup", "--detach", device], check=False)
