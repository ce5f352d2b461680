"""The fleet lab for the lab tests: brought up once per session, taken down by the last test.

These tests never skip: on a machine that cannot run the lab they fail and say why.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

import pytest
from fleet import LB, LLAMA, QWEN, lb_vars, playbook, statuses, target, wait_for
from labctl import gpufleet, lab_status

from gpufleet.lab.load import stream_once

LAB_TOOLS = ("systemd-nspawn", "debootstrap", "ip", "nft", "ssh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests sharing the converged fleet go before any test that resets a host under it;
    tests that take up hosts the molecule scenarios left converged go after them; the
    teardown test goes last, whatever order the files are in."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("lab_teardown") is not None,
            item.get_closest_marker("lab_after_scenarios") is not None,
            item.get_closest_marker("lab_fresh_hosts") is not None,
        )
    )


@pytest.fixture(scope="session", autouse=True)
def lab_machine() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (nspawn, mounts, namespaces); run them as root")
    missing = [tool for tool in LAB_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the lab tests need {', '.join(missing)}: run `make deps` first")
    clear_a_lab_left_up()


def clear_a_lab_left_up() -> None:
    """A run that was killed leaves its lab behind; the tests start from no lab at all."""
    left = lab_status()
    if left["state"] != "absent":
        warnings.warn(f"took down a lab left {left['state']} by an earlier run", stacklevel=1)
        gpufleet("lab", "down")


@pytest.fixture(scope="session")
def lab(lab_machine: None) -> dict:
    started = time.monotonic()
    gpufleet("lab", "up")
    print(f"lab up took {time.monotonic() - started:.1f} s")
    yield lab_status()
    if lab_status()["state"] != "absent":
        gpufleet("lab", "down", check=False)


@pytest.fixture(scope="session")
def fleet(lab: dict) -> dict:
    """GPU hosts converged behind the LB, shared by the LB and model swap tests."""
    hosts = {h["name"]: h["address"] for h in lab["hosts"]}
    playbook(lab, "gpu_hosts.yml")
    playbook(lab, "loadbalancer.yml", *lb_vars())
    fleet = {"lab": lab, "hosts": hosts, "lb": hosts[LB]}
    # Warm each model once, so agents report full weight.
    for model in (LLAMA, LLAMA, QWEN):
        stream_once(target(fleet), "generate", model, 1, 0)
    wait_for(lambda: statuses("gpu-1") == {"UP"}, 30)
    return fleet
