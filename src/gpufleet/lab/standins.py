"""Lab services that stand in for what the lab cannot download: Ollama's release and registry.

Both come from the Ollama stand-in under the checkout's tests/ directory. One
HTTP server on the lab bridge serves the release-shaped archive (as Ollama's
download site would) and generated models on the registry paths Ollama pulls
from (as registry.ollama.ai would). Production never uses any of this.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpufleet.lab import LabError
from gpufleet.lab.system import (
    free_port,
    read_pid,
    spawn_daemon,
    stop_daemon,
    tcp_open,
    wait_until,
)
from gpufleet.lab.topology import LabPaths, LabTopology

STANDIN_ROOT = Path(__file__).resolve().parents[3] / "tests"
DEFAULT_MODELS = "llama3.1:8b=1MB,qwen2.5:7b=1MB,nomic-embed-text=1MB"


def available() -> bool:
    return (STANDIN_ROOT / "ollama_standin" / "__init__.py").exists()


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(STANDIN_ROOT)}


def registry_pid(paths: LabPaths) -> int | None:
    return read_pid(paths.registry_dir / "registry.pid")


def build_release(paths: LabPaths) -> dict[str, str]:
    """Build the stand-in's release archive into the files the registry serves."""
    out = subprocess.run(
        [sys.executable, "-m", "ollama_standin.release", str(paths.files_dir)],
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise LabError(f"building the Ollama stand-in release failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
