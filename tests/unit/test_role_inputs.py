"""Roles refuse bad input by name before they touch a host (meta/argument_specs.yml)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLAYBOOK = """
- name: Apply {role} with bad input
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: {role}
"""


@pytest.mark.parametrize(
    ("role", "bad_vars", "named"),
    [
        ("base", "base_apt_cache_valid_time=soon", "base_apt_cache_valid_time"),
        ("base", "base_time_sync=maybe", "base_time_sync"),
        ("base", '{"base_packages": {"curl": 1}}', "base_packages"),
    ],
)
def test_bad_input_fails_before_any_task_and_names_the_variable(tmp_path, role, bad_vars, named):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(role=role))
    result = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", bad_vars],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert named in output
    assert "Validating arguments against arg spec" in output
    assert "TASK [base : Refresh the apt cache" not in output
