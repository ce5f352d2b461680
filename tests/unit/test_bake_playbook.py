"""playbooks/bake.yml refuses an image without the ranges its firewall lets in, naming them,
before any role runs: run on the controller itself (connection local), nothing is changed."""

import json
import subprocess
import sys

import pytest
import repo_scripts

RANGES = {
    "fleet_lb_cidrs": ["10.0.1.0/24"],
    "fleet_ops_cidrs": ["10.0.9.0/24"],
    "fleet_monitoring_cidrs": ["10.0.8.0/24"],
}


def bake(extra_vars: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "build-instance,",
            "-c",
            "local",
            "playbooks/bake.yml",
            "--extra-vars",
            json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}),
        ],
        capture_output=True,
        text=True,
        cwd=repo_scripts.REPO,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("missing", "given"),
    [
        (["fleet_lb_cidrs", "fleet_ops_cidrs", "fleet_monitoring_cidrs"], {}),
        (["fleet_lb_cidrs"], {**RANGES, "fleet_lb_cidrs": []}),
    ],
)
def test_a_bake_without_the_firewalls_ranges_is_refused_naming_them(missing, given):
    result = bake(given)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"bake: {', '.join(missing)} must list the networks (CIDR)" in output, output
    assert "Nothing was changed" in output
    assert "gpufleet.fleet.base" not in output


def test_a_range_that_is_not_a_network_is_refused_naming_its_variable():
    result = bake({**RANGES, "fleet_monitoring_cidrs": ["10.0.8.0/33"]})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "service 'node exporter' (port 9100) may be reached from 10.0.8.0/33" in output, output
    assert "set fleet_monitoring_cidrs" in output
    assert "gpufleet.fleet.base" not in output
