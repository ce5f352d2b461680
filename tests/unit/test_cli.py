"""The CLI's refusals: one line naming the reason, a non-zero exit, nothing touched."""

import os
import subprocess
import sys

import pytest


def gpufleet(*args, env=None, wrapper=()):
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "gpufleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.fixture(autouse=True)
def _as_root():
    if os.geteuid() != 0:
        pytest.fail("the CLI tests run as root, as CI does: they drop root themselves")


def test_not_root_is_refused(tmp_path):
    env = {**os.environ, "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    # A user namespace without a mapping makes us uid 65534 while files stay readable.
    result = gpufleet("lab", "up", env=env, wrapper=("unshare", "--user"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpufleet lab up: the lab needs root: it mounts overlays and makes network namespaces"
    ]
    assert not (tmp_path / "state").exists()


def test_missing_prerequisite_is_named(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin), "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    result = gpufleet("lab", "up", env=env)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith("gpufleet lab up: missing prerequisite: systemd-nspawn, debootstrap")
    assert "\n" not in line


def test_ssh_needs_a_lab(tmp_path):
    env = {**os.environ, "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    result = gpufleet("lab", "ssh", "gpu-1", env=env)
    assert result.returncode == 2
    assert "the lab is not up" in result.stderr
