"""Build the CUDA repository stand-in:
`python -m gpufleet.lab.standins.cuda_repo.build OUT_DIR SOURCES`.

SOURCES is the text of the apt sources the lab's hosts use (Debian with contrib and
non-free), so the packages are resolved against exactly what the hosts see.

Prints one JSON line: the repository's path under OUT_DIR, its key file and
fingerprint, and the driver version it carries. A finished OUT_DIR is reused, so
Debian's packages (about 100 MB) are fetched once per machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

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


class BuildError(RuntimeError):
    """A step of the build failed; the message names the command and its last words."""


def run(argv: list[str], **kwargs: object) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if out.returncode != 0:
        raise BuildError(f"{' '.join(argv[:3])}... failed: {out.stderr.strip()[-400:]}")
    return out.stdout


def apt_options(work: Path, sources: str) -> list[str]:
    """A private apt: its own sources, lists, cache and an empty dpkg status, so it
    resolves the whole dependency closure and touches nothing else."""
    for directory in ("lists/partial", "cache/archives/partial", "sources.d", "preferences.d"):
        (work / directory).mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(sources)
    (work / "status").touch()
    return [
        f"-oDir::Etc::SourceList={work / 'sources.list'}",
        f"-oDir::Etc::SourceParts={work / 'sources.d'}",
        f"-oDir::Etc::PreferencesParts={work / 'preferences.d'}",
        f"-oDir::State::Lists={work / 'lists'}",
        f"-oDir::Cache={work / 'cache'}",
        f"-oDir::State::status={work / 'status'}",
        "-oDebug::NoLocking=1",
        "-oAPT::Architecture=amd64",
        "-oAPT::Architectures=amd64",
    ]


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


def packages_index(repo: Path) -> str:
    stanzas = []
    for deb in sorted((repo / "pool").glob("*.deb")):
        data = deb.read_bytes()
        control = run(["dpkg-deb", "--field", str(deb)]).rstrip("\n")
        stanzas.append(
            f"{control}\nFilename: ./pool/{deb.name}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data, usedforsecurity=False).hexdigest()}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
        )
    return "\n".join(stanzas)


def release_file(repo: Path, names: list[str]) -> str:
    lines = [
        "Origin: gpufleet lab",
        f"Label: {LABEL}",
        "Architectures: amd64",
        f"Date: {formatdate(usegmt=True)}",
    ]
    for field, algorithm in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{field}:")
        for name in names:
            data = (repo / name).read_bytes()
            digest = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
            lines.append(f" {digest} {len(data)} {name}")
    return "\n".join(lines) + "\n"


def gnupg_environment(home: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(home)}


def gpg(home: Path, *args: str) -> str:
    return run(
        ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        env=gnupg_environment(home),
    )


def make_key(home: Path) -> str:
    home.mkdir(mode=0o700, parents=True)
    gpg(home, "--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
    listing = gpg(home, "--with-colons", "--list-keys")
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def sign_repository(home: Path, repo: Path, fingerprint: str) -> str:
    """Sign Release both ways apt reads, and publish the key as `<short id>.pub`."""
    gpg(
        home,
        "--local-user",
        fingerprint,
        "--clearsign",
        "-o",
        str(repo / "InRelease"),
        str(repo / "Release"),
    )
    gpg(
        home,
        "--local-user",
        fingerprint,
        "--armor",
        "--detach-sign",
        "-o",
        str(repo / "Release.gpg"),
        str(repo / "Release"),
    )
    key_name = f"{fingerprint[-8:].lower()}.pub"
    (repo / key_name).write_text(gpg(home, "--armor", "--export", fingerprint))
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=gnupg_environment(home), check=False)
    return key_name


def build(out_dir: Path, sources: str) -> dict[str, str]:
    summary_file = out_dir / "repo.json"
    if summary_file.exists():
        return json.loads(summary_file.read_text())
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    repo = staging / REPO_PATH
    (repo / "pool").mkdir(parents=True)
    driver_version = fetch_driver_packages(staging / "apt", sources, repo / "pool")
    build_metapackage(repo / "pool", driver_version)
    index = packages_index(repo)
    (repo / "Packages").write_text(index)
    (repo / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
    (repo / "Release").write_text(release_file(repo, ["Packages", "Packages.gz"]))
    fingerprint = make_key(staging / "gnupg")
    key_name = sign_repository(staging / "gnupg", repo, fingerprint)
    summary = {
        "path": REPO_PATH,
        "key": key_name,
        "fingerprint": fingerprint,
        "driver_version": driver_version,
        "packages": str(len(list((repo / "pool").glob("*.deb")))),
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
