"""The fleet lab for the lab tests: brought up once per session, taken down by the last test.

These tests never skip: on a machine that cannot run the lab they fail and say why.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from labctl import gpufleet, lab_status

LAB_TOOLS = ("systemd-nspawn", "debootstrap", "ip", "nft", "ssh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The teardown test goes last, whatever order the files are in."""
    items.sort(key=lambda item: item.get_closest_marker("lab_teardown") is not None)


@pytest.fixture(scope="session", autouse=True)
def lab_machine() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (nspawn, mounts, namespaces); run them as root")
    missing = [tool for tool in LAB_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the lab tests need {', '.join(missing)}: run `make deps` first")


@pytest.fixture(scope="session")
def lab(lab_machine: None) -> dict:
    started = time.monotonic()
    gpufleet("lab", "up")
    print(f"lab up took {time.monotonic() - started:.1f} s")
    yield lab_status()
    if lab_status()["state"] != "absent":
        gpufleet("lab", "down", check=False)
