"""`lab down` leaves nothing: no host processes, mounts, namespaces, bridge, nft rules or moto."""

import json
import subprocess
from pathlib import Path

import pytest
from labctl import gpufleet, lab_status

from gpufleet.lab.system import tcp_open
from gpufleet.lab.topology import BRIDGE, NFT_TABLE, LabPaths


def net_namespace(proc):
    try:
        return str((proc / "ns" / "net").readlink())
    except OSError:
        return ""


@pytest.mark.lab_teardown
def test_down_leaves_nothing(lab):
    paths = LabPaths.from_environment()
    ec2_port = int(lab["ec2_endpoint"].rsplit(":", 1)[1])
    forward_before = json.loads(paths.lab_file.read_text())["ip_forward_before"]
    lab_netns = {f"net:[{p.stat().st_ino}]" for p in Path("/run/netns").glob("gflab-*")}
    # Every host, those launched from images since the lab came up among them.
    assert len(lab_netns) == len(lab_status()["hosts"])

    gpufleet("lab", "down")

    assert not paths.state.exists()
    # The images went with the EC2 API that knew their AMIs.
    assert not (paths.cache / "images").exists()
    assert (
        subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode
        != 0
    )
    assert (
        "gflab-"
        not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert (
        subprocess.run(
            ["nft", "list", "table", "ip", NFT_TABLE], capture_output=True, check=False
        ).returncode
        != 0
    )
    assert str(paths.state) not in Path("/proc/self/mountinfo").read_text()
    assert not tcp_open("127.0.0.1", ec2_port)
    processes = subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True, check=True
    ).stdout
    assert "systemd-nspawn" not in processes
    assert "gpufleet.lab." not in processes
    assert "gpufleet.lab.standins" not in processes
    assert not [pid for pid in Path("/proc").glob("[0-9]*") if net_namespace(pid) in lab_netns], (
        "processes of lab hosts outlived lab down"
    )
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == forward_before
    loops = subprocess.run(["losetup", "--list"], capture_output=True, text=True, check=True).stdout
    assert str(paths.state) not in loops, "NVMe loop devices outlived lab down"
    status = gpufleet("lab", "status", check=False)
    assert status.returncode == 3
