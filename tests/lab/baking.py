"""The lab's one bake per run, shared by the bake tests and the launch tests: gpu-3 baked as
an image would be (`gpufleet lab bake`), kept as an image, and given a fresh disk.

It starts where the nvidia_driver scenario left gpu-3, with the driver that scenario built
from a fresh disk, and proven idempotent, and so builds the driver once per run, not twice;
every other role converges from fresh. Run alone, it bakes a fresh gpu-3 whole.

It begins in the background (start()) once the test reading the scenario's build is done:
the fresh-host tests after it use other hosts, those on gpu-3 wait for it (finished()), and
the bake tests read it (result()). The tests that restart the lab's EC2 API, which would
forget the image, run before it begins."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from gpufleet.lab.topology import LabPaths

HOST = "gpu-3"
MODELS = ["qwen2.5:7b", "nomic-embed-text"]
KEPT = re.compile(r"^lab bake: .* image (ami-[0-9a-f]+) ")


# The run's bake once begun: at most one, in one background thread.
_BAKING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-bake")
_begun: list[Future] = []


def start() -> None:
    """Begin the run's bake in the background, unless it has begun."""
    if not _begun:
        _begun.append(_BAKING.submit(bake))


def finished() -> None:
    """Wait for the bake begun in the background, if one has begun."""
    if _begun:
        _begun[0].result()


def result() -> dict:
    """The run's bake: the one begun in the background, waited for, or one made now."""
    start()
    return _begun[0].result()


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
