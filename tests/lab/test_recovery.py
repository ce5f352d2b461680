"""`lab up` is idempotent and recovers a half-made lab; `lab reset` gives a fresh disk."""

import os
import signal
import time

import pytest
from labctl import gpufleet, lab_status, on_host

# Before the run's bake: a restarted EC2 API would forget the image it registers.
pytestmark = [pytest.mark.lab_fresh_hosts, pytest.mark.lab_before_the_bake]


def host(name):
    return next(h for h in lab_status()["hosts"] if h["name"] == name)


def test_up_again_on_a_healthy_lab_changes_nothing(lab):
    before = on_host("gpu-1", "cat /proc/sys/kernel/random/boot_id")
    started = time.monotonic()
    gpufleet("lab", "up")
    assert time.monotonic() - started < 30
    assert on_host("gpu-1", "cat /proc/sys/kernel/random/boot_id") == before


def test_up_recovers_a_crashed_host_and_a_dead_ec2_api(lab):
    from gpufleet.lab.topology import LabPaths

    paths = LabPaths.from_environment()
    supervisor = int((paths.host_dir("lb-1") / "supervisor.pid").read_text())
    nspawn = int((paths.host_dir("lb-1") / "nspawn.pid").read_text())
    ec2_server = int((paths.ec2_dir / "server.pid").read_text())
    for pid in (supervisor, nspawn, ec2_server):
        os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    status = gpufleet("lab", "status", check=False)
    assert status.returncode == 1
    assert "lab: degraded" in status.stdout
    assert host("lb-1")["state"] != "up"

    gpufleet("lab", "up")
    report = lab_status()
    assert report["state"] == "up"
    assert report["ec2_api"] == "up"
    assert on_host("lb-1", "hostname").strip() == "lb-1"


def test_reset_gives_a_fresh_disk_and_keeps_the_host_key(lab):
    on_host("gpu-2", "sudo touch /var/tmp/left-by-a-test")
    gpufleet("lab", "reset", "gpu-2")
    out = on_host("gpu-2", "test -e /var/tmp/left-by-a-test && echo stays || echo gone")
    assert out.strip() == "gone"
