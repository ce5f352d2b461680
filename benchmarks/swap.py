"""Benchmark: what the model swap's orchestration costs, per host, over the work itself.

On the fleet lab (brought up and converged if it is not), its default mixed pool `chat`
(two hosts on llama3.1:8b, one on qwen2.5:7b, the alias `chat` on all) is rolled onto
mistral:7b, a canary then batches, while 20 clients (the official ollama and openai ones)
stream on the pool's alias through the LB. From the run's report: the swap's wall time
against the sum of each host's intrinsic work (its drain wait, pull and warm-up); the
difference, per host, is the orchestration (retiring routes, the alias, agent, tags, waits
for the LBs). Target: at most 15 s per host, with no alias request failed or cut. Prints one
JSON line of figures last.

    .venv/bin/python benchmarks/swap.py [--keep-lab]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from gpufleet.lab import front_door
from gpufleet.lab.load import Load
from gpufleet.lab.topology import LabPaths

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_OVERHEAD_S = 15.0
ALIAS, NEW_MODEL = "chat", "mistral:7b"
PHASES = ("drain_wait_s", "pull_s", "warm_s", "total_s")


def run(*argv: str) -> str:
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-2000:]
        sys.exit(f"{' '.join(argv[:4])} exited {result.returncode}:\n{output}")
    return result.stdout


def lab_status() -> dict:
    """`lab status --json`, which exits non-zero when the lab is absent or degraded."""
    status = [str(BIN / "gpufleet"), "lab", "status", "--json"]
    return json.loads(subprocess.run(status, capture_output=True, text=True, check=False).stdout)


def swap(inventory: str, model: str) -> dict:
    playbook = [str(BIN / "ansible-playbook"), "-i", inventory, "playbooks/model_swap.yml"]
    playbook += ["-e", "model_swap_pool=chat", "-e", f"model_swap_model={model}"]
    started = time.time()
    run(*playbook)
    reports = [
        p for p in (REPO / "reports").glob("model-swap-chat-*.json") if p.stat().st_mtime >= started
    ]
    return json.loads(max(reports, key=lambda p: p.stat().st_mtime).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()
    brought_up = lab_status()["state"] != "up"
    if brought_up:
        run(str(BIN / "gpufleet"), "lab", "up")
    try:
        status = lab_status()
        inventory = status["inventory"]
        run(str(BIN / "ansible-playbook"), "-i", inventory, "playbooks/gpu_hosts.yml")
        run(str(BIN / "ansible-playbook"), "-i", inventory, "playbooks/loadbalancer.yml")
        lb = next(h["address"] for h in status["hosts"] if h["role"] == "lb")
        target = front_door.lb_target(LabPaths.from_environment(), lb)
        alias = Load(target, [ALIAS], concurrency=20, tokens=40).start()
        try:
            report = swap(inventory, NEW_MODEL)
        finally:
            on_alias = alias.stop()
    finally:
        if brought_up and not args.keep_lab:
            run(str(BIN / "gpufleet"), "lab", "down")
    hosts = [row for row in report["hosts"] if row["outcome"] == "swapped"]
    intrinsic = sum(row["drain_wait_s"] + row["pull_s"] + row["warm_s"] for row in hosts)
    for row in hosts:
        print(f"{row['host']}: " + ", ".join(f"{k} {row[k]}" for k in PHASES))
    overhead = (report["wall_s"] - intrinsic) / len(hosts)
    # The overhead split: within each host's own swap, and once per run (preflight, the LBs'
    # backend for the incoming model, the report).
    hosts_total = sum(row["total_s"] for row in hosts)
    in_host_swaps = (hosts_total - intrinsic) / len(hosts)
    once = report["wall_s"] - hosts_total
    print(
        json.dumps(
            {
                "benchmark": "swap",
                "hosts": len(hosts),
                "wall_s": report["wall_s"],
                "intrinsic_s": round(intrinsic, 1),
                "overhead_per_host_s": round(overhead, 1),
                "overhead_target_s": TARGET_OVERHEAD_S,
                "overhead_within_target": overhead <= TARGET_OVERHEAD_S,
                "orchestration_in_host_swaps_per_host_s": round(in_host_swaps, 1),
                "orchestration_once_per_run_s": round(once, 1),
                "wall_over_intrinsic": round(report["wall_s"] / intrinsic, 2),
                "requests": report["requests"]["total"],
                "alias_clients": on_alias.summary(),
                "alias_kinds": sorted({o.kind for o in on_alias.outcomes}),
                "per_name": report["requests"].get("per_name", {}),
                "retired": sorted(report.get("retired", {})),
            }
        )
    )


if __name__ == "__main__":
    main()
