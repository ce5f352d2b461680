"""The Debian 12 root filesystem every lab host boots, built once and cached.

Hosts never write to it: each host mounts it as the lower dir of its own overlay.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from gpufleet.lab import LabError
from gpufleet.lab.system import overlay_lower_dirs, run
from gpufleet.lab.topology import SSH_USER

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "openssh-server", "iproute2", "sudo")
MIRROR = os.environ.get("GPUFLEET_LAB_MIRROR", "http://deb.debian.org/debian")

SECURITY_MIRROR = MIRROR.rsplit("/", 1)[0] + "/debian-security"
COMPONENTS = "main contrib non-free non-free-firmware"
SOURCES_LIST = f"""\
deb {MIRROR} {SUITE} {COMPONENTS}
deb {MIRROR} {SUITE}-updates {COMPONENTS}
deb {SECURITY_MIRROR} {SUITE}-security {COMPONENTS}
"""

# Only the lab's generated ed25519 key is offered, so known_hosts has one line per host.
SSHD_CONFIG = """\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
"""

SUDOERS = f"{SSH_USER} ALL=(ALL) NOPASSWD:ALL\n"

# Bump when the recipe below changes so cached root filesystems are rebuilt.
RECIPE_VERSION = "1"


def recipe_digest() -> str:
    recipe = "\n".join([RECIPE_VERSION, SUITE, MIRROR, *PACKAGES, SOURCES_LIST, SSHD_CONFIG])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def rootfs_path(cache: Path) -> Path:
    return cache / f"rootfs-{SUITE}-{recipe_digest()}"


def ensure_rootfs(cache: Path) -> Path:
    """Return the cached rootfs, building it with debootstrap when it is missing."""
    target = rootfs_path(cache)
    if (target / "etc" / "os-release").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise LabError(
            "debootstrap is not installed: run `make deps` or apt-get install debootstrap"
        )
    building = target.with_name(target.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"lab: building the Debian {SUITE} rootfs (once; cached in {cache})", file=sys.stderr)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            MIRROR,
        ]
    )
    _customise(building)
    building.rename(target)
    _remove_stale_rootfs(cache, keep=target)
    return target


def _customise(root: Path) -> None:
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "ssh" / "sshd_config.d" / "gpufleet-lab.conf").write_text(SSHD_CONFIG)
    (root / "etc" / "apt" / "sources.list").write_text(SOURCES_LIST)
    # Each host gets its own machine id at boot.
    (root / "etc" / "machine-id").write_text("")
    run(
        [
            "chroot",
            str(root),
            "useradd",
            "--create-home",
            "--shell",
            "/bin/bash",
            "--groups",
            "sudo",
            SSH_USER,
        ]
    )
    sudoers = root / "etc" / "sudoers.d" / SSH_USER
    sudoers.write_text(SUDOERS)
    sudoers.chmod(0o440)
    run(["chroot", str(root), "apt-get", "clean"])


def _remove_stale_rootfs(cache: Path, keep: Path) -> None:
    """Older recipes' root filesystems go, unless a running host still stands on one."""
    in_use = overlay_lower_dirs()
    for old in cache.glob(f"rootfs-{SUITE}-*"):
        if old != keep and old.is_dir() and old not in in_use:
            shutil.rmtree(old, ignore_errors=True)
