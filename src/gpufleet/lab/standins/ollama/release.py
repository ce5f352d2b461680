"""Build a release-shaped archive of the stand-in, laid out like Ollama's linux-amd64 release.

    bin/ollama          the stand-in as one executable (a Python zip application)
    lib/ollama/         where Ollama ships its runners and CUDA libraries; here a notice

Releases from 0.14 on are `.tar.zst`, older ones `.tgz`, as Ollama's are. The ollama
role installs this archive by URL and sha256 exactly as it installs the real one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import zipapp
from pathlib import Path

from . import STANDIN_NOTICE, VERSION

PACKAGE_DIR = Path(__file__).resolve().parent


def archive_name(version: str) -> str:
    major, minor = (int(part) for part in version.split(".")[:2])
    suffix = "tar.zst" if (major, minor) >= (0, 14) else "tgz"
    return f"ollama-linux-amd64.{suffix}"


def build(out_dir: Path, version: str = VERSION) -> tuple[Path, str]:
    """Write the archive and its `.sha256` file into out_dir; return the archive and digest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / archive_name(version)
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        source = staging / "src" / "ollama_standin"
        shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
        (source / "__init__.py").write_text(
            (source / "__init__.py")
            .read_text()
            .replace(f'VERSION = "{VERSION}"', f'VERSION = "{version}"')
        )
        root = staging / "root"
        (root / "bin").mkdir(parents=True)
        (root / "lib" / "ollama").mkdir(parents=True)
        zipapp.create_archive(
            source.parent,
            root / "bin" / "ollama",
            interpreter="/usr/bin/env python3",
            main="ollama_standin.cli:main_exit",
        )
        (root / "bin" / "ollama").chmod(0o755)
        (root / "lib" / "ollama" / "STANDIN").write_text(STANDIN_NOTICE + "\n")
        compression = ["--zstd"] if archive.name.endswith(".zst") else ["--gzip"]
        subprocess.run(
            [
                "tar",
                *compression,
                "--owner=0",
                "--group=0",
                "-cf",
                str(archive),
                "-C",
                str(root),
                "bin",
                "lib",
            ],
            check=True,
        )
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return archive, digest


def main() -> None:
    """`python -m gpufleet.lab.standins.ollama.release OUT_DIR [VERSION]`: build, print one
    JSON line."""
    import json
    import sys

    out_dir = Path(sys.argv[1])
    version = sys.argv[2] if len(sys.argv) > 2 else VERSION
    archive, digest = build(out_dir, version)
    print(json.dumps({"archive": archive.name, "sha256": digest, "version": version}))


if __name__ == "__main__":
    main()
