"""The fleet lab for the lab tests: brought up once per session, taken down by the last test.

These tests never skip: on a machine that cannot run the lab they fail and say why.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings

import baking
import phases
import pytest
from fleet import LB, LLAMA, QWEN, lb_vars, playbooks_at_once, statuses, target, wait_for
from labctl import fleet_hosts, gpufleet, lab_status

from gpufleet.lab.load import stream_once

LAB_TOOLS = ("systemd-nspawn", "debootstrap", "ip", "nft", "ssh")
# The session's shared set-up, timed as phases of its own for make test's phase table.
SHARED_SETUP = {"lab": "lab up", "fleet": "the shared fleet's converge"}
CLOCK = phases.PhaseClock()
BAKE_HOSTS_WANTED = pytest.StashKey[bool]()


# Where a test's closest marker puts it, first match wins; unmarked tests share the fleet.
LAB_ORDER = (
    ("lab_teardown", 5),
    ("lab_on_the_driver_build", 2),
    ("lab_after_scenarios", 4),
    ("lab_before_the_bake", 1),
    ("lab_fresh_hosts", 3),
)


def lab_rank(item: pytest.Item) -> int:
    return next((rank for name, rank in LAB_ORDER if item.get_closest_marker(name)), 0)


def needs_the_bake_hosts(item: pytest.Item) -> bool:
    """Whether a test reads the nvidia_driver scenario's build or the run's bake."""
    return bool(item.get_closest_marker("lab_on_the_driver_build")) or "baked" in getattr(
        item, "fixturenames", ()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests sharing the converged fleet go before any test that resets a host under it;
    of those, the lab's recovery tests first and the tests reading the nvidia_driver
    scenario's build right after, so the run's bake (tests/lab/baking.py) runs beside the
    rest; tests that take up hosts the molecule scenarios left converged go after them; the
    teardown test goes last, whatever order the files are in."""
    items.sort(key=lab_rank)
    config.stash[BAKE_HOSTS_WANTED] = any(needs_the_bake_hosts(item) for item in items)


def phase_of(item: pytest.Item) -> str:
    """A test's phase in make test's table: its molecule scenario, or its file."""
    callspec = getattr(item, "callspec", None)
    scenario = callspec.params.get("scenario") if callspec else None
    return f"molecule {scenario}" if scenario else item.path.name


class SharedSetupTimer:
    """Times the session fixtures' set-up. Registered as a plugin of its own: pytest asks a
    session fixture's hooks of the root's conftest only, not of this folder's."""

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
        if fixturedef.argname not in SHARED_SETUP:
            return (yield)
        started = time.time()
        try:
            return (yield)
        finally:
            CLOCK.shared(SHARED_SETUP[fixturedef.argname], started, time.time() - started)
            if fixturedef.argname == "fleet":
                # The checks beside the lab tests may start: the busiest set-up is done.
                phases.open_gate()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SharedSetupTimer(), "gpufleet-lab-shared-setup-timer")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    started, shared_before = time.time(), CLOCK.shared_seconds
    try:
        return (yield)
    finally:
        shared = CLOCK.shared_seconds - shared_before
        CLOCK.spend(phase_of(item), started, time.time() - started - shared)


def pytest_sessionfinish(session: pytest.Session) -> None:
    phases_file = phases.recording()
    if phases_file:
        # The bake hosts' work ran beside the tests: listed apart, not on the lab's path.
        for name, (started, seconds) in baking.BESIDE.items():
            CLOCK.spend(f"beside the tests: {name}", started, seconds)
        CLOCK.write(phases_file, within="lab")


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
def lab(lab_machine: None, request: pytest.FixtureRequest) -> dict:
    started = time.monotonic()
    gpufleet("lab", "up", "--bake-hosts", str(baking.BAKE_HOSTS))
    print(f"lab up took {time.monotonic() - started:.1f} s")
    if request.config.stash.get(BAKE_HOSTS_WANTED, False):
        baking.begin_scenario()
    yield lab_status()
    if lab_status()["state"] != "absent":
        gpufleet("lab", "down", check=False)


@pytest.fixture(scope="session")
def fleet(lab: dict) -> dict:
    """GPU hosts converged behind the LB, shared by the LB and model swap tests."""
    hosts = {name: host["address"] for name, host in fleet_hosts(lab).items()}
    # The LB's config comes from the inventory, not from the GPU hosts: both converge at once.
    playbooks_at_once(lab, ("gpu_hosts.yml",), ("loadbalancer.yml", *lb_vars()))
    fleet = {"lab": lab, "hosts": hosts, "lb": hosts[LB]}
    # Warm each model once, so agents report full weight.
    for model in (LLAMA, LLAMA, QWEN):
        stream_once(target(fleet), "generate", model, 1, 0)
    wait_for(lambda: statuses("gpu-1") == {"UP"}, 30)
    return fleet


@pytest.fixture(scope="session")
def baked(lab: dict) -> dict:
    """The run's one bake, kept as an image (tests/lab/baking.py): the bake tests read it,
    the launch tests launch hosts from it."""
    return baking.result()
