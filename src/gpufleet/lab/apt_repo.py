"""Flat, signed apt repositories the lab builds for its hosts: the CUDA repository stand-in
and the lab's Debian point release. apt on the hosts reads them as it reads any other
(`Packages`, a signed `InRelease` and `Release.gpg`, the key beside them).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path


class BuildError(RuntimeError):
    """A step of the build failed; the message names the command and its last words."""


def run(argv: list[str], **kwargs: object) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if out.returncode != 0:
        raise BuildError(f"{' '.join(argv[:3])}... failed: {out.stderr.strip()[-400:]}")
    return out.stdout


def repack_package(deb: Path, destination: Path, change: Callable[[Path], None]) -> None:
    """Debian's package deb unpacked whole (DEBIAN/ and its files), changed by change(root),
    and built again at destination (a file, or a directory for dpkg-deb to name it in)."""
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging) / "package"
        run(["dpkg-deb", "--raw-extract", str(deb), str(root)])
        change(root)
        # gzip at its fastest: the lab's repositories live only on its bridge.
        built = ["dpkg-deb", "-Zgzip", "-z1", "--root-owner-group", "--build"]
        run([*built, str(root), str(destination)])


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


def release_file(repo: Path, label: str, names: list[str]) -> str:
    lines = [
        "Origin: gpufleet lab",
        f"Label: {label}",
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


def make_key(home: Path, uid: str) -> str:
    """A signing key of the lab's own, made once per repository; return its fingerprint."""
    home.mkdir(mode=0o700, parents=True)
    gpg(home, "--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = gpg(home, "--with-colons", "--list-keys")
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def index_and_sign(home: Path, repo: Path, label: str, fingerprint: str) -> str:
    """Index repo/pool, sign Release both ways apt reads, and publish the key as
    `<short id>.pub`; return the key's file name."""
    index = packages_index(repo)
    (repo / "Packages").write_text(index)
    (repo / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
    (repo / "Release").write_text(release_file(repo, label, ["Packages", "Packages.gz"]))
    for how, name in (("--clearsign", "InRelease"), ("--detach-sign", "Release.gpg")):
        gpg(
            home,
            "--local-user",
            fingerprint,
            "--armor",
            how,
            "-o",
            str(repo / name),
            str(repo / "Release"),
        )
    key_name = f"{fingerprint[-8:].lower()}.pub"
    (repo / key_name).write_text(gpg(home, "--armor", "--export", fingerprint))
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=gnupg_environment(home), check=False)
    return key_name
