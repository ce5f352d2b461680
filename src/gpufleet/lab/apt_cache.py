"""The lab hosts' shared package cache: every .deb apt downloaded on a lab host, kept with
the lab's root filesystem, so the next host (or the next lab) installs it without
downloading it again.

Each host keeps its own apt archive, so hosts never contend for apt's lock: a new host's
archive is filled from the cache before its overlay is first mounted, and what a host
downloaded is collected into the cache when it is reset or the lab is taken down.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# apt's archive of downloaded packages, relative to a host's root.
ARCHIVES = Path("var/cache/apt/archives")


def cache_dir(cache: Path) -> Path:
    return cache / "apt-archives"


def seed(cache: Path, upper: Path) -> int:
    """Put every cached package into a fresh host's apt archive (its overlay's upper dir,
    not mounted yet); return how many."""
    return _hand_over(cache_dir(cache), upper / ARCHIVES)


def collect(cache: Path, upper: Path) -> int:
    """Keep the packages a host downloaded; return how many were new to the cache."""
    return _hand_over(upper / ARCHIVES, cache_dir(cache))


def _hand_over(source: Path, target: Path) -> int:
    if not source.is_dir():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    handed = 0
    for deb in source.glob("*.deb"):
        destination = target / deb.name
        if destination.exists() or not deb.is_file():
            continue
        partial = destination.with_suffix(".part")
        try:
            os.link(deb, partial)
        except OSError:
            shutil.copyfile(deb, partial)
        # apt trusts a package in its archive by name, size and hash: never a half-written one.
        partial.replace(destination)
        handed += 1
    return handed
