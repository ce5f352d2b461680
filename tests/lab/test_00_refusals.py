"""What `lab up` refuses before the session's lab exists: one line, non-zero, nothing made."""

import socket
import subprocess

from labctl import gpufleet, lab_status

from gpufleet.lab.topology import BRIDGE


def assert_nothing_left():
    status = lab_status()
    assert status["state"] == "absent", status


def test_a_busy_ec2_port_is_named():
    assert_nothing_left()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = gpufleet("lab", "up", "--ec2-port", str(port), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gpufleet lab up: port {port} on 127.0.0.1 is busy: choose another with --ec2-port"
    )
    assert_nothing_left()


def test_a_subnet_the_machine_already_routes_is_refused():
    subprocess.run(["ip", "link", "add", "gftest0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "address", "add", "10.78.0.1/24", "dev", "gftest0"], check=True)
        result = gpufleet("lab", "up", "--subnet", "10.78.0.0/24", check=False)
    finally:
        subprocess.run(["ip", "link", "delete", "gftest0"], check=True)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "gpufleet lab up: --subnet 10.78.0.0/24 overlaps 10.78.0.0/24 on gftest0: "
        "choose another subnet"
    )
    assert_nothing_left()


def test_a_stale_lab_from_a_killed_run_is_named_and_down_clears_it():
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", "gflab-gpu-1"], check=True)
    result = gpufleet("lab", "up", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gpufleet lab up: a stale lab from an earlier run is still here (bridge {BRIDGE}, "
        "2 pieces in all): run `gpufleet lab down` first"
    ]
    status = gpufleet("lab", "status", check=False)
    assert status.returncode == 1
    assert "leftover: namespace gflab-gpu-1" in status.stdout
    gpufleet("lab", "down")
    assert_nothing_left()
