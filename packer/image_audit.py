#!/usr/bin/env python3
"""Audit a baked image: fail when it still holds anything of the instance or the build.

Run at the end of every bake, after the sysprep role, either on the build instance in
Packer's still-open session (--root /) or from outside on the image's file system, as one
reads an AMI's snapshot (--root /mnt/image). It reads; it never changes anything.

It fails on what sysprep removes, left behind: authorized_keys of any user, SSH host
keys, a machine id that is not empty, cloud-init's state, logs, shell histories, apt's
lists and downloaded packages, the build's users, anything in /tmp and /var/tmp; and, on
the whole root file system, on AWS credentials, private keys, .netrc files and Ansible's
temporary files. Each finding is one line naming the path and why; the last line counts
them and says how much disk the image uses.

    image_audit.py --root / [--build-user packer ...]

Standard library only: it runs on the image's own python3. Exit status 1 when anything
was found, 2 when the root cannot be read.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The fleet agent's maintenance flag: the build's drain must not travel with the image.
AGENT_MAINTENANCE_FLAG = "/var/lib/gpufleet-fleet-agent/maintenance"
HISTORIES = {".bash_history", ".zsh_history", ".python_history", ".lesshst", ".viminfo"}
# A whole PEM block, armour, body and end: programs such as ssh-keygen carry the armour
# lines as separate strings, and are not keys.
PRIVATE_KEY = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\r?\n"
    rb"(?:[A-Za-z0-9+/=:,. -]*\r?\n)+"
    rb"-----END \1PRIVATE KEY-----"
)
AWS_SECRET = re.compile(rb"aws_secret_access_key\s*=|AWS_SECRET_ACCESS_KEY\s*=\s*\S")
ANSIBLE_TEMP = re.compile(r"^(ansible-tmp-|AnsiballZ_|ansible_[A-Za-z0-9_]+_payload)")
# Only small files are read for keys and secrets: credentials are never large, models are.
CONTENT_LIMIT = 1 << 20
# Pseudo file systems and what only the running instance has, never part of the image.
NOT_IMAGE = ("proc", "sys", "dev", "run")
# The image's own, read here, never written.
TEMPORARY_DIRECTORIES = ("/tmp", "/var/tmp")  # noqa: S108


@dataclass(frozen=True)
class Finding:
    path: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why}"


class Image:
    """The image's root file system, read from inside (/) or from outside."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.device = root.stat().st_dev

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def shown(self, path: Path) -> str:
        """The path as the image's instances will see it."""
        relative = path.relative_to(self.root)
        return "/" if relative == Path() else f"/{relative}"

    def walk(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Every file and directory of the root file system, not crossing into others."""
        skip = {self.path(name) for name in NOT_IMAGE}
        for top, dirs, files in os.walk(self.root):
            here = Path(top)
            kept = []
            for name in dirs:
                child = here / name
                try:
                    info = child.lstat()
                except OSError:
                    continue
                if child in skip or info.st_dev != self.device:
                    continue
                kept.append(name)
                yield child, info
            dirs[:] = kept
            for name in files:
                child = here / name
                try:
                    yield child, child.lstat()
                except OSError:
                    continue

    def homes(self) -> list[Path]:
        homes = [self.path("/root")]
        home = self.path("/home")
        if home.is_dir():
            homes += sorted(p for p in home.iterdir() if p.is_dir() and not p.is_symlink())
        return homes


def audit(image: Image, build_users: list[str]) -> tuple[list[Finding], int]:
    """Everything found, and the bytes the image's files take."""
    findings = list(fixed_places(image, build_users))
    used = 0
    for path, info in image.walk():
        if stat.S_ISREG(info.st_mode):
            used += info.st_blocks * 512
        findings += anywhere(image, path, info)
    return sorted(set(findings), key=lambda f: f.path), used


def fixed_places(image: Image, build_users: list[str]) -> Iterator[Finding]:
    for home in image.homes():
        for name in ("authorized_keys", "authorized_keys2"):
            if (home / ".ssh" / name).exists():
                yield Finding(image.shown(home / ".ssh" / name), "an authorized key")
        for name in HISTORIES:
            if (home / name).exists():
                yield Finding(image.shown(home / name), "a shell history")
    for key in sorted(image.path("/etc/ssh").glob("ssh_host_*")):
        yield Finding(image.shown(key), "an SSH host key (every instance needs its own)")
    machine_id = image.path("/etc/machine-id")
    if machine_id.is_file() and machine_id.read_text().strip():
        yield Finding("/etc/machine-id", "not empty (every instance needs its own)")
    dbus_id = image.path("/var/lib/dbus/machine-id")
    if dbus_id.is_file() and not dbus_id.is_symlink() and dbus_id.read_text().strip():
        yield Finding("/var/lib/dbus/machine-id", "not empty")
    if image.path(AGENT_MAINTENANCE_FLAG).exists():
        yield Finding(
            AGENT_MAINTENANCE_FLAG, "the fleet agent's drain (every instance would start drained)"
        )
    cloud = image.path("/var/lib/cloud")
    for state in ("instance", "instances", "data", "sem"):
        if (cloud / state).exists() and any((cloud / state).iterdir()):
            yield Finding(image.shown(cloud / state), "cloud-init state of the build instance")
    yield from non_empty_files(image, "/var/log", "a log")
    yield from entries(image, "/var/lib/apt/lists", "apt's lists", keep={"lock", "partial"})
    yield from entries(
        image, "/var/cache/apt/archives", "a downloaded package", keep={"lock", "partial"}
    )
    for name in ("pkgcache.bin", "srcpkgcache.bin"):
        if image.path(f"/var/cache/apt/{name}").exists():
            yield Finding(f"/var/cache/apt/{name}", "apt's cache")
    for temporary in TEMPORARY_DIRECTORIES:
        yield from entries(image, temporary, "a temporary file")
    passwd = image.path("/etc/passwd")
    users = (
        {line.split(":", 1)[0] for line in passwd.read_text().splitlines()}
        if passwd.exists()
        else set()
    )
    for user in build_users:
        if user in users:
            yield Finding("/etc/passwd", f"the build's user {user} is still there")


def non_empty_files(image: Image, directory: str, what: str) -> Iterator[Finding]:
    top = image.path(directory)
    if top.is_dir():
        for path in sorted(top.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.stat().st_size > 0:
                yield Finding(image.shown(path), what)


def entries(
    image: Image, directory: str, what: str, keep: set[str] = frozenset()
) -> Iterator[Finding]:
    top = image.path(directory)
    if top.is_dir():
        for path in sorted(top.iterdir()):
            if path.name not in keep:
                yield Finding(image.shown(path), what)


def anywhere(image: Image, path: Path, info: os.stat_result) -> list[Finding]:
    """What must not be anywhere on the image, by name or, for small files, by content."""
    shown = image.shown(path)
    name = path.name
    if stat.S_ISDIR(info.st_mode):
        if name == ".ansible" or ANSIBLE_TEMP.match(name):
            return [Finding(shown, "Ansible's temporary files")]
        return []
    if not stat.S_ISREG(info.st_mode):
        return []
    if name in (".netrc", "_netrc"):
        return [Finding(shown, "a .netrc (credentials)")]
    if name == "credentials" and path.parent.name == ".aws":
        return [Finding(shown, "AWS credentials")]
    if ANSIBLE_TEMP.match(name):
        return [Finding(shown, "an Ansible temporary file")]
    if info.st_size > CONTENT_LIMIT or info.st_size == 0:
        return []
    try:
        with path.open("rb") as handle:
            content = handle.read(CONTENT_LIMIT)
    except OSError:
        return []
    if PRIVATE_KEY.search(content):
        return [Finding(shown, "a private key")]
    if AWS_SECRET.search(content):
        return [Finding(shown, "an AWS secret access key")]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"), help="the image's root")
    parser.add_argument(
        "--build-user",
        action="append",
        default=[],
        help="a user only the build had, who must be gone (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        image = Image(args.root.resolve())
    except OSError as exc:
        print(f"image audit: cannot read {args.root}: {exc}", file=sys.stderr)
        return 2
    findings, used = audit(image, args.build_user)
    for finding in findings:
        print(f"image audit: {finding}")
    verdict = "clean" if not findings else f"{len(findings)} findings"
    print(f"image audit: {verdict}; the image's files take {used / 1e9:.2f} GB")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
