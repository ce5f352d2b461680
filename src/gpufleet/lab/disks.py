"""Instance-store NVMe disks for lab GPU hosts: sparse files on loop devices.

Each disk is a sparse file in the host's directory, attached to a loop device, and bound
into the host as /dev/nvme<N>n1 (N from 1: on Nitro, nvme0n1 is the EBS root). Lab hosts
have no udev, so there is no /dev/disk/by-id: the model store is told the device names
(model_store_nvme_devices). A reboot inside the host keeps its disks, as an instance
store survives a reboot; `lab reset` gives fresh, empty ones, as a new instance has.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpufleet.lab.system import run
from gpufleet.lab.topology import LabHost, LabPaths, size_bytes

# How udev names an instance-store disk in /dev/disk/by-id, before its serial number.
INSTANCE_STORE_ID = "nvme-Amazon_EC2_NVMe_Instance_Storage_AWS"


def images(paths: LabPaths, host: LabHost) -> list[Path]:
    return [paths.host_dir(host.name) / f"nvme{i}.img" for i in range(1, host.nvme_disks + 1)]


def names_inside(host: LabHost) -> list[str]:
    """The disks' device names inside the host."""
    return [f"/dev/nvme{i}n1" for i in range(1, host.nvme_disks + 1)]


def attached() -> dict[Path, str]:
    """Every attached loop device by its backing file."""
    listing = json.loads(run(["losetup", "--json", "--list"], check=False) or "{}")
    return {
        Path(device["back-file"].removesuffix(" (deleted)")): device["name"]
        for device in listing.get("loopdevices", [])
        if device.get("back-file")
    }


def ensure(paths: LabPaths, host: LabHost, size: str) -> list[str]:
    """Make and attach the host's disks once; return their loop devices, in order."""
    loops = attached()
    devices = []
    for image in images(paths, host):
        if not image.exists():
            image.parent.mkdir(parents=True, exist_ok=True)
            with image.open("wb"):
                os.truncate(image, size_bytes(size))
        device = loops.get(image) or run(["losetup", "--find", "--show", str(image)]).strip()
        devices.append(device)
    return devices


def nspawn_options(paths: LabPaths, host: LabHost, loops: list[str]) -> list[str]:
    """Bind each loop device in as the host's NVMe disk; mounting it needs CAP_SYS_ADMIN. A
    host launched from an image finds its disks as an instance does, by udev's by-id links
    (the image's model store is told no device names), which the lab makes for it."""
    if not loops:
        return []
    binds = [f"--bind={loop}:{name}" for loop, name in zip(loops, names_inside(host), strict=True)]
    if host.image:
        binds.append(f"--bind-ro={_by_id_links(paths, host)}:/dev/disk/by-id")
    return [*binds, "--capability=CAP_SYS_ADMIN"]


def _by_id_links(paths: LabPaths, host: LabHost) -> Path:
    """/dev/disk/by-id as udev names EC2's instance-store disks, each linking to its device."""
    directory = paths.host_dir(host.name) / "by-id"
    directory.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names_inside(host), start=1):
        link = directory / f"{INSTANCE_STORE_ID}{host.name.replace('-', '')}{index}"
        if not link.is_symlink():
            link.symlink_to(f"../../{Path(name).name}")
    return directory


def detach_below(state: Path) -> None:
    """Detach every loop device whose file lies in the lab's state directory."""
    for image, device in attached().items():
        if image.is_relative_to(state):
            run(["losetup", "--detach", device], check=False)


def lab_loop_devices(state: Path) -> list[str]:
    return [device for image, device in attached().items() if image.is_relative_to(state)]


def wipe(paths: LabPaths, host: LabHost) -> None:
    """Forget the host's disks: a new instance's instance store is empty."""
    loops = attached()
    for image in images(paths, host):
        if image in loops:
            run(["losetup", "--detach", loops[image]], check=False)
        image.unlink(missing_ok=True)
