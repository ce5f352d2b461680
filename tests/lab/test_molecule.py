"""Every molecule scenario runs on lab hosts: create (a fresh disk), converge, idempotence,
verify; the next scenario's create resets the hosts it takes."""

import os
import subprocess

import pytest
from labctl import REPO

pytestmark = pytest.mark.lab_fresh_hosts

SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(lab, scenario):
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
