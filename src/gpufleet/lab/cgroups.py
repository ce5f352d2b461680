"""A cgroup of its own for each lab host.

systemd-nspawn --keep-unit puts a container under `<caller's cgroup>/payload`. Hosts
started from the same cgroup would share that subtree, and their systemds then race
to create the same units' cgroups (a unit fails with status 219/CGROUP). Each host's
supervisor therefore moves itself into `gpufleet-lab/<host>` first, in every cgroup
hierarchy systemd uses: the named `systemd` one (cgroup v1 hybrid) and the unified one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from gpufleet.lab.system import mounts

LAB_CGROUP = "gpufleet-lab"


def _hierarchies() -> list[Path]:
    """Where this process sits in each hierarchy systemd uses, as directories."""
    roots = {}
    for mount in mounts():
        if mount.fstype == "cgroup2":
            roots["0::"] = mount.point
        elif mount.fstype == "cgroup" and "name=systemd" in mount.options:
            roots["name=systemd"] = mount.point
    places = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        key = "0::" if number == "0" else controllers
        if key in roots:
            places.append(roots[key] / path.lstrip("/"))
    return places


def enter_host_cgroup(host: str) -> None:
    """Move this process into gpufleet-lab/<host> in every systemd hierarchy."""
    for place in _hierarchies():
        target = place / LAB_CGROUP / host
        target.mkdir(parents=True, exist_ok=True)
        (target / "cgroup.procs").write_text(f"{os.getpid()}\n")


def lab_cgroups() -> list[Path]:
    """The lab's cgroup directories that still exist, deepest first."""
    found = []
    for mount in (
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified"),
        Path("/sys/fs/cgroup"),
    ):
        root = mount / LAB_CGROUP
        if root.is_dir():
            found += [Path(d) for d, _subdirs, _files in os.walk(root)]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def remove_lab_cgroups() -> None:
    """rmdir every lab cgroup left empty once the hosts' processes are gone."""
    for directory in lab_cgroups():
        with contextlib.suppress(OSError):
            directory.rmdir()
