"""The lab's one bake per run, shared by the bake tests and the launch tests: gpu-3 baked as
an image would be (`gpufleet lab bake`), kept as an image, and given a fresh disk.

It starts where the nvidia_driver scenario left gpu-3, with the driver that scenario built
from a fresh disk, and proven idempotent, and so builds the driver once per run, not twice;
every other role converges from fresh. Run alone, it bakes a fresh gpu-3 whole."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

from gpufleet.lab.topology import LabPaths

HOST = "gpu-3"
MODELS = ["qwen2.5:7b", "nomic-embed-text"]
KEPT = re.compile(r"^lab bake: .* image (ami-[0-9a-f]+) ")


def read_lines_as_they_come(process: subprocess.Popen) -> Iterator[tuple[float, str]]:
    """Each output line with the second it arrived."""
    started = time.monotonic()
    for line in process.stdout:
        yield time.monotonic() - started, line.rstrip("\n")


def bake() -> dict:
    argv = [sys.executable, "-m", "gpufleet.cli", "lab", "bake", HOST, "--models", ",".join(MODELS)]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = list(read_lines_as_they_come(process))
    status = process.wait(timeout=1800)
    kept = [m.group(1) for _second, line in lines if (m := KEPT.match(line))]
    return {
        "status": status,
        "lines": lines,
        "seconds": time.monotonic() - started,
        "manifest": LabPaths.from_environment().state / "bake" / "packer-manifest.json",
        "image": kept[-1] if kept else "",
    }
