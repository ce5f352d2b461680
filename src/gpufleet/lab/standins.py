"""Lab services that stand in for what the lab cannot download: Ollama's releases and
registry, node exporter's release archive and NVIDIA's CUDA apt repository.

They come from the stand-ins under the checkout's tests/ directory. One HTTP
server on the lab bridge serves the release-shaped archives (as Ollama's and
node exporter's download sites would), generated models on the registry paths
Ollama pulls from (as registry.ollama.ai would) and the CUDA repository's shape
(as developer.download.nvidia.com would). Production never uses any of this.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TypedDict

from gpufleet.lab import LabError
from gpufleet.lab.rootfs import SOURCES_LIST
from gpufleet.lab.system import (
    free_port,
    read_pid,
    spawn_daemon,
    stop_daemon,
    tcp_open,
    wait_until,
)
from gpufleet.lab.topology import LabPaths, LabTopology


class Artifacts(TypedDict):
    """What the lab serves under /files/: Ollama releases (newest first), node exporter's
    archive and the CUDA repository stand-in."""

    ollama: list[dict[str, str]]
    node_exporter: dict[str, str]
    cuda_repo: dict[str, str]


STANDIN_ROOT = Path(__file__).resolve().parents[3] / "tests"
DEFAULT_MODELS = "llama3.1:8b=1MB,qwen2.5:7b=1MB,nomic-embed-text=1MB"


def available() -> bool:
    return (STANDIN_ROOT / "ollama_standin" / "__init__.py").exists()


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(STANDIN_ROOT)}


def registry_pid(paths: LabPaths) -> int | None:
    return read_pid(paths.registry_dir / "registry.pid")


# Served side by side, as on Ollama's download site: the newest is installed by default,
# the older two (`.tgz` releases, from before 0.14) let tests upgrade and downgrade.
OLLAMA_RELEASES = ("0.14.2", "0.13.5", "0.12.11")


def build_release(paths: LabPaths, version: str) -> dict[str, str]:
    """Build one stand-in release under files/ollama/v<version>/, Ollama's download path."""
    release = _build(
        "ollama_standin.release", str(paths.files_dir / "ollama" / f"v{version}"), version
    )
    return {**release, "path": f"ollama/v{version}/{release['archive']}"}


def _build(module: str, *args: str) -> dict[str, str]:
    """Run a stand-in builder under tests/; it prints one JSON line last."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise LabError(f"{module} failed: {(out.stderr or out.stdout).strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_releases(paths: LabPaths) -> list[dict[str, str]]:
    return [build_release(paths, version) for version in OLLAMA_RELEASES]


def start_registry(paths: LabPaths, topology: LabTopology) -> int:
    """Serve models and files on the bridge address; return the port."""
    port = topology.registry_port or free_port(topology.gateway)
    paths.registry_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "ollama_standin.registry",
        "--listen",
        f"{topology.gateway}:{port}",
        "--files",
        str(paths.files_dir),
    ]
    for spec in topology.registry_models.split(","):
        argv += ["--model", spec.strip()]
    proc = spawn_daemon(
        argv,
        paths.registry_dir / "registry.log",
        paths.registry_dir / "registry.pid",
        env=_environment(),
    )
    if not wait_until(lambda: tcp_open(topology.gateway, port) or proc.poll() is not None, 120):
        raise LabError(f"the lab model registry did not answer on {topology.gateway}:{port}")
    if proc.poll() is not None:
        raise LabError(f"the lab model registry exited: see {paths.registry_dir}/registry.log")
    return port


def stop_registry(paths: LabPaths) -> None:
    stop_daemon(paths.registry_dir / "registry.pid")


DEBIAN_NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")


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
    repo = _build("cuda_repo_standin.build", str(paths.cache / "cuda-repo"), SOURCES_LIST)
    top = repo["path"].split("/", 1)[0]
    link = paths.files_dir / top
    paths.files_dir.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(paths.cache / "cuda-repo" / top)
    return repo
