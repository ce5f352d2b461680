"""Benchmark: how long a pool's group takes to have a spot-interrupted host's replacement
serving through the LB, against a host launched from the same image serving on its own.

On the fleet lab (brought up with one LB and a bake host, and baked, if it is not): the LB
is put up with `loadbalancer.yml` (its membership service on), the pool chat is kept as an
Auto Scaling group of one instance on the newest clean image (`gpufleet lab
capacity-drill`'s steps), and each round gives the group's host a spot notice under 20
streams of the official client, timing the notice to the replacement's first request served
through the LB. The baseline, in the same run, is `benchmarks/launch.py`'s round: a host
launched from the same image (`lab launch`) to its first generate that ends with done. The
figure is what the group's path costs beyond the notice (compressed to 15 s in the lab) and
that boot: the keeper's poll, the group's launch, the membership service's pass and the
LB's checks. Prints one JSON line of figures last.

    .venv/bin/python benchmarks/capacity.py [--rounds 3] [--keep-lab]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from launch import BIN, MODELS, REPO, clean_image, gpufleet, one_round

from gpufleet.lab import capacity_drill, lab
from gpufleet.lab.topology import LabPaths

TARGET_BEYOND_BOOT_S = 10.0


def lab_status() -> dict:
    answer = subprocess.run(
        [str(BIN / "gpufleet"), "lab", "status", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(answer.stdout)


def lab_up_unless_it_is() -> bool:
    """Bring the lab up with one bake host if it is not up; whether this did."""
    brought_up = lab_status()["state"] == "absent"
    if brought_up:
        gpufleet("lab", "up", "--bake-hosts", "1", env={"GPUFLEET_LAB_MODELS": MODELS})
    return brought_up


def lb_up() -> None:
    """loadbalancer.yml on the lab's LB: its membership service takes group instances in."""
    subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", lab_status()["inventory"],
         "playbooks/loadbalancer.yml"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    brought_up = lab_up_unless_it_is()
    try:
        image, model = clean_image()
        lb_up()
        baseline = one_round(image, model)
        paths = LabPaths.from_environment()
        topology = lab.load(paths)
        balancer = next(h for h in topology.hosts if h.role == "lb")
        capacity_drill.publish_and_keep_the_pool(paths, topology, image, model)
        drills = []
        for _round in range(args.rounds):
            figures = capacity_drill.spot_notice_drill(paths, topology, balancer.address, model)
            figures.pop("problems")
            drills.append(figures)
    finally:
        if brought_up and not args.keep_lab:
            gpufleet("lab", "down", check=False)
    replaced = round(statistics.median(d["notice_to_serving_s"] for d in drills), 1)
    notice = drills[0]["notice_s"]
    boot = baseline["launch_to_serving_s"]
    beyond = round(replaced - notice - boot, 2)
    print(
        json.dumps(
            {
                "benchmark": "capacity",
                "image": image,
                "model": model,
                "notice_to_replacement_serving_s": replaced,
                "notice_s": notice,
                "launch_to_serving_s": boot,
                "group_path_beyond_notice_and_boot_s": beyond,
                "replacement_to_launch_ratio": round((replaced - notice) / boot, 2),
                "target_beyond_s": TARGET_BEYOND_BOOT_S,
                "met": beyond <= TARGET_BEYOND_BOOT_S,
                "failed": sum(d["load"]["failed"] + d["load"]["truncated"] for d in drills),
                "rounds": drills,
            }
        )
    )


if __name__ == "__main__":
    main()
