"""The lab's build host work, in the background beside the fleet's tests: the nvidia_driver
scenario, then the run's one bake, both on bake hosts (`lab up --bake-hosts 2`), Packer's
build instances, which no fleet inventory lists and which yield the CPU to the fleet's
hosts (lab/cgroups.py).

The scenario builds the real NVIDIA module on bake-1 from Debian's non-free, and the CUDA
repository's stand-in on bake-2. The bake then takes bake-1 as the scenario left it, with
the driver built and proven idempotent, and so builds the driver once per run, not twice;
every other role converges from fresh. It keeps the image, and bake-1 gets a fresh disk.

The scenario begins when the lab is up, if the run has a test that needs it (begin_scenario());
its test waits for it (scenario()). The bake begins once the test reading the scenario's build
on bake-1 is done (start()), or when a test first needs the image (result()). Both run in one
worker, in that order. The tests that restart the lab's EC2 API, which would forget the
image, run before the bake begins."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from labctl import molecule_test

from gpufleet.lab.topology import LabPaths

# bake-1 takes the driver from Debian's non-free and is baked; bake-2 from the CUDA stand-in.
HOST = "bake-1"
BAKE_HOSTS = 2
DRIVER_SCENARIO = "nvidia_driver"
MODELS = ["qwen2.5:7b", "nomic-embed-text"]
KEPT = re.compile(r"^lab bake: .* image (ami-[0-9a-f]+) ")

# One worker: the scenario, then the bake, each at most once.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-bake-host")
_begun: dict[str, Future] = {}
# Each job's start (epoch seconds) and seconds, for make test's phase table.
BESIDE: dict[str, tuple[float, float]] = {}


def _begin(name: str, job: Callable[[], Any]) -> Future:
    def timed() -> Any:
        started = time.time()
        try:
            return job()
        finally:
            BESIDE[name] = (started, time.time() - started)

    if name not in _begun:
        _begun[name] = _WORKER.submit(timed)
    return _begun[name]


def begin_scenario() -> Future:
    """Begin the nvidia_driver scenario in the background, unless it has begun."""
    return _begin(f"molecule {DRIVER_SCENARIO}", lambda: molecule_test(DRIVER_SCENARIO))


def scenario() -> subprocess.CompletedProcess:
    """The nvidia_driver scenario's run: the one begun in the background, waited for."""
    return begin_scenario().result()


def start() -> None:
    """Begin the run's bake in the background, after the scenario, unless it has begun."""
    _begin("the bake", bake)


def result() -> dict:
    """The run's bake: the one begun in the background, waited for, or one made now."""
    start()
    return _begun["the bake"].result()


def read_lines_as_they_come(process: subprocess.Popen) -> Iterator[tuple[float, str]]:
    """Each output line with the second it arrived."""
    started = time.monotonic()
    for line in process.stdout:
        yield time.monotonic() - started, line.rstrip("\n")


def bake() -> dict:
    argv = [sys.executable, "-m", "gpufleet.cli", "lab", "bake", HOST, "--models", ",".join(MODELS)]
    started = time.monotonic()
    # Its own stdin, as molecule_test's: Packer runs ansible-playbook, beside the tests' ssh.
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
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
