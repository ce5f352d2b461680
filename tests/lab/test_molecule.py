"""Every molecule scenario runs on lab hosts: create (a fresh disk), converge, idempotence,
verify; the next scenario's create resets the hosts it takes. The nvidia_driver scenario runs
on bake hosts, in the background from the start of the lab tests (tests/lab/baking.py): its
test waits for it, in conftest's place for the tests reading the driver's build."""

import baking
import pytest
from labctl import REPO, molecule_test

pytestmark = pytest.mark.lab_fresh_hosts

SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.lab_on_the_driver_build)
        if s == baking.DRIVER_SCENARIO
        else s
        for s in SCENARIOS
    ],
)
def test_molecule_scenario_passes(lab, scenario):
    driver = scenario == baking.DRIVER_SCENARIO
    result = baking.scenario() if driver else molecule_test(scenario)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert f"[{scenario} > idempotence] Executed: Successful" in output, output[-8000:]
