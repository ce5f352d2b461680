"""The lab's download site: what it builds once and serves its hosts on the bridge.

One HTTP server on the lab bridge (the model registry of the Ollama stand-in) serves
release-shaped archives as Ollama's and node exporter's download sites would, models
on the registry paths Ollama pulls from, as registry.ollama.ai would, and the CUDA
repository stand-in, as developer.download.nvidia.com would. The stand-ins come from
gpufleet.lab.standins. Production never uses any of this.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import TypedDict

from gpufleet.lab import LabError
from gpufleet.lab.rootfs import SOURCES_LIST
from gpufleet.lab.standins.cuda_repo import build as cuda_repo
from gpufleet.lab.standins.ollama import release
from gpufleet.lab.system import (
    free_port,
    python_module,
    read_pid,
    start_daemon,
    stop_daemon,
    tcp_open,
)
from gpufleet.lab.topology import LabPaths, LabTopology

REGISTRY_MODULE = "gpufleet.lab.standins.ollama.registry"
DEFAULT_MODELS = "llama3.1:8b=1MB,qwen2.5:7b=1MB,nomic-embed-text=1MB,mistral:7b=1MB"
# Served with a corrupt weights blob, so its pull fails: a model swap's failing canary.
BROKEN_MODEL = "gemma2:9b=1MB"
# Served side by side, as on Ollama's download site: the newest is installed by default,
# the older two (`.tgz` releases, from before 0.14) let tests upgrade and downgrade.
OLLAMA_RELEASES = ("0.14.2", "0.13.5", "0.12.11")
DEBIAN_NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")


class Artifacts(TypedDict):
    """What the lab serves under /files/: Ollama releases (newest first), node exporter's
    archive and the CUDA repository stand-in."""

    ollama: list[dict[str, str]]
    node_exporter: dict[str, str]
    cuda_repo: dict[str, str]


def build_releases(paths: LabPaths) -> list[dict[str, str]]:
    """Each stand-in release under files/ollama/v<version>/, Ollama's download path."""
    built = []
    for version in OLLAMA_RELEASES:
        try:
            archive, digest = release.build(paths.files_dir / "ollama" / f"v{version}", version)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise LabError(f"building Ollama stand-in release {version} failed: {exc}") from None
        built.append(
            {
                "archive": archive.name,
                "sha256": digest,
                "version": version,
                "path": f"ollama/v{version}/{archive.name}",
            }
        )
    return built


def build_node_exporter_archive(paths: LabPaths) -> dict[str, str]:
    """node exporter's release layout around Debian's binary: the archive can't be downloaded
    here, the package can, and the node_exporter role installs both the same way."""
    if not DEBIAN_NODE_EXPORTER.exists():
        raise LabError(f"{DEBIAN_NODE_EXPORTER} is missing: run `make deps`")
    shown = subprocess.run(
        [str(DEBIAN_NODE_EXPORTER), "--version"], capture_output=True, text=True, check=False
    )
    banner = shown.stdout + shown.stderr
    match = re.search(r"version (\d+\.\d+\.\d+)", banner)
    if match is None:
        raise LabError(f"cannot read the version of {DEBIAN_NODE_EXPORTER}: {banner[:80]!r}")
    version = match.group(1)
    name = f"node_exporter-{version}.linux-amd64"
    archive = paths.files_dir / f"{name}.tar.gz"
    paths.files_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging) / name
        root.mkdir()
        shutil.copy2(DEBIAN_NODE_EXPORTER, root / "node_exporter")
        (root / "NOTICE").write_text(
            "Debian's prometheus-node-exporter binary, packed for the "
            "gpufleet lab in node exporter's release layout.\n"
        )
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=name)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    return {"version": version, "archive": archive.name, "sha256": digest}


def build_cuda_repo(paths: LabPaths) -> dict[str, str]:
    """The CUDA repository stand-in, built once per machine into the cache (its Debian
    packages are about 100 MB) and linked under files/ at NVIDIA's path."""
    try:
        repo = cuda_repo.build(paths.cache / "cuda-repo", SOURCES_LIST)
    except cuda_repo.BuildError as exc:
        raise LabError(f"building the CUDA repository stand-in failed: {exc}") from None
    top = repo["path"].split("/", 1)[0]
    link = paths.files_dir / top
    paths.files_dir.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(paths.cache / "cuda-repo" / top)
    return repo


def registry_pid(paths: LabPaths) -> int | None:
    return read_pid(paths.registry_dir / "registry.pid")


def start_registry(paths: LabPaths, topology: LabTopology) -> int:
    """Serve models and files on the bridge address; return the port."""
    port = topology.registry_port or free_port(topology.gateway)
    paths.registry_dir.mkdir(parents=True, exist_ok=True)
    argv = python_module(
        REGISTRY_MODULE, "--listen", f"{topology.gateway}:{port}", "--files", str(paths.files_dir)
    )
    for spec in topology.registry_models.split(","):
        argv += ["--model", spec.strip()]
    argv += ["--corrupt", BROKEN_MODEL]
    start_daemon(
        argv,
        paths.registry_dir,
        "registry",
        ready=lambda: tcp_open(topology.gateway, port),
        what=f"the lab model registry on {topology.gateway}:{port}",
        timeout=120,
    )
    return port


def stop_registry(paths: LabPaths) -> None:
    stop_daemon(paths.registry_dir / "registry.pid")
