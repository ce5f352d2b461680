"""gpufleet as ops install it: the collection gpufleet.fleet built, installed into an empty
collections path, and a playbook run by its collection name against the lab from another
directory, with a user's own ansible.cfg (the settings the README gives) and nothing of the
repository's.

The file runs after test_lab.py, whose hosts must still reach each other over SSH: the
converged fleet's firewall lets only ops in."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from labctl import REPO

# The README's settings for users' own ansible.cfg: a failed inventory fails the run.
USER_CONFIG = """\
[defaults]
collections_path = {collections}

[inventory]
unparsed_is_failed = true
any_unparsed_is_failed = true
"""


def run(*argv: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{output[-4000:]}"
    return output


def test_the_built_collection_installs_and_converges_the_fleet_by_its_name(fleet, tmp_path):
    collections = tmp_path / "collections"
    config = tmp_path / "ansible.cfg"
    config.write_text(USER_CONFIG.format(collections=collections))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ANSIBLE_") and key != "GPUFLEET_TEST_PHASES"
    } | {"ANSIBLE_CONFIG": str(config)}

    run(
        "ansible-galaxy",
        "collection",
        "build",
        "--output-path",
        str(tmp_path),
        str(REPO),
        cwd=tmp_path,
        env=env,
    )
    (tarball,) = tmp_path.glob("gpufleet-fleet-*.tar.gz")
    installed = run(
        "ansible-galaxy",
        "collection",
        "install",
        "-p",
        str(collections),
        str(tarball),
        cwd=tmp_path,
        env=env,
    )
    assert "gpufleet.fleet:" in installed and "was installed successfully" in installed
    content = collections / "ansible_collections" / "gpufleet" / "fleet"
    assert sorted(p.name for p in content.iterdir() if p.is_dir()) == [
        "docs",
        "meta",
        "playbooks",
        "plugins",
        "roles",
        # The image's boot-time code, which the instance_runtime role installs.
        "runtime",
    ]

    inventory = fleet["lab"]["inventory"]
    output = run("ansible-playbook", "gpufleet.fleet.base", "-i", inventory, cwd=tmp_path, env=env)
    recap = output.split("PLAY RECAP")[-1]
    hosts = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", recap, re.MULTILINE)
    # The fleet was converged from the checkout: the installed collection is the same content.
    assert sorted(name for name, _changed in hosts if name != "localhost") == sorted(fleet["hosts"])
    assert all(changed == "0" for _name, changed in hosts), recap
