"""Benchmark: how long gpufleet-scaler takes to act beyond the windows it is configured with.

On loopback (tests/modules/scaler_fleet.py: a moto server's pool group of 2 and LB instance,
a real HAProxy read through its read-only runtime API, its servers holding every request), the
scaler's passes run every --interval seconds with windows of --window seconds. Each round:

- scale-out: requests are held until HAProxy queues more than the threshold; the reaction
  is from the first moment a 20 ms watcher sees the queue above it to the pass that raised
  the group's desired capacity;
- scale-in: the held requests end and the queue is empty; the reaction is from then to the
  pass that tagged an instance to drain.

The overhead is the reaction beyond the window; the baseline, measured in the same run, is
one pass's own time (reading the LB and the APIs), and the figures are the overhead and its
ratio to the check interval (the most a window can be seen late by, by design). Prints one
JSON line of figures last.

    .venv/bin/python benchmarks/scaler.py [--rounds 3] [--window 3] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "modules")]

from moto_region import aws  # noqa: E402
from scaler_fleet import (  # noqa: E402
    POOL,
    backend_row,
    desired,
    release,
    requests,
    scaler,
    scaler_fleet,
    tagged,
    wait_for,
)

from gpufleet.lab.ec2 import CREDENTIALS  # noqa: E402

Check = Callable[[], bool]


def first_seen(condition: Check, stop: threading.Event, found: list[float]) -> None:
    """Note the first moment condition() holds, looking every 20 ms until stop."""
    while not stop.is_set():
        if condition():
            found.append(time.monotonic())
            return
        time.sleep(0.02)


def passes_until(
    fleet: dict, memory: Any, done: Check, interval: float, durations: list[float]
) -> float:
    """Scaler passes every interval until done(); the moment the acting pass ended."""
    clients = {s: aws(fleet["moto"], s) for s in ("ec2", "autoscaling")}
    while True:
        started = time.monotonic()
        scaler.one_pass(clients, fleet["settings"], memory, dry_run=False)
        ended = time.monotonic()
        durations.append(ended - started)
        if done():
            return ended
        time.sleep(max(0.0, interval - (ended - started)))


def reaction(
    fleet: dict, memory: Any, seen: Check, done: Check, interval: float, durations: list[float]
) -> float:
    """From the moment seen() first holds to the pass after which done() holds."""
    stop, found = threading.Event(), []
    watcher = threading.Thread(target=first_seen, args=(seen, stop, found), daemon=True)
    watcher.start()
    acted = passes_until(fleet, memory, done, interval, durations)
    stop.set()
    watcher.join()
    return acted - found[0]


def one_round(moto: str, window: float, interval: float, durations: list[float]) -> dict:
    pool = POOL | {"scale_out_window": window, "scale_in_window": window}
    with (
        tempfile.TemporaryDirectory() as directory,
        scaler_fleet(moto, Path(directory), pool) as fleet,
    ):
        fleet["settings"]["interval"] = interval
        memory = scaler.Memory()
        threshold = pool["scale_out_queue"]
        before = desired(moto)
        held = requests(fleet, 6)
        out = reaction(
            fleet,
            memory,
            lambda: int(backend_row(fleet)["qcur"]) > threshold,
            lambda: desired(moto) > before,
            interval,
            durations,
        )
        release(fleet, held)
        wait_for(lambda: int(backend_row(fleet)["scur"]) == 0, "the streams to end", fleet)
        memory = scaler.Memory()
        # The group's third instance is not among the LB's servers: one scale-in, of it or
        # another, is what is timed.
        scale_in = reaction(
            fleet, memory, lambda: True, lambda: bool(tagged(moto)), interval, durations
        )
    return {"scale_out_s": round(out, 3), "scale_in_s": round(scale_in, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    durations: list[float] = []
    rounds = []
    try:
        for _round in range(args.rounds):
            # Each round on an empty API: the loopback moto server's reset.
            reset = urllib.request.Request(f"{moto}/moto-api/reset", method="POST")  # noqa: S310
            urllib.request.urlopen(reset).close()  # noqa: S310
            rounds.append(one_round(moto, args.window, args.interval, durations))
    finally:
        server.stop()
    out = round(statistics.median(r["scale_out_s"] for r in rounds), 3)
    scale_in = round(statistics.median(r["scale_in_s"] for r in rounds), 3)
    one_pass = statistics.median(durations)
    print(
        json.dumps(
            {
                "benchmark": "scaler",
                "window_s": args.window,
                "interval_s": args.interval,
                "pass_s": round(one_pass, 3),
                "scale_out_reaction_s": out,
                "scale_in_reaction_s": scale_in,
                "scale_out_overhead_s": round(out - args.window, 3),
                "scale_in_overhead_s": round(scale_in - args.window, 3),
                "scale_out_overhead_to_interval": round((out - args.window) / args.interval, 2),
                "scale_in_overhead_to_interval": round((scale_in - args.window) / args.interval, 2),
                "overhead_to_pass": round((out - args.window) / one_pass, 2),
                # By design a window is seen at most one interval and one pass late.
                "met": max(out, scale_in) - args.window <= args.interval + one_pass,
                "rounds": rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
