"""Benchmark the fleet lab's life cycle against its budget.

Times `gpufleet lab up` cold (no cached rootfs: debootstrap included) and warm
(cached rootfs), and `gpufleet lab down`, for the default 4 hosts. The cold run
builds into a temporary cache, so the machine's cached rootfs is left as it was.

Budget: warm up <= 120 s, cold up <= 240 s, down <= 20 s on a 2-core machine.
Prints one JSON line of figures and their ratios to the budget last.

    .venv/bin/python benchmarks/lab_up.py [--skip-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BUDGET_SECONDS = {"up_warm": 120.0, "up_cold": 240.0, "down": 20.0}


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def cycle(env: dict[str, str]) -> tuple[float, float]:
    up = timed(["lab", "up"], env)
    down = timed(["lab", "down"], env)
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="skip the debootstrap run")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    env = dict(os.environ)
    if not args.skip_cold:
        cold_cache = tempfile.mkdtemp(prefix="gpufleet-lab-cold-")
        try:
            figures["up_cold"], figures["down_after_cold"] = cycle(
                {**env, "GPUFLEET_LAB_CACHE": cold_cache}
            )
        finally:
            shutil.rmtree(cold_cache, ignore_errors=True)
    timed(["lab", "up"], env)  # makes sure the machine's own cache is warm
    timed(["lab", "down"], env)
    figures["up_warm"], figures["down"] = cycle(env)
    ratios = {
        f"{k}_to_budget": round(figures[k] / v, 3)
        for k, v in BUDGET_SECONDS.items()
        if k in figures
    }
    result = {"hosts": 4, **{k: round(v, 2) for k, v in figures.items()}, **ratios}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
