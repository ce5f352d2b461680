"""Benchmark: how long `playbooks/ami_rollout.yml` takes to roll a pool onto a new image,
against what it must wait for in the same run: its replacements' launch to serving and its
old hosts' drains.

On the fleet lab (brought up with one LB and a bake host, and baked, if it is not): the LB
is put up with `loadbalancer.yml`, the pool chat is kept as an Auto Scaling group of one
instance on demand and one spot on the newest clean image (`capacity.yml`), a second image
is made from it (`lab derive-image`) and published, and the playbook rolls the pool under 20
streams of the official clients. The baseline is the rollout's own report: the sum of each
replacement's seconds from launch to serving and each old host's drain wait, what a
rollout of these batches cannot do without. The figure is the rest: the checks, the template
write, the launches' and terminations' API calls and the waits between them. Prints one JSON
line of figures last.

    .venv/bin/python benchmarks/rollout.py [--image AMI] [--keep-lab]
"""

from __future__ import annotations

import argparse
import json
import re

from capacity import lab_status, lab_up_unless_it_is, lb_up
from launch import BIN, REPO, clean_image, gpufleet

from gpufleet.lab import capacity_drill, lab
from gpufleet.lab.topology import LabPaths

DERIVED = re.compile(r"^lab derive-image: image (ami-[0-9a-f]+) ", re.M)
LOADED = re.compile(r"^lab load: .*?(\{.*\})$", re.M)
# The rollout's own work beyond its waits, per batch: checks, API calls, the LBs' passes.
TARGET_OVERHEAD_PER_BATCH_S = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--image", help="the image to roll from (default: the newest clean one)")
    parser.add_argument("--model", default="qwen2.5:7b", help="with --image: a model it has")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    brought_up = lab_up_unless_it_is()
    try:
        image, model = (args.image, args.model) if args.image else clean_image()
        lb_up()
        inventory = lab_status()["inventory"]
        paths = LabPaths.from_environment()
        topology = lab.load(paths)
        capacity_drill.publish_and_keep_the_pool(paths, topology, image, model, spot=1)
        new_image = DERIVED.search(
            gpufleet("lab", "derive-image", image, "--file", "/etc/gpufleet/release=benchmark\\n")
        ).group(1)
        capacity_drill.publish(topology, new_image)
        pools = {"capacity_pools": capacity_drill.pools(topology, model, spot=1)}
        output = gpufleet(
            "lab", "load", "--models", model, "--concurrency", "20", "--",
            str(BIN / "ansible-playbook"), "-i", inventory, "playbooks/ami_rollout.yml",
            "-e", json.dumps(pools),
        )  # fmt: skip
    finally:
        if brought_up and not args.keep_lab:
            gpufleet("lab", "down", check=False)
    report_path = max(
        (REPO / "reports").glob("ami-rollout-*.json"), key=lambda p: p.stat().st_mtime
    )
    report = json.loads(report_path.read_text())
    hosts = report["hosts"]
    boots = sum(h["launch_to_serving_s"] or 0 for h in hosts)
    drains = sum(h["drain_wait_s"] or 0 for h in hosts)
    batches = len({p["at"] for p in report["capacity"] if p["step"] == "batch done"})
    overhead = round(report["wall_s"] - boots - drains, 1)
    print(
        json.dumps(
            {
                "benchmark": "rollout",
                "from_image": image,
                "to_image": new_image,
                "replaced": report["replaced"],
                "batches": batches,
                "rollout_wall_s": report["wall_s"],
                "launch_to_serving_sum_s": round(boots, 1),
                "drain_wait_sum_s": round(drains, 1),
                "overhead_s": overhead,
                "wall_to_waits_ratio": round(report["wall_s"] / max(boots + drains, 0.1), 2),
                "overhead_per_batch_s": round(overhead / max(batches, 1), 1),
                "target_overhead_per_batch_s": TARGET_OVERHEAD_PER_BATCH_S,
                "met": overhead / max(batches, 1) <= TARGET_OVERHEAD_PER_BATCH_S,
                "lb_requests": report["requests"].get("total", {}),
                "clients": json.loads(LOADED.search(output).group(1)),
            }
        )
    )


if __name__ == "__main__":
    main()
