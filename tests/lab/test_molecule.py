"""Every molecule scenario runs on lab hosts: create (a fresh disk), converge, idempotence,
verify; the next scenario's create resets the hosts it takes. The nvidia_driver scenario goes
first: the run's bake of gpu-3 (tests/lab/baking.py) begins as it leaves it, beside the
scenarios on other hosts; a scenario on gpu-3 waits for the bake to end."""

import os
import subprocess

import baking
import pytest
import yaml
from labctl import REPO

pytestmark = pytest.mark.lab_fresh_hosts


def platforms(scenario: str) -> set[str]:
    config = yaml.safe_load((REPO / "molecule" / scenario / "molecule.yml").read_text())
    return {platform["name"] for platform in config["platforms"]}


# The driver's scenario runs first by its marker (conftest's order); those on the bake's
# host go last of the rest, so the others run beside the bake.
DRIVER = "nvidia_driver"
SCENARIOS = sorted(
    (p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml")),
    key=lambda scenario: (baking.HOST in platforms(scenario), scenario),
)


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.lab_before_the_bake) if s == DRIVER else s
        for s in SCENARIOS
    ],
)
def test_molecule_scenario_passes(lab, scenario):
    if baking.HOST in platforms(scenario):
        baking.finished()
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", scenario],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=1800,
        env={**os.environ, "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert f"[{scenario} > idempotence] Executed: Successful" in output, output[-8000:]
