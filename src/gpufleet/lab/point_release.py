"""The lab's Debian point release: a newer version of packages the lab hosts run, published
on the lab's download site so a patch window has something real to upgrade.

Debian's mirror serves only the newest version of a package, which the lab hosts already
have. The point release repacks Debian's own libc6 with a higher revision (`+gpufleet1`):
the same files, so dpkg replaces the library every process maps, needrestart sees every
service on the old one, and gpufleet's patch reboots GPU hosts for it as for any libc
update. `gpufleet lab publish-update` signs and serves it and adds it to each host's apt
sources; a host that is reset is back on the image's sources.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gpufleet.lab import LabError, hosts
from gpufleet.lab.apt_repo import (
    BuildError,
    apt_options,
    index_and_sign,
    make_key,
    repack_package,
    run,
)
from gpufleet.lab.rootfs import SOURCES_LIST
from gpufleet.lab.topology import LabPaths, LabTopology

PACKAGES = ("libc6",)
REVISION = "+gpufleet1"
REPO_PATH = "debian-point-release"
LABEL = "gpufleet lab Debian point release"
KEY_UID = "gpufleet lab point release <point-release@gpufleet.invalid>"
SOURCES_FILE = Path("etc/apt/sources.list.d/gpufleet-lab-point-release.sources")


def repack(deb: Path, pool: Path) -> str:
    """Debian's package with REVISION appended to its version; return the new version."""
    version = run(["dpkg-deb", "--field", str(deb), "Version"]).strip()

    def bump_version(root: Path) -> None:
        control = root / "DEBIAN" / "control"
        bumped = f"Version: {version}{REVISION}\n"
        control.write_text(control.read_text().replace(f"Version: {version}\n", bumped))

    repack_package(deb, pool, bump_version)
    return version + REVISION


def build(out_dir: Path) -> dict[str, object]:
    """Build the point release once per machine; return its summary."""
    summary_file = out_dir / "repo.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pool = staging / REPO_PATH / "pool"
    downloaded = staging / "downloaded"
    for directory in (pool, downloaded):
        directory.mkdir(parents=True)
    options = apt_options(staging / "apt", SOURCES_LIST)
    run(["apt-get", *options, "update"])
    run(["apt-get", *options, "download", *PACKAGES], cwd=downloaded)
    versions = {deb.name.split("_")[0]: repack(deb, pool) for deb in downloaded.glob("*.deb")}
    fingerprint = make_key(staging / "gnupg", KEY_UID)
    key_name = index_and_sign(staging / "gnupg", staging / REPO_PATH, LABEL, fingerprint)
    summary = {"path": REPO_PATH, "key": key_name, "packages": versions}
    for directory in ("apt", "downloaded"):
        shutil.rmtree(staging / directory)
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    (staging / "repo.json").write_text(json.dumps(summary) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return summary


def sources_entry(url: str, key: str) -> str:
    """A deb822 source with the key inline, so nothing else on the host needs trusting."""
    signed_by = "\n".join(f" {line}" if line.strip() else " ." for line in key.splitlines())
    return f"Types: deb\nURIs: {url}\nSuites: ./\nSigned-By:\n{signed_by}\n"


def publish(paths: LabPaths, topology: LabTopology) -> dict[str, object]:
    """Serve the point release on the lab's download site and add it to every running
    host's apt sources; return its summary with its URL."""
    try:
        summary = build(paths.cache / "point-release")
    except BuildError as exc:
        raise LabError(f"building the lab's point release failed: {exc}") from None
    served = paths.files_dir / REPO_PATH
    if not served.is_symlink():
        paths.files_dir.mkdir(parents=True, exist_ok=True)
        served.symlink_to(paths.cache / "point-release" / REPO_PATH)
    url = f"http://{topology.gateway}:{topology.registry_port}/files/{REPO_PATH}/"
    entry = sources_entry(url, (served / str(summary["key"])).read_text())
    for host in topology.hosts:
        target = hosts.HostFiles(paths, host.name).merged / SOURCES_FILE
        if not target.parent.is_dir():
            raise LabError(f"{host.name} is not up: its root file system is not mounted")
        target.write_text(entry)
    return {**summary, "url": url, "hosts": [h.name for h in topology.hosts]}
