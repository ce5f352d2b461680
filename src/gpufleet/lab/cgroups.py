"""A cgroup of its own for each lab host.

systemd-nspawn --keep-unit puts a container under `<caller's cgroup>/payload`. Hosts
started from the same cgroup would share that subtree, and their systemds then race
to create the same units' cgroups (a unit fails with status 219/CGROUP). Each host's
supervisor therefore moves itself into `gpufleet-lab/<host>` first, in every cgroup
hierarchy systemd uses: the named `systemd` one (cgroup v1 hybrid) and the unified one.

Where cgroup v1's `cpu` controller is mounted, the supervisor enters `gpufleet-lab/<host>`
there too, and the container inherits it (neither nspawn nor the host's systemd manages
that controller). Each host then shares the CPU as one group, whatever number of sessions
it runs, and a host that only builds (Packer's build instance) yields to the fleet's hosts
at a low weight: a long compile there takes mostly what they leave idle. Autogroups (a
scheduler group per session) would otherwise weigh each SSH session alike, and a nice
value holds within one session only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from gpufleet.lab.system import mounts

LAB_CGROUP = "gpufleet-lab"
# cgroup v1's cpu.shares: 1024 is a group's default weight, so a yielding host gets a
# thirty-second of one busy neighbour's share while both want the CPU, and all of it while
# none does. A fleet host waits on SSH between an Ansible run's tasks, and CFS weighs such a
# group below one that runs without pause: beside two spinning processes, a second run of
# loadbalancer.yml took 42.5 s at 128 shares, 38.7 at 32 and 34.1 at 8, against 33 alone.
DEFAULT_CPU_SHARES = 1024
YIELDING_CPU_SHARES = 32


def _mount_point(cgroup_mounts: list, number: str, carried: set[str]) -> Path | None:
    """Where a /proc/self/cgroup line's hierarchy is mounted: the unified one for line 0,
    else the v1 mount carrying its controllers."""
    for mount in cgroup_mounts:
        if number == "0" and mount.fstype == "cgroup2":
            return mount.point
        if number != "0" and mount.fstype == "cgroup" and carried <= set(mount.options):
            return mount.point
    return None


def _hierarchies(controllers: tuple[str, ...]) -> list[Path]:
    """Where this process sits in the unified hierarchy and in each v1 hierarchy carrying
    one of the named controllers (a v1 mount may carry several, such as cpu,cpuacct)."""
    cgroup_mounts = [m for m in mounts() if m.fstype in ("cgroup", "cgroup2")]
    places = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, listed, path = line.split(":", 2)
        carried = set(listed.split(","))
        if number != "0" and not carried & set(controllers):
            continue
        point = _mount_point(cgroup_mounts, number, carried)
        if point is not None:
            places.append(point / path.lstrip("/"))
    return places


def _join(group: Path, shares: int) -> None:
    """Make group, give it shares where it carries the cpu controller, and move this
    process into it."""
    group.mkdir(parents=True, exist_ok=True)
    if (group / "cpu.shares").exists():
        (group / "cpu.shares").write_text(f"{shares}\n")
    (group / "cgroup.procs").write_text(f"{os.getpid()}\n")


def enter_host_cgroup(host: str, yielding: bool = False) -> None:
    """Move this process into gpufleet-lab/<host> in every systemd hierarchy and the v1 cpu
    one, there at a low weight for a yielding host."""
    weight = YIELDING_CPU_SHARES if yielding else DEFAULT_CPU_SHARES
    for place in _hierarchies(("name=systemd", "cpu")):
        _join(place / LAB_CGROUP / host, weight)


def cpu_cgroups() -> list[Path]:
    """This process's cgroup in cgroup v1's cpu hierarchy, where that controller is mounted."""
    return [place for place in _hierarchies(("cpu",)) if (place / "cpu.shares").exists()]


@contextlib.contextmanager
def cpu_group(name: str, shares: int) -> Iterator[None]:
    """Run the body, and every process it starts, in <this process's cpu cgroup>/<name> at
    the given cpu.shares where cgroup v1's cpu controller is mounted (else as it is); then
    move back and remove the group once its processes are gone."""
    places = cpu_cgroups()
    for place in places:
        _join(place / name, shares)
    try:
        yield
    finally:
        for place in places:
            (place / "cgroup.procs").write_text(f"{os.getpid()}\n")
            with contextlib.suppress(OSError):
                (place / name).rmdir()


def lab_cgroups() -> list[Path]:
    """The lab's cgroup directories that still exist, deepest first."""
    found = []
    for mount in (
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/cpu"),
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
