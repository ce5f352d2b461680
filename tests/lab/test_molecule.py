"""Molecule scenarios run on lab hosts: create, converge, idempotence, verify, destroy."""

import subprocess

import pytest
from conftest import REPO

SCENARIOS = ["base"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(lab, scenario):
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", scenario],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "idempotence" in output
