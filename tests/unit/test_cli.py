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


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--ec2-port", "70000"], "--ec2-port 70000 is not a TCP port (1 to 65535)"),
        (["--ec2-port", "0"], "--ec2-port 0 is not a TCP port (1 to 65535)"),
        (["--region", "us-east-1a"], "--region 'us-east-1a' is not an AWS region name"),
        (["--region", "US-EAST-1"], "--region 'US-EAST-1' is not an AWS region name"),
    ],
)
def test_bad_up_options_are_named_before_anything_is_built(tmp_path, args, line):
    env = {**os.environ, "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    result = gpufleet("lab", "up", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"gpufleet lab up: {line}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--nvme-disks", "two"], "--nvme-disks 'two' is not a count or counts such as 2,1,0"),
        (["--nvme-disks", "2,9"], "--nvme-disks needs counts from 0 to 8, such as 2,1,0"),
        (["--nvme-size", "64M"], "--nvme-size 64M is below the 300M XFS needs"),
    ],
)
def test_bad_nvme_options_are_named_before_anything_is_built(tmp_path, args, line):
    env = {**os.environ, "GPUFLEET_LAB_STATE": str(tmp_path / "state")}
    result = gpufleet("lab", "up", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"gpufleet lab up: {line}"
    assert not (tmp_path / "state").exists()
