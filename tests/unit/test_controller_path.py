"""controller_path: a relative path is under the directory ansible-playbook was started in,
not the playbook's (where the pipe lookup runs) or a module's temporary one."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.debug:
        msg: >-
          PATHS {{ 'reports' | gpufleet.fleet.controller_path }}
          {{ '/srv/r' | gpufleet.fleet.controller_path }}
"""


def test_a_relative_path_is_taken_from_where_the_run_started(tmp_path):
    playbooks, started_in = tmp_path / "collection" / "playbooks", tmp_path / "ops"
    playbooks.mkdir(parents=True)
    started_in.mkdir()
    (playbooks / "report.yml").write_text(PLAYBOOK)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            str(playbooks / "report.yml"),
        ],
        cwd=started_in,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PATHS {started_in}/reports /srv/r" in result.stdout
