"""Build the CUDA repository stand-in:
`python -m gpufleet.lab.standins.cuda_repo.build OUT_DIR SOURCES`.

SOURCES is the text of the apt sources the lab's hosts use (Debian with contrib and
non-free), so the packages are resolved against exactly what the hosts see.

Prints one JSON line: the repository's path under OUT_DIR, its key file and
fingerprint, and the driver version it carries. A finished OUT_DIR of the same RECIPE is
reused, so Debian's packages (about 100 MB) are fetched once per machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

from gpufleet.lab.apt_repo import (
    BuildError,
    apt_options,
    index_and_sign,
    make_key,
    repack_package,
    run,
)

from . import LABEL, REPO_PATH

# What a compute-only host needs; apt adds their dependencies.
DRIVER_PACKAGES = (
    "nvidia-kernel-dkms",
    "nvidia-smi",
    "libcuda1",
    "nvidia-persistenced",
    "firmware-nvidia-gsp",
)
# Only these come from the stand-in; Debian's main component serves the rest to the host.
NON_MAIN_POOL = re.compile(r"/pool/(?:updates/)?(?:contrib|non-free|non-free-firmware)/")
KEY_UID = "gpufleet lab CUDA repository stand-in <cuda-standin@gpufleet.invalid>"
# Bumped when what build() makes changes, so a machine's cached repository is made again.
RECIPE = "2: kernel module source of seconds"
# The modules Debian's dkms.conf for the driver names; each is built from a few lines here.
MODULES = ("nvidia", "nvidia-modeset", "nvidia-drm", "nvidia-uvm", "nvidia-peermem")
MODULE_SOURCE = """\
// gpufleet lab stand-in: builds and loads like a module, drives nothing.
#include <linux/module.h>
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("gpufleet lab stand-in for NVIDIA's %s module");
"""
KBUILD = """\
# gpufleet lab stand-in: Debian's dkms.conf runs `make modules KERNEL_UNAME=...` here.
ifneq ($(KERNELRELEASE),)
obj-m := %s
else
modules:
\t$(MAKE) -C /lib/modules/$(KERNEL_UNAME)/build M=$(CURDIR) modules
endif
"""


def fetch_driver_packages(work: Path, sources: str, pool: Path) -> str:
    """Download the non-main part of the drivers' closure into pool; return the driver version."""
    options = apt_options(work, sources)
    run(["apt-get", *options, "update"])
    install = ["install", "--print-uris", "-qq", "--no-install-recommends", *DRIVER_PACKAGES]
    uris = run(["apt-get", *options, *install])
    files = [line.split()[1] for line in uris.splitlines() if NON_MAIN_POOL.search(line)]
    names = [name.split("_", 1)[0] for name in files]
    run(["apt-get", *options, "download", *names], cwd=pool)
    driver = next(f for f in files if f.startswith("nvidia-kernel-dkms_"))
    return unquote(driver.split("_")[1])


def slim_module_package(pool: Path) -> None:
    """Debian's nvidia-kernel-dkms with a source tree that DKMS builds in seconds.

    The real source takes DKMS minutes a host; the lab builds it, for real, on the host that
    takes the driver from Debian's non-free. Here the package keeps Debian's control file,
    its dh_dkms maintainer scripts (dkms add, then build and install for each kernel with
    headers) and its dkms.conf (module names, install paths), and only the sources change.
    """
    deb = next(pool.glob("nvidia-kernel-dkms_*.deb"))
    slimmed = deb.with_suffix(".slimmed")
    repack_package(deb, slimmed, _slim_sources)
    slimmed.replace(deb)


def _slim_sources(root: Path) -> None:
    source = next((root / "usr" / "src").glob("nvidia-current-*"))
    dkms_conf = (source / "dkms.conf").read_text()
    shutil.rmtree(source)
    source.mkdir()
    (source / "dkms.conf").write_text(dkms_conf)
    (source / "Makefile").write_text(KBUILD % " ".join(f"{m}.o" for m in MODULES))
    for module in MODULES:
        (source / f"{module}.c").write_text(MODULE_SOURCE % module)
    _write_md5sums(root)


def _write_md5sums(root: Path) -> None:
    """DEBIAN/md5sums for the package's files as they now are, as dh_md5sums writes it."""
    files = sorted(f for f in root.rglob("*") if f.is_file() and "DEBIAN" not in f.parts)
    # dpkg's own format is MD5; it names files, it guards nothing.
    digests = [(hashlib.md5(f.read_bytes()).hexdigest(), f.relative_to(root)) for f in files]  # noqa: S324
    lines = [f"{digest}  {name}" for digest, name in digests]
    (root / "DEBIAN" / "md5sums").write_text("\n".join(lines) + "\n")


def build_metapackage(pool: Path, driver_version: str) -> None:
    """nvidia-driver-cuda: NVIDIA's compute-only user space, here as Debian's packages."""
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text(
            f"""\
Package: nvidia-driver-cuda
Version: {driver_version}
Architecture: amd64
Maintainer: gpufleet lab <cuda-standin@gpufleet.invalid>
Depends: nvidia-smi (= {driver_version}), libcuda1 (= {driver_version}), nvidia-persistenced
Section: non-free/libs
Priority: optional
Description: gpufleet lab stand-in for NVIDIA's nvidia-driver-cuda
 Depends on Debian's compute user space of the same driver version.
"""
        )
        run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(pool)])


def build(out_dir: Path, sources: str) -> dict[str, str]:
    summary_file = out_dir / "repo.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("recipe") == RECIPE:
            return summary
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    repo = staging / REPO_PATH
    (repo / "pool").mkdir(parents=True)
    driver_version = fetch_driver_packages(staging / "apt", sources, repo / "pool")
    slim_module_package(repo / "pool")
    build_metapackage(repo / "pool", driver_version)
    fingerprint = make_key(staging / "gnupg", KEY_UID)
    key_name = index_and_sign(staging / "gnupg", repo, LABEL, fingerprint)
    summary = {
        "path": REPO_PATH,
        "key": key_name,
        "fingerprint": fingerprint,
        "driver_version": driver_version,
        "packages": str(len(list((repo / "pool").glob("*.deb")))),
        "recipe": RECIPE,
    }
    shutil.rmtree(staging / "apt")
    (staging / "repo.json").write_text(json.dumps(summary) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return summary


def main() -> None:
    out_dir, sources = Path(sys.argv[1]), sys.argv[2]
    try:
        print(json.dumps(build(out_dir, sources)))
    except BuildError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
